// The listening sockets of tracked processes that predate the agent. A
// connection's owner needs no seeding (it is read from the socket's file at
// the reset), but whether a connection was accepted, and whose it is once
// its worker has closed it, comes from the listener it was accepted from,
// which bind() recorded before the agent was there.
#pragma once

#include <linux/types.h>

#include <cstddef>
#include <string>
#include <vector>

#include "kernel/tracking_filter.h"

namespace rstwatch {

struct SeedReport {
    size_t processes = 0;  // tracked processes scanned
    size_t listeners = 0;  // listening endpoints recorded
    std::vector<std::string> problems;  // per-process failures, for the log
};

// For every process the filter tracks, duplicates its TCP sockets with
// pidfd_getfd(2) and writes each listening one into the listeners map
// (BpfSession::listeners_map_fd()), owned by the top of the process family
// holding it (nginx's master, not the workers that inherited it), and its
// port into the map's port bits (BpfSession::listened_ports()). Call
// after attaching, so that nothing bound in between is missed; a bind()
// since attach keeps its entry.
SeedReport seed_listeners(int listeners_fd, __u8 *listened_ports, const TrackingFilter &filter);

// Removes the listeners whose process is gone (stopped or restarted nginx):
// their endpoint may be another process's next. Returns how many went.
size_t sweep_listeners(int listeners_fd);

}  // namespace rstwatch
