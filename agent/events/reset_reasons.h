// Names of the kernel's `enum sk_rst_reason` (Linux 6.10+), read from the
// tcp_send_reset tracepoint's format file. The numbering changes between
// kernel versions (6.11 inserted values before MPTCP_*), so the names are
// never hard-coded: the running kernel says what each number means.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rstwatch {

class ResetReasonNames {
public:
    // Parses the `__print_symbolic(REC->reason, { 0, "NOT_SPECIFIED" }, ...)`
    // of the format's `print fmt:` line. A format without a reason field
    // (kernels before 6.10) gives an empty table, not an error. Returns
    // nullopt and sets *error (if given) when the text is not a tracepoint
    // format or its reason list cannot be read.
    static std::optional<ResetReasonNames> parse_format(std::string_view format_text,
                                                        std::string *error);

    // "NOT_SPECIFIED", ..., or "REASON_<n>" for a number the kernel did not name.
    std::string name(uint32_t code) const;
    const std::map<uint32_t, std::string> &names() const { return names_; }
    bool empty() const { return names_.empty(); }
    size_t size() const { return names_.size(); }

private:
    std::map<uint32_t, std::string> names_;
};

}  // namespace rstwatch
