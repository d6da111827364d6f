// Small readers of /proc. Each returns nothing rather than throwing: a
// process may exit between two reads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rstwatch::procfs {

bool pid_exists(uint32_t pid);
std::vector<uint32_t> list_pids();
std::optional<std::string> comm(uint32_t pid);
std::optional<uint32_t> parent_pid(uint32_t pid);
// The cgroup a process is in: the memory controller's path on cgroup v1,
// the unified path otherwise; "" when unreadable.
std::string cgroup_path(uint32_t pid);
// File descriptors of a process that are sockets.
std::vector<int> socket_fds(uint32_t pid);

// Parses /proc/PID/cgroup text (pure, for tests).
std::string cgroup_path_from(const std::string &proc_cgroup_text);

// Where the root of the cgroup v2 hierarchy is mounted ("/sys/fs/cgroup", or
// "/sys/fs/cgroup/unified" on a hybrid host), from /proc/self/mountinfo;
// "" if nowhere. A mount of a subtree (a container's view) is not the root.
std::string cgroup2_root();
std::string cgroup2_root_from(const std::string &mountinfo_text);

}  // namespace rstwatch::procfs
