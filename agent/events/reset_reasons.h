// Why the kernel sent a reset: its `enum sk_rst_reason` (Linux 6.10+).
// The kernel's numbering changes between versions (6.11 inserted values
// before MPTCP_*), so the numbers are never hard-coded here: the agent reads
// the running kernel's numbering once at start-up (agent/kernel, from BTF or
// tracefs) into a ResetReasonTable, and decoding maps each record's number
// through it. Kernels before 6.10 give no reasons at all.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rstwatch {

// The reasons as of Linux 6.18, in its order; Unknown is a number the
// running kernel names something this build does not know, or does not
// name at all.
enum class ResetReason : uint8_t {
    NotSpecified,
    NoSocket,
    TcpInvalidAckSequence,
    TcpRfc7323Paws,
    TcpTooOldAck,
    TcpAckUnsentData,
    TcpFlags,
    TcpOldAck,
    TcpAbortOnData,
    TcpTimewaitSocket,
    InvalidSyn,
    TcpAbortOnClose,
    TcpAbortOnLinger,
    TcpAbortOnMemory,
    TcpState,
    TcpKeepaliveTimeout,
    TcpDisconnectWithData,
    MptcpRstEunspec,
    MptcpRstEmptcp,
    MptcpRstEresource,
    MptcpRstEprohibit,
    MptcpRstEwq2big,
    MptcpRstEbadperf,
    MptcpRstEmiddlebox,
    Error,
    Unknown,
};

// The kernel's name without its SK_RST_REASON_ prefix ("TCP_TIMEWAIT_SOCKET");
// "UNKNOWN" for Unknown.
const char *reset_reason_name(ResetReason reason);
// The inverse, for the kernel's names (with or without the prefix) and the
// store's; nullopt for a name this build does not know.
std::optional<ResetReason> reset_reason_from_name(std::string_view name);

// The running kernel's numbering of enum sk_rst_reason.
class ResetReasonTable {
public:
    // From the tracepoint's format file: the `__print_symbolic(REC->reason,
    // { 0, "NOT_SPECIFIED" }, ...)` of its `print fmt:` line. A format
    // without a reason field (kernels before 6.10) gives an empty table,
    // not an error. Returns nullopt and sets *error (if given) when the text
    // is not a tracepoint format or its reason list cannot be read.
    static std::optional<ResetReasonTable> parse_format(std::string_view format_text, std::string *error);
    // From the enumerators of the kernel's BTF type enum sk_rst_reason
    // ("SK_RST_REASON_NO_SOCKET" = 1, ...).
    static ResetReasonTable from_enumerators(const std::vector<std::pair<std::string, uint32_t>> &enumerators);

    // The reason a record's number stands for; Unknown if the kernel named
    // it something this build does not know, or did not name it.
    ResetReason reason(uint32_t code) const;
    bool empty() const { return known_ == 0 && unknown_names_.empty(); }
    size_t size() const { return known_ + unknown_names_.size(); }
    // "NAME=<n>" for each name the kernel has and this build does not know:
    // such resets show as REASON_<n>.
    const std::vector<std::string> &unknown_names() const { return unknown_names_; }
    // The kernel's numbers of the reasons this build knows, with their
    // names: what a recording keeps (pipeline/recording.h).
    std::map<uint32_t, std::string> names() const;

private:
    void add(uint32_t code, std::string_view kernel_name);

    std::vector<ResetReason> by_code_;  // indexed by the kernel's number
    size_t known_ = 0;
    std::vector<std::string> unknown_names_;
};

}  // namespace rstwatch
