// Why did this upstream connection get reset? The diagnosis engine: pure
// logic over decoded events in ring-buffer order. It concludes in codes and
// numbers (events/evidence.h); agent/outputs puts them into words.
//
// Evidence can arrive on either side of the reset it explains: an OOM kill
// is always reserved first, but tcp_send_active_reset() fires its
// tracepoint after transmitting, and over loopback or a veth the peer
// receives the reset inside that transmit, so the backend's own record
// follows nginx's. Events are therefore held back briefly and diagnosed
// with what arrived around them.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "events/records.h"

namespace rstwatch {

// Pool idle times of resets on reused connections that sit together: a
// backend's keepalive timeout or a middlebox's idle timeout shows as one.
struct IdleCluster {
    std::string upstream;
    Cause cause = Cause::Unknown;  // the most common cause among its resets
    size_t count = 0;
    double min_ms = 0, median_ms = 0, max_ms = 0;
    Hint hint;
};

// What the running kernel can show (agent/kernel/kernel_support.h): an absent
// record means "did not happen" only where the kernel would have traced it.
struct KernelEvidence {
    // tcp:tcp_send_reset fires for resets sent without a connection socket
    // (a restarted backend's kernel, a TIME_WAIT socket): Linux 6.10+.
    bool socketless_sent_resets = true;
    // oom:mark_victim is traced: a SIGKILL without an OOM record is no OOM kill.
    bool oom_kills = true;
};

class Diagnoser {
public:
    explicit Diagnoser(KernelEvidence kernel = {}) : kernel_(kernel) {}

    // How far back a backend-side reset or an OOM kill may lie.
    static constexpr uint64_t kPeerWindowNs = 2'000'000'000ULL;
    static constexpr uint64_t kOomWindowNs = 30'000'000'000ULL;
    // A reset this soon after nginx sent a request answered that request.
    static constexpr double kPromptResetMs = 200.0;
    // Memory bounds: the agent runs for days.
    static constexpr size_t kMaxRecentPeers = 4096;
    static constexpr size_t kMaxRecentOoms = 256;
    static constexpr size_t kMaxIdleSamplesPerUpstream = 256;
    static constexpr size_t kMaxUpstreams = 1024;

    // How long an event waits for evidence that arrives after it.
    static constexpr uint64_t kHoldBackNs = 50'000'000ULL;

    // Every event goes through here, in ring-buffer order: sent resets
    // (the backend's side, seen on this host) and OOM kills are evidence.
    void add(Event event);
    // Events older than the hold-back at `now_mono_ns`, in arrival order,
    // resets with an owner diagnosed.
    std::vector<Event> take_ready(uint64_t now_mono_ns);
    // Everything still held, at exit.
    std::vector<Event> take_all() { return take_ready(UINT64_MAX); }
    // Whether events are waiting for their hold-back to pass.
    bool holding() const { return !held_.empty(); }
    size_t held() const { return held_.size(); }

    // Clusters of pool idle times, per upstream, largest first.
    std::vector<IdleCluster> idle_clusters() const;

private:
    struct IdleSample {
        double pool_idle_ms;
        Cause cause;
    };

    Diagnosis diagnose(const ResetEvent &reset) const;
    Diagnosis diagnose_upstream_received(const ResetEvent &reset) const;
    void diagnose_with_backend_side(const ResetEvent &reset, const ResetEvent &peer, Diagnosis &d) const;
    void diagnose_backend_exit(const ResetEvent &reset, const ResetEvent &peer, Diagnosis &d) const;
    void diagnose_from_afar(const ResetEvent &reset, Diagnosis &d) const;
    void unknown_without_socketless_resets(const ResetEvent &reset, Diagnosis &d) const;
    void unknown_after_stalled_segments(const ResetEvent &reset, Diagnosis &d) const;
    void unknown_on_a_live_socket(const ResetEvent &reset, Diagnosis &d) const;
    void unknown_on_reuse(const ResetEvent &reset, Diagnosis &d) const;
    const ResetEvent *backend_side_of(const ResetEvent &reset) const;
    const OomEvent *oom_kill_of(uint32_t pid, uint64_t before_ns) const;
    std::optional<IdleCluster> cluster_for(const std::string &upstream, const std::vector<IdleSample> &samples) const;
    void remember_idle(const ResetEvent &reset, Cause cause);
    // unknown_code: the hint of an unknown cause on reuse, given the cluster.
    Hint idle_hint(const ResetEvent &reset, Cause cause,
                   HintCode unknown_code = HintCode::KeepaliveBelowPoolIdleRemote) const;

    Diagnosis diagnose_and_learn(const ResetEvent &reset);
    void forget_oldest_peer();

    KernelEvidence kernel_;
    std::deque<Event> held_;
    std::deque<ResetEvent> recent_peers_;
    // recent_peers_ by flow (local, remote): at 20k resets/s a linear scan
    // of the 4096 kept was 60% of the agent's CPU (perf). A deque's
    // elements stay where they are when either end grows or shrinks.
    std::unordered_multimap<std::string, const ResetEvent *> peers_by_flow_;
    std::deque<OomEvent> recent_ooms_;
    std::map<std::string, std::deque<IdleSample>> idle_by_upstream_;
};

}  // namespace rstwatch
