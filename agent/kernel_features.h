// What the running kernel and process can do, asked once and cached, behind
// an interface so that unit tests can substitute a kernel that lacks things.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace rstwatch {

class KernelFeatures {
public:
    virtual ~KernelFeatures() = default;
    virtual bool has_vmlinux_btf() const = 0;
    // A BTF-typed tracepoint (tp_btf) named like "tcp_receive_reset".
    virtual bool has_btf_tracepoint(const std::string &name) const = 0;
    // A kernel function BPF programs may call (a kfunc), such as
    // "bpf_iter_task_new"; only those in kRequiredKfuncs are looked for.
    virtual bool has_kfunc(const std::string &name) const = 0;
    // A classic tracepoint "category/name" in tracefs or BTF.
    virtual bool has_classic_tracepoint(const std::string &category, const std::string &name) const = 0;
    virtual bool is_root() const = 0;
    virtual bool has_capability(int cap) const = 0;
    // Where the cgroup v2 hierarchy is mounted ("/sys/fs/cgroup", or
    // "/sys/fs/cgroup/unified" on a hybrid host); empty if nowhere.
    virtual std::string cgroup2_mount() const = 0;
};

// The kernel this process runs on.
const KernelFeatures &running_kernel();

// The tracepoints and kfuncs the agent cannot work without.
extern const std::vector<std::string> kRequiredTracepoints;
extern const std::vector<std::string> kRequiredKfuncs;

// Everything missing for `rstwatch run`, as messages a person can act on;
// empty when the agent can load.
std::vector<std::string> missing_prerequisites(const KernelFeatures &kernel);

}  // namespace rstwatch
