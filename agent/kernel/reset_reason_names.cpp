#include "kernel/reset_reason_names.h"

#include <fstream>
#include <sstream>

#include "kernel/kernel_features.h"

namespace rstwatch {

const std::vector<std::string> kProbedEnumValues = {"sk_rst_reason"};

namespace {

void set_error(std::string *error, std::string text)
{
    if (error)
        *error = std::move(text);
}

// The tracepoint's format file under the first tracefs mount that has one.
std::optional<ResetReasonTable> from_tracefs(const std::vector<std::string> &tracefs_roots, std::string &problems)
{
    for (const std::string &root : tracefs_roots) {
        std::string path = root + "/events/tcp/tcp_send_reset/format";
        std::ifstream in(path);
        if (!in) {
            problems += (problems.empty() ? "" : "; ") + path + ": cannot read";
            continue;
        }
        std::ostringstream text;
        text << in.rdbuf();
        std::string parse_error;
        if (auto table = ResetReasonTable::parse_format(text.str(), &parse_error))
            return table;
        problems += (problems.empty() ? "" : "; ") + path + ": " + parse_error;
    }
    return std::nullopt;
}

}  // namespace

ResetReasonTable load_reset_reasons(const KernelFeatures &kernel, std::string *error)
{
    return load_reset_reasons(kernel.has_vmlinux_btf(), kernel.btf_enum_values("sk_rst_reason"),
                              {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}, error);
}

ResetReasonTable load_reset_reasons(bool btf_loaded, const std::vector<std::pair<std::string, uint32_t>> &btf_enumerators,
                                    const std::vector<std::string> &tracefs_roots, std::string *error)
{
    if (error)
        error->clear();
    // BTF needs no tracefs mount and is what the programs were loaded against.
    if (!btf_enumerators.empty())
        return ResetReasonTable::from_enumerators(btf_enumerators);
    std::string problems;
    if (auto table = from_tracefs(tracefs_roots, problems))
        return *table;
    // The kernel's BTF has every type its tracepoints use: without the
    // enum, this kernel has no reasons (before 6.10).
    if (btf_loaded)
        return {};
    set_error(error, "no kernel BTF, and " + problems + "; is tracefs mounted and are we root?");
    return {};
}

}  // namespace rstwatch
