#include "kernel/kernel_features.h"

#include <bpf/btf.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>

#include "kernel/procfs.h"

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

    bool has_kernel_function(const std::string &name) const override { return btf_index().functions.count(name) > 0; }

    bool has_btf_enum(const std::string &name) const override { return btf_index().enums.count(name) > 0; }

    std::vector<std::pair<std::string, uint32_t>> btf_enum_values(const std::string &name) const override
    {
        auto it = btf_index().enum_values.find(name);
        return it != btf_index().enum_values.end() ? it->second : std::vector<std::pair<std::string, uint32_t>>{};
    }

    bool tracepoint_first_arg_is_pointer(const std::string &name) const override
    {
        return btf_index().pointer_first_args.count(name) > 0;
    }

    bool has_struct_member(const std::string &type, const std::string &member) const override
    {
        return btf_index().members.count(type + "." + member) > 0;
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

    bool function_has_param(const std::string &function, const std::string &param) const override
    {
        return btf_index().params.count(function + "." + param) > 0;
    }

    bool can_trace_function(const std::string &name) const override
    {
        std::call_once(traceable_once_, [this] {
            for (const char *root : {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}) {
                std::ifstream in(std::string(root) + "/available_filter_functions");
                std::string line;
                while (std::getline(in, line)) {
                    // "name" or "name [module]"
                    std::string fn = line.substr(0, line.find(' '));
                    if (std::find(kProbedFunctions.begin(), kProbedFunctions.end(), fn) != kProbedFunctions.end())
                        traceable_.insert(fn);
                }
                if (!traceable_.empty())
                    break;
            }
        });
        return traceable_.count(name) > 0;
    }

    unsigned jiffies_hz() const override
    {
        std::call_once(hz_once_, [this] { hz_ = config_hz().value_or(measured_hz()); });
        return hz_;
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
        std::set<std::string> functions;    // those named bpf_*
        std::set<std::string> enums;
        std::map<std::string, std::vector<std::pair<std::string, uint32_t>>> enum_values;  // of kProbedEnumValues
        std::set<std::string> members;      // "struct.member" of kProbedStructs
        std::set<std::string> params;       // "function.param" of kProbedFunctions
        std::set<std::string> pointer_first_args;  // of kProbedTracepointArgs
    };

    // The parsed vmlinux BTF takes about 5 MiB for the agent's whole life if
    // kept; keep only the names the probes ask about.
    const BtfIndex &btf_index() const
    {
        std::call_once(btf_once_, [this] {
            std::unique_ptr<struct btf, decltype(&btf__free)> b(btf__load_vmlinux_btf(), btf__free);
            if (!b)
                return;
            index_.loaded = true;
            for (__u32 id = 1; id < btf__type_cnt(b.get()); id++)
                index_type(b.get(), btf__type_by_id(b.get(), id));
        });
        return index_;
    }

    // btf_trace_<name> is a pointer to a prototype (void *ctx, the
    // tracepoint's arguments...): its second parameter is the first argument.
    static bool first_arg_is_pointer(const struct btf *b, const struct btf_type *typedef_type)
    {
        const struct btf_type *ptr = btf__type_by_id(b, typedef_type->type);
        if (!ptr || !btf_is_ptr(ptr))
            return false;
        const struct btf_type *proto = btf__type_by_id(b, ptr->type);
        if (!proto || !btf_is_func_proto(proto) || btf_vlen(proto) < 2)
            return false;
        const struct btf_type *arg = btf__type_by_id(b, btf__resolve_type(b, btf_params(proto)[1].type));
        return arg && btf_is_ptr(arg);
    }

    void index_type(const struct btf *b, const struct btf_type *t) const
    {
        static const std::string trace_prefix = "btf_trace_";
        const char *name = t ? btf__name_by_offset(b, t->name_off) : nullptr;
        if (!name || !*name)
            return;
        if (btf_is_typedef(t) && std::strncmp(name, trace_prefix.c_str(), trace_prefix.size()) == 0) {
            const char *tracepoint = name + trace_prefix.size();
            index_.tracepoints.insert(tracepoint);
            if (std::find(kProbedTracepointArgs.begin(), kProbedTracepointArgs.end(), tracepoint) !=
                    kProbedTracepointArgs.end() &&
                first_arg_is_pointer(b, t))
                index_.pointer_first_args.insert(tracepoint);
        } else if (btf_is_func(t) && std::strncmp(name, "bpf_", 4) == 0) {
            index_.functions.insert(name);
        } else if (btf_is_func(t) &&
                   std::find(kProbedFunctions.begin(), kProbedFunctions.end(), name) != kProbedFunctions.end()) {
            index_params(b, t, name);
        } else if (btf_is_any_enum(t)) {
            index_.enums.insert(name);
            if (std::find(kProbedEnumValues.begin(), kProbedEnumValues.end(), name) != kProbedEnumValues.end())
                index_.enum_values[name] = enumerators(b, t);
        } else if (btf_is_struct(t) &&
                   std::find(kProbedStructs.begin(), kProbedStructs.end(), name) != kProbedStructs.end()) {
            const struct btf_member *m = btf_members(t);
            for (__u16 i = 0; i < btf_vlen(t); i++, m++)
                index_.members.insert(std::string(name) + "." + btf__name_by_offset(b, m->name_off));
        }
    }

    // A FUNC's type is its prototype, whose parameters have names.
    void index_params(const struct btf *b, const struct btf_type *func, const char *name) const
    {
        const struct btf_type *proto = btf__type_by_id(b, func->type);
        if (!proto || !btf_is_func_proto(proto))
            return;
        const struct btf_param *p = btf_params(proto);
        for (__u16 i = 0; i < btf_vlen(proto); i++, p++)
            index_.params.insert(std::string(name) + "." + btf__name_by_offset(b, p->name_off));
    }

    static std::vector<std::pair<std::string, uint32_t>> enumerators(const struct btf *b, const struct btf_type *t)
    {
        std::vector<std::pair<std::string, uint32_t>> values;
        for (__u16 i = 0; i < btf_vlen(t); i++) {
            if (btf_is_enum(t))
                values.emplace_back(btf__name_by_offset(b, btf_enum(t)[i].name_off),
                                    static_cast<uint32_t>(btf_enum(t)[i].val));
            else
                values.emplace_back(btf__name_by_offset(b, btf_enum64(t)[i].name_off),
                                    static_cast<uint32_t>(btf_enum64_value(btf_enum64(t) + i)));
        }
        return values;
    }

    // CONFIG_HZ from the kernel's config file, where the distribution
    // installs it (Debian does, next to the kernel).
    static std::optional<unsigned> config_hz()
    {
        utsname uts{};
        if (uname(&uts) != 0)
            return std::nullopt;
        std::ifstream in(std::string("/boot/config-") + uts.release);
        std::string line;
        while (std::getline(in, line))
            if (line.rfind("CONFIG_HZ=", 0) == 0)
                return static_cast<unsigned>(std::strtoul(line.c_str() + 10, nullptr, 10));
        return std::nullopt;
    }

    // Else measured: /proc/timer_list gives the time and the jiffies count;
    // two readings 100 ms apart, rounded to the rates kernels are built
    // with; a reading too far from every rate (a busy VM's late ticks) is
    // taken again, three times at most.
    static unsigned measured_hz()
    {
        auto sample = [](uint64_t &ns, uint64_t &jiffies) {
            std::ifstream in("/proc/timer_list");
            std::string line;
            bool have_ns = false;
            while (std::getline(in, line)) {
                if (std::sscanf(line.c_str(), "now at %" SCNu64 " nsecs", &ns) == 1)
                    have_ns = true;
                else if (have_ns && std::sscanf(line.c_str(), "jiffies: %" SCNu64, &jiffies) == 1)
                    return true;
            }
            return false;
        };
        for (int attempt = 0; attempt < 3; attempt++) {
            uint64_t ns0, j0, ns1, j1;
            if (!sample(ns0, j0))
                return 0;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            if (!sample(ns1, j1) || ns1 <= ns0)
                return 0;
            const double rate = (j1 - j0) * 1e9 / (ns1 - ns0);
            unsigned best = 0;
            for (unsigned hz : {100u, 250u, 300u, 1000u})
                if (!best || std::abs(rate - hz) < std::abs(rate - best))
                    best = hz;
            if (std::abs(rate - best) < best * 0.1)
                return best;
        }
        return 0;
    }

    mutable std::once_flag hz_once_;
    mutable unsigned hz_ = 0;
    mutable std::once_flag btf_once_, traceable_once_;
    mutable std::set<std::string> traceable_;
    mutable BtfIndex index_;
};

}  // namespace

const KernelFeatures &running_kernel()
{
    static RunningKernel kernel;
    return kernel;
}

}  // namespace rstwatch
