// What the running kernel and process can do, asked once and cached, behind
// an interface so that unit tests can substitute a kernel that lacks things.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace rstwatch {

class KernelFeatures {
public:
    virtual ~KernelFeatures() = default;
    virtual bool has_vmlinux_btf() const = 0;
    // A BTF-typed tracepoint (tp_btf) named like "tcp_receive_reset".
    virtual bool has_btf_tracepoint(const std::string &name) const = 0;
    // A function in the kernel's BTF whose name starts with "bpf_": a kfunc
    // such as "bpf_iter_task", or a helper's implementation.
    virtual bool has_kernel_function(const std::string &name) const = 0;
    // An enum type in the kernel's BTF, such as "sk_rst_reason".
    virtual bool has_btf_enum(const std::string &name) const = 0;
    // Its enumerators, (name, value); only the enums in kProbedEnumValues
    // are looked at. Empty when the kernel has no such enum.
    virtual std::vector<std::pair<std::string, uint32_t>> btf_enum_values(const std::string &name) const = 0;
    // A member of a struct in the kernel's BTF; only the structs in
    // kProbedStructs are looked at.
    virtual bool has_struct_member(const std::string &type, const std::string &member) const = 0;
    // Whether ftrace can attach fentry programs to this kernel function
    // (tracefs lists it in available_filter_functions).
    virtual bool can_trace_function(const std::string &name) const = 0;
    // Whether the kernel function takes a parameter of this name (its BTF
    // prototype): an fentry program can read only the arguments there are.
    // Only the functions in kProbedFunctions are looked at.
    virtual bool function_has_param(const std::string &function, const std::string &param) const = 0;
    // Whether the tracepoint's first argument is a pointer (its BTF
    // prototype); only the tracepoints in kProbedTracepointArgs are looked at.
    virtual bool tracepoint_first_arg_is_pointer(const std::string &name) const = 0;
    // A classic tracepoint "category/name" in tracefs or BTF.
    virtual bool has_classic_tracepoint(const std::string &category, const std::string &name) const = 0;
    // CONFIG_HZ, the rate of the jiffies the tcp_sock stamps in; 0 unknown.
    virtual unsigned jiffies_hz() const = 0;
    virtual bool is_root() const = 0;
    virtual bool has_capability(int cap) const = 0;
    // Where the cgroup v2 hierarchy is mounted ("/sys/fs/cgroup", or
    // "/sys/fs/cgroup/unified" on a hybrid host); empty if nowhere.
    virtual std::string cgroup2_mount() const = 0;
};

// The kernel this process runs on.
const KernelFeatures &running_kernel();

// The tracepoints the agent cannot work without.
extern const std::vector<std::string> kRequiredTracepoints;
// The functions can_trace_function() and function_has_param() can answer for.
extern const std::vector<std::string> kProbedFunctions;
// The tracepoints tracepoint_first_arg_is_pointer() can answer for.
extern const std::vector<std::string> kProbedTracepointArgs;
// The structs whose members has_struct_member() can answer for.
extern const std::vector<std::string> kProbedStructs;
// The enums whose enumerators btf_enum_values() can answer for.
extern const std::vector<std::string> kProbedEnumValues;

// Everything missing for `rstwatch run`, as messages a person can act on;
// empty when the agent can load.
std::vector<std::string> missing_prerequisites(const KernelFeatures &kernel);

}  // namespace rstwatch
