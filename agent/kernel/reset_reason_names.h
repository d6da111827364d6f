// The kernel's names for tcp_send_reset's reason numbers, read once at start.
#pragma once

#include <string>
#include <vector>

#include "events/reset_reasons.h"

namespace rstwatch {

// Reads events/tcp/tcp_send_reset/format under /sys/kernel/tracing, then
// under /sys/kernel/debug/tracing. On failure returns an empty table and
// sets *error (if given); the agent then shows reasons as REASON_<n>.
ResetReasonNames load_reset_reason_names(std::string *error);
// Same, with the tracefs mount points to try, in order (for tests).
ResetReasonNames load_reset_reason_names(const std::vector<std::string> &tracefs_roots, std::string *error);

}  // namespace rstwatch
