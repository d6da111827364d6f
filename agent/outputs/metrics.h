// Prometheus metrics for fleets: the agent's counters in the text
// exposition format 0.0.4, served over HTTP by MetricsServer (metrics_server.h).
//
// Cardinality is bounded: no pids or client ports as labels, and at most
// kMaxUpstreams distinct upstream label values (later ones become
// upstream="other"). Labels of non-upstream resets carry upstream="".
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>

#include "events/loss.h"
#include "events/records.h"

namespace rstwatch {

// Updated by the run loop, rendered by the HTTP thread: everything behind one mutex.
class Metrics {
public:
    static constexpr size_t kMaxUpstreams = 64;
    // Upper bounds of rstwatch_reset_idle_seconds, in seconds.
    static constexpr std::array<double, 13> kIdleBuckets = {0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900};

    // Counts a reported event (a reset or an OOM kill).
    void add(const Event &e);
    void set_lost(const LossCounts &lost);
    void set_ring_buffer_fill(double ratio);
    LossCounts lost() const;

    // The exposition text; rss_bytes is the agent's resident set.
    std::string render(uint64_t rss_bytes) const;

private:
    using ResetKey = std::tuple<std::string, std::string, std::string, std::string>;  // direction, role, upstream, cause

    mutable std::mutex mu_;
    std::map<ResetKey, uint64_t> resets_;
    std::set<std::string> upstreams_;
    uint64_t oom_kills_ = 0;
    std::array<uint64_t, kIdleBuckets.size()> idle_buckets_{};  // non-cumulative
    uint64_t idle_count_ = 0;
    double idle_sum_s_ = 0;
    LossCounts lost_;
    double ring_fill_ = 0;
};

// The agent's resident set size from /proc/self/statm; 0 if unreadable.
uint64_t self_rss_bytes();

// "127.0.0.1:9477", "[::1]:9477", "0.0.0.0:9477" or a bare port (loopback).
struct ListenAddress {
    std::string host;
    uint16_t port = 0;
};
// nullopt with *error set when it is not one of those.
std::optional<ListenAddress> parse_listen_address(const std::string &text, std::string *error);
bool is_loopback_host(const std::string &host);

}  // namespace rstwatch
