// The JSON contract and the human line for one event.
#include <gtest/gtest.h>

#include <set>

#include "outputs/format.h"

using namespace rstwatch;
using nlohmann::json;

namespace {

// 2026-11-24T02:30:00.123456789Z
constexpr int64_t kTimeNs = 1'795'487'400'123'456'789;

ResetEvent upstream_reset()
{
    ResetEvent e;
    e.time_ns = kTimeNs;
    e.direction = Direction::Received;
    e.role = Role::Upstream;
    e.local = "127.0.0.1:40312";
    e.remote = "127.0.0.1:8081";
    e.state = 1;
    e.owner_known = true;
    e.pid = 1234;
    e.comm = "nginx";
    e.on_cpu_pid = 1234;
    e.on_cpu_comm = "nginx";
    e.sock_cookie = 77;
    e.idle_ms = 5003.14159;
    e.pool_idle_ms = 5002.9;
    e.since_request_ms = 0.4;
    e.bytes_sent = 1229;
    e.bytes_received = 3482;
    e.in_request = true;
    e.reused = true;
    e.retransmits = 0;
    e.packets_out = 1;
    e.mss = 1448;
    return e;
}

std::set<std::string> keys(const json &j)
{
    std::set<std::string> out;
    for (auto it = j.begin(); it != j.end(); ++it)
        out.insert(it.key());
    return out;
}

}  // namespace

TEST(Rfc3339, UtcWithMicroseconds)
{
    EXPECT_EQ(format_rfc3339_us(kTimeNs), "2026-11-24T02:30:00.123456Z");
    EXPECT_EQ(format_rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
    // Nanoseconds are truncated, never rounded up into the next second.
    EXPECT_EQ(format_rfc3339_us(1'999'999'999), "1970-01-01T00:00:01.999999Z");
    // Leap day.
    EXPECT_EQ(format_rfc3339_us(1'709'164'800'000'001'000), "2024-02-29T00:00:00.000001Z");
    // A bad clock offset must still print a valid time, not "-1" fields.
    EXPECT_EQ(format_rfc3339_us(-1), "1969-12-31T23:59:59.999999Z");
}

TEST(ResetJson, FieldNamesAreTheContract)
{
    json j = to_json(upstream_reset());
    EXPECT_EQ(keys(j),
              (std::set<std::string>{"type", "time", "direction", "pid", "comm", "owner_via",
                                     "role", "family", "local", "remote", "state", "reason",
                                     "idle_ms", "pool_idle_ms", "since_request_ms",
                                     "bytes_sent", "bytes_received", "reused", "on_cpu",
                                     "sock_cookie", "retransmits", "packets_out", "mss",
                                     "in_request", "data_ttl", "rst_ttl",
                                     "no_socket", "orphan", "stalled_retransmits", "cause",
                                     "confidence", "evidence", "hint"}));
    EXPECT_EQ(keys(j["on_cpu"]), (std::set<std::string>{"pid", "comm", "exiting", "exit_signal"}));
}

TEST(ResetJson, DiagnosisFields)
{
    ResetEvent e = upstream_reset();
    EXPECT_TRUE(to_json(e)["cause"].is_null()) << "no diagnosis, no cause";
    e.diagnosis = Diagnosis{Cause::KeepaliveRace, Confidence::High, {"backend socket in FIN_WAIT1"},
                            "set keepalive_timeout 4s in the upstream block"};
    json j = to_json(e);
    EXPECT_EQ(j["cause"], "keepalive_race");
    EXPECT_EQ(j["confidence"], "high");
    EXPECT_EQ(j["evidence"], json::array({"backend socket in FIN_WAIT1"}));
    EXPECT_EQ(j["hint"], "set keepalive_timeout 4s in the upstream block");
    const std::string text = format_text(e);
    EXPECT_NE(text.find(" cause=keepalive_race(high)\n    why: backend socket in FIN_WAIT1\n    fix: set "),
              std::string::npos)
        << text;
}

TEST(ResetJson, Values)
{
    json j = to_json(upstream_reset());
    EXPECT_EQ(j["type"], "rst");
    EXPECT_EQ(j["time"], "2026-11-24T02:30:00.123456Z");
    EXPECT_EQ(j["direction"], "received");
    EXPECT_EQ(j["pid"], 1234);
    EXPECT_EQ(j["comm"], "nginx");
    EXPECT_EQ(j["owner_via"], "file");
    EXPECT_EQ(j["role"], "upstream");
    EXPECT_EQ(j["family"], "ipv4");
    EXPECT_EQ(j["local"], "127.0.0.1:40312");
    EXPECT_EQ(j["remote"], "127.0.0.1:8081");
    EXPECT_EQ(j["state"], "ESTABLISHED");
    EXPECT_TRUE(j["reason"].is_null());
    // Rounded to the microsecond.
    EXPECT_DOUBLE_EQ(j["idle_ms"].get<double>(), 5003.142);
    EXPECT_DOUBLE_EQ(j["pool_idle_ms"].get<double>(), 5002.9);
    EXPECT_DOUBLE_EQ(j["since_request_ms"].get<double>(), 0.4);
    EXPECT_EQ(j["bytes_sent"], 1229);
    EXPECT_EQ(j["bytes_received"], 3482);
    EXPECT_EQ(j["in_request"], true);
    EXPECT_EQ(j["reused"], true);
    EXPECT_EQ(j["sock_cookie"], 77);
    EXPECT_EQ(j["retransmits"], 0);
    EXPECT_EQ(j["packets_out"], 1);
    EXPECT_EQ(j["mss"], 1448);
    EXPECT_EQ(j["on_cpu"]["pid"], 1234);
    EXPECT_EQ(j["on_cpu"]["exiting"], false);
}

TEST(ResetJson, UnknownsAreNull)
{
    ResetEvent e = upstream_reset();
    e.owner_known = false;
    e.pid = 0;
    e.comm.clear();
    e.role = Role::Other;
    e.ipv6 = true;
    e.remote = "[::1]:8081";
    e.idle_ms.reset();
    e.pool_idle_ms.reset();
    e.since_request_ms.reset();
    e.bytes_sent.reset();
    e.bytes_received.reset();
    json j = to_json(e);
    for (const char *field : {"pid", "comm", "reason", "idle_ms", "pool_idle_ms",
                              "since_request_ms", "bytes_sent", "bytes_received"})
        EXPECT_TRUE(j[field].is_null()) << field << " = " << j[field];
    EXPECT_EQ(j["family"], "ipv6");
    EXPECT_EQ(j["remote"], "[::1]:8081");
    EXPECT_EQ(j["role"], "other");
}

TEST(ResetJson, SentResetWithReasonAndKilledTask)
{
    ResetEvent e = upstream_reset();
    e.direction = Direction::Sent;
    e.reason_code = 11;
    e.reason = "TCP_ABORT_ON_CLOSE";
    e.on_cpu_exiting = true;
    e.on_cpu_exit_signal = 9;
    json j = to_json(e);
    EXPECT_EQ(j["direction"], "sent");
    EXPECT_EQ(j["reason"], "TCP_ABORT_ON_CLOSE");
    EXPECT_EQ(j["on_cpu"]["exiting"], true);
    EXPECT_EQ(j["on_cpu"]["exit_signal"], 9);

    // A code nobody named still says which one it was.
    e.reason.clear();
    EXPECT_EQ(to_json(e)["reason"], "REASON_11");
}

TEST(OomJson, FieldsAndNulls)
{
    OomEvent o;
    o.time_ns = kTimeNs;
    o.pid = 4121;
    o.comm = "gunicorn";
    o.rss_kb = 512000;
    o.total_vm_kb = 900000;
    o.cgroup = "/system.slice/app.service";
    json j = to_json(Event{o});
    EXPECT_EQ(keys(j), (std::set<std::string>{"type", "time", "pid", "comm", "rss_kb",
                                              "total_vm_kb", "cgroup"}));
    EXPECT_EQ(j["type"], "oom");
    EXPECT_EQ(j["time"], "2026-11-24T02:30:00.123456Z");
    EXPECT_EQ(j["pid"], 4121);
    EXPECT_EQ(j["comm"], "gunicorn");
    EXPECT_EQ(j["rss_kb"], 512000);
    EXPECT_EQ(j["total_vm_kb"], 900000);
    EXPECT_EQ(j["cgroup"], "/system.slice/app.service");

    o.rss_kb.reset();
    o.total_vm_kb.reset();
    o.cgroup.clear();
    j = to_json(o);
    EXPECT_TRUE(j["rss_kb"].is_null());
    EXPECT_TRUE(j["total_vm_kb"].is_null());
    EXPECT_TRUE(j["cgroup"].is_null());
}

TEST(EventJson, VariantDispatches)
{
    EXPECT_EQ(to_json(Event{upstream_reset()})["type"], "rst");
    EXPECT_EQ(to_json(Event{OomEvent{}})["type"], "oom");
}

TEST(TextLine, UpstreamReset)
{
    ResetEvent e = upstream_reset();
    e.idle_ms = 5003.1;
    EXPECT_EQ(format_text(e),
              "02:30:00.123456 RST received upstream nginx[1234] 127.0.0.1:40312 -> "
              "127.0.0.1:8081 ESTABLISHED idle=5003.1ms pool_idle=5002.9ms since_request=0.4ms "
              "req=reused bytes_sent=1.2KiB bytes_received=3.4KiB");
    e.retransmits = 3;
    EXPECT_NE(format_text(e).find(" bytes_received=3.4KiB retransmits=3"), std::string::npos) << format_text(e);
}

TEST(TextLine, SentResetUnknownOwnerShowsEvidence)
{
    ResetEvent e = upstream_reset();
    e.direction = Direction::Sent;
    e.role = Role::Other;
    e.owner_known = false;
    e.reason_code = 1;
    e.reason = "NO_SOCKET";
    e.idle_ms.reset();
    e.pool_idle_ms.reset();
    e.since_request_ms.reset();
    e.bytes_sent.reset();
    e.bytes_received.reset();
    e.in_request = false;
    e.reused = false;
    e.on_cpu_pid = 999;
    e.on_cpu_comm = "python3";
    e.on_cpu_exiting = true;
    e.on_cpu_exit_signal = 9;
    EXPECT_EQ(format_text(e),
              "02:30:00.123456 RST sent other ? 127.0.0.1:40312 -> 127.0.0.1:8081 ESTABLISHED "
              "reason=NO_SOCKET idle=- pool_idle=- since_request=- bytes_sent=- bytes_received=- "
              "on_cpu=python3[999](exiting, signal 9)");
}

TEST(TextLine, SentResetWithoutReasonSaysDash)
{
    ResetEvent e = upstream_reset();
    e.direction = Direction::Sent;
    std::string line = format_text(e);
    EXPECT_NE(line.find(" RST sent upstream nginx[1234] "), std::string::npos) << line;
    EXPECT_NE(line.find(" reason=- "), std::string::npos) << line;
    // Received resets have no reason to show.
    EXPECT_EQ(format_text(upstream_reset()).find("reason="), std::string::npos);
}

TEST(TextLine, Oom)
{
    OomEvent o;
    o.time_ns = kTimeNs;
    o.pid = 4121;
    o.comm = "gunicorn";
    o.rss_kb = 512000;
    o.cgroup = "/system.slice/app.service";
    EXPECT_EQ(format_text(o),
              "02:30:00.123456 OOM killed pid 4121 (gunicorn) rss=512000kB "
              "cgroup=/system.slice/app.service");
    o.rss_kb.reset();
    o.cgroup.clear();
    EXPECT_EQ(format_text(o), "02:30:00.123456 OOM killed pid 4121 (gunicorn) rss=- cgroup=-");
}

TEST(TextHelpers, Bytes)
{
    EXPECT_EQ(format_bytes(0), "0B");
    EXPECT_EQ(format_bytes(1023), "1023B");
    EXPECT_EQ(format_bytes(1024), "1.0KiB");
    EXPECT_EQ(format_bytes(5 * 1024 * 1024 + 512 * 1024), "5.5MiB");
    EXPECT_EQ(format_bytes(uint64_t{3} << 40), "3.0TiB");
}
