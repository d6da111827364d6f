#include "kernel_features.h"

#include <bpf/btf.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>

#include "procfs.h"

namespace rstwatch {


namespace {

class RunningKernel final : public KernelFeatures {
public:
    bool has_vmlinux_btf() const override { return btf_index().loaded; }

    bool has_btf_tracepoint(const std::string &name) const override
    {
        // Every tracepoint has a "btf_trace_<name>" typedef in vmlinux BTF;
        // that is what the tp_btf attach resolves.
        return btf_index().tracepoints.count(name) > 0;
    }

    bool has_kfunc(const std::string &name) const override { return btf_index().kfuncs.count(name) > 0; }

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

    std::string cgroup2_mount() const override { return procfs::cgroup2_root(); }

private:
    struct BtfIndex {
        bool loaded = false;
        std::set<std::string> tracepoints;  // names with a btf_trace_ typedef
        std::set<std::string> kfuncs;       // those of kRequiredKfuncs it has
    };

    // The parsed vmlinux BTF takes about 5 MiB for the agent's whole life if
    // kept; keep only the tracepoint names it has, and which kfuncs we need.
    const BtfIndex &btf_index() const
    {
        std::call_once(btf_once_, [this] {
            std::unique_ptr<struct btf, decltype(&btf__free)> b(btf__load_vmlinux_btf(), btf__free);
            if (!b)
                return;
            index_.loaded = true;
            static const std::string prefix = "btf_trace_";
            for (__u32 id = 1; id < btf__type_cnt(b.get()); id++) {
                const struct btf_type *t = btf__type_by_id(b.get(), id);
                if (!t || !(btf_is_typedef(t) || btf_is_func(t)))
                    continue;
                const char *name = btf__name_by_offset(b.get(), t->name_off);
                if (!name)
                    continue;
                if (btf_is_func(t)) {
                    if (std::find(kRequiredKfuncs.begin(), kRequiredKfuncs.end(), name) != kRequiredKfuncs.end())
                        index_.kfuncs.insert(name);
                } else if (std::strncmp(name, prefix.c_str(), prefix.size()) == 0) {
                    index_.tracepoints.insert(name + prefix.size());
                }
            }
        });
        return index_;
    }

    mutable std::once_flag btf_once_;
    mutable BtfIndex index_;
};

}  // namespace

const KernelFeatures &running_kernel()
{
    static RunningKernel kernel;
    return kernel;
}

}  // namespace rstwatch
