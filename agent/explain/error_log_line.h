// nginx's error-log lines about a failed upstream connection, parsed:
//
//   2026/11/24 02:30:00 [error] 1234#1234: *5 recv() failed (104: Connection reset by peer) while
//     reading response header from upstream, client: 10.0.0.7, server: , request: "POST /orders
//     HTTP/1.1", upstream: "http://10.0.3.21:8081/orders", host: "shop.example"
//
// The failures are a reset or a broken pipe on any call (recv, readv, writev,
// send, sendfile, ...: errno 104 or 32) while nginx talked to the upstream,
// and "upstream prematurely closed connection" (the backend's FIN). Pure:
// no I/O; times stay as nginx wrote them (local time, to the second).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rstwatch {

// A wall-clock time as written in a log, in whatever zone the writer had.
struct CivilTime {
    int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
    bool operator==(const CivilTime &) const = default;
};

enum class FailureKind {
    Reset,           // errno 104, ECONNRESET: a TCP reset reached nginx's socket
    BrokenPipe,      // errno 32, EPIPE: nginx wrote after the connection was reset
    PrematureClose,  // "upstream prematurely closed connection": the backend's FIN
};

enum class UpstreamKind {
    Missing,  // no `upstream: "..."`: the line was cut short (nginx writes at most 2 KiB a line)
    Inet,     // an IP address and port
    Unix,     // unix:/path: no TCP, so no TCP reset
    Other,    // a name or a shape this parser does not know
};

struct UpstreamFailureLine {
    std::string raw;                    // the whole line, without its newline
    std::optional<CivilTime> time;      // absent when the line does not start with nginx's time
    std::optional<uint32_t> pid;        // the worker: the 1234 of "1234#1234"
    std::optional<uint32_t> tid;        // its thread: the second 1234
    std::optional<uint64_t> connection; // nginx's connection number: the 5 of "*5"
    FailureKind kind = FailureKind::Reset;
    std::string error;                  // "recv() failed (104)", "upstream prematurely closed connection"
    std::string context;                // "while reading response header from upstream"
    UpstreamKind upstream_kind = UpstreamKind::Missing;
    std::string upstream;               // "10.0.3.21:8081", "[2001:db8::2]:8080", "unix:/run/app.sock"; "" when missing
};

// The failure a line reports, or nullopt when it reports none (another
// error, a client's reset, a line that is not nginx's). A failure line with
// its time or worker missing or mangled is still returned, with those
// fields empty: the caller says why it cannot be matched.
std::optional<UpstreamFailureLine> parse_upstream_failure(std::string_view line);

// "addr:port" or "[v6]:port" as the agent writes addresses (inet_ntop's
// form; an IPv4-mapped IPv6 address as IPv4), so that nginx's spelling and
// the agent's compare equal. nullopt when it is not an IP address and port.
std::optional<std::string> canonical_address(std::string_view host_port);

// The time read as UTC: seconds since the epoch. (In another zone, the UTC
// second is this minus the zone's offset then.)
int64_t seconds_as_if_utc(const CivilTime &t);

// "2026/11/24 02:30:00" at the start of text; nullopt when it is not that.
std::optional<CivilTime> parse_nginx_time(std::string_view text);

}  // namespace rstwatch
