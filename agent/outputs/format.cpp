#include "outputs/format.h"

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <string_view>
#include <vector>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "common/units.h"
#include "outputs/evidence_text.h"

namespace rstwatch {

namespace {

std::string text_line(const ResetEvent &e)
{
    std::string owner = e.owner_known ? e.comm + "[" + std::to_string(e.pid) + "]" : "?";
    std::string line = format_time_of_day_us(e.time_ns) + " RST " + to_string(e.direction) +
                       " " + to_string(e.role) + " " + owner + " " + e.local + " -> " +
                       e.remote + " " + tcp_state_name(e.state);
    if (e.direction == Direction::Sent) {
        std::string reason = reason_text(e.reason, e.reason_code);
        line += " reason=" + (reason.empty() ? std::string("-") : reason);
    }
    line += " idle=" + format_ms(e.idle_ms);
    line += " pool_idle=" + format_ms(e.pool_idle_ms);
    line += " since_request=" + format_ms(e.since_request_ms);
    if (e.in_request)
        line += e.reused ? " req=reused" : " req=first";
    line += " bytes_sent=" + (e.bytes_sent ? format_bytes(*e.bytes_sent) : std::string("-"));
    line += " bytes_received=" + (e.bytes_received ? format_bytes(*e.bytes_received) : std::string("-"));
    if (e.retransmits > 0)
        line += " retransmits=" + std::to_string(e.retransmits);
    // The task on the CPU is evidence, not the owner: show it only when it
    // says something (no owner, another task, or a task being killed).
    bool other_task = !e.owner_known || e.on_cpu_pid != e.pid;
    if ((other_task && e.on_cpu_pid != 0) || e.on_cpu_exiting) {
        line += " on_cpu=" + e.on_cpu_comm + "[" + std::to_string(e.on_cpu_pid) + "]";
        if (e.on_cpu_exiting)
            line += "(exiting, signal " + std::to_string(e.on_cpu_exit_signal) + ")";
    }
    if (e.owner_listener || e.owner_holder)
        line += e.owner_listener ? " owner_via=listener" : " owner_via=holder";
    if (e.diagnosis) {
        // The verdict on the event's line; what it rests on and what to
        // change on indented lines below it.
        const Diagnosis &d = *e.diagnosis;
        line += std::string(" cause=") + to_string(d.cause) + "(" + to_string(d.confidence) + ")";
        std::string why;
        for (const Evidence &fact : d.evidence)
            why += (why.empty() ? "" : "; ") + evidence_text(fact);
        if (!why.empty())
            line += "\n    why: " + why;
        if (!d.hint.empty())
            line += "\n    fix: " + hint_text(d.hint);
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

namespace {

// One event's JSON, written as it goes. Member by member through RapidJSON's
// streaming Writer, not as an nlohmann tree: in a reset storm building and
// dumping a tree per event was three quarters of the consumer's CPU. The
// event's strings are printable UTF-8 already (decode.h, printable_name).
class EventJsonWriter {
public:
    EventJsonWriter() : writer_(buffer_) { writer_.StartObject(); }

    std::string finish()
    {
        writer_.EndObject();
        return std::string(buffer_.GetString(), buffer_.GetSize());
    }

    void string(const char *key, std::string_view value)
    {
        this->key(key);
        writer_.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
    }
    void string_or_null(const char *key, const std::string &value)
    {
        if (value.empty())
            null(key);
        else
            string(key, value);
    }
    void unsigned_number(const char *key, uint64_t value)
    {
        this->key(key);
        writer_.Uint64(value);
    }
    void signed_number(const char *key, int64_t value)
    {
        this->key(key);
        writer_.Int64(value);
    }
    void unsigned_or_null(const char *key, std::optional<uint64_t> value)
    {
        if (value)
            unsigned_number(key, *value);
        else
            null(key);
    }
    // Milliseconds rounded to 0.001 ms; unknown is null.
    void ms(const char *key, std::optional<double> value)
    {
        this->key(key);
        if (value && std::isfinite(*value))
            writer_.Double(round_ms(*value));
        else
            writer_.Null();
    }
    void boolean(const char *key, bool value)
    {
        this->key(key);
        writer_.Bool(value);
    }
    void null(const char *key)
    {
        this->key(key);
        writer_.Null();
    }
    void strings(const char *key, const std::vector<std::string> &values)
    {
        this->key(key);
        writer_.StartArray();
        for (const auto &v : values)
            writer_.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
        writer_.EndArray();
    }
    void begin_object(const char *key)
    {
        this->key(key);
        writer_.StartObject();
    }
    void end_object() { writer_.EndObject(); }

private:
    void key(const char *k) { writer_.Key(k); }

    rapidjson::StringBuffer buffer_;
    rapidjson::Writer<rapidjson::StringBuffer> writer_;
};

std::string json_line(const ResetEvent &e)
{
    EventJsonWriter j;
    j.string("type", "rst");
    j.string("time", format_rfc3339_us(e.time_ns));
    j.string("direction", to_string(e.direction));
    // pid 0 would read as a real process: an unknown owner is null.
    if (e.owner_known) {
        j.unsigned_number("pid", e.pid);
        j.string("comm", e.comm);
        j.string("owner_via", e.owner_listener ? "listener" : e.owner_holder ? "holder" : "file");
    } else {
        j.null("pid");
        j.null("comm");
    }
    j.string("role", to_string(e.role));
    j.string("family", e.ipv6 ? "ipv6" : "ipv4");
    j.string("local", e.local);
    j.string("remote", e.remote);
    j.string("state", tcp_state_name(e.state));
    j.string_or_null("reason", reason_text(e.reason, e.reason_code));
    j.ms("idle_ms", e.idle_ms);
    j.ms("pool_idle_ms", e.pool_idle_ms);
    j.ms("since_request_ms", e.since_request_ms);
    j.unsigned_or_null("bytes_sent", e.bytes_sent);
    j.unsigned_or_null("bytes_received", e.bytes_received);
    j.boolean("reused", e.reused);
    j.begin_object("on_cpu");
    j.unsigned_number("pid", e.on_cpu_pid);
    j.string("comm", e.on_cpu_comm);
    j.boolean("exiting", e.on_cpu_exiting);
    j.signed_number("exit_signal", e.on_cpu_exit_signal);
    j.end_object();
    j.unsigned_number("sock_cookie", e.sock_cookie);
    j.unsigned_number("retransmits", e.retransmits);
    j.unsigned_number("packets_out", e.packets_out);
    j.unsigned_number("mss", e.mss);
    j.boolean("in_request", e.in_request);
    j.boolean("request_acked", e.request_acked);
    j.unsigned_or_null("data_ttl", e.data_ttl ? std::optional<uint64_t>(e.data_ttl) : std::nullopt);
    j.unsigned_or_null("rst_ttl", e.rst_ttl ? std::optional<uint64_t>(e.rst_ttl) : std::nullopt);
    j.boolean("no_socket", e.no_socket);
    j.boolean("orphan", e.orphan);
    j.unsigned_number("stalled_retransmits", e.stalled_retransmits);
    if (e.diagnosis) {
        j.string("cause", to_string(e.diagnosis->cause));
        j.string("confidence", to_string(e.diagnosis->confidence));
        std::vector<std::string> evidence;
        evidence.reserve(e.diagnosis->evidence.size());
        for (const Evidence &fact : e.diagnosis->evidence)
            evidence.push_back(evidence_text(fact));
        j.strings("evidence", evidence);
        j.string_or_null("hint", hint_text(e.diagnosis->hint));
    } else {
        // No owner, so no diagnosis: the far side of a flow, shown with --all.
        j.null("cause");
        j.null("confidence");
        j.strings("evidence", {});
        j.null("hint");
    }
    return j.finish();
}

std::string json_line(const OomEvent &e)
{
    EventJsonWriter j;
    j.string("type", "oom");
    j.string("time", format_rfc3339_us(e.time_ns));
    j.unsigned_number("pid", e.pid);
    j.string("comm", e.comm);
    j.unsigned_or_null("rss_kb", e.rss_kb);
    j.unsigned_or_null("total_vm_kb", e.total_vm_kb);
    j.string_or_null("cgroup", e.cgroup);
    return j.finish();
}

}  // namespace

std::string to_json_line(const Event &e)
{
    return std::visit([](const auto &ev) { return json_line(ev); }, e);
}

nlohmann::json to_json(const Event &e) { return nlohmann::json::parse(to_json_line(e)); }

std::string format_text(const Event &e)
{
    return std::visit([](const auto &ev) { return text_line(ev); }, e);
}

}  // namespace rstwatch
