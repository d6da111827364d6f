// decode_record against records built byte by byte, as BPF would emit them.
#include <gtest/gtest.h>

#include <sys/socket.h>

#include <cstring>
#include <vector>

#include "events/decode.h"

extern "C" {
#include "rstwatch_abi.h"
}

using namespace rstwatch;

namespace {

constexpr uint64_t kMonoNs = 5'000'000'000;
constexpr int64_t kOffsetNs = 1'795'487'395'000'000'000;  // boot at 2026-11-24T02:29:55Z

template <typename T>
std::vector<uint8_t> bytes_of(const T &record)
{
    std::vector<uint8_t> out(sizeof(T));
    std::memcpy(out.data(), &record, sizeof(T));
    return out;
}

// Fills a fixed char array as the kernel does: NUL-padded, unterminated if full.
template <size_t N>
void set_comm(char (&dst)[N], const char *src)
{
    std::memset(dst, 0, N);
    std::memcpy(dst, src, std::min(std::strlen(src), N));
}

// An IPv4 upstream connection of nginx[1234], reset by the peer.
rw_reset_record ipv4_reset()
{
    rw_reset_record r{};
    r.hdr.type = RW_REC_RESET;
    r.hdr.size = sizeof(r);
    r.hdr.cpu = 3;
    r.hdr.ts_ns = kMonoNs;
    r.sock_cookie = 0xabcdef;
    r.direction = RW_DIR_RECEIVED;
    r.role = RW_ROLE_UPSTREAM;
    r.family = AF_INET;
    r.state = 1;  // TCP_ESTABLISHED
    r.flags = RW_RST_OWNER_KNOWN | RW_RST_BYTES_KNOWN | RW_RST_IN_REQUEST | RW_RST_REUSED;
    r.owner_tgid = 1234;
    set_comm(r.owner_comm, "nginx");
    r.on_cpu_tgid = 0;
    set_comm(r.on_cpu_comm, "swapper/3");
    const uint8_t local[4] = {127, 0, 0, 1}, remote[4] = {10, 1, 2, 3};
    std::memcpy(r.local_addr, local, 4);
    std::memcpy(r.remote_addr, remote, 4);
    r.local_port = 40312;
    r.remote_port = 8081;
    r.idle_ns = 5'003'100'000;
    r.since_request_ns = 400'000;
    r.pool_idle_ns = 5'002'900'000;
    r.bytes_sent = 1229;
    r.bytes_received = 3482;
    r.retransmits = 2;
    r.packets_out = 1;
    r.mss = 1448;
    return r;
}

// A kernel's numbering, as BTF gives it: 11 and a name this build does not know.
const DecodeContext kCtx{kOffsetNs, ResetReasonTable::from_enumerators({{"SK_RST_REASON_TCP_ABORT_ON_CLOSE", 11},
                                                                        {"SK_RST_REASON_TCP_SOMETHING_NEW", 12}})};

ResetEvent decode_reset_ok(const rw_reset_record &r, const DecodeContext &ctx = kCtx)
{
    auto bytes = bytes_of(r);
    DecodeResult res = decode_record(bytes, ctx);
    EXPECT_TRUE(res.event.has_value()) << res.error;
    if (!res.event || !std::holds_alternative<ResetEvent>(*res.event))
        return {};
    return std::get<ResetEvent>(*res.event);
}

}  // namespace

TEST(DecodeReset, Ipv4UpstreamResetReceivedByOwner)
{
    ResetEvent e = decode_reset_ok(ipv4_reset());
    EXPECT_EQ(e.mono_ns, kMonoNs);
    EXPECT_EQ(e.time_ns, static_cast<int64_t>(kMonoNs) + kOffsetNs);
    EXPECT_EQ(e.direction, Direction::Received);
    EXPECT_EQ(e.role, Role::Upstream);
    EXPECT_FALSE(e.ipv6);
    EXPECT_EQ(e.local, "127.0.0.1:40312");
    EXPECT_EQ(e.remote, "10.1.2.3:8081");
    EXPECT_EQ(e.state, TcpState::Established);
    EXPECT_TRUE(e.owner_known);
    EXPECT_EQ(e.pid, 1234u);
    EXPECT_EQ(e.comm, "nginx");
    EXPECT_EQ(e.on_cpu_pid, 0u);
    EXPECT_EQ(e.on_cpu_comm, "swapper/3");
    EXPECT_FALSE(e.on_cpu_exiting);
    EXPECT_EQ(e.sock_cookie, 0xabcdefu);
    ASSERT_TRUE(e.idle_ms && e.pool_idle_ms && e.since_request_ms);
    EXPECT_DOUBLE_EQ(*e.idle_ms, 5003.1);
    EXPECT_DOUBLE_EQ(*e.pool_idle_ms, 5002.9);
    EXPECT_DOUBLE_EQ(*e.since_request_ms, 0.4);
    EXPECT_EQ(e.bytes_sent, 1229u);
    EXPECT_EQ(e.bytes_received, 3482u);
    EXPECT_TRUE(e.in_request);
    EXPECT_TRUE(e.reused);
    EXPECT_EQ(e.retransmits, 2u);
    EXPECT_EQ(e.packets_out, 1u);
    EXPECT_EQ(e.mss, 1448u);
    // Received resets carry no kernel reason.
    EXPECT_FALSE(e.reason_code.has_value());
    EXPECT_FALSE(e.reason.has_value());
}

TEST(DecodeReset, Ipv6Endpoints)
{
    rw_reset_record r = ipv4_reset();
    r.family = AF_INET6;
    const uint8_t local[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    uint8_t remote[16] = {};
    remote[15] = 1;  // ::1
    std::memcpy(r.local_addr, local, 16);
    std::memcpy(r.remote_addr, remote, 16);
    r.local_port = 443;
    r.remote_port = 8081;
    ResetEvent e = decode_reset_ok(r);
    EXPECT_TRUE(e.ipv6);
    EXPECT_EQ(e.local, "[2001:db8::1]:443");
    EXPECT_EQ(e.remote, "[::1]:8081");
}

TEST(DecodeReset, UnknownValuesBecomeNullopt)
{
    rw_reset_record r = ipv4_reset();
    r.flags = 0;  // no owner, no byte counts, no reason
    r.pool_idle_ns = RW_UNKNOWN_NS;
    r.idle_ns = RW_UNKNOWN_NS;
    r.since_request_ns = RW_UNKNOWN_NS;
    r.reason = 11;  // present in the record but not flagged as known
    ResetEvent e = decode_reset_ok(r);
    EXPECT_FALSE(e.owner_known);
    // The owner fields of the record are ignored without the flag.
    EXPECT_EQ(e.pid, 0u);
    EXPECT_EQ(e.comm, "");
    EXPECT_FALSE(e.idle_ms.has_value());
    EXPECT_FALSE(e.pool_idle_ms.has_value());
    EXPECT_FALSE(e.since_request_ms.has_value());
    EXPECT_FALSE(e.bytes_sent.has_value());
    EXPECT_FALSE(e.bytes_received.has_value());
    EXPECT_FALSE(e.reason_code.has_value());
    EXPECT_FALSE(e.reason.has_value());
}

TEST(DecodeReset, SentResetWithReasonAndExitingTask)
{
    rw_reset_record r = ipv4_reset();
    r.direction = RW_DIR_SENT;
    r.role = RW_ROLE_DOWNSTREAM;
    r.reason = 11;
    r.flags |= RW_RST_REASON_KNOWN | RW_RST_ON_CPU_EXITING | RW_RST_OWNER_HOLDER | RW_RST_NO_SOCKET;
    r.on_cpu_tgid = 1234;
    r.on_cpu_exit_code = 0x80 | 9;  // core-dump bit + SIGKILL
    ResetEvent e = decode_reset_ok(r);
    EXPECT_EQ(e.direction, Direction::Sent);
    EXPECT_EQ(e.role, Role::Downstream);
    ASSERT_TRUE(e.reason_code.has_value());
    EXPECT_EQ(*e.reason_code, 11u);
    EXPECT_EQ(e.reason, ResetReason::TcpAbortOnClose);
    EXPECT_TRUE(e.owner_holder);
    EXPECT_TRUE(e.no_socket);
    EXPECT_TRUE(e.on_cpu_exiting);
    EXPECT_EQ(e.on_cpu_exit_signal, 9);
}

TEST(DecodeReset, ClientConnectionOwnedThroughItsListener)
{
    rw_reset_record r = ipv4_reset();
    r.role = RW_ROLE_DOWNSTREAM;
    r.flags |= RW_RST_OWNER_KNOWN | RW_RST_OWNER_LISTENER;
    ResetEvent e = decode_reset_ok(r);
    EXPECT_TRUE(e.owner_known);
    EXPECT_TRUE(e.owner_listener);
    EXPECT_FALSE(e.owner_holder);

    r.flags |= RW_RST_OWNER_HOLDER;
    e = decode_reset_ok(r);
    EXPECT_TRUE(e.owner_listener);
    EXPECT_TRUE(e.owner_holder);
}

// A number the kernel did not name, one it named something new, and any
// number without a table: an unknown reason that keeps its number.
TEST(DecodeReset, ReasonsTheTableCannotNameAreUnknownWithTheirNumber)
{
    rw_reset_record r = ipv4_reset();
    r.direction = RW_DIR_SENT;
    r.flags |= RW_RST_REASON_KNOWN;
    for (uint32_t code : {7u, 12u, 100000u}) {
        r.reason = code;
        ResetEvent e = decode_reset_ok(r);
        EXPECT_EQ(e.reason, ResetReason::Unknown) << code;
        EXPECT_EQ(e.reason_code, code);
    }
    r.reason = 11;
    ResetEvent e = decode_reset_ok(r, DecodeContext{0, {}});
    EXPECT_EQ(e.reason, ResetReason::Unknown);
    EXPECT_EQ(e.reason_code, 11u);
    EXPECT_EQ(e.time_ns, static_cast<int64_t>(kMonoNs));
}

TEST(DecodeReset, FullLengthCommIsNotOverread)
{
    rw_reset_record r = ipv4_reset();
    std::memcpy(r.owner_comm, "0123456789abcdef", RW_COMM_LEN);  // no NUL
    ResetEvent e = decode_reset_ok(r);
    EXPECT_EQ(e.comm, "0123456789abcdef");
}

// Any user can name a process with bytes that are not text: the agent once
// aborted on "\xff" (nlohmann's dump() threw), and a name with "\x1b[" could
// drive the operator's terminal.
TEST(PrintableName, KeepsTextAndEscapesWhatIsNot)
{
    EXPECT_EQ(printable_name("nginx: worker process"), "nginx: worker process");
    EXPECT_EQ(printable_name("caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80"), "caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80");
    EXPECT_EQ(printable_name("bad\xff\xfe"), "bad\\xff\\xfe");
    EXPECT_EQ(printable_name("a\nb\tc\x7f"), "a\\x0ab\\x09c\\x7f");
    EXPECT_EQ(printable_name("\x1b[31mred"), "\\x1b[31mred");
    EXPECT_EQ(printable_name("C:\\x41"), "C:\\x5cx41") << "a backslash is escaped, so nothing reads as an escape it was not";
    EXPECT_EQ(printable_name("\xc2\x85next"), "\\xc2\\x85next") << "C1 control";
    EXPECT_EQ(printable_name("\xc0\xaf"), "\\xc0\\xaf") << "overlong '/'";
    EXPECT_EQ(printable_name("\xed\xa0\x80"), "\\xed\\xa0\\x80") << "surrogate";
    EXPECT_EQ(printable_name("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80") << "past U+10FFFF";
    EXPECT_EQ(printable_name("cut\xe6\x97"), "cut\\xe6\\x97") << "a sequence cut short by the 16-byte limit";
    EXPECT_EQ(printable_name(std::string_view("nul\0x", 5)), "nul\\x00x");
}

TEST(DecodeReset, ANameThatIsNotTextIsEscaped)
{
    rw_reset_record r = ipv4_reset();
    set_comm(r.owner_comm, "bad\xff\n");
    set_comm(r.on_cpu_comm, "\x1b[2J");
    ResetEvent e = decode_reset_ok(r);
    EXPECT_EQ(e.comm, "bad\\xff\\x0a");
    EXPECT_EQ(e.on_cpu_comm, "\\x1b[2J");
}

TEST(DecodeOom, RssIsTheSumOfItsParts)
{
    rw_oom_record r{};
    r.hdr.type = RW_REC_OOM;
    r.hdr.size = sizeof(r);
    r.hdr.ts_ns = kMonoNs;
    r.pid = 4121;
    r.flags = RW_OOM_RSS_KNOWN;
    set_comm(r.comm, "gunicorn");
    r.total_vm_kb = 900000;
    r.anon_rss_kb = 500000;
    r.file_rss_kb = 10000;
    r.shmem_rss_kb = 2000;
    auto bytes = bytes_of(r);
    DecodeResult res = decode_record(bytes, kCtx);
    ASSERT_TRUE(res.event) << res.error;
    ASSERT_TRUE(std::holds_alternative<OomEvent>(*res.event));
    const OomEvent &e = std::get<OomEvent>(*res.event);
    EXPECT_EQ(e.pid, 4121u);
    EXPECT_EQ(e.comm, "gunicorn");
    EXPECT_EQ(e.time_ns, static_cast<int64_t>(kMonoNs) + kOffsetNs);
    EXPECT_EQ(e.rss_kb, 512000u);
    EXPECT_EQ(e.total_vm_kb, 900000u);
}

TEST(DecodeOom, UnknownRssIsNullopt)
{
    rw_oom_record r{};
    r.hdr.type = RW_REC_OOM;
    r.hdr.size = sizeof(r);
    r.pid = 1;
    r.anon_rss_kb = 123;  // not flagged as known
    auto bytes = bytes_of(r);
    DecodeResult res = decode_record(bytes, kCtx);
    ASSERT_TRUE(res.event) << res.error;
    const OomEvent &e = std::get<OomEvent>(*res.event);
    EXPECT_FALSE(e.rss_kb.has_value());
    EXPECT_FALSE(e.total_vm_kb.has_value());
}

TEST(DecodeErrors, BufferShorterThanHeader)
{
    std::vector<uint8_t> bytes(sizeof(rw_record_header) - 1, 0);
    DecodeResult res = decode_record(bytes, kCtx);
    EXPECT_FALSE(res.event.has_value());
    EXPECT_NE(res.error.find("too short"), std::string::npos) << res.error;
    EXPECT_FALSE(decode_record({}, kCtx).event.has_value());
}

TEST(DecodeErrors, ResetRecordCutShort)
{
    // A header that claims to be a reset, in a buffer as long as it says,
    // but shorter than a reset record.
    auto bytes = bytes_of(ipv4_reset());
    bytes.resize(sizeof(rw_reset_record) - 8);
    rw_record_header hdr{};
    std::memcpy(&hdr, bytes.data(), sizeof(hdr));
    hdr.size = static_cast<uint16_t>(bytes.size());
    std::memcpy(bytes.data(), &hdr, sizeof(hdr));
    DecodeResult res = decode_record(bytes, kCtx);
    EXPECT_FALSE(res.event.has_value());
    EXPECT_NE(res.error.find("too short"), std::string::npos) << res.error;
}

TEST(DecodeErrors, UnknownRecordType)
{
    rw_reset_record r = ipv4_reset();
    r.hdr.type = 7;
    auto bytes = bytes_of(r);
    DecodeResult res = decode_record(bytes, kCtx);
    EXPECT_FALSE(res.event.has_value());
    EXPECT_NE(res.error.find("unknown record type 7"), std::string::npos) << res.error;
}

TEST(DecodeErrors, HeaderSizeLargerThanBuffer)
{
    rw_reset_record r = ipv4_reset();
    r.hdr.size = sizeof(r) + 1;
    auto bytes = bytes_of(r);
    DecodeResult res = decode_record(bytes, kCtx);
    EXPECT_FALSE(res.event.has_value());
    EXPECT_NE(res.error.find("claims"), std::string::npos) << res.error;
}

TEST(DecodeNames, TcpStates)
{
    EXPECT_EQ(tcp_state_name(TcpState::SynSent), "SYN_SENT");
    EXPECT_EQ(tcp_state_name(TcpState::NewSynRecv), "NEW_SYN_RECV");
    EXPECT_EQ(tcp_state_name(TcpState::Unknown), "STATE_0");
    EXPECT_EQ(tcp_state_name(static_cast<TcpState>(42)), "STATE_42") << "a newer kernel's state keeps its number";
    for (int n = 0; n < 256; n++) {
        const auto state = static_cast<TcpState>(n);
        EXPECT_EQ(tcp_state_from_name(tcp_state_name(state)), state) << n;
    }
    EXPECT_EQ(tcp_state_from_name("TIME_WAIT"), TcpState::TimeWait);
    EXPECT_FALSE(tcp_state_from_name("TCP_TIME_WAIT"));
    EXPECT_FALSE(tcp_state_from_name("STATE_x"));
    EXPECT_STREQ(to_string(Role::Upstream), "upstream");
    EXPECT_STREQ(to_string(Direction::Sent), "sent");
}

TEST(DecodeOom, CgroupPathFromLeafFirstNames)
{
    rw_oom_record r{};
    r.hdr.type = RW_REC_OOM;
    r.hdr.size = sizeof(r);
    r.pid = 4121;
    set_comm(r.cgroup_names[0], "docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab.scope");
    set_comm(r.cgroup_names[1], "system.slice");
    r.cgroup_levels = 2;
    auto bytes = bytes_of(r);
    DecodeResult res = decode_record(bytes, kCtx);
    ASSERT_TRUE(res.event) << res.error;
    EXPECT_EQ(std::get<OomEvent>(*res.event).cgroup,
              "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab.scope");

    r.flags |= RW_OOM_CGROUP_TRUNCATED;
    bytes = bytes_of(r);
    EXPECT_EQ(std::get<OomEvent>(*decode_record(bytes, kCtx).event).cgroup.rfind("/.../system.slice/", 0), 0u)
        << "a path deeper than the kernel side keeps says so";

    r = rw_oom_record{};
    r.hdr.type = RW_REC_OOM;
    r.hdr.size = sizeof(r);
    bytes = bytes_of(r);
    EXPECT_EQ(std::get<OomEvent>(*decode_record(bytes, kCtx).event).cgroup, "") << "not read by BPF";
}
