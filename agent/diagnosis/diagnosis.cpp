#include "diagnosis/diagnosis.h"

#include <algorithm>
#include <cmath>
#include <csignal>

namespace rstwatch {

namespace {

Evidence fact(EvidenceCode code) { return Evidence{.code = code}; }

// The keepalive_timeout to suggest for connections that were reset after
// `ms` idle: a little below it, in the 100 ms steps nginx times are written in;
// 0 when the idle time is too short for any (a 16 ms idle suggests no timeout).
double keepalive_below(double ms)
{
    const double below = std::floor(ms * 0.8 / 100) * 100;
    return below >= 100 ? below : 0;
}

// Data that arrived after the backend's application closed the socket: the
// reason says so on Linux 6.10+, an orphaned socket on every kernel.
bool aborted_on_data(const ResetEvent &peer)
{
    return peer.reason == ResetReason::TcpAbortOnData ||
           (peer.orphan && !peer.no_socket && !peer.on_cpu_exiting);
}

bool is_closed_by_backend(const ResetEvent &peer)
{
    // The backend's application had closed the socket; data from nginx
    // then meets a half-closed or timewait socket.
    static constexpr TcpState closing[] = {TcpState::FinWait1, TcpState::FinWait2, TcpState::TimeWait,
                                           TcpState::Closing, TcpState::LastAck};
    return peer.reason == ResetReason::TcpTimewaitSocket || aborted_on_data(peer) ||
           std::find(std::begin(closing), std::end(closing), peer.state) != std::end(closing);
}

// Was a request waiting, and since when: nginx's side of the reset.
Evidence request_evidence(const ResetEvent &r)
{
    if (!r.in_request)
        return Evidence{.code = EvidenceCode::NoRequestWaiting, .comm = r.comm};
    if (r.since_request_ms)
        return Evidence{.code = EvidenceCode::ResetAfterRequest, .ms = *r.since_request_ms, .comm = r.comm,
                        .reused = r.reused};
    return Evidence{.code = EvidenceCode::ResetDuringRequest, .reused = r.reused};
}

// Segments stuck unacknowledged at the reset: `who` gave up, or saw them stall.
Evidence stalled_segments(EvidenceCode code, const ResetEvent &who)
{
    return Evidence{.code = code,
                    .comm = who.comm,
                    .segments = who.packets_out,
                    .mss = who.mss,
                    .timeouts = who.stalled_retransmits};
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
    if (reset.role != Role::Upstream || reset.direction != Direction::Received || !reset.pool_idle_ms)
        return d;
    if (d.cause == Cause::KeepaliveRace || d.cause == Cause::MiddleboxIdle || d.cause == Cause::StaleReuse) {
        remember_idle(reset, d.cause);
        d.hint = idle_hint(reset, d.cause);
    } else if (d.hint.code == HintCode::KeepaliveBelowPoolIdle || d.hint.code == HintCode::KeepaliveBelowPoolIdleRemote) {
        // Unknown on reuse: resets after one idle time, again and again, are
        // an idle timeout somewhere (the backend's or a middlebox's), not
        // crashes or reboots; the hint then gives that time.
        remember_idle(reset, Cause::Unknown);
        d.hint = idle_hint(reset, Cause::Unknown, d.hint.code);
    }
    return d;
}

Diagnosis Diagnoser::diagnose(const ResetEvent &r) const
{
    Diagnosis d;
    if (r.role == Role::Downstream) {
        d.cause = Cause::ClientSide;
        d.confidence = Confidence::High;
        d.evidence.push_back(Evidence{.code = EvidenceCode::ClientConnection, .comm = r.comm, .address = r.remote});
        d.hint.code = HintCode::ClientsGoAway;
        return d;
    }
    if (r.direction == Direction::Sent && r.role == Role::Upstream) {
        // nginx gives up on an upstream request when its client goes away
        // (or a proxy timeout fires) and closes with the response unread.
        d.cause = Cause::ClientSide;
        d.confidence = Confidence::Medium;
        d.evidence.push_back(Evidence{
            .code = EvidenceCode::NginxAbandoned, .comm = r.comm, .reason = r.reason, .reason_code = r.reason_code});
        d.hint.code = HintCode::NginxGaveUp;
        return d;
    }
    if (r.role != Role::Upstream) {
        d.evidence.push_back(fact(EvidenceCode::RoleUnknown));
        return d;
    }
    return diagnose_upstream_received(r);
}

Diagnosis Diagnoser::diagnose_upstream_received(const ResetEvent &r) const
{
    Diagnosis d;
    if (r.state == TcpState::SynSent) {
        // Not one of the 104 causes: no connection was ever made. A backend
        // here answers with a socketless reset, which must not read as a
        // restart under a pooled connection (stale_reuse).
        d.evidence.push_back(Evidence{.code = EvidenceCode::ConnectRefused, .address = r.remote});
        d.hint = Hint{.code = HintCode::BackendNotListening, .address = r.remote};
        return d;
    }
    d.evidence.push_back(request_evidence(r));
    if (r.pool_idle_ms)
        d.evidence.push_back(Evidence{.code = EvidenceCode::PoolReuse, .ms = *r.pool_idle_ms});
    if (const ResetEvent *peer = backend_side_of(r))
        diagnose_with_backend_side(r, *peer, d);
    else
        diagnose_from_afar(r, d);
    return d;
}

// The backend runs on this host and its side of the reset was traced.
void Diagnoser::diagnose_with_backend_side(const ResetEvent &r, const ResetEvent &peer, Diagnosis &d) const
{
    const bool reused = r.pool_idle_ms.has_value();
    d.evidence.push_back(
        Evidence{.code = EvidenceCode::BackendSentReset, .reason = peer.reason, .reason_code = peer.reason_code});
    if (peer.on_cpu_exiting) {
        diagnose_backend_exit(r, peer, d);
    } else if (peer.no_socket && !is_closed_by_backend(peer)) {
        d.cause = Cause::StaleReuse;
        d.confidence = reused ? Confidence::High : Confidence::Medium;
        d.evidence.push_back(Evidence{
            .code = EvidenceCode::BackendHadNoSocket, .comm = r.comm, .listener = peer.state == TcpState::Listen});
        d.hint.code = HintCode::BackendsRestarted;
    } else if (is_closed_by_backend(peer)) {
        d.cause = Cause::KeepaliveRace;
        d.confidence = reused ? Confidence::High : Confidence::Medium;
        d.evidence.push_back(aborted_on_data(peer)
                                 ? fact(EvidenceCode::BackendClosedOnData)
                                 : Evidence{.code = EvidenceCode::BackendClosedState, .state = peer.state});
        // the hint comes from the idle cluster
    } else if (peer.stalled_retransmits > 0 && peer.packets_out > 0) {
        d.cause = Cause::MtuBlackhole;
        d.confidence = Confidence::High;
        d.evidence.push_back(stalled_segments(EvidenceCode::BackendSegmentsStalled, peer));
        d.hint = Hint{.code = HintCode::BackendSegmentsLost, .address = r.remote, .mss = peer.mss};
    } else {
        d.evidence.push_back(
            Evidence{.code = EvidenceCode::BackendResetItself, .pid = peer.on_cpu_pid, .comm = peer.on_cpu_comm});
    }
}

// The signals that stop a process on purpose (a deploy, a scale-down, a
// restart), and exit() itself (no signal); any other (SIGSEGV, SIGABRT,
// SIGBUS, a SIGKILL that is not the OOM killer's, ...) is a crash.
static bool stopped_on_purpose(int exit_signal)
{
    return exit_signal == 0 || exit_signal == SIGTERM || exit_signal == SIGINT || exit_signal == SIGQUIT;
}

// The backend's task was exiting when its socket sent the reset.
void Diagnoser::diagnose_backend_exit(const ResetEvent &r, const ResetEvent &peer, Diagnosis &d) const
{
    const Evidence exiting{.code = EvidenceCode::BackendExiting,
                           .pid = peer.on_cpu_pid,
                           .comm = peer.on_cpu_comm,
                           .signal = peer.on_cpu_exit_signal};
    if (peer.on_cpu_exit_signal == SIGKILL && !kernel_.oom_kills) {
        d.evidence.push_back(exiting);
        d.evidence.push_back(fact(EvidenceCode::OomKillsUntraced));
        d.hint = Hint{.code = HintCode::BackendKilled, .comm = peer.on_cpu_comm};
        return;
    }
    if (const OomEvent *oom = oom_kill_of(peer.on_cpu_pid, std::max(peer.mono_ns, r.mono_ns))) {
        d.cause = Cause::BackendOom;
        d.confidence = Confidence::High;
        d.evidence.push_back(Evidence{.code = EvidenceCode::BackendOomKilled,
                                      .ms = (peer.mono_ns - oom->mono_ns) / 1e6,
                                      .pid = peer.on_cpu_pid,
                                      .comm = peer.on_cpu_comm,
                                      .rss_kb = oom->rss_kb,
                                      .cgroup = oom->cgroup});
        d.hint = Hint{.code = HintCode::BackendOutOfMemory, .comm = peer.on_cpu_comm, .cgroup = oom->cgroup};
        return;
    }
    const bool stopped = stopped_on_purpose(peer.on_cpu_exit_signal);
    d.cause = stopped ? Cause::BackendShutdown : Cause::BackendCrash;
    d.confidence = Confidence::High;
    d.evidence.push_back(exiting);
    d.hint = Hint{.code = stopped ? HintCode::BackendStopped : HintCode::BackendDied,
                  .comm = peer.on_cpu_comm,
                  .signal = peer.on_cpu_exit_signal};
}

// No backend side traced: what nginx's own socket and the reset segment say.
// A cause is named only where that rules out the others; otherwise the
// cause stays unknown, with the candidates and a hint true for each.
void Diagnoser::diagnose_from_afar(const ResetEvent &r, Diagnosis &d) const
{
    const bool reused = r.pool_idle_ms.has_value();
    // Unknown time since the request counts as prompt: the wider candidates.
    const bool late = r.since_request_ms && *r.since_request_ms > kPromptResetMs;
    d.evidence.push_back(fact(kernel_.socketless_sent_resets ? EvidenceCode::BackendElsewhere
                                                             : EvidenceCode::SocketlessResetsUntraced));
    if (r.rst_ttl && r.data_ttl && r.rst_ttl != r.data_ttl) {
        d.cause = Cause::MiddleboxIdle;
        d.confidence = reused && *r.pool_idle_ms >= 1000 ? Confidence::High : Confidence::Medium;
        d.evidence.push_back(
            Evidence{.code = EvidenceCode::RstTtlDiffers, .rst_ttl = r.rst_ttl, .data_ttl = r.data_ttl});
        return;  // the hint comes from the idle cluster
    }
    if (r.rst_ttl && r.data_ttl)
        d.evidence.push_back(Evidence{.code = EvidenceCode::RstTtlMatches, .rst_ttl = r.rst_ttl});
    else
        d.evidence.push_back(fact(EvidenceCode::RstTtlUnknown));
    if (reused && r.in_request && r.state == TcpState::CloseWait) {
        // The backend's FIN came first: it had closed the connection, and
        // nginx's request crossed the FIN (the race itself). No middlebox
        // or restarted host sends a FIN.
        d.cause = Cause::KeepaliveRace;
        d.confidence = Confidence::Medium;
        d.evidence.push_back(fact(EvidenceCode::BackendFinBeforeReset));
        return;  // the hint comes from the idle cluster
    }
    d.cause = Cause::Unknown;
    d.confidence = Confidence::Low;
    if (r.stalled_retransmits > 0 && r.packets_out > 0)
        unknown_after_stalled_segments(r, d);
    else if (r.in_request && r.request_acked)
        unknown_on_a_live_socket(r, d);
    else if (!kernel_.socketless_sent_resets && (r.in_request || reused))
        unknown_without_socketless_resets(r, d);
    else if (reused && r.in_request && !late)
        unknown_on_reuse(r, d);
    else if (r.in_request)
        // A fresh connection (its socket was there), or a reset long after
        // the request: a closed, forgotten or restarted connection answers
        // at once, or after nginx's retransmissions (stalled, above).
        unknown_on_a_live_socket(r, d);
}

// nginx's segments went unacknowledged, then the reset: a path that drops
// large segments, or a backend host that was down and came back (its new
// kernel resets what it never heard of) look alike from here.
void Diagnoser::unknown_after_stalled_segments(const ResetEvent &r, Diagnosis &d) const
{
    d.evidence.push_back(stalled_segments(EvidenceCode::NginxSegmentsStalled, r));
    d.evidence.push_back(fact(EvidenceCode::CandidatesStalled));
    d.hint = Hint{.code = HintCode::NginxSegmentsLost, .address = r.remote, .mss = r.mss};
}

// The backend's socket held the connection when the request came (it
// acknowledged part of it, or the connection was new): its process ended
// (crash, OOM kill, stop) or reset the connection; a reset long after the
// request may also be the backend giving up on a response that never got
// through (MTU). Which one shows only on the backend's host.
void Diagnoser::unknown_on_a_live_socket(const ResetEvent &r, Diagnosis &d) const
{
    if (r.request_acked)
        d.evidence.push_back(fact(EvidenceCode::RequestAcknowledged));
    const bool late = r.since_request_ms && *r.since_request_ms > kPromptResetMs;
    if (late) {
        d.evidence.push_back(Evidence{.code = EvidenceCode::CandidatesLateReset, .ms = *r.since_request_ms});
        d.hint = Hint{.code = HintCode::BackendGaveUpLate, .address = r.remote, .idle_ms = *r.since_request_ms};
    } else {
        d.evidence.push_back(fact(EvidenceCode::CandidatesMidRequest));
        d.hint.code = HintCode::BackendEndedMidRequest;
    }
}

// A backend that closed the idle connection, a backend host that restarted,
// a middlebox that forgot the flow, and a backend whose process ended as
// the request came all answer the reused connection's first segment with a
// reset.
void Diagnoser::unknown_on_reuse(const ResetEvent &r, Diagnosis &d) const
{
    d.evidence.push_back(fact(EvidenceCode::CandidatesOnReuse));
    d.hint = Hint{.code = HintCode::KeepaliveBelowPoolIdleRemote,
                  .idle_ms = *r.pool_idle_ms,
                  .keepalive_ms = keepalive_below(*r.pool_idle_ms)};
}

// A kernel that does not trace socketless resets cannot tell a backend here
// that restarted (stale_reuse) or had closed the connection (keepalive_race)
// from one elsewhere: the cause stays unknown, with a hint true for each.
void Diagnoser::unknown_without_socketless_resets(const ResetEvent &r, Diagnosis &d) const
{
    d.cause = Cause::Unknown;
    d.confidence = Confidence::Low;
    if (r.pool_idle_ms) {
        d.evidence.push_back(fact(EvidenceCode::CandidatesOnReuse));
        d.hint = Hint{.code = HintCode::KeepaliveBelowPoolIdle,
                      .idle_ms = *r.pool_idle_ms,
                      .keepalive_ms = keepalive_below(*r.pool_idle_ms)};
    } else {
        d.evidence.push_back(fact(EvidenceCode::CandidatesOnFirstRequest));
        d.hint.code = HintCode::CheckBackendRestarts;
    }
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

Hint Diagnoser::idle_hint(const ResetEvent &r, Cause cause, HintCode unknown_code) const
{
    const auto &samples = idle_by_upstream_.at(r.remote);
    auto cluster = cluster_for(r.remote, {samples.begin(), samples.end()});
    // One reset bounds the timeout from above; a cluster of them, as a
    // genuine race produces, sits at the timeout itself.
    const double floor_ms = cluster ? cluster->min_ms : *r.pool_idle_ms;
    Hint h{.idle_ms = floor_ms,
           .keepalive_ms = keepalive_below(floor_ms),
           .cluster_resets = cluster ? cluster->count : 0,
           .cluster_median_ms = cluster ? cluster->median_ms : 0};
    switch (cause) {
    case Cause::KeepaliveRace: h.code = HintCode::BackendIdleTimeout; break;
    case Cause::MiddleboxIdle:
        h.code = HintCode::MiddleboxIdleTimeout;
        h.address = r.remote;
        break;
    case Cause::Unknown: h.code = unknown_code; break;
    default: h.code = HintCode::RestartedUnderPool; break;
    }
    return h;
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
