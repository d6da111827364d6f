#include "diagnosis/diagnosis.h"

#include <string.h>

#include <algorithm>
#include <cmath>
#include <csignal>
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

// An nginx time value a little below `ms`: "4s", "800ms".
std::string nginx_time_below(double ms)
{
    double target = std::max(100.0, std::floor(ms * 0.8 / 100) * 100);
    if (std::fmod(target, 1000) == 0)
        return printf_string("%.0fs", target / 1000);
    return printf_string("%.0fms", target);
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

// Data that arrived after the backend's application closed the socket: the
// reason says so on Linux 6.10+, an orphaned socket on every kernel.
bool aborted_on_data(const ResetEvent &peer)
{
    return peer.reason == "TCP_ABORT_ON_DATA" || (peer.orphan && !peer.no_socket && !peer.on_cpu_exiting);
}

bool is_closed_by_backend(const ResetEvent &peer)
{
    // The backend's application had closed the socket; data from nginx
    // then meets a half-closed or timewait socket.
    static const char *closing[] = {"FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSING", "LAST_ACK"};
    const std::string state = tcp_state_name(peer.state);
    return peer.reason == "TCP_TIMEWAIT_SOCKET" || aborted_on_data(peer) ||
           std::find(std::begin(closing), std::end(closing), state) != std::end(closing);
}

std::string request_text(const ResetEvent &r)
{
    const std::string owner = r.comm.empty() ? "nginx" : r.comm;
    if (!r.in_request)
        return "no request was waiting: the backend had sent last (a response under way, or the "
               "connection idle in " + owner + "'s pool)";
    const std::string request = r.reused ? "a request on a reused connection" : "the connection's first request";
    std::string when = r.since_request_ms ? duration_text(*r.since_request_ms) + " after " + owner + " sent " + request
                                          : "while " + request + " was waiting";
    return "reset " + when + ", before any response byte";
}

}  // namespace


// One key per direction of a flow: "local remote" (addresses have no spaces).
static std::string flow_key(const std::string &local, const std::string &remote)
{
    return local + ' ' + remote;
}

static uint64_t mono_of(const Event &e)
{
    return std::visit([](const auto &v) { return v.mono_ns; }, e);
}

void Diagnoser::add(Event event)
{
    const uint64_t now = mono_of(event);
    if (const auto *oom = std::get_if<OomEvent>(&event)) {
        recent_ooms_.push_back(*oom);
        if (recent_ooms_.size() > kMaxRecentOoms)
            recent_ooms_.pop_front();
    } else if (const auto &reset = std::get<ResetEvent>(event);
               reset.direction == Direction::Sent && reset.role != Role::Upstream) {
        // A sent reset may be the far end of a tracked connection, unless it
        // left a connection its owner made itself (nginx's own upstream ones).
        recent_peers_.push_back(reset);
        peers_by_flow_.emplace(flow_key(reset.local, reset.remote), &recent_peers_.back());
    }
    // Keep what a held event or one yet to come may still need.
    while (!recent_peers_.empty() && (recent_peers_.size() > kMaxRecentPeers ||
                                      now > recent_peers_.front().mono_ns + kPeerWindowNs + kHoldBackNs))
        forget_oldest_peer();
    held_.push_back(std::move(event));
}

void Diagnoser::forget_oldest_peer()
{
    const ResetEvent *oldest = &recent_peers_.front();
    auto [first, last] = peers_by_flow_.equal_range(flow_key(oldest->local, oldest->remote));
    for (auto it = first; it != last; ++it)
        if (it->second == oldest) {
            peers_by_flow_.erase(it);
            break;
        }
    recent_peers_.pop_front();
}

std::vector<Event> Diagnoser::take_ready(uint64_t now_mono_ns)
{
    std::vector<Event> ready;
    while (!held_.empty() && (now_mono_ns == UINT64_MAX || mono_of(held_.front()) + kHoldBackNs <= now_mono_ns)) {
        Event event = std::move(held_.front());
        held_.pop_front();
        if (auto *reset = std::get_if<ResetEvent>(&event); reset && reset->owner_known)
            reset->diagnosis = diagnose_and_learn(*reset);
        ready.push_back(std::move(event));
    }
    return ready;
}

Diagnosis Diagnoser::diagnose_and_learn(const ResetEvent &reset)
{
    Diagnosis d = diagnose(reset);
    if (reset.role == Role::Upstream && reset.direction == Direction::Received && reset.pool_idle_ms &&
        (d.cause == Cause::KeepaliveRace || d.cause == Cause::MiddleboxIdle || d.cause == Cause::StaleReuse)) {
        remember_idle(reset, d.cause);
        d.hint = idle_hint(reset, d.cause);
    }
    return d;
}

Diagnosis Diagnoser::diagnose(const ResetEvent &r) const
{
    Diagnosis d;
    if (r.role == Role::Downstream) {
        d.cause = Cause::ClientSide;
        d.confidence = Confidence::High;
        d.evidence.push_back("reset on a connection " + r.comm + " accepted (its client " + r.remote + ")");
        d.hint = "not an upstream failure: clients going away show as 499 in the access log";
        return d;
    }
    if (r.direction == Direction::Sent && r.role == Role::Upstream) {
        // nginx gives up on an upstream request when its client goes away
        // (or a proxy timeout fires) and closes with the response unread.
        d.cause = Cause::ClientSide;
        d.confidence = Confidence::Medium;
        d.evidence.push_back(r.comm + " itself reset the upstream connection" +
                             (r.reason.empty() ? std::string() : " (reason " + r.reason + ")") +
                             ": it abandoned the request, as when its client goes away");
        d.hint = "not an upstream failure: look for 499 (client closed) or 504 lines at that time";
        return d;
    }
    if (r.role != Role::Upstream) {
        d.evidence.push_back("connection role unknown: neither its connect() nor its accept() was seen");
        return d;
    }
    return diagnose_upstream_received(r);
}

Diagnosis Diagnoser::diagnose_upstream_received(const ResetEvent &r) const
{
    Diagnosis d;
    const bool reused = r.pool_idle_ms.has_value();
    const bool prompt = r.in_request && r.since_request_ms && *r.since_request_ms <= kPromptResetMs;
    d.evidence.push_back(request_text(r));
    if (reused)
        d.evidence.push_back("pooled connection reused after " + duration_text(*r.pool_idle_ms) + " idle");

    if (const ResetEvent *peer = backend_side_of(r)) {
        const std::string who = process_text(peer->on_cpu_pid, peer->on_cpu_comm);
        std::string sent_by = "the backend's side is on this host: its socket sent the reset";
        if (!peer->reason.empty())
            sent_by += " (reason " + peer->reason + ")";
        d.evidence.push_back(sent_by);

        if (peer->on_cpu_exiting) {
            if (peer->on_cpu_exit_signal == SIGKILL && !kernel_.oom_kills) {
                d.evidence.push_back(who + " was exiting on SIGKILL when the reset left its socket");
                d.evidence.push_back("this kernel does not trace OOM kills (oom:mark_victim): the OOM killer "
                                     "(backend_oom) and a kill -9 (backend_crash) look the same");
                d.hint = "backend " + peer->on_cpu_comm + " was killed: check `dmesg -T | grep -i 'killed process'` "
                         "for the OOM killer, and the backend's logs; `proxy_next_upstream error` retries "
                         "idempotent requests on another server";
                return d;
            }
            if (const OomEvent *oom = oom_kill_of(peer->on_cpu_pid, std::max(peer->mono_ns, r.mono_ns))) {
                d.cause = Cause::BackendOom;
                d.confidence = Confidence::High;
                std::string kill = who + " killed by the OOM killer " +
                                   duration_text((peer->mono_ns - oom->mono_ns) / 1e6) + " before";
                if (oom->rss_kb)
                    kill += ", rss " + std::to_string(*oom->rss_kb) + " kB";
                if (!oom->cgroup.empty())
                    kill += ", cgroup " + oom->cgroup;
                d.evidence.push_back(kill);
                d.hint = "backend " + peer->on_cpu_comm + " ran out of memory" +
                         (oom->cgroup.empty() ? std::string() : " in " + oom->cgroup) +
                         ": raise its memory limit or fix its memory use; `proxy_next_upstream error` retries "
                         "idempotent requests on another server";
                return d;
            }
            d.cause = Cause::BackendCrash;
            d.confidence = Confidence::High;
            d.evidence.push_back(who + " was exiting on " + signal_name(peer->on_cpu_exit_signal) +
                                 " when the reset left its socket");
            d.hint = "backend " + peer->on_cpu_comm + " died mid-request on " +
                     signal_name(peer->on_cpu_exit_signal) +
                     ": check its logs and core dumps; `proxy_next_upstream error` retries idempotent "
                     "requests on another server";
            return d;
        }
        if (peer->no_socket && !is_closed_by_backend(*peer)) {
            d.cause = Cause::StaleReuse;
            d.confidence = reused ? Confidence::High : Confidence::Medium;
            d.evidence.push_back(std::string("the backend's kernel had no socket for this connection") +
                                 (tcp_state_name(peer->state) == "LISTEN" ? " (only its listener answered)" : "") +
                                 ": the backend restarted (or its host or container did) while " +
                                 (r.comm.empty() ? "nginx" : r.comm) + " held it");
            d.hint = "backends restarted under pooled connections: drain nginx before restarting backends, "
                     "or lower keepalive_timeout in the upstream block";
            return d;
        }
        if (is_closed_by_backend(*peer)) {
            d.cause = Cause::KeepaliveRace;
            d.confidence = reused ? Confidence::High : Confidence::Medium;
            const std::string state = tcp_state_name(peer->state);
            d.evidence.push_back(
                "the backend had already closed this connection: " +
                (aborted_on_data(*peer)
                     ? std::string("data arriving after its close was answered with a reset")
                     : "its socket was in " + state + " when the request arrived"));
            return d;  // the hint comes from the idle cluster
        }
        if (peer->stalled_retransmits > 0 && peer->packets_out > 0) {
            d.cause = Cause::MtuBlackhole;
            d.confidence = Confidence::High;
            d.evidence.push_back(printf_string(
                "the backend had %u segments of up to %u bytes unacknowledged after %u retransmission timeouts "
                "in a row when it gave up: its large segments were not getting through",
                peer->packets_out, peer->mss, peer->stalled_retransmits));
            d.hint = printf_string("segments of %u bytes from %s are lost on the way: let ICMP "
                                   "'fragmentation needed' through, or clamp the MSS (iptables TCPMSS "
                                   "--clamp-mss-to-pmtu) on the path",
                                   peer->mss, r.remote.c_str());
            return d;
        }
        d.evidence.push_back(who + " reset the connection itself without exiting");
        return d;
    }

    if (kernel_.socketless_sent_resets)
        d.evidence.push_back("no reset from the backend's side on this host: the backend is elsewhere, its "
                             "processes cannot be seen");
    else
        d.evidence.push_back("no reset from the backend's side traced: this kernel does not trace resets sent "
                             "without a socket (Linux 6.10+), so a backend on this host that restarted or had "
                             "already closed the connection leaves none");
    if (r.rst_ttl && r.data_ttl && r.rst_ttl != r.data_ttl) {
        d.cause = Cause::MiddleboxIdle;
        d.confidence = reused && *r.pool_idle_ms >= 1000 ? Confidence::High : Confidence::Medium;
        d.evidence.push_back(printf_string("RST TTL %u vs connection TTL %u: %s", r.rst_ttl, r.data_ttl,
                                           r.rst_ttl > r.data_ttl ? "sent by a hop closer than the backend"
                                                                  : "sent by another host than the backend"));
        return d;  // the hint comes from the idle cluster
    }
    if (r.stalled_retransmits > 0 && r.packets_out > 0) {
        d.cause = Cause::MtuBlackhole;
        d.confidence = Confidence::Medium;
        d.evidence.push_back(printf_string("%s had %u segments of up to %u bytes unacknowledged after %u "
                                           "retransmission timeouts in a row",
                                           r.comm.c_str(), r.packets_out, r.mss, r.stalled_retransmits));
        d.hint = printf_string("nginx's segments of %u bytes to %s are lost on the way: check the path MTU "
                               "and let ICMP 'fragmentation needed' through",
                               r.mss, r.remote.c_str());
        return d;
    }
    if (r.rst_ttl && r.data_ttl)
        d.evidence.push_back(printf_string("RST TTL %u matches the connection's: the backend host sent it",
                                           r.rst_ttl));
    else
        d.evidence.push_back("TTL of the reset unknown: a middlebox cannot be ruled out");
    if (!kernel_.socketless_sent_resets && (r.in_request || reused))
        return unknown_without_socketless_resets(r, d);
    if (reused && prompt) {
        d.cause = Cause::KeepaliveRace;
        d.confidence = Confidence::Low;
        d.evidence.push_back("a backend restart (stale_reuse) would look the same from here");
        return d;
    }
    if (r.in_request && !reused && r.rst_ttl && r.rst_ttl == r.data_ttl) {
        d.cause = Cause::BackendCrash;
        d.confidence = Confidence::Low;
        d.evidence.push_back("cannot tell a crash from an OOM kill or a deliberate reset without seeing the "
                             "backend's processes");
        d.hint = "check the backend's logs and restarts at this time";
        return d;
    }
    return d;
}

// A kernel that does not trace socketless resets cannot tell a backend here
// that restarted (stale_reuse) or had closed the connection (keepalive_race)
// from one elsewhere: the cause stays unknown, with a hint true for each.
Diagnosis Diagnoser::unknown_without_socketless_resets(const ResetEvent &r, Diagnosis d) const
{
    d.cause = Cause::Unknown;
    d.confidence = Confidence::Low;
    if (r.pool_idle_ms) {
        d.evidence.push_back("candidates: keepalive_race, stale_reuse, middlebox_idle (a reset on a reused "
                             "connection)");
        d.hint = "the connection sat " + duration_text(*r.pool_idle_ms) +
                 " in the pool: a keepalive_timeout below that in the upstream block (" +
                 nginx_time_below(*r.pool_idle_ms) +
                 ") avoids the reset whether the backend closed it, restarted or a middlebox forgot it; "
                 "Linux 6.10+ would tell which";
    } else {
        d.evidence.push_back("candidates: backend_crash, backend_oom, stale_reuse (a reset on the connection's "
                             "first request)");
        d.hint = "check the backend's logs and restarts at this time; `proxy_next_upstream error` retries "
                 "idempotent requests on another server";
    }
    return d;
}

const ResetEvent *Diagnoser::backend_side_of(const ResetEvent &r) const
{
    // The nearest reset of the reversed flow, before (up to the window) or
    // just after (within the hold-back) nginx's. A reset from the backend's
    // own socket wins over one sent with no socket: once the backend drops
    // the connection, whatever nginx still sends is answered by its
    // listener, and that answer can be the reset nginx gets. It can even be
    // traced first: close() unhashes the socket before the socket's own
    // reset is sent, and a segment arriving in between meets only the
    // listener. The socket's reset says why; the listener's only echoes it.
    const ResetEvent *best = nullptr, *best_socket = nullptr;
    uint64_t best_gap = UINT64_MAX, best_socket_gap = UINT64_MAX;
    auto [first, last] = peers_by_flow_.equal_range(flow_key(r.remote, r.local));
    for (auto it = first; it != last; ++it) {
        const ResetEvent &peer = *it->second;
        const bool after = peer.mono_ns > r.mono_ns;
        const uint64_t gap = after ? peer.mono_ns - r.mono_ns : r.mono_ns - peer.mono_ns;
        if (gap > (after ? kHoldBackNs : kPeerWindowNs))
            continue;
        if (gap < best_gap) {
            best = &peer;
            best_gap = gap;
        }
        if (!peer.no_socket && gap < best_socket_gap) {
            best_socket = &peer;
            best_socket_gap = gap;
        }
    }
    return best && best->no_socket && best_socket ? best_socket : best;
}

const OomEvent *Diagnoser::oom_kill_of(uint32_t pid, uint64_t before_ns) const
{
    for (auto it = recent_ooms_.rbegin(); it != recent_ooms_.rend(); ++it)
        if (it->pid == pid && it->mono_ns <= before_ns && before_ns - it->mono_ns <= kOomWindowNs)
            return &*it;
    return nullptr;
}

void Diagnoser::remember_idle(const ResetEvent &r, Cause cause)
{
    if (!idle_by_upstream_.count(r.remote) && idle_by_upstream_.size() >= kMaxUpstreams)
        return;
    auto &samples = idle_by_upstream_[r.remote];
    samples.push_back({*r.pool_idle_ms, cause});
    if (samples.size() > kMaxIdleSamplesPerUpstream)
        samples.pop_front();
}

std::optional<IdleCluster> Diagnoser::cluster_for(const std::string &upstream,
                                                  const std::vector<IdleSample> &samples) const
{
    // The largest run of sorted values within 25% (+50 ms) of its smallest.
    std::vector<IdleSample> sorted = samples;
    std::sort(sorted.begin(), sorted.end(),
              [](const IdleSample &a, const IdleSample &b) { return a.pool_idle_ms < b.pool_idle_ms; });
    size_t best_begin = 0, best_len = 0;
    for (size_t i = 0, j = 0; i < sorted.size(); i++) {
        j = std::max(j, i);
        while (j + 1 < sorted.size() && sorted[j + 1].pool_idle_ms <= sorted[i].pool_idle_ms * 1.25 + 50)
            j++;
        if (j - i + 1 > best_len) {
            best_begin = i;
            best_len = j - i + 1;
        }
    }
    if (best_len < 2)
        return std::nullopt;
    IdleCluster c;
    c.upstream = upstream;
    c.count = best_len;
    c.min_ms = sorted[best_begin].pool_idle_ms;
    c.max_ms = sorted[best_begin + best_len - 1].pool_idle_ms;
    c.median_ms = sorted[best_begin + best_len / 2].pool_idle_ms;
    std::map<Cause, size_t> votes;
    for (size_t k = best_begin; k < best_begin + best_len; k++)
        votes[sorted[k].cause]++;
    c.cause = std::max_element(votes.begin(), votes.end(),
                               [](const auto &a, const auto &b) { return a.second < b.second; })
                  ->first;
    return c;
}

std::string Diagnoser::idle_hint(const ResetEvent &r, Cause cause) const
{
    const auto &samples = idle_by_upstream_.at(r.remote);
    auto cluster = cluster_for(r.remote, {samples.begin(), samples.end()});
    const double floor_ms = cluster ? cluster->min_ms : *r.pool_idle_ms;
    std::string seen = cluster ? printf_string("resets on reuse cluster at %s idle (%zu resets, from %s)",
                                               duration_text(cluster->median_ms).c_str(), cluster->count,
                                               duration_text(cluster->min_ms).c_str())
                               : "reset on reuse after " + duration_text(*r.pool_idle_ms) + " idle";
    // One reset bounds the timeout from above; a cluster of them, as a
    // genuine race produces, sits at the timeout itself.
    switch (cause) {
    case Cause::KeepaliveRace:
        if (cluster)
            return seen + ": the backend closes idle connections at about " + duration_text(floor_ms) +
                   "; set keepalive_timeout " + nginx_time_below(floor_ms) +
                   " in the upstream block (below the backend's)";
        return seen + ": the backend closes idle connections after at most " + duration_text(floor_ms) +
               "; keep keepalive_timeout in the upstream block below the backend's (" +
               nginx_time_below(floor_ms) + " if its timeout is about " + duration_text(floor_ms) + ")";
    case Cause::MiddleboxIdle:
        return seen + ": a middlebox between nginx and " + r.remote + " forgets flows idle " +
               (cluster ? "for about " : "for at most ") + duration_text(floor_ms) + "; set keepalive_timeout " +
               nginx_time_below(floor_ms) + (cluster ? "" : " or lower") +
               " in the upstream block, or raise the middlebox's idle timeout";
    default:
        return seen + ": backends restarted under pooled connections: drain nginx before restarting "
               "backends, or lower keepalive_timeout in the upstream block";
    }
}

std::vector<IdleCluster> Diagnoser::idle_clusters() const
{
    std::vector<IdleCluster> clusters;
    for (const auto &[upstream, samples] : idle_by_upstream_) {
        auto c = cluster_for(upstream, {samples.begin(), samples.end()});
        if (!c)
            continue;
        ResetEvent probe;
        probe.remote = upstream;
        probe.pool_idle_ms = c->min_ms;
        c->hint = idle_hint(probe, c->cause);
        clusters.push_back(*c);
    }
    std::sort(clusters.begin(), clusters.end(),
              [](const IdleCluster &a, const IdleCluster &b) { return a.count > b.count; });
    return clusters;
}

}  // namespace rstwatch
