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


namespace {

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

}  // namespace rstwatch
