#include "outputs/evidence_text.h"

#include <string.h>

#include <cmath>
#include <cstdio>

namespace rstwatch {

namespace {

std::string printf_string(const char *fmt, auto... args)
{
    char buf[512];
    std::snprintf(buf, sizeof(buf), fmt, args...);
    return buf;
}

// "350 ms", "5.0 s"
std::string duration_text(double ms)
{
    if (ms < 1000)
        return printf_string("%.0f ms", ms);
    return printf_string("%.1f s", ms / 1000);
}

// A time as nginx's configuration writes it: "4s", "800ms".
std::string nginx_time(double ms)
{
    if (std::fmod(ms, 1000) == 0)
        return printf_string("%.0fs", ms / 1000);
    return printf_string("%.0fms", ms);
}

std::string signal_name(int sig)
{
    const char *abbrev = sig > 0 ? sigabbrev_np(sig) : nullptr;
    return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

std::string process_text(uint32_t pid, const std::string &comm)
{
    return "pid " + std::to_string(pid) + " (" + comm + ")";
}

// nginx's worker by its name, which an unowned record lacks.
std::string nginx_name(const std::string &comm) { return comm.empty() ? "nginx" : comm; }

std::string reason_suffix(const Evidence &e)
{
    const std::string reason = reason_text(e.reason, e.reason_code);
    return reason.empty() ? std::string() : " (reason " + reason + ")";
}

std::string request_text(const Evidence &e)
{
    const std::string request = e.reused ? "a request on a reused connection" : "the connection's first request";
    if (e.code == EvidenceCode::ResetAfterRequest)
        return "reset " + duration_text(e.ms) + " after " + nginx_name(e.comm) + " sent " + request +
               ", before any response byte";
    return "reset while " + request + " was waiting, before any response byte";
}

std::string oom_kill_text(const Evidence &e)
{
    std::string text = process_text(e.pid, e.comm) + " killed by the OOM killer " + duration_text(e.ms) + " before";
    if (e.rss_kb)
        text += ", rss " + std::to_string(*e.rss_kb) + " kB";
    if (!e.cgroup.empty())
        text += ", cgroup " + e.cgroup;
    return text;
}

// What the backend's own socket said, on this host.
std::string backend_side_text(const Evidence &e)
{
    switch (e.code) {
    case EvidenceCode::BackendSentReset:
        return "the backend's side is on this host: its socket sent the reset" + reason_suffix(e);
    case EvidenceCode::BackendExiting:
        return process_text(e.pid, e.comm) + " was exiting " +
               (e.signal ? "on " + signal_name(e.signal) : std::string("without a signal (it called exit)")) +
               " when the reset left its socket";
    case EvidenceCode::BackendOomKilled: return oom_kill_text(e);
    case EvidenceCode::BackendHadNoSocket:
        return std::string("the backend's kernel had no socket for this connection") +
               (e.listener ? " (only its listener answered)" : "") +
               ": the backend restarted (or its host or container did) while " + nginx_name(e.comm) + " held it";
    case EvidenceCode::BackendClosedOnData:
        return "the backend had already closed this connection: data arriving after its close was answered "
               "with a reset";
    case EvidenceCode::BackendClosedState:
        return "the backend had already closed this connection: its socket was in " + tcp_state_name(e.state) +
               " when the request arrived";
    case EvidenceCode::BackendSegmentsStalled:
        return printf_string("the backend had %u segments of up to %u bytes unacknowledged after %u retransmission "
                             "timeouts in a row when it gave up: its large segments were not getting through",
                             e.segments, e.mss, e.timeouts);
    case EvidenceCode::BackendResetItself:
        return process_text(e.pid, e.comm) + " reset the connection itself without exiting";
    default: return {};
    }
}

// What nginx's socket and the reset segment said, and what cannot be told.
std::string from_afar_text(const Evidence &e)
{
    switch (e.code) {
    case EvidenceCode::BackendElsewhere:
        return "no reset from the backend's side on this host: the backend is elsewhere, its processes cannot be "
               "seen";
    case EvidenceCode::SocketlessResetsUntraced:
        return "no reset from the backend's side traced: this kernel does not trace resets sent without a socket "
               "(Linux 6.10+), so a backend on this host that restarted or had already closed the connection "
               "leaves none";
    case EvidenceCode::RstTtlDiffers:
        return printf_string("RST TTL %u vs connection TTL %u: %s", e.rst_ttl, e.data_ttl,
                             e.rst_ttl > e.data_ttl ? "sent by a hop closer than the backend"
                                                    : "sent by another host than the backend");
    case EvidenceCode::NginxSegmentsStalled:
        return printf_string("%s had %u segments of up to %u bytes unacknowledged after %u retransmission "
                             "timeouts in a row",
                             e.comm.c_str(), e.segments, e.mss, e.timeouts);
    case EvidenceCode::RstTtlMatches:
        return printf_string("RST TTL %u matches the connection's: the backend host sent it", e.rst_ttl);
    case EvidenceCode::RstTtlUnknown: return "TTL of the reset unknown: a middlebox cannot be ruled out";
    case EvidenceCode::BackendFinBeforeReset:
        return "the backend's FIN reached nginx before the reset: the backend had closed the connection as the "
               "request went out (a middlebox or a restarted host sends no FIN)";
    case EvidenceCode::RequestAcknowledged:
        return "the backend acknowledged part of the request before the reset: its socket was alive when the "
               "request came (a closed connection, a restarted host or a forgotten flow answers the first segment "
               "with the reset)";
    case EvidenceCode::CandidatesOnReuse:
        return "candidates: keepalive_race, stale_reuse, middlebox_idle, or a backend process that ended as the "
               "request came (backend_crash, backend_oom, backend_shutdown): each answers a reused connection's "
               "first segment with a reset";
    case EvidenceCode::CandidatesOnFirstRequest:
        return "candidates: backend_crash, backend_oom, backend_shutdown, stale_reuse (a reset on the connection's "
               "first request)";
    case EvidenceCode::CandidatesMidRequest:
        return "candidates: backend_crash, backend_oom, backend_shutdown (its process ended with the request "
               "open), or the backend reset the connection itself: only the backend's host can tell";
    case EvidenceCode::CandidatesLateReset:
        return "candidates: the backend gave up on the connection " + duration_text(e.ms) +
               " after the request without a response byte arriving (its own timeout, as when its response "
               "cannot get through: mtu_blackhole), or its process ended (backend_crash, backend_oom, "
               "backend_shutdown)";
    case EvidenceCode::CandidatesStalled:
        return "candidates: mtu_blackhole (large segments dropped on the way), or the backend host was "
               "unreachable and came back (stale_reuse)";
    default: return {};
    }
}

// "resets on reuse cluster at 2.0 s idle (3 resets, from 1.9 s)": what an
// idle hint rests on.
std::string idle_seen_text(const Hint &h)
{
    if (h.cluster_resets)
        return printf_string("resets on reuse cluster at %s idle (%zu resets, from %s)",
                             duration_text(h.cluster_median_ms).c_str(), h.cluster_resets,
                             duration_text(h.idle_ms).c_str());
    return "reset on reuse after " + duration_text(h.idle_ms) + " idle";
}

// Hints from the pool idle times of an upstream's resets.
std::string idle_hint_text(const Hint &h)
{
    const bool cluster = h.cluster_resets > 0;
    const std::string seen = idle_seen_text(h), idle = duration_text(h.idle_ms), keepalive = nginx_time(h.keepalive_ms);
    switch (h.code) {
    case HintCode::BackendIdleTimeout:
        if (!h.keepalive_ms)
            return seen + ": the backend closes idle connections after at most " + idle +
                   ", too soon for nginx's pool: raise its idle timeout or turn upstream keep-alive to it off";
        if (cluster)
            return seen + ": the backend closes idle connections at about " + idle + "; set keepalive_timeout " +
                   keepalive + " in the upstream block (below the backend's)";
        return seen + ": the backend closes idle connections after at most " + idle +
               "; keep keepalive_timeout in the upstream block below the backend's (" + keepalive +
               " if its timeout is about " + idle + ")";
    case HintCode::MiddleboxIdleTimeout:
        if (!h.keepalive_ms)
            return seen + ": a middlebox between nginx and " + h.address + " forgets flows idle for at most " + idle +
                   ": raise its idle timeout";
        return seen + ": a middlebox between nginx and " + h.address + " forgets flows idle " +
               (cluster ? "for about " : "for at most ") + idle + "; set keepalive_timeout " + keepalive +
               (cluster ? "" : " or lower") + " in the upstream block, or raise the middlebox's idle timeout";
    default:
        return seen + ": backends restarted under pooled connections: drain nginx before restarting backends, or "
               "lower keepalive_timeout in the upstream block";
    }
}

// An unknown cause on reuse: what is true for every candidate.
std::string pool_idle_hint_text(const Hint &h)
{
    if (h.cluster_resets && h.keepalive_ms)
        return idle_seen_text(h) + ": an idle timeout of about " + duration_text(h.idle_ms) +
               " at the backend or a middlebox is likely; set keepalive_timeout " + nginx_time(h.keepalive_ms) +
               " in the upstream block";
    const std::string sat = "the connection sat " + duration_text(h.idle_ms) + " in the pool";
    if (!h.keepalive_ms)
        return sat + ", too short for an idle timeout to be likely: check the backend's logs at this time for a "
                     "crash, an OOM kill or a stop; if its idle timeout is that short, turn upstream keep-alive to it "
                     "off";
    return sat + ": if the backend or a middlebox drops idle connections, a keepalive_timeout below that in the "
                 "upstream block (" + nginx_time(h.keepalive_ms) +
           ") avoids the reset; if the backend's host restarted or its process ended then, its logs show it";
}

constexpr const char *kRetryElsewhere = "`proxy_next_upstream error` retries idempotent requests on another server";

}  // namespace

std::string reason_text(const std::optional<ResetReason> &reason, const std::optional<uint32_t> &code)
{
    if (reason && *reason != ResetReason::Unknown)
        return reset_reason_name(*reason);
    if (code)
        return "REASON_" + std::to_string(*code);
    return reason ? reset_reason_name(*reason) : "";
}

// Every code is listed, without a default: a new code without words is a
// compiler warning (-Wswitch).
std::string evidence_text(const Evidence &e)
{
    switch (e.code) {
    case EvidenceCode::ClientConnection:
        return "reset on a connection " + e.comm + " accepted (its client " + e.address + ")";
    case EvidenceCode::NginxAbandoned:
        return e.comm + " itself reset the upstream connection" + reason_suffix(e) +
               ": it abandoned the request, as when its client goes away";
    case EvidenceCode::RoleUnknown:
        return "connection role unknown: neither its connect() nor its accept() was seen";
    case EvidenceCode::NoRequestWaiting:
        return "no request was waiting: the backend had sent last (a response under way, or the connection idle "
               "in " + nginx_name(e.comm) + "'s pool)";
    case EvidenceCode::ResetAfterRequest:
    case EvidenceCode::ResetDuringRequest: return request_text(e);
    case EvidenceCode::PoolReuse: return "pooled connection reused after " + duration_text(e.ms) + " idle";
    case EvidenceCode::OomKillsUntraced:
        return "this kernel does not trace OOM kills (oom:mark_victim): the OOM killer (backend_oom) and a kill -9 "
               "(backend_crash) look the same";
    case EvidenceCode::BackendSentReset:
    case EvidenceCode::BackendExiting:
    case EvidenceCode::BackendOomKilled:
    case EvidenceCode::BackendHadNoSocket:
    case EvidenceCode::BackendClosedOnData:
    case EvidenceCode::BackendClosedState:
    case EvidenceCode::BackendSegmentsStalled:
    case EvidenceCode::BackendResetItself: return backend_side_text(e);
    case EvidenceCode::BackendElsewhere:
    case EvidenceCode::SocketlessResetsUntraced:
    case EvidenceCode::RstTtlDiffers:
    case EvidenceCode::NginxSegmentsStalled:
    case EvidenceCode::RstTtlMatches:
    case EvidenceCode::RstTtlUnknown:
    case EvidenceCode::BackendFinBeforeReset:
    case EvidenceCode::RequestAcknowledged:
    case EvidenceCode::CandidatesOnReuse:
    case EvidenceCode::CandidatesOnFirstRequest:
    case EvidenceCode::CandidatesMidRequest:
    case EvidenceCode::CandidatesLateReset:
    case EvidenceCode::CandidatesStalled: return from_afar_text(e);
    case EvidenceCode::ConnectRefused:
        return "the connection was refused: nginx's SYN to " + e.address +
               " was answered with a reset (nginx logs this as 111: Connection refused, not 104)";
    case EvidenceCode::Recorded: return e.text;
    }
    return {};
}

std::string hint_text(const Hint &h)
{
    switch (h.code) {
    case HintCode::None: return {};
    case HintCode::ClientsGoAway:
        return "not an upstream failure: clients going away show as 499 in the access log";
    case HintCode::NginxGaveUp:
        return "not an upstream failure: look for 499 (client closed) or 504 lines at that time";
    case HintCode::BackendKilled:
        return "backend " + h.comm + " was killed: check `dmesg -T | grep -i 'killed process'` for the OOM "
               "killer, and the backend's logs; " + kRetryElsewhere;
    case HintCode::BackendOutOfMemory:
        return "backend " + h.comm + " ran out of memory" + (h.cgroup.empty() ? std::string() : " in " + h.cgroup) +
               ": raise its memory limit or fix its memory use; " + kRetryElsewhere;
    case HintCode::BackendDied:
        return "backend " + h.comm + " died mid-request on " + signal_name(h.signal) +
               ": check its logs and core dumps; " + kRetryElsewhere;
    case HintCode::BackendStopped:
        return "backend " + h.comm + " was stopped" + (h.signal ? " on " + signal_name(h.signal) : std::string()) +
               " with nginx's request open (a deploy, a scale-down, a restart without drain): drain before stopping "
               "it (stop accepting, let open requests finish; in Kubernetes a preStop hook and "
               "terminationGracePeriodSeconds); " + kRetryElsewhere;
    case HintCode::BackendsRestarted:
        return "backends restarted under pooled connections: drain nginx before restarting backends, or lower "
               "keepalive_timeout in the upstream block";
    case HintCode::BackendSegmentsLost:
        return printf_string("segments of %u bytes from %s are lost on the way: let ICMP 'fragmentation needed' "
                             "through, or clamp the MSS (iptables TCPMSS --clamp-mss-to-pmtu) on the path",
                             h.mss, h.address.c_str());
    case HintCode::NginxSegmentsLost:
        return printf_string("nginx's segments of %u bytes to %s went unacknowledged: check the path MTU (ping -M do "
                             "-s SIZE) and let ICMP 'fragmentation needed' through; if the backend host was down at "
                             "that time (a reboot), that explains it instead",
                             h.mss, h.address.c_str());
    case HintCode::BackendEndedMidRequest:
        return std::string("the backend's process ended or reset the connection with nginx's request open: check the "
                           "backend host's logs at this time for a crash, an OOM kill (dmesg) or a stop without "
                           "drain (a deploy: drain before stopping); ") + kRetryElsewhere;
    case HintCode::BackendGaveUpLate:
        return "the backend reset the connection " + duration_text(h.idle_ms) +
               " after nginx's request without a response byte arriving: check the backend's logs at this time for "
               "a timeout or a crash, and the path MTU from " + h.address +
               " to nginx (ping -M do; let ICMP 'fragmentation needed' through)";
    case HintCode::CheckBackendRestarts:
        return std::string("check the backend's logs and restarts at this time; ") + kRetryElsewhere;
    case HintCode::KeepaliveBelowPoolIdle:
        return pool_idle_hint_text(h) + "; Linux 6.10+ would tell which";
    case HintCode::KeepaliveBelowPoolIdleRemote:
        return pool_idle_hint_text(h) + "; what tells them apart: the reset's TTL (a middlebox's differs; recorded "
               "by default where fentry attaches, else with rstwatch run --ttl-evidence), the backend's idle timeout "
               "and its logs";
    case HintCode::BackendIdleTimeout:
    case HintCode::MiddleboxIdleTimeout:
    case HintCode::RestartedUnderPool: return idle_hint_text(h);
    case HintCode::BackendNotListening:
        return "nothing listens at " + h.address +
               ": start the backend or correct the upstream's address; nginx marks a server failed after max_fails "
               "such errors";
    case HintCode::Recorded: return h.text;
    }
    return {};
}

}  // namespace rstwatch
