// The outputs of one event: JSON (a contract with whoever parses it; field
// names never change meaning) and one human-readable line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "records.h"

namespace rstwatch {

// "2026-11-24T02:30:00.123456Z": UTC, microseconds.
std::string format_rfc3339_us(int64_t realtime_ns);
// "02:30:00.123456": the time-of-day part of the above (UTC, like the JSON).
std::string format_time_of_day_us(int64_t realtime_ns);

// The event as one line of JSON (no newline): what --json prints and the
// store keeps. Millisecond figures are rounded to 0.001 ms; unknown values
// are null. Members in a fixed order, "type" and "time" first.
std::string to_json_line(const Event &e);
// The same, parsed: for readers and tests, not for the hot path.
nlohmann::json to_json(const Event &e);

// One line, no trailing newline, e.g.
// 02:30:00.123456 RST received upstream nginx[1234] 127.0.0.1:40312 -> 127.0.0.1:8081
//   ESTABLISHED idle=5003.1ms pool_idle=5002.9ms since_req=0.4ms age=9.2s req=3 tx=1.2KiB rx=3.4KiB
std::string format_text(const Event &e);

// Helpers shared with the tables: "5003.1ms" / "-", "1.2KiB", and a
// millisecond figure for JSON (rounded to 0.001 ms, null when unknown).
std::string format_ms(std::optional<double> ms);
std::string format_bytes(uint64_t bytes);
nlohmann::json ms_to_json(std::optional<double> ms);

}  // namespace rstwatch
