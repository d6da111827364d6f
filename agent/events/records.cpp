// Names of the record enums, as the outputs and the store spell them.
#include "events/records.h"

#include <array>
#include <charconv>
#include <iterator>

namespace rstwatch {

namespace {

constexpr const char *kCauseNames[] = {"backend_crash", "backend_oom", "keepalive_race", "middlebox_idle",
                                       "stale_reuse",   "mtu_blackhole", "backend_shutdown", "client_side", "unknown"};

// In TcpState's order, from 0 (which no socket is in).
constexpr const char *kTcpStateNames[] = {
    "UNKNOWN",   "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",    "TIME_WAIT",
    "CLOSE",     "CLOSE_WAIT",  "LAST_ACK", "LISTEN",   "CLOSING",   "NEW_SYN_RECV", "BOUND_INACTIVE"};
static_assert(std::size(kTcpStateNames) == static_cast<size_t>(TcpState::BoundInactive) + 1);

constexpr const char *kEvidenceNames[] = {
    "client_connection",     "nginx_abandoned",        "role_unknown",
    "no_request_waiting",    "reset_after_request",    "reset_during_request",
    "pool_reuse",            "backend_sent_reset",     "backend_exiting",
    "oom_kills_untraced",    "backend_oom_killed",     "backend_had_no_socket",
    "backend_closed_on_data", "backend_closed_state",  "backend_segments_stalled",
    "backend_reset_itself",  "backend_elsewhere",      "socketless_resets_untraced",
    "rst_ttl_differs",       "nginx_segments_stalled", "rst_ttl_matches",
    "rst_ttl_unknown",       "backend_fin_before_reset", "request_acknowledged",
    "candidates_on_reuse",   "candidates_on_first_request", "candidates_mid_request",
    "candidates_late_reset", "candidates_stalled",     "connect_refused",
    "recorded"};
static_assert(std::size(kEvidenceNames) == static_cast<size_t>(EvidenceCode::Recorded) + 1);

constexpr const char *kHintNames[] = {
    "none",                  "clients_go_away",        "nginx_gave_up",
    "backend_killed",        "backend_out_of_memory",  "backend_died",          "backend_stopped",
    "backends_restarted",    "backend_segments_lost",  "nginx_segments_lost",
    "backend_ended_mid_request", "backend_gave_up_late", "check_backend_restarts", "keepalive_below_pool_idle", "keepalive_below_pool_idle_remote",
    "backend_idle_timeout",  "middlebox_idle_timeout", "restarted_under_pool",
    "backend_not_listening", "recorded"};
static_assert(std::size(kHintNames) == static_cast<size_t>(HintCode::Recorded) + 1);

}  // namespace

const char *to_string(Direction d) { return d == Direction::Received ? "received" : "sent"; }

const char *to_string(Role r)
{
    switch (r) {
    case Role::Upstream: return "upstream";
    case Role::Downstream: return "downstream";
    case Role::Other: break;
    }
    return "other";
}

std::string tcp_state_name(TcpState state)
{
    const auto n = static_cast<size_t>(state);
    if (n > 0 && n < std::size(kTcpStateNames))
        return kTcpStateNames[n];
    return "STATE_" + std::to_string(n);
}

std::optional<TcpState> tcp_state_from_name(std::string_view name)
{
    for (size_t n = 1; n < std::size(kTcpStateNames); n++)
        if (name == kTcpStateNames[n])
            return static_cast<TcpState>(n);
    if (!name.starts_with("STATE_"))
        return std::nullopt;
    name.remove_prefix(6);
    uint8_t n = 0;
    auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), n);
    if (ec != std::errc() || end != name.data() + name.size())
        return std::nullopt;
    return static_cast<TcpState>(n);
}

const char *to_string(Cause c) { return kCauseNames[static_cast<int>(c)]; }

const char *to_string(Confidence c)
{
    return c == Confidence::High ? "high" : c == Confidence::Medium ? "medium" : "low";
}

std::optional<Cause> cause_from_string(const std::string &name)
{
    for (size_t i = 0; i < std::size(kCauseNames); i++)
        if (name == kCauseNames[i])
            return static_cast<Cause>(i);
    return std::nullopt;
}

bool is_upstream_failure(Cause c) { return c != Cause::ClientSide && c != Cause::Unknown; }

const char *to_string(EvidenceCode code) { return kEvidenceNames[static_cast<size_t>(code)]; }

const char *to_string(HintCode code) { return kHintNames[static_cast<size_t>(code)]; }

}  // namespace rstwatch
