// Times, durations and sizes as every output spells them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace rstwatch {

// "2026-11-24T02:30:00.123456Z": UTC, microseconds.
std::string format_rfc3339_us(int64_t realtime_ns);
// "02:30:00.123456": the time-of-day part of the above (UTC, like the JSON).
std::string format_time_of_day_us(int64_t realtime_ns);

// "5003.1ms" / "-", "1.2KiB", and a
// millisecond figure for JSON (rounded to 0.001 ms, null when unknown).
std::string format_ms(std::optional<double> ms);
std::string format_bytes(uint64_t bytes);
nlohmann::json ms_to_json(std::optional<double> ms);
// Milliseconds rounded to the microsecond, as JSON carries them.
double round_ms(double ms);

}  // namespace rstwatch
