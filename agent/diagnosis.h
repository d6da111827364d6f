// Why did this upstream connection get reset? The diagnosis engine: pure
// logic over decoded events, fed in ring-buffer order (which is the order
// the kernel reserved them in: a backend's own reset and an OOM kill are
// always reserved before nginx's socket receives the reset they cause).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "records.h"

namespace rstwatch {

// Pool idle times of resets on reused connections that sit together: a
// backend's keepalive timeout or a middlebox's idle timeout shows as one.
struct IdleCluster {
    std::string upstream;
    Cause cause = Cause::Unknown;  // the most common cause among its resets
    size_t count = 0;
    double min_ms = 0, median_ms = 0, max_ms = 0;
    std::string hint;
};

class Diagnoser {
public:
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

    // Every event goes through here. Resets with an owner get a diagnosis;
    // ownerless resets (the backend's side, seen on this host) and OOM
    // kills are remembered as evidence for what follows.
    std::optional<Diagnosis> observe(const Event &event);

    // Clusters of pool idle times, per upstream, largest first.
    std::vector<IdleCluster> idle_clusters() const;

private:
    struct IdleSample {
        double pool_idle_ms;
        Cause cause;
    };

    Diagnosis diagnose(const ResetEvent &reset) const;
    Diagnosis diagnose_upstream_received(const ResetEvent &reset) const;
    const ResetEvent *backend_side_of(const ResetEvent &reset) const;
    const OomEvent *oom_kill_of(uint32_t pid, uint64_t before_ns) const;
    std::optional<IdleCluster> cluster_for(const std::string &upstream, const std::vector<IdleSample> &samples) const;
    void remember_idle(const ResetEvent &reset, Cause cause);
    std::string idle_hint(const ResetEvent &reset, Cause cause) const;

    std::deque<ResetEvent> recent_peers_;
    std::deque<OomEvent> recent_ooms_;
    std::map<std::string, std::deque<IdleSample>> idle_by_upstream_;
};

}  // namespace rstwatch
