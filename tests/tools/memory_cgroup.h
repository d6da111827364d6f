// A memory-limited cgroup for the OOM scenario: the backend is moved in
// before it allocates, so the kernel's memcg OOM killer ends it (and only it).
//
// Works with whichever memory controller the host has: cgroup v1
// (/sys/fs/cgroup/memory: memory.limit_in_bytes, memory.memsw.limit_in_bytes)
// or cgroup v2 (memory.max, memory.swap.max). The group is created below the
// test's own cgroup, so it stays inside whatever limits the test runs under.
// The destructor removes it (rmdir once its tasks are gone).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>

namespace rstwatch::testlab {

class MemoryCgroup {
public:
    // Creates <own cgroup>/<name> with limit_bytes of memory and no swap.
    // Throws std::runtime_error (with what to check) when no memory controller
    // is usable.
    MemoryCgroup(const std::string &name, uint64_t limit_bytes);
    ~MemoryCgroup();
    MemoryCgroup(const MemoryCgroup &) = delete;
    MemoryCgroup &operator=(const MemoryCgroup &) = delete;

    // Moves pid (the whole process) in. Throws on failure.
    void add(pid_t pid);

    const std::filesystem::path &path() const { return path_; }
    // The path as /proc/<pid>/cgroup shows it ("/process_api/x/rwt123-oom").
    const std::string &relative_path() const { return relative_; }
    bool v2() const { return v2_; }
    // OOM kills counted by the kernel for this group (v1: memory.oom_control
    // "oom_kill", v2: memory.events "oom_kill"); -1 when unreadable.
    long oom_kills() const;

private:
    std::filesystem::path path_;
    std::filesystem::path parent_;
    std::string relative_;
    bool v2_ = false;
};

}  // namespace rstwatch::testlab
