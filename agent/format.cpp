#include "format.h"

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

template <typename T>
nlohmann::json value_or_null(const std::optional<T> &v)
{
    if (!v)
        return nullptr;
    return *v;
}

std::string reason_name(const ResetEvent &e)
{
    // decode_record names the reason; an event built elsewhere (or read back
    // from the store, which keeps only the name) may have one without the other.
    if (!e.reason.empty())
        return e.reason;
    if (!e.reason_code)
        return {};
    return "REASON_" + std::to_string(*e.reason_code);
}

std::string text_line(const ResetEvent &e)
{
    std::string owner = e.owner_known ? e.comm + "[" + std::to_string(e.pid) + "]" : "?";
    std::string line = format_time_of_day_us(e.time_ns) + " RST " + to_string(e.direction) +
                       " " + to_string(e.role) + " " + owner + " " + e.local + " -> " +
                       e.remote + " " + tcp_state_name(e.state);
    if (e.direction == Direction::Sent) {
        std::string reason = reason_name(e);
        line += " reason=" + (reason.empty() ? std::string("-") : reason);
    }
    line += " idle=" + format_ms(e.idle_ms);
    line += " pool_idle=" + format_ms(e.pool_idle_ms);
    line += " since_req=" + format_ms(e.since_request_ms);
    if (e.in_request)
        line += e.reused ? " req=reused" : " req=first";
    line += " tx=" + (e.bytes_sent ? format_bytes(*e.bytes_sent) : std::string("-"));
    line += " rx=" + (e.bytes_received ? format_bytes(*e.bytes_received) : std::string("-"));
    if (e.total_retrans > 0)
        line += " retrans=" + std::to_string(e.total_retrans);
    // The task on the CPU is evidence, not the owner: show it only when it
    // says something (no owner, another task, or a task being killed).
    bool other_task = !e.owner_known || e.current_pid != e.pid;
    if ((other_task && e.current_pid != 0) || e.current_exiting) {
        line += " on_cpu=" + e.current_comm + "[" + std::to_string(e.current_pid) + "]";
        if (e.current_exiting)
            line += "(exiting, signal " + std::to_string(e.current_exit_signal) + ")";
    }
    if (e.owner_listener || e.owner_holder)
        line += e.owner_listener ? " owner_via=listener" : " owner_via=holder";
    if (e.diagnosis) {
        // The verdict on the event's line; what it rests on and what to
        // change on indented lines below it.
        const Diagnosis &d = *e.diagnosis;
        line += std::string(" cause=") + to_string(d.cause) + "(" + to_string(d.confidence) + ")";
        std::string why;
        for (const auto &fact : d.evidence)
            why += (why.empty() ? "" : "; ") + fact;
        if (!why.empty())
            line += "\n    why: " + why;
        if (!d.hint.empty())
            line += "\n    fix: " + d.hint;
    }
    return line;
}

std::string text_line(const OomEvent &e)
{
    return format_time_of_day_us(e.time_ns) + " OOM killed pid " + std::to_string(e.pid) + " (" +
           e.comm + ") rss=" + (e.rss_kb ? std::to_string(*e.rss_kb) + "kB" : std::string("-")) +
           " cgroup=" + (e.cgroup.empty() ? std::string("-") : e.cgroup);
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

nlohmann::json ms_to_json(std::optional<double> ms)
{
    if (!ms)
        return nullptr;
    return std::round(*ms * 1000.0) / 1000.0;
}

nlohmann::json to_json(const ResetEvent &e)
{
    nlohmann::json j;
    j["type"] = "rst";
    j["time"] = format_rfc3339_us(e.time_ns);
    j["direction"] = to_string(e.direction);
    // pid 0 would read as a real process: an unknown owner is null.
    j["pid"] = e.owner_known ? nlohmann::json(e.pid) : nlohmann::json(nullptr);
    j["comm"] = e.owner_known ? nlohmann::json(e.comm) : nlohmann::json(nullptr);
    if (e.owner_known)
        j["owner_via"] = e.owner_listener ? "listener" : e.owner_holder ? "holder" : "file";
    j["role"] = to_string(e.role);
    j["family"] = e.ipv6 ? "ipv6" : "ipv4";
    j["local"] = e.local;
    j["remote"] = e.remote;
    j["state"] = tcp_state_name(e.state);
    const std::string reason = reason_name(e);
    j["reason"] = reason.empty() ? nlohmann::json(nullptr) : nlohmann::json(reason);
    j["idle_ms"] = ms_to_json(e.idle_ms);
    j["pool_idle_ms"] = ms_to_json(e.pool_idle_ms);
    j["since_request_ms"] = ms_to_json(e.since_request_ms);
    j["bytes_sent"] = value_or_null(e.bytes_sent);
    j["bytes_received"] = value_or_null(e.bytes_received);
    j["reused"] = e.reused;
    j["on_cpu"] = {{"pid", e.current_pid},
                   {"comm", e.current_comm},
                   {"exiting", e.current_exiting},
                   {"exit_signal", e.current_exit_signal}};
    j["sock_cookie"] = e.sock_cookie;
    j["retransmits"] = e.total_retrans;
    j["packets_out"] = e.packets_out;
    j["mss"] = e.mss;
    j["in_request"] = e.in_request;
    j["data_ttl"] = e.data_ttl ? nlohmann::json(e.data_ttl) : nlohmann::json(nullptr);
    j["rst_ttl"] = e.rst_ttl ? nlohmann::json(e.rst_ttl) : nlohmann::json(nullptr);
    j["no_socket"] = e.no_socket;
    j["stalled_retransmits"] = e.stalled_retrans;
    if (e.diagnosis) {
        j["cause"] = to_string(e.diagnosis->cause);
        j["confidence"] = to_string(e.diagnosis->confidence);
        j["evidence"] = e.diagnosis->evidence;
        j["hint"] = e.diagnosis->hint.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.diagnosis->hint);
    } else {
        // No owner, so no diagnosis: the far side of a flow, shown with --all.
        j["cause"] = nullptr;
        j["confidence"] = nullptr;
        j["evidence"] = nlohmann::json::array();
        j["hint"] = nullptr;
    }
    return j;
}

nlohmann::json to_json(const OomEvent &e)
{
    nlohmann::json j;
    j["type"] = "oom";
    j["time"] = format_rfc3339_us(e.time_ns);
    j["pid"] = e.pid;
    j["comm"] = e.comm;
    j["rss_kb"] = value_or_null(e.rss_kb);
    j["total_vm_kb"] = value_or_null(e.total_vm_kb);
    j["cgroup"] = e.cgroup.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.cgroup);
    return j;
}

nlohmann::json to_json(const Event &e)
{
    return std::visit([](const auto &ev) { return to_json(ev); }, e);
}

std::string format_text(const Event &e)
{
    return std::visit([](const auto &ev) { return text_line(ev); }, e);
}

}  // namespace rstwatch
