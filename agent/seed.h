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
    size_t already_known = 0;  // seeded already: a socket several processes hold (fork shares it)
    size_t listeners = 0;      // listening sockets: their accepted connections are downstream
    std::vector<std::string> problems;  // per-process failures, for the log
};

// The BPF maps seeding writes (BpfSession::seed_maps()).
struct SeedMaps {
    int conns = -1;               // owners of connections older than the agent, by socket cookie
    int upstream_endpoints = -1;  // servers tracked processes connect to
    int listeners = -1;           // sockets tracked processes listen on
    int bound_sockets = -1;       // the listening sockets behind them, by cookie: entries leave with them
};

// For every process the filter tracks, duplicates its TCP sockets with
// pidfd_getfd(2) and writes the owner into the owner table, keyed by the
// socket's cookie (SO_COOKIE). Call after attaching, so that nothing
// opened in between is missed; existing entries are never overwritten.
// Each upstream connection's server goes into the endpoints map, so that
// the backend's resets are recognised as evidence, and each listening
// socket into the listeners map, owned by the top of the process family
// holding it (nginx's master, not the workers that inherited it).
SeedReport seed_existing_connections(const SeedMaps &maps, const TrackingFilter &filter);

}  // namespace rstwatch
