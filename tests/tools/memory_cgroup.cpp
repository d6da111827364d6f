#include "memory_cgroup.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "nginx_lab.h"

namespace rstwatch::testlab {

namespace fs = std::filesystem;

namespace {

bool write_text(const fs::path &p, const std::string &value) {
    std::ofstream out(p);
    if (!out) return false;
    out << value;
    out.flush();
    return static_cast<bool>(out);
}

// This process's path in the hierarchy whose /proc/self/cgroup line matches:
// v1 "4:memory:/a/b" (controller list contains "memory"), v2 "0::/a/b".
std::string own_cgroup(bool v2) {
    std::istringstream in(read_file("/proc/self/cgroup"));
    std::string line;
    while (std::getline(in, line)) {
        auto c1 = line.find(':');
        auto c2 = line.find(':', c1 + 1);
        if (c1 == std::string::npos || c2 == std::string::npos) continue;
        std::string ctrls = line.substr(c1 + 1, c2 - c1 - 1);
        std::string path = line.substr(c2 + 1);
        if (v2 && line.compare(0, 3, "0::") == 0) return path;
        if (!v2) {
            std::istringstream cs(ctrls);
            std::string c;
            while (std::getline(cs, c, ','))
                if (c == "memory") return path;
        }
    }
    return "/";
}

}  // namespace

MemoryCgroup::MemoryCgroup(const std::string &name, uint64_t limit_bytes) {
    fs::path root;
    if (fs::exists("/sys/fs/cgroup/memory/memory.limit_in_bytes")) {
        root = "/sys/fs/cgroup/memory";
    } else {
        // v2: the unified mount, wherever it is, with the memory controller on.
        for (const char *m : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
            if (read_file(fs::path(m) / "cgroup.controllers").find("memory") != std::string::npos) {
                root = m;
                v2_ = true;
                break;
            }
        }
    }
    if (root.empty())
        throw std::runtime_error(
            "MemoryCgroup: no memory controller (neither /sys/fs/cgroup/memory nor a cgroup2 mount listing "
            "\"memory\" in cgroup.controllers)");

    std::string own = own_cgroup(v2_);
    parent_ = root / own.substr(own.find_first_not_of('/') == std::string::npos ? own.size()
                                                                                : own.find_first_not_of('/'));
    if (v2_ && read_file(parent_ / "cgroup.subtree_control").find("memory") == std::string::npos) {
        // A v2 child only gets memory.* files when its parent delegates the
        // controller. We do not change the host's delegation: use the root if
        // it already delegates memory, else give up.
        if (read_file(root / "cgroup.subtree_control").find("memory") == std::string::npos)
            throw std::runtime_error("MemoryCgroup: cgroup v2 without the memory controller delegated (" +
                                     (parent_ / "cgroup.subtree_control").string() + ")");
        parent_ = root;
        own = "/";
    }
    path_ = parent_ / name;
    relative_ = (own == "/" ? "" : own) + "/" + name;
    if (mkdir(path_.c_str(), 0755) < 0)
        throw std::runtime_error("MemoryCgroup: mkdir " + path_.string() + ": " + std::strerror(errno));

    const std::string limit = std::to_string(limit_bytes);
    bool ok;
    if (v2_) {
        ok = write_text(path_ / "memory.max", limit);
        if (fs::exists(path_ / "memory.swap.max")) write_text(path_ / "memory.swap.max", "0");
    } else {
        ok = write_text(path_ / "memory.limit_in_bytes", limit);
        // memsw (memory + swap) must be >= the memory limit, set it second.
        if (fs::exists(path_ / "memory.memsw.limit_in_bytes"))
            write_text(path_ / "memory.memsw.limit_in_bytes", limit);
    }
    if (!ok) {
        rmdir(path_.c_str());
        throw std::runtime_error("MemoryCgroup: cannot set the memory limit in " + path_.string());
    }
}

MemoryCgroup::~MemoryCgroup() {
    // Tasks leave a cgroup when they exit (before they are reaped); give a
    // just-killed task a moment, then move stragglers to the parent.
    using namespace std::chrono_literals;
    for (int i = 0; i < 100; ++i) {
        if (rmdir(path_.c_str()) == 0 || errno == ENOENT) return;
        if (i == 50) {
            std::istringstream in(read_file(path_ / "cgroup.procs"));
            std::string pid;
            while (std::getline(in, pid))
                if (!pid.empty()) write_text(parent_ / "cgroup.procs", pid);
        }
        std::this_thread::sleep_for(20ms);
    }
}

void MemoryCgroup::add(pid_t pid) {
    if (!write_text(path_ / "cgroup.procs", std::to_string(pid)))
        throw std::runtime_error("MemoryCgroup: cannot move pid " + std::to_string(pid) + " into " + path_.string());
}

long MemoryCgroup::oom_kills() const {
    std::istringstream in(read_file(path_ / (v2_ ? "memory.events" : "memory.oom_control")));
    std::string key;
    long value;
    while (in >> key >> value)
        if (key == "oom_kill") return value;
    return -1;
}

}  // namespace rstwatch::testlab
