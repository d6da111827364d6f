// Decoding ring-buffer records (bpf/rstwatch_abi.h) into events, with size
// checks: a short or unknown record is an error, never a crash.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "records.h"

namespace rstwatch {

struct DecodeContext {
    // CLOCK_REALTIME minus CLOCK_MONOTONIC, sampled at start-up.
    int64_t realtime_offset_ns = 0;
    // Names the running kernel gives to enum sk_rst_reason values.
    std::function<std::string(uint32_t)> reason_name;
};

struct DecodeResult {
    std::optional<Event> event;
    std::string error;  // set when event is empty
};

DecodeResult decode_record(std::span<const uint8_t> bytes, const DecodeContext &ctx);

// "addr:port" / "[addr]:port" from raw network-order address bytes.
std::string format_endpoint(bool ipv6, const uint8_t *addr, uint16_t port);

}  // namespace rstwatch
