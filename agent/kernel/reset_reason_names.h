// The running kernel's numbering of enum sk_rst_reason, read once at start:
// from its BTF, else from the tcp_send_reset tracepoint's format in tracefs.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "events/reset_reasons.h"

namespace rstwatch {

class KernelFeatures;

// Kernels before 6.10 have no reasons: an empty table and no error. On
// failure (neither BTF nor tracefs says) returns an empty table and sets
// *error (if given); the agent then shows reasons as REASON_<n>.
ResetReasonTable load_reset_reasons(const KernelFeatures &kernel, std::string *error);
// The same from what the kernel gave: whether its BTF was read, the BTF
// enumerators of enum sk_rst_reason (empty if none), and the tracefs mount
// points to try, in order (for tests).
ResetReasonTable load_reset_reasons(bool btf_loaded, const std::vector<std::pair<std::string, uint32_t>> &btf_enumerators,
                                    const std::vector<std::string> &tracefs_roots, std::string *error);

}  // namespace rstwatch
