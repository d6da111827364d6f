// Names of the record enums, as the outputs and the store spell them.
#include "events/records.h"

#include <array>
#include <iterator>

namespace rstwatch {

namespace {
constexpr const char *kCauseNames[] = {"backend_crash", "backend_oom", "keepalive_race", "middlebox_idle",
                                       "stale_reuse",   "mtu_blackhole", "client_side", "unknown"};
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

std::string tcp_state_name(int state)
{
    // Kernel numbering (include/net/tcp_states.h), stable since 2.6.
    static constexpr std::array<const char *, 13> names = {
        "UNKNOWN",   "ESTABLISHED", "SYN_SENT",   "SYN_RECV", "FIN_WAIT1",
        "FIN_WAIT2", "TIME_WAIT",   "CLOSE",      "CLOSE_WAIT", "LAST_ACK",
        "LISTEN",    "CLOSING",     "NEW_SYN_RECV"};
    if (state > 0 && static_cast<size_t>(state) < names.size())
        return names[state];
    return "STATE_" + std::to_string(state);
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

}  // namespace rstwatch
