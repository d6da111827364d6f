#include "common/units.h"

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <ctime>

namespace rstwatch {

namespace {

struct SplitTime {
    std::tm tm{};
    int64_t micros = 0;
};

SplitTime split_time(int64_t realtime_ns)
{
    // Floor division, so that times before 1970 (never expected, but a bad
    // clock offset could produce one) still print a valid date.
    int64_t secs = realtime_ns / 1'000'000'000;
    int64_t rem_ns = realtime_ns % 1'000'000'000;
    if (rem_ns < 0) {
        secs -= 1;
        rem_ns += 1'000'000'000;
    }
    SplitTime out;
    std::time_t t = static_cast<std::time_t>(secs);
    gmtime_r(&t, &out.tm);
    out.micros = rem_ns / 1000;
    return out;
}

}  // namespace

std::string format_rfc3339_us(int64_t realtime_ns)
{
    SplitTime t = split_time(realtime_ns);
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06" PRId64 "Z",
                  t.tm.tm_year + 1900, t.tm.tm_mon + 1, t.tm.tm_mday, t.tm.tm_hour, t.tm.tm_min,
                  t.tm.tm_sec, t.micros);
    return buf;
}

std::string format_time_of_day_us(int64_t realtime_ns)
{
    SplitTime t = split_time(realtime_ns);
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%02d:%02d:%02d.%06" PRId64, t.tm.tm_hour, t.tm.tm_min,
                  t.tm.tm_sec, t.micros);
    return buf;
}

std::string format_ms(std::optional<double> ms)
{
    if (!ms)
        return "-";
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.1fms", *ms);
    return buf;
}

std::string format_bytes(uint64_t bytes)
{
    static constexpr const char *units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (bytes < 1024)
        return std::to_string(bytes) + "B";
    double v = static_cast<double>(bytes) / 1024.0;
    size_t unit = 0;
    while (v >= 1024.0 && unit + 1 < std::size(units)) {
        v /= 1024.0;
        ++unit;
    }
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.1f%s", v, units[unit]);
    return buf;
}

double round_ms(double ms) { return std::round(ms * 1000.0) / 1000.0; }

nlohmann::json ms_to_json(std::optional<double> ms)
{
    if (!ms)
        return nullptr;
    return round_ms(*ms);
}

}  // namespace rstwatch
