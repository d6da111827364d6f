#include "explain/error_log_line.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <ctime>

namespace rstwatch {

namespace {

constexpr std::string_view kCallFailed = "() failed (";
constexpr std::string_view kPremature = "upstream prematurely closed";
constexpr std::string_view kUpstreamField = ", upstream: \"";
constexpr std::string_view kClientField = ", client: ";
// "2026/11/24 02:30:00"
constexpr size_t kTimeLength = 19;

template <typename Number>
std::optional<Number> digits_at(std::string_view text, size_t at, size_t *end = nullptr)
{
    Number value{};
    const char *first = text.data() + std::min(at, text.size());
    auto [ptr, ec] = std::from_chars(first, text.data() + text.size(), value);
    if (ec != std::errc() || ptr == first)
        return std::nullopt;
    if (end)
        *end = static_cast<size_t>(ptr - text.data());
    return value;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Where the failure is in the line and what it is called.
struct FailureAt {
    FailureKind kind;
    std::string error;
    size_t begin;  // of the error text
    size_t end;    // just past it: the context follows
};

// "recv() failed (104: Connection reset by peer)": the call is the word
// before "()", the errno the number after "(".
std::optional<FailureAt> find_failed_call(std::string_view line)
{
    for (size_t at = line.find(kCallFailed); at != std::string_view::npos; at = line.find(kCallFailed, at + 1)) {
        size_t number_end = 0;
        auto errnum = digits_at<int>(line, at + kCallFailed.size(), &number_end);
        if (!errnum || (*errnum != 104 && *errnum != 32))
            continue;
        size_t call = at;
        while (call > 0 && (std::isalnum(static_cast<unsigned char>(line[call - 1])) || line[call - 1] == '_'))
            --call;
        size_t close = line.find(')', number_end);
        if (call == at || close == std::string_view::npos)
            continue;
        return FailureAt{*errnum == 104 ? FailureKind::Reset : FailureKind::BrokenPipe,
                         std::string(line.substr(call, at - call)) + "() failed (" + std::to_string(*errnum) + ")",
                         call, close + 1};
    }
    return std::nullopt;
}

// "upstream prematurely closed connection" (or "... FastCGI stdout"), up to " while".
std::optional<FailureAt> find_premature_close(std::string_view line)
{
    size_t at = line.find(kPremature);
    if (at == std::string_view::npos)
        return std::nullopt;
    size_t end = line.find(" while ", at);
    if (end == std::string_view::npos)
        end = std::min(line.find(kClientField, at), line.size());
    return FailureAt{FailureKind::PrematureClose, std::string(line.substr(at, end - at)), at, end};
}

// " while reading response header from upstream": up to ", client: ".
std::string context_after(std::string_view line, size_t from)
{
    size_t end = std::min(line.find(kClientField, from), line.size());
    std::string_view context = line.substr(from, end - from);
    while (!context.empty() && context.front() == ' ')
        context.remove_prefix(1);
    return std::string(context);
}

// The nginx time that starts the header: at the line's start, or after a
// prefix (syslog's, journalctl's) before the level's " [".
std::optional<size_t> find_header(std::string_view line, size_t before)
{
    if (parse_nginx_time(line))
        return 0;
    for (size_t bracket = line.find(" ["); bracket != std::string_view::npos && bracket < before;
         bracket = line.find(" [", bracket + 1)) {
        if (bracket >= kTimeLength && parse_nginx_time(line.substr(bracket - kTimeLength)))
            return bracket - kTimeLength;
    }
    return std::nullopt;
}

// "[error] 1234#1234: *5 ": the worker, its thread and the connection.
void read_header(std::string_view line, size_t header, size_t before, UpstreamFailureLine &out)
{
    out.time = parse_nginx_time(line.substr(header));
    size_t level_end = line.find("] ", header + kTimeLength);
    if (level_end == std::string_view::npos || level_end >= before)
        return;
    size_t pid_end = 0;
    auto pid = digits_at<uint32_t>(line, level_end + 2, &pid_end);
    if (!pid || pid_end >= line.size() || line[pid_end] != '#')
        return;
    size_t tid_end = 0;
    auto tid = digits_at<uint32_t>(line, pid_end + 1, &tid_end);
    if (!tid || line.substr(tid_end, 2) != ": ")
        return;
    out.pid = pid;
    out.tid = tid;
    if (line.substr(tid_end + 2, 1) == "*")
        out.connection = digits_at<uint64_t>(line, tid_end + 3);
}

// The upstream's address from its URL: "http://10.0.3.21:8081/orders",
// "grpc://[2001:db8::2]:50051", "http://unix:/run/app.sock:/orders".
void read_upstream(std::string_view url, UpstreamFailureLine &out)
{
    if (size_t scheme = url.find("://"); scheme != std::string_view::npos)
        url.remove_prefix(scheme + 3);
    if (url.substr(0, 5) == "unix:") {
        std::string_view path = url.substr(5);
        out.upstream_kind = UpstreamKind::Unix;
        out.upstream = "unix:" + std::string(path.substr(0, path.find(':')));
        return;
    }
    if (url.empty())
        return;
    size_t host_end = url[0] == '[' ? url.find(']') : 0;
    size_t end = url.find('/', host_end == std::string_view::npos ? 0 : host_end);
    std::string_view host_port = url.substr(0, end);
    auto canonical = canonical_address(host_port);
    out.upstream_kind = canonical ? UpstreamKind::Inet : UpstreamKind::Other;
    out.upstream = canonical ? *canonical : std::string(host_port);
}

}  // namespace

std::optional<CivilTime> parse_nginx_time(std::string_view text)
{
    if (text.size() < kTimeLength)
        return std::nullopt;
    // dddd/dd/dd dd:dd:dd
    static constexpr std::string_view kShape = "dddd/dd/dd dd:dd:dd";
    for (size_t i = 0; i < kTimeLength; ++i)
        if (kShape[i] == 'd' ? !is_digit(text[i]) : text[i] != kShape[i])
            return std::nullopt;
    auto number = [&](size_t at, size_t n) {
        int v = 0;
        for (size_t i = at; i < at + n; ++i)
            v = v * 10 + (text[i] - '0');
        return v;
    };
    CivilTime t{number(0, 4), number(5, 2), number(8, 2), number(11, 2), number(14, 2), number(17, 2)};
    if (t.month < 1 || t.month > 12 || t.day < 1 || t.day > 31 || t.hour > 23 || t.minute > 59 || t.second > 60)
        return std::nullopt;
    return t;
}

int64_t seconds_as_if_utc(const CivilTime &t)
{
    std::tm tm{};
    tm.tm_year = t.year - 1900;
    tm.tm_mon = t.month - 1;
    tm.tm_mday = t.day;
    tm.tm_hour = t.hour;
    tm.tm_min = t.minute;
    tm.tm_sec = t.second;
    return static_cast<int64_t>(timegm(&tm));
}

std::optional<std::string> canonical_address(std::string_view host_port)
{
    size_t colon = host_port.rfind(':');
    if (colon == std::string_view::npos || colon == 0)
        return std::nullopt;
    size_t port_end = 0;
    auto port = digits_at<uint32_t>(host_port, colon + 1, &port_end);
    if (!port || *port > 65535 || port_end != host_port.size())
        return std::nullopt;
    std::string_view host = host_port.substr(0, colon);
    const bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';
    std::string address(bracketed ? host.substr(1, host.size() - 2) : host);
    char text[INET6_ADDRSTRLEN];
    in_addr v4{};
    in6_addr v6{};
    bool ipv6 = false;
    if (!bracketed && inet_pton(AF_INET, address.c_str(), &v4) == 1) {
        inet_ntop(AF_INET, &v4, text, sizeof(text));
    } else if (bracketed && inet_pton(AF_INET6, address.c_str(), &v6) == 1) {
        ipv6 = !IN6_IS_ADDR_V4MAPPED(&v6);
        if (ipv6)
            inet_ntop(AF_INET6, &v6, text, sizeof(text));
        else
            inet_ntop(AF_INET, &v6.s6_addr[12], text, sizeof(text));
    } else {
        return std::nullopt;
    }
    std::string out;
    if (ipv6)
        out.append("[").append(text).append("]");
    else
        out.append(text);
    return out.append(":").append(std::to_string(*port));
}

std::optional<UpstreamFailureLine> parse_upstream_failure(std::string_view line)
{
    // Most lines of a busy error log are something else: two searches
    // reject them.
    std::optional<FailureAt> failure = find_failed_call(line);
    if (!failure)
        failure = find_premature_close(line);
    if (!failure)
        return std::nullopt;
    UpstreamFailureLine out;
    out.context = context_after(line, failure->end);
    // A client's reset ("while reading client request body") is not the
    // upstream's, even on a line that names the upstream.
    if (out.context.find("upstream") == std::string::npos)
        return std::nullopt;
    out.raw = std::string(line);
    out.kind = failure->kind;
    out.error = std::move(failure->error);
    if (auto header = find_header(line, failure->begin))
        read_header(line, *header, failure->begin, out);
    size_t field = line.find(kUpstreamField, failure->end);
    if (field != std::string_view::npos) {
        size_t value = field + kUpstreamField.size();
        size_t quote = line.find('"', value);
        // No closing quote: the line was cut inside the URL, whose address
        // may be cut too.
        if (quote != std::string_view::npos && quote > value)
            read_upstream(line.substr(value, quote - value), out);
    }
    return out;
}

}  // namespace rstwatch
