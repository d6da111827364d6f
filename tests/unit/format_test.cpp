// The JSON contract and the human line for one event.
#include <gtest/gtest.h>

#include <csignal>
#include <set>
#include <vector>

#include "outputs/evidence_text.h"
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
    e.state = TcpState::Established;
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
                                     "in_request", "request_acked", "data_ttl", "rst_ttl",
                                     "no_socket", "orphan", "stalled_retransmits", "cause",
                                     "confidence", "evidence", "hint"}));
    EXPECT_EQ(keys(j["on_cpu"]), (std::set<std::string>{"pid", "comm", "exiting", "exit_signal"}));
}

TEST(ResetJson, DiagnosisFields)
{
    ResetEvent e = upstream_reset();
    EXPECT_TRUE(to_json(e)["cause"].is_null()) << "no diagnosis, no cause";
    e.diagnosis = Diagnosis{Cause::KeepaliveRace,
                            Confidence::High,
                            {Evidence{.code = EvidenceCode::BackendClosedState, .state = TcpState::FinWait1},
                             Evidence{.code = EvidenceCode::PoolReuse, .ms = 5000}},
                            Hint{.code = HintCode::BackendIdleTimeout, .idle_ms = 5000, .keepalive_ms = 4000}};
    json j = to_json(e);
    EXPECT_EQ(j["cause"], "keepalive_race");
    EXPECT_EQ(j["confidence"], "high");
    EXPECT_EQ(j["evidence"], json::array({"the backend had already closed this connection: its socket was in "
                                          "FIN_WAIT1 when the request arrived",
                                          "pooled connection reused after 5.0 s idle"}));
    EXPECT_EQ(j["hint"], "reset on reuse after 5.0 s idle: the backend closes idle connections after at most "
                         "5.0 s; keep keepalive_timeout in the upstream block below the backend's (4s if its "
                         "timeout is about 5.0 s)");
    const std::string text = format_text(e);
    EXPECT_NE(text.find(" cause=keepalive_race(high)\n    why: the backend had already closed this connection: "
                        "its socket was in FIN_WAIT1 when the request arrived; pooled connection reused after "
                        "5.0 s idle\n    fix: reset on reuse after 5.0 s idle: "),
              std::string::npos)
        << text;

    e.diagnosis = Diagnosis{Cause::Unknown, Confidence::Low, {Evidence{.code = EvidenceCode::RoleUnknown}}, {}};
    EXPECT_TRUE(to_json(e)["hint"].is_null()) << "no hint is null, not \"\"";
    EXPECT_EQ(format_text(e).find("fix:"), std::string::npos);
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
    e.reason = ResetReason::TcpAbortOnClose;
    e.on_cpu_exiting = true;
    e.on_cpu_exit_signal = 9;
    json j = to_json(e);
    EXPECT_EQ(j["direction"], "sent");
    EXPECT_EQ(j["reason"], "TCP_ABORT_ON_CLOSE");
    EXPECT_EQ(j["on_cpu"]["exiting"], true);
    EXPECT_EQ(j["on_cpu"]["exit_signal"], 9);

    // A code this build cannot name still says which one it was.
    e.reason = ResetReason::Unknown;
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
    e.reason = ResetReason::NoSocket;
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

// ---- The diagnosis in words: one rendering per code ------------------------

namespace {

const std::string kRetry = "`proxy_next_upstream error` retries idempotent requests on another server";

struct EvidenceRendering {
    Evidence evidence;
    std::string words;
};

std::vector<EvidenceRendering> evidence_renderings()
{
    using C = EvidenceCode;
    return {
        {{.code = C::ClientConnection, .comm = "nginx", .address = "203.0.113.7:51000"},
         "reset on a connection nginx accepted (its client 203.0.113.7:51000)"},
        {{.code = C::NginxAbandoned, .comm = "nginx", .reason = ResetReason::TcpAbortOnClose, .reason_code = 11},
         "nginx itself reset the upstream connection (reason TCP_ABORT_ON_CLOSE): it abandoned the request, as "
         "when its client goes away"},
        {{.code = C::NginxAbandoned, .comm = "nginx"},
         "nginx itself reset the upstream connection: it abandoned the request, as when its client goes away"},
        {{.code = C::RoleUnknown}, "connection role unknown: neither its connect() nor its accept() was seen"},
        {{.code = C::NoRequestWaiting},
         "no request was waiting: the backend had sent last (a response under way, or the connection idle in "
         "nginx's pool)"},
        {{.code = C::ResetAfterRequest, .ms = 350, .comm = "nginx", .reused = true},
         "reset 350 ms after nginx sent a request on a reused connection, before any response byte"},
        {{.code = C::ResetAfterRequest, .ms = 2500, .comm = "openresty"},
         "reset 2.5 s after openresty sent the connection's first request, before any response byte"},
        {{.code = C::ResetDuringRequest},
         "reset while the connection's first request was waiting, before any response byte"},
        {{.code = C::PoolReuse, .ms = 5000}, "pooled connection reused after 5.0 s idle"},
        {{.code = C::BackendSentReset, .reason = ResetReason::Unknown, .reason_code = 27},
         "the backend's side is on this host: its socket sent the reset (reason REASON_27)"},
        {{.code = C::BackendSentReset}, "the backend's side is on this host: its socket sent the reset"},
        {{.code = C::BackendExiting, .pid = 777, .comm = "backend", .signal = SIGABRT},
         "pid 777 (backend) was exiting on SIGABRT when the reset left its socket"},
        {{.code = C::BackendExiting, .pid = 777, .comm = "backend", .signal = 0},
         "pid 777 (backend) was exiting without a signal (it called exit) when the reset left its socket"},
        {{.code = C::OomKillsUntraced},
         "this kernel does not trace OOM kills (oom:mark_victim): the OOM killer (backend_oom) and a kill -9 "
         "(backend_crash) look the same"},
        {{.code = C::BackendOomKilled, .ms = 3, .pid = 777, .comm = "backend", .rss_kb = 65536,
          .cgroup = "/rstwatch-test"},
         "pid 777 (backend) killed by the OOM killer 3 ms before, rss 65536 kB, cgroup /rstwatch-test"},
        {{.code = C::BackendOomKilled, .ms = 1500, .pid = 777, .comm = "backend"},
         "pid 777 (backend) killed by the OOM killer 1.5 s before"},
        {{.code = C::BackendHadNoSocket, .comm = "nginx", .listener = true},
         "the backend's kernel had no socket for this connection (only its listener answered): the backend "
         "restarted (or its host or container did) while nginx held it"},
        {{.code = C::BackendClosedOnData},
         "the backend had already closed this connection: data arriving after its close was answered with a "
         "reset"},
        {{.code = C::BackendClosedState, .state = TcpState::TimeWait},
         "the backend had already closed this connection: its socket was in TIME_WAIT when the request arrived"},
        {{.code = C::BackendSegmentsStalled, .segments = 10, .mss = 1448, .timeouts = 6},
         "the backend had 10 segments of up to 1448 bytes unacknowledged after 6 retransmission timeouts in a "
         "row when it gave up: its large segments were not getting through"},
        {{.code = C::BackendResetItself, .pid = 777, .comm = "backend"},
         "pid 777 (backend) reset the connection itself without exiting"},
        {{.code = C::BackendElsewhere},
         "no reset from the backend's side on this host: the backend is elsewhere, its processes cannot be seen"},
        {{.code = C::SocketlessResetsUntraced},
         "no reset from the backend's side traced: this kernel does not trace resets sent without a socket "
         "(Linux 6.10+), so a backend on this host that restarted or had already closed the connection leaves "
         "none"},
        {{.code = C::RstTtlDiffers, .rst_ttl = 64, .data_ttl = 63},
         "RST TTL 64 vs connection TTL 63: sent by a hop closer than the backend"},
        {{.code = C::RstTtlDiffers, .rst_ttl = 60, .data_ttl = 63},
         "RST TTL 60 vs connection TTL 63: sent by another host than the backend"},
        {{.code = C::NginxSegmentsStalled, .comm = "nginx", .segments = 8, .mss = 1448, .timeouts = 5},
         "nginx had 8 segments of up to 1448 bytes unacknowledged after 5 retransmission timeouts in a row"},
        {{.code = C::RstTtlMatches, .rst_ttl = 64}, "RST TTL 64 matches the connection's: the backend host sent it"},
        {{.code = C::RstTtlUnknown}, "TTL of the reset unknown: a middlebox cannot be ruled out"},
        {{.code = C::BackendFinBeforeReset},
         "the backend's FIN reached nginx before the reset: the backend had closed the connection as the request "
         "went out (a middlebox or a restarted host sends no FIN)"},
        {{.code = C::RequestAcknowledged},
         "the backend acknowledged part of the request before the reset: its socket was alive when the request "
         "came (a closed connection, a restarted host or a forgotten flow answers the first segment with the "
         "reset)"},
        {{.code = C::CandidatesOnReuse},
         "candidates: keepalive_race, stale_reuse, middlebox_idle, or a backend process that ended as the request "
         "came (backend_crash, backend_oom, backend_shutdown): each answers a reused connection's first segment "
         "with a reset"},
        {{.code = C::CandidatesOnFirstRequest},
         "candidates: backend_crash, backend_oom, backend_shutdown, stale_reuse (a reset on the connection's first "
         "request)"},
        {{.code = C::CandidatesMidRequest},
         "candidates: backend_crash, backend_oom, backend_shutdown (its process ended with the request open), or "
         "the backend reset the connection itself: only the backend's host can tell"},
        {{.code = C::CandidatesLateReset, .ms = 2000},
         "candidates: the backend gave up on the connection 2.0 s after the request without a response byte "
         "arriving (its own timeout, as when its response cannot get through: mtu_blackhole), or its process "
         "ended (backend_crash, backend_oom, backend_shutdown)"},
        {{.code = C::CandidatesStalled},
         "candidates: mtu_blackhole (large segments dropped on the way), or the backend host was unreachable and "
         "came back (stale_reuse)"},
        {{.code = C::ConnectRefused, .address = "198.18.1.2:8081"},
         "the connection was refused: nginx's SYN to 198.18.1.2:8081 was answered with a reset (nginx logs this as "
         "111: Connection refused, not 104)"},
        {{.code = C::Recorded, .text = "words from the store"}, "words from the store"},
    };
}

struct HintRendering {
    Hint hint;
    std::string words;
};

// How an unknown cause on reuse ends: what would tell the candidates apart.
const std::string kTellApart = "; what tells them apart: the reset's TTL (a middlebox's differs; recorded by default "
                               "where fentry attaches, else with rstwatch run --ttl-evidence), the backend's idle "
                               "timeout and its logs";

std::vector<HintRendering> hint_renderings()
{
    using H = HintCode;
    const std::string backend = "198.18.1.2:8081";
    return {
        {{.code = H::None}, ""},
        {{.code = H::ClientsGoAway}, "not an upstream failure: clients going away show as 499 in the access log"},
        {{.code = H::NginxGaveUp}, "not an upstream failure: look for 499 (client closed) or 504 lines at that time"},
        {{.code = H::BackendKilled, .comm = "gunicorn"},
         "backend gunicorn was killed: check `dmesg -T | grep -i 'killed process'` for the OOM killer, and the "
         "backend's logs; " + kRetry},
        {{.code = H::BackendOutOfMemory, .comm = "gunicorn", .cgroup = "/system.slice/app.service"},
         "backend gunicorn ran out of memory in /system.slice/app.service: raise its memory limit or fix its "
         "memory use; " + kRetry},
        {{.code = H::BackendOutOfMemory, .comm = "gunicorn"},
         "backend gunicorn ran out of memory: raise its memory limit or fix its memory use; " + kRetry},
        {{.code = H::BackendDied, .comm = "gunicorn", .signal = SIGSEGV},
         "backend gunicorn died mid-request on SIGSEGV: check its logs and core dumps; " + kRetry},
        {{.code = H::BackendStopped, .comm = "gunicorn", .signal = SIGTERM},
         "backend gunicorn was stopped on SIGTERM with nginx's request open (a deploy, a scale-down, a restart "
         "without drain): drain before stopping it (stop accepting, let open requests finish; in Kubernetes a "
         "preStop hook and terminationGracePeriodSeconds); " + kRetry},
        {{.code = H::BackendStopped, .comm = "gunicorn"},
         "backend gunicorn was stopped with nginx's request open (a deploy, a scale-down, a restart without "
         "drain): drain before stopping it (stop accepting, let open requests finish; in Kubernetes a preStop "
         "hook and terminationGracePeriodSeconds); " + kRetry},
        {{.code = H::BackendsRestarted},
         "backends restarted under pooled connections: drain nginx before restarting backends, or lower "
         "keepalive_timeout in the upstream block"},
        {{.code = H::BackendSegmentsLost, .address = backend, .mss = 1448},
         "segments of 1448 bytes from 198.18.1.2:8081 are lost on the way: let ICMP 'fragmentation needed' "
         "through, or clamp the MSS (iptables TCPMSS --clamp-mss-to-pmtu) on the path"},
        {{.code = H::NginxSegmentsLost, .address = backend, .mss = 1448},
         "nginx's segments of 1448 bytes to 198.18.1.2:8081 went unacknowledged: check the path MTU (ping -M do -s "
         "SIZE) and let ICMP 'fragmentation needed' through; if the backend host was down at that time (a reboot), "
         "that explains it instead"},
        {{.code = H::BackendEndedMidRequest},
         "the backend's process ended or reset the connection with nginx's request open: check the backend host's "
         "logs at this time for a crash, an OOM kill (dmesg) or a stop without drain (a deploy: drain before "
         "stopping); " + kRetry},
        {{.code = H::BackendGaveUpLate, .address = backend, .idle_ms = 2000},
         "the backend reset the connection 2.0 s after nginx's request without a response byte arriving: check the "
         "backend's logs at this time for a timeout or a crash, and the path MTU from 198.18.1.2:8081 to nginx "
         "(ping -M do; let ICMP 'fragmentation needed' through)"},
        {{.code = H::CheckBackendRestarts}, "check the backend's logs and restarts at this time; " + kRetry},
        {{.code = H::KeepaliveBelowPoolIdleRemote, .idle_ms = 5000, .keepalive_ms = 4000},
         "the connection sat 5.0 s in the pool: if the backend or a middlebox drops idle connections, a "
         "keepalive_timeout below that in the upstream block (4s) avoids the reset; if the backend's host "
         "restarted or its process ended then, its logs show it" + kTellApart},
        {{.code = H::KeepaliveBelowPoolIdleRemote, .idle_ms = 16, .keepalive_ms = 0},
         "the connection sat 16 ms in the pool, too short for an idle timeout to be likely: check the backend's "
         "logs at this time for a crash, an OOM kill or a stop; if its idle timeout is that short, turn upstream "
         "keep-alive to it off" + kTellApart},
        {{.code = H::KeepaliveBelowPoolIdleRemote, .idle_ms = 4600, .keepalive_ms = 3600, .cluster_resets = 2,
          .cluster_median_ms = 4700},
         "resets on reuse cluster at 4.7 s idle (2 resets, from 4.6 s): an idle timeout of about 4.6 s at the "
         "backend or a middlebox is likely; set keepalive_timeout 3600ms in the upstream block" + kTellApart},
        {{.code = H::KeepaliveBelowPoolIdle, .idle_ms = 5000, .keepalive_ms = 4000},
         "the connection sat 5.0 s in the pool: if the backend or a middlebox drops idle connections, a "
         "keepalive_timeout below that in the upstream block (4s) avoids the reset; if the backend's host "
         "restarted or its process ended then, its logs show it; Linux 6.10+ would tell which"},
        {{.code = H::BackendIdleTimeout, .idle_ms = 16, .keepalive_ms = 0},
         "reset on reuse after 16 ms idle: the backend closes idle connections after at most 16 ms, too soon for "
         "nginx's pool: raise its idle timeout or turn upstream keep-alive to it off"},
        {{.code = H::BackendIdleTimeout, .idle_ms = 2000, .keepalive_ms = 1600},
         "reset on reuse after 2.0 s idle: the backend closes idle connections after at most 2.0 s; keep "
         "keepalive_timeout in the upstream block below the backend's (1600ms if its timeout is about 2.0 s)"},
        {{.code = H::BackendIdleTimeout, .idle_ms = 2000, .keepalive_ms = 1600, .cluster_resets = 3,
          .cluster_median_ms = 2100},
         "resets on reuse cluster at 2.1 s idle (3 resets, from 2.0 s): the backend closes idle connections at "
         "about 2.0 s; set keepalive_timeout 1600ms in the upstream block (below the backend's)"},
        {{.code = H::MiddleboxIdleTimeout, .address = backend, .idle_ms = 5000, .keepalive_ms = 4000},
         "reset on reuse after 5.0 s idle: a middlebox between nginx and 198.18.1.2:8081 forgets flows idle for "
         "at most 5.0 s; set keepalive_timeout 4s or lower in the upstream block, or raise the middlebox's idle "
         "timeout"},
        {{.code = H::MiddleboxIdleTimeout, .address = backend, .idle_ms = 5000, .keepalive_ms = 4000,
          .cluster_resets = 4, .cluster_median_ms = 5100},
         "resets on reuse cluster at 5.1 s idle (4 resets, from 5.0 s): a middlebox between nginx and "
         "198.18.1.2:8081 forgets flows idle for about 5.0 s; set keepalive_timeout 4s in the upstream block, or "
         "raise the middlebox's idle timeout"},
        {{.code = H::RestartedUnderPool, .idle_ms = 400},
         "reset on reuse after 400 ms idle: backends restarted under pooled connections: drain nginx before "
         "restarting backends, or lower keepalive_timeout in the upstream block"},
        {{.code = H::BackendNotListening, .address = backend},
         "nothing listens at 198.18.1.2:8081: start the backend or correct the upstream's address; nginx marks a "
         "server failed after max_fails such errors"},
        {{.code = H::Recorded, .text = "words from the store"}, "words from the store"},
    };
}

}  // namespace

TEST(EvidenceInWords, EachCodeInWords)
{
    for (const auto &[evidence, words] : evidence_renderings())
        EXPECT_EQ(evidence_text(evidence), words) << to_string(evidence.code);
}

TEST(EvidenceInWords, EveryCodeHasARenderingAbove)
{
    std::set<EvidenceCode> seen;
    for (const auto &[evidence, words] : evidence_renderings())
        seen.insert(evidence.code);
    for (int c = 0; c <= static_cast<int>(EvidenceCode::Recorded); c++)
        EXPECT_TRUE(seen.count(static_cast<EvidenceCode>(c))) << to_string(static_cast<EvidenceCode>(c));
}

TEST(HintInWords, EachCodeInWords)
{
    for (const auto &[hint, words] : hint_renderings())
        EXPECT_EQ(hint_text(hint), words) << to_string(hint.code);
}

TEST(HintInWords, EveryCodeHasARenderingAbove)
{
    std::set<HintCode> seen;
    for (const auto &[hint, words] : hint_renderings())
        seen.insert(hint.code);
    for (int c = 0; c <= static_cast<int>(HintCode::Recorded); c++)
        EXPECT_TRUE(seen.count(static_cast<HintCode>(c))) << to_string(static_cast<HintCode>(c));
}

TEST(ReasonText, NameNumberOrNothing)
{
    EXPECT_EQ(reason_text(ResetReason::TcpTimewaitSocket, 9), "TCP_TIMEWAIT_SOCKET");
    EXPECT_EQ(reason_text(ResetReason::TcpTimewaitSocket, std::nullopt), "TCP_TIMEWAIT_SOCKET")
        << "read back from the store, which keeps no number";
    EXPECT_EQ(reason_text(ResetReason::Unknown, 27), "REASON_27");
    EXPECT_EQ(reason_text(std::nullopt, std::nullopt), "");
}
