// Attribution of connections opened before the agent attached. Users attach
// when the trouble starts, with nginx's keepalive pool already full, and
// those pooled connections are the ones that get reset.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "tracking_filter.h"

namespace rstwatch {

struct SeedReport {
    size_t processes = 0;      // tracked processes scanned
    size_t seeded = 0;         // TCP connections given their owner
    size_t already_known = 0;  // claimed by the BPF side since attach
    std::vector<std::string> problems;  // per-process failures, for the log
};

// For every process the filter tracks, duplicates its TCP sockets with
// pidfd_getfd(2) and writes the owner into the socket-storage map, keyed by
// the duplicate fd (the kernel resolves it to the same socket). Call after
// attaching, so that nothing opened in between is missed; existing entries
// are never overwritten. Each upstream connection's server goes into the
// endpoints map, so that the backend's resets are recognised as evidence.
SeedReport seed_existing_connections(int conns_map_fd, int endpoints_map_fd, const TrackingFilter &filter);

}  // namespace rstwatch
