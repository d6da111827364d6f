#include "outputs/event_json.h"

#include <charconv>
#include <cstdio>
#include <ctime>

namespace rstwatch {

namespace {

template <typename T>
std::optional<T> optional_number(const nlohmann::json &j, const char *key)
{
    auto it = j.find(key);
    if (it == j.end() || !it->is_number())
        return std::nullopt;
    return it->get<T>();
}

template <typename T>
T number_or(const nlohmann::json &j, const char *key, T fallback)
{
    return optional_number<T>(j, key).value_or(fallback);
}

std::string string_or_empty(const nlohmann::json &j, const char *key)
{
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// The store keeps the reason's name: the enum comes back from it, and a
// number this build could not name from its REASON_<n>.
void read_reason(const std::string &name, ResetEvent &e)
{
    if (name.empty())
        return;
    e.reason = reset_reason_from_name(name).value_or(ResetReason::Unknown);
    if (*e.reason != ResetReason::Unknown || !name.starts_with("REASON_"))
        return;
    uint32_t code = 0;
    auto [end, ec] = std::from_chars(name.data() + 7, name.data() + name.size(), code);
    if (ec == std::errc() && end == name.data() + name.size())
        e.reason_code = code;
}

// The store keeps the words the user saw, not the codes: they come back as
// recorded words.
std::optional<Diagnosis> diagnosis_from_json(const nlohmann::json &j)
{
    auto cause = cause_from_string(string_or_empty(j, "cause"));
    if (!cause)
        return std::nullopt;
    Diagnosis d;
    d.cause = *cause;
    const std::string conf = string_or_empty(j, "confidence");
    d.confidence = conf == "high" ? Confidence::High : conf == "medium" ? Confidence::Medium : Confidence::Low;
    if (auto it = j.find("evidence"); it != j.end() && it->is_array())
        for (const auto &fact : *it)
            if (fact.is_string())
                d.evidence.push_back(Evidence{.code = EvidenceCode::Recorded, .text = fact.get<std::string>()});
    if (std::string hint = string_or_empty(j, "hint"); !hint.empty())
        d.hint = Hint{.code = HintCode::Recorded, .text = std::move(hint)};
    return d;
}

std::optional<Event> fail(std::string *error, std::string what)
{
    if (error)
        *error = std::move(what);
    return std::nullopt;
}

}  // namespace

std::optional<int64_t> parse_rfc3339_us(std::string_view text)
{
    int y, mo, d, h, mi, s;
    long micros = 0;
    char z = 0;
    std::string buf(text);
    int n = std::sscanf(buf.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%6ld%c", &y, &mo, &d, &h, &mi, &s, &micros, &z);
    if (n != 8 || z != 'Z')
        return std::nullopt;
    std::tm tm{};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    int64_t secs = timegm(&tm);
    return secs * 1'000'000'000LL + micros * 1000LL;
}

std::optional<Event> event_from_json(const nlohmann::json &j, std::string *error)
{
    if (!j.is_object())
        return fail(error, "not a JSON object");
    const std::string type = string_or_empty(j, "type");
    auto time = parse_rfc3339_us(string_or_empty(j, "time"));
    if (!time)
        return fail(error, "no valid \"time\"");

    if (type == "oom") {
        OomEvent e;
        e.time_ns = *time;
        e.pid = number_or<uint32_t>(j, "pid", 0);
        e.comm = string_or_empty(j, "comm");
        e.rss_kb = optional_number<uint64_t>(j, "rss_kb");
        e.total_vm_kb = optional_number<uint64_t>(j, "total_vm_kb");
        e.cgroup = string_or_empty(j, "cgroup");
        return Event(std::move(e));
    }
    if (type != "rst")
        return fail(error, "unknown record type \"" + type + "\"");

    ResetEvent e;
    e.time_ns = *time;
    e.direction = string_or_empty(j, "direction") == "sent" ? Direction::Sent : Direction::Received;
    const std::string role = string_or_empty(j, "role");
    e.role = role == "upstream" ? Role::Upstream : role == "downstream" ? Role::Downstream : Role::Other;
    e.ipv6 = string_or_empty(j, "family") == "ipv6";
    e.local = string_or_empty(j, "local");
    e.remote = string_or_empty(j, "remote");
    e.state = tcp_state_from_name(string_or_empty(j, "state")).value_or(TcpState::Unknown);
    read_reason(string_or_empty(j, "reason"), e);
    e.owner_known = j.contains("pid") && j["pid"].is_number();
    e.pid = number_or<uint32_t>(j, "pid", 0);
    e.comm = string_or_empty(j, "comm");
    const std::string via = string_or_empty(j, "owner_via");
    e.owner_listener = via == "listener";
    e.owner_holder = via == "holder";
    if (auto it = j.find("on_cpu"); it != j.end() && it->is_object()) {
        e.on_cpu_pid = number_or<uint32_t>(*it, "pid", 0);
        e.on_cpu_comm = string_or_empty(*it, "comm");
        e.on_cpu_exiting = it->value("exiting", false);
        e.on_cpu_exit_signal = number_or<int>(*it, "exit_signal", 0);
    }
    e.no_socket = j.value("no_socket", false);
    e.orphan = j.value("orphan", false);
    e.sock_cookie = number_or<uint64_t>(j, "sock_cookie", 0);
    e.idle_ms = optional_number<double>(j, "idle_ms");
    e.pool_idle_ms = optional_number<double>(j, "pool_idle_ms");
    e.since_request_ms = optional_number<double>(j, "since_request_ms");
    e.bytes_sent = optional_number<uint64_t>(j, "bytes_sent");
    e.bytes_received = optional_number<uint64_t>(j, "bytes_received");
    e.in_request = j.value("in_request", false);
    e.request_acked = j.value("request_acked", false);
    // Records stored by earlier builds counted request turns; more than one meant reused.
    e.reused = j.contains("reused") ? j.value("reused", false) : number_or<uint32_t>(j, "requests", 0) > 1;
    e.data_ttl = number_or<uint8_t>(j, "data_ttl", 0);
    e.rst_ttl = number_or<uint8_t>(j, "rst_ttl", 0);
    e.retransmits = number_or<uint32_t>(j, "retransmits", 0);
    e.stalled_retransmits = number_or<uint8_t>(j, "stalled_retransmits", 0);
    e.packets_out = number_or<uint32_t>(j, "packets_out", 0);
    e.mss = number_or<uint32_t>(j, "mss", 0);

    e.diagnosis = diagnosis_from_json(j);
    return Event(std::move(e));
}

}  // namespace rstwatch
