#include "events/decode.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cstring>

extern "C" {
#include "rstwatch_abi.h"
}

namespace rstwatch {

// The wire layout is shared with BPF: a size change must be deliberate.
static_assert(sizeof(rw_record_header) == 16);
static_assert(sizeof(rw_reset_record) == 184);
static_assert(sizeof(rw_cred_holder) == 48);
static_assert(sizeof(rw_listener) == 32);
static_assert(sizeof(rw_flow) == 48);
static_assert(sizeof(rw_oom_record) == 848);
static_assert(sizeof(rw_counters) == 40);

std::string format_endpoint(bool ipv6, const uint8_t *addr, uint16_t port)
{
    char buf[INET6_ADDRSTRLEN] = {};
    inet_ntop(ipv6 ? AF_INET6 : AF_INET, addr, buf, sizeof(buf));
    if (ipv6)
        return "[" + std::string(buf) + "]:" + std::to_string(port);
    return std::string(buf) + ":" + std::to_string(port);
}

// Length of the well-formed UTF-8 sequence that starts at s[i] (RFC 3629:
// no overlong forms, no surrogates, nothing past U+10FFFF), or 0.
static size_t utf8_sequence_length(std::string_view s, size_t i)
{
    const auto byte = [&](size_t k) { return i + k < s.size() ? static_cast<uint8_t>(s[i + k]) : 0; };
    const auto in = [](uint8_t b, uint8_t lo, uint8_t hi) { return b >= lo && b <= hi; };
    const uint8_t lead = byte(0);
    if (lead < 0x80)
        return 1;
    // The second byte's range depends on the lead byte; the rest are 80..BF.
    uint8_t lo = 0x80, hi = 0xbf;
    size_t length;
    if (in(lead, 0xc2, 0xdf))
        length = 2;
    else if (in(lead, 0xe0, 0xef))
        length = 3, lo = lead == 0xe0 ? 0xa0 : 0x80, hi = lead == 0xed ? 0x9f : 0xbf;
    else if (in(lead, 0xf0, 0xf4))
        length = 4, lo = lead == 0xf0 ? 0x90 : 0x80, hi = lead == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (!in(byte(1), lo, hi))
        return 0;
    for (size_t k = 2; k < length; ++k)
        if (!in(byte(k), 0x80, 0xbf))
            return 0;
    return length;
}

std::string printable_name(std::string_view bytes)
{
    std::string out;
    out.reserve(bytes.size());
    for (size_t i = 0; i < bytes.size();) {
        const auto b = static_cast<uint8_t>(bytes[i]);
        size_t n = utf8_sequence_length(bytes, i);
        // C1 controls (U+0080..U+009F) are C2 80..C2 9F.
        bool control = b < 0x20 || b == 0x7f || b == '\\' ||
                       (n == 2 && b == 0xc2 && static_cast<uint8_t>(bytes[i + 1]) < 0xa0);
        if (n == 0 || control) {
            static constexpr char hex[] = "0123456789abcdef";
            const size_t escaped = n == 0 ? 1 : n;
            for (size_t k = 0; k < escaped; ++k) {
                const auto e = static_cast<uint8_t>(bytes[i + k]);
                out += {'\\', 'x', hex[e >> 4], hex[e & 0xf]};
            }
            i += escaped;
            continue;
        }
        out.append(bytes.substr(i, n));
        i += n;
    }
    return out;
}

static std::string comm_string(const char (&comm)[RW_COMM_LEN])
{
    return printable_name(std::string_view(comm, strnlen(comm, RW_COMM_LEN)));
}

static std::optional<double> ns_to_ms(uint64_t ns)
{
    if (ns == RW_UNKNOWN_NS)
        return std::nullopt;
    return static_cast<double>(ns) / 1e6;
}

template <typename T>
static bool read_record(std::span<const uint8_t> bytes, T &out, std::string &error)
{
    if (bytes.size() < sizeof(T)) {
        error = "record too short: " + std::to_string(bytes.size()) + " bytes, need " +
                std::to_string(sizeof(T));
        return false;
    }
    std::memcpy(&out, bytes.data(), sizeof(T));
    return true;
}

static ResetEvent decode_reset(const rw_reset_record &r, const DecodeContext &ctx)
{
    ResetEvent e;
    e.mono_ns = r.hdr.ts_ns;
    e.time_ns = static_cast<int64_t>(r.hdr.ts_ns) + ctx.realtime_offset_ns;
    e.direction = r.direction == RW_DIR_SENT ? Direction::Sent : Direction::Received;
    e.role = r.role == RW_ROLE_UPSTREAM     ? Role::Upstream
             : r.role == RW_ROLE_DOWNSTREAM ? Role::Downstream
                                            : Role::Other;
    e.ipv6 = r.family == AF_INET6;
    e.local = format_endpoint(e.ipv6, r.local_addr, r.local_port);
    e.remote = format_endpoint(e.ipv6, r.remote_addr, r.remote_port);
    e.state = static_cast<TcpState>(r.state);
    if (r.flags & RW_RST_REASON_KNOWN) {
        e.reason_code = r.reason;
        e.reason = ctx.reasons.reason(r.reason);
    }
    e.owner_known = r.flags & RW_RST_OWNER_KNOWN;
    e.owner_listener = r.flags & RW_RST_OWNER_LISTENER;
    e.owner_holder = r.flags & RW_RST_OWNER_HOLDER;
    if (e.owner_known) {
        e.pid = r.owner_tgid;
        e.comm = comm_string(r.owner_comm);
    }
    e.on_cpu_pid = r.on_cpu_tgid;
    e.on_cpu_comm = comm_string(r.on_cpu_comm);
    e.on_cpu_exiting = r.flags & RW_RST_ON_CPU_EXITING;
    e.on_cpu_exit_signal = static_cast<int>(r.on_cpu_exit_code & 0x7f);
    e.no_socket = r.flags & RW_RST_NO_SOCKET;
    e.orphan = r.flags & RW_RST_ORPHAN;
    e.sock_cookie = r.sock_cookie;
    e.idle_ms = ns_to_ms(r.idle_ns);
    e.pool_idle_ms = ns_to_ms(r.pool_idle_ns);
    e.since_request_ms = ns_to_ms(r.since_request_ns);
    if (r.flags & RW_RST_BYTES_KNOWN) {
        e.bytes_sent = r.bytes_sent;
        e.bytes_received = r.bytes_received;
    }
    e.in_request = r.flags & RW_RST_IN_REQUEST;
    e.reused = r.flags & RW_RST_REUSED;
    e.request_acked = r.flags & RW_RST_REQUEST_ACKED;
    e.data_ttl = r.data_ttl;
    e.rst_ttl = r.rst_ttl;
    e.stalled_retransmits = r.stalled_retransmits;
    e.retransmits = r.retransmits;
    e.packets_out = r.packets_out;
    e.mss = r.mss;
    return e;
}

static OomEvent decode_oom(const rw_oom_record &r, const DecodeContext &ctx)
{
    OomEvent e;
    e.mono_ns = r.hdr.ts_ns;
    e.time_ns = static_cast<int64_t>(r.hdr.ts_ns) + ctx.realtime_offset_ns;
    e.pid = r.pid;
    e.comm = comm_string(r.comm);
    if (r.flags & RW_OOM_RSS_KNOWN) {
        e.rss_kb = r.anon_rss_kb + r.file_rss_kb + r.shmem_rss_kb;
        e.total_vm_kb = r.total_vm_kb;
    }
    if (r.cgroup_levels > 0) {
        const uint32_t levels = std::min<uint32_t>(r.cgroup_levels, RW_CGROUP_LEVELS);
        std::string path = (r.flags & RW_OOM_CGROUP_TRUNCATED) ? "/..." : "";
        for (uint32_t i = levels; i-- > 0;)
            path += "/" + printable_name({r.cgroup_names[i], strnlen(r.cgroup_names[i], RW_CGROUP_NAME_LEN)});
        e.cgroup = path;
    }
    return e;
}

DecodeResult decode_record(std::span<const uint8_t> bytes, const DecodeContext &ctx)
{
    DecodeResult result;
    rw_record_header hdr;
    if (!read_record(bytes, hdr, result.error))
        return result;
    if (hdr.size > bytes.size()) {
        result.error = "record claims " + std::to_string(hdr.size) + " bytes but has " +
                       std::to_string(bytes.size());
        return result;
    }
    switch (hdr.type) {
    case RW_REC_RESET: {
        rw_reset_record r;
        if (read_record(bytes, r, result.error))
            result.event = decode_reset(r, ctx);
        break;
    }
    case RW_REC_OOM: {
        rw_oom_record r;
        if (read_record(bytes, r, result.error))
            result.event = decode_oom(r, ctx);
        break;
    }
    default:
        result.error = "unknown record type " + std::to_string(hdr.type);
    }
    return result;
}

}  // namespace rstwatch
