// What `rstwatch run` needs from the kernel and the process, checked against
// the KernelFeatures interface so that tests can stand in a lesser kernel.
#include "kernel/kernel_features.h"

#include <utility>

namespace rstwatch {

namespace {

// CAP_BPF and CAP_PERFMON arrived in Linux 5.8; older headers lack them.
constexpr int kCapNetAdmin = 12;
constexpr int kCapSysAdmin = 21;
constexpr int kCapPerfmon = 38;
constexpr int kCapBpf = 39;

}  // namespace

const std::vector<std::string> kRequiredTracepoints = {
    "tcp_receive_reset",  // a reset arrived (Linux 4.16+ with BTF typing)
    "tcp_send_reset",     // a reset left
};

// Where every reset is sent from, for kernels whose tcp:tcp_send_reset
// misses the socketless ones (before 6.10); where a received reset and the
// SYN-ACK of a connect() are handled, for TTLs without tcp:tcp_probe.
const std::vector<std::string> kProbedFunctions = {"tcp_v4_send_reset", "tcp_v6_send_reset", "tcp_reset",
                                                   "tcp_finish_connect"};

// oom:mark_victim passed the victim's pid until Linux 6.8, its task since.
const std::vector<std::string> kProbedTracepointArgs = {"mark_victim"};

// oom:mark_victim's record gained the victim's comm and RSS in Linux 6.8.
const std::vector<std::string> kProbedStructs = {"trace_event_raw_mark_victim"};

std::vector<std::string> missing_prerequisites(const KernelFeatures &kernel)
{
    std::vector<std::string> missing;
    // The effective capabilities, not the uid: root in a container, or under
    // a unit's CapabilityBoundingSet, may lack them, and then loading fails
    // with a bare EPERM. The kernel takes CAP_SYS_ADMIN for any of the three.
    std::string lacking;
    for (auto [cap, name] : {std::pair{kCapBpf, "CAP_BPF"}, {kCapPerfmon, "CAP_PERFMON"}, {kCapNetAdmin, "CAP_NET_ADMIN"}})
        if (!kernel.has_capability(cap) && !kernel.has_capability(kCapSysAdmin))
            lacking += std::string(lacking.empty() ? "" : ", ") + name;
    if (!lacking.empty())
        missing.push_back("missing privileges: " + lacking +
                          (kernel.is_root() ? " (root, but without them: a container's or a unit's capability "
                                              "bounding set?)"
                                            : " (run as root, or grant them)") +
                          "; the bind() hooks are cgroup socket programs (CAP_NET_ADMIN), and CAP_SYS_PTRACE finds "
                          "the listening sockets opened before the agent");
    if (kernel.cgroup2_mount().empty())
        missing.push_back("no cgroup v2 hierarchy is mounted: rstwatch attaches its bind() "
                          "hooks to its root; mount it, e.g. mount -t cgroup2 none /sys/fs/cgroup/unified");
    if (!kernel.has_vmlinux_btf()) {
        missing.push_back("the kernel has no BTF (/sys/kernel/btf/vmlinux): rstwatch needs a kernel "
                          "built with CONFIG_DEBUG_INFO_BTF=y");
        return missing;  // tracepoints cannot be checked without BTF
    }
    for (const auto &tp : kRequiredTracepoints)
        if (!kernel.has_btf_tracepoint(tp))
            missing.push_back("the kernel lacks the tracepoint " + tp +
                              " (tcp:tcp_receive_reset and tcp:tcp_send_reset need Linux 4.16+)");
    // Functions of the kernel that exist exactly when the facility does.
    for (auto [function, facility] : {std::pair{"bpf_ringbuf_output", "the BPF ring buffer"},
                                      {"bpf_iter_task", "the BPF task iterator"}})
        if (!kernel.has_kernel_function(function))
            missing.push_back(std::string("the kernel lacks ") + facility +
                              " (Linux 5.8+): rstwatch needs Linux 5.8 or later with BTF");
    return missing;
}

}  // namespace rstwatch
