// Events that did not make it from the kernel to every output, by where
// they were lost. One type for the metrics, the tables, the dump and the
// log; the JSON (dump's "lost") uses the member names.
#pragma once

#include <cstdint>
#include <optional>

namespace rstwatch {

struct LossCounts {
    uint64_t ring_buffer_full = 0;        // BPF could not reserve a record
    uint64_t left_unread = 0;             // still in the ring buffer when the stop's time to read it ran out
    uint64_t decode_errors = 0;           // the agent could not decode or report a record
    std::optional<uint64_t> not_stored;   // not written to the store (queue full, write failed); none without one
    uint64_t owners_unresolved = 0;       // resets whose socket's credentials no process held any more
    uint64_t listeners_dropped = 0;       // listeners not recorded: their BPF table was full

    bool operator==(const LossCounts &) const = default;
};

}  // namespace rstwatch
