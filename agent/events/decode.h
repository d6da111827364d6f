// Decoding ring-buffer records (bpf/rstwatch_abi.h) into events, with size
// checks: a short or unknown record is an error, never a crash.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "events/records.h"
#include "events/reset_reasons.h"

namespace rstwatch {

struct DecodeContext {
    // CLOCK_REALTIME minus CLOCK_MONOTONIC, sampled at start-up.
    int64_t realtime_offset_ns = 0;
    // The running kernel's numbering of enum sk_rst_reason, read once at
    // start-up (agent/kernel/reset_reason_names.h). Empty: every reason is
    // ResetReason::Unknown, shown by its number.
    ResetReasonTable reasons;
};

struct DecodeResult {
    std::optional<Event> event;
    std::string error;  // set when event is empty
};

DecodeResult decode_record(std::span<const uint8_t> bytes, const DecodeContext &ctx);

// A process or cgroup name as text that is safe to print and to put in
// JSON. The kernel hands over bytes: any user can name a process "\xff" or
// "\x1b[2J". Well-formed UTF-8 is kept; control characters (C0, DEL, C1),
// bytes that are not well-formed UTF-8, and the backslash itself become
// "\xNN", so the mapping stays one-to-one and readable.
std::string printable_name(std::string_view bytes);

// "addr:port" / "[addr]:port" from raw network-order address bytes.
std::string format_endpoint(bool ipv6, const uint8_t *addr, uint16_t port);

}  // namespace rstwatch
