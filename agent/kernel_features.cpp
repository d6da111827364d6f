#include "kernel_features.h"

#include <bpf/btf.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>

namespace rstwatch {

const std::vector<std::string> kRequiredTracepoints = {
    "tcp_receive_reset",    // a reset arrived (Linux 4.16+ with BTF typing)
    "tcp_send_reset",       // a reset left
    "inet_sock_set_state",  // connect(): who owns an upstream connection
};

namespace {

// CAP_BPF and CAP_PERFMON arrived in Linux 5.8; older headers lack them.
constexpr int kCapPerfmon = 38;
constexpr int kCapBpf = 39;

class RunningKernel final : public KernelFeatures {
public:
    bool has_vmlinux_btf() const override { return vmlinux_btf() != nullptr; }

    bool has_btf_tracepoint(const std::string &name) const override
    {
        // Every tracepoint has a "btf_trace_<name>" typedef in vmlinux BTF;
        // that is what the tp_btf attach resolves.
        const struct btf *b = vmlinux_btf();
        return b && btf__find_by_name_kind(b, ("btf_trace_" + name).c_str(), BTF_KIND_TYPEDEF) > 0;
    }

    bool has_classic_tracepoint(const std::string &category, const std::string &name) const override
    {
        for (const char *root : {"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"}) {
            std::error_code ec;
            if (std::filesystem::exists(std::string(root) + "/" + category + "/" + name, ec))
                return true;
        }
        return has_btf_tracepoint(name);
    }

    bool is_root() const override { return geteuid() == 0; }

    bool has_capability(int cap) const override
    {
        __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
        __user_cap_data_struct data[2] = {};
        if (syscall(SYS_capget, &header, data) != 0)
            return false;
        return data[cap / 32].effective & (1u << (cap % 32));
    }

private:
    const struct btf *vmlinux_btf() const
    {
        std::call_once(btf_once_, [this] {
            struct btf *b = btf__load_vmlinux_btf();
            if (b)
                btf_.reset(b);
        });
        return btf_.get();
    }

    mutable std::once_flag btf_once_;
    mutable std::unique_ptr<struct btf, decltype(&btf__free)> btf_{nullptr, btf__free};
};

}  // namespace

const KernelFeatures &running_kernel()
{
    static RunningKernel kernel;
    return kernel;
}

std::vector<std::string> missing_prerequisites(const KernelFeatures &kernel)
{
    std::vector<std::string> missing;
    if (!kernel.is_root() &&
        !(kernel.has_capability(kCapBpf) && kernel.has_capability(kCapPerfmon)))
        missing.push_back("missing privileges: run as root, or grant CAP_BPF and CAP_PERFMON "
                          "(plus CAP_SYS_PTRACE to attribute connections opened before the agent)");
    if (!kernel.has_vmlinux_btf()) {
        missing.push_back("the kernel has no BTF (/sys/kernel/btf/vmlinux): rstwatch needs a kernel "
                          "built with CONFIG_DEBUG_INFO_BTF=y");
        return missing;  // tracepoints cannot be checked without BTF
    }
    for (const auto &tp : kRequiredTracepoints)
        if (!kernel.has_btf_tracepoint(tp))
            missing.push_back("the kernel lacks the tracepoint " + tp +
                              " (tcp:tcp_receive_reset and tcp:tcp_send_reset need Linux 4.16+)");
    return missing;
}

}  // namespace rstwatch
