// rstwatch-test-backend: a tiny HTTP/1.1 upstream for tests and the demo.
//
// It misbehaves on purpose, in the ways that make nginx log
//   recv() failed (104: Connection reset by peer) while reading response header from upstream
//
//   --mode ok     200 with a small body, keep-alive, Content-Length.
//   --mode crash  reads only the request head, then abort()s with the body still
//                 unread: on close the kernel answers unread data with a RST
//                 (RFC 2525 2.17), which is what a backend crash looks like to nginx.
//   --mode shutdown  like crash, but ends on SIGTERM with its default action:
//                 a deploy that stops the backend without draining it.
//   --mode reset  like crash, but only the connection dies (SO_LINGER 0 + close):
//                 the backend process stays up and keeps accepting.
//   --mode oom    reads only the request head, then allocates and touches memory
//                 (1 MiB at a time, at most --oom-max-mb) until the kernel's OOM
//                 killer ends it: run it in a memory-limited cgroup. The body is
//                 left unread, so the dying process's socket is reset.
//                 --require-cgroup TEXT refuses to allocate (exit 3) unless
//                 /proc/self/cgroup contains TEXT: the limit must be in place.
//   --mode slow   reads the request, then streams a large 200 response slowly
//                 (--slow-bytes, default 4 MiB, 16 KiB every 10 ms): lets a
//                 client abort mid-response.
//   --keepalive-timeout MS  close (FIN) keep-alive connections idle this long,
//                 the backend side of the keep-alive race.
//   --spare N     answer the first N requests (over all connections) as in
//                 --mode ok before misbehaving: warms nginx's pool with the
//                 connection a later request will find the backend dying on.
//   --read-body BYTES  crash, shutdown, oom: read up to BYTES of the request
//                 body before dying (its kernel acknowledges what arrives),
//                 as a backend that fails mid-upload does.
//
// Prints "listening ADDR:PORT" on stdout once it accepts (port 0 picks a free port
// and the real one is printed). SIGTERM / SIGINT end it with status 0.
//
// Plain POSIX sockets, one thread per connection: boring on purpose.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

namespace {

enum class Mode { Ok, Crash, Shutdown, Reset, Oom, Slow };

struct Options {
    std::string listen = "127.0.0.1:0";
    Mode mode = Mode::Ok;
    int keepalive_timeout_ms = -1;  // -1: keep idle connections forever
    bool quiet = false;
    int oom_max_mb = 1024;
    std::string require_cgroup;
    size_t slow_bytes = 4u << 20;
    long spare_requests = 0;
    size_t read_body_bytes = 0;
};

std::atomic<long> g_requests{0};

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true); }

[[noreturn]] void usage(int status) {
    std::fprintf(status == 0 ? stdout : stderr,
                 "usage: rstwatch-test-backend --listen ADDR:PORT [--mode ok|crash|shutdown|reset|oom|slow]\n"
                 "                             [--keepalive-timeout MS] [--quiet]\n"
                 "                             [--oom-max-mb N] [--require-cgroup TEXT] [--slow-bytes N]\n"
                 "                             [--spare N] [--read-body BYTES]\n"
                 "  ADDR is IPv4 (127.0.0.1) or bracketed IPv6 ([::1]); PORT 0 picks one.\n"
                 "examples:\n"
                 "  rstwatch-test-backend --listen 127.0.0.1:8081 --mode crash\n"
                 "  rstwatch-test-backend --listen [::1]:0 --mode ok --keepalive-timeout 2000\n"
                 "  rstwatch-test-backend --listen 127.0.0.1:0 --mode oom --require-cgroup /rwt123-oom\n");
    std::exit(status);
}

// Parses "1.2.3.4:80" or "[::1]:80".
bool parse_addr(const std::string &s, sockaddr_storage &ss, socklen_t &len) {
    std::memset(&ss, 0, sizeof ss);
    std::string host, port;
    if (!s.empty() && s[0] == '[') {
        auto close = s.find(']');
        if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') return false;
        host = s.substr(1, close - 1);
        port = s.substr(close + 2);
    } else {
        auto colon = s.rfind(':');
        if (colon == std::string::npos) return false;
        host = s.substr(0, colon);
        port = s.substr(colon + 1);
    }
    char *end = nullptr;
    long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p < 0 || p > 65535) return false;
    auto *in4 = reinterpret_cast<sockaddr_in *>(&ss);
    auto *in6 = reinterpret_cast<sockaddr_in6 *>(&ss);
    if (inet_pton(AF_INET, host.c_str(), &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(static_cast<uint16_t>(p));
        len = sizeof *in4;
        return true;
    }
    if (inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(static_cast<uint16_t>(p));
        len = sizeof *in6;
        return true;
    }
    return false;
}

std::string format_addr(const sockaddr_storage &ss) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET6) {
        auto *in6 = reinterpret_cast<const sockaddr_in6 *>(&ss);
        inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
        return "[" + std::string(buf) + "]:" + std::to_string(ntohs(in6->sin6_port));
    }
    auto *in4 = reinterpret_cast<const sockaddr_in *>(&ss);
    inet_ntop(AF_INET, &in4->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(ntohs(in4->sin_port));
}

// Waits for the socket to become readable. false on timeout, stop or error.
bool wait_readable(int fd, int timeout_ms) {
    // Poll in short slices so that SIGTERM is noticed even on idle connections.
    int waited = 0;
    for (;;) {
        if (g_stop.load()) return false;
        int slice = 200;
        if (timeout_ms >= 0) {
            if (waited >= timeout_ms) return false;
            slice = std::min(slice, timeout_ms - waited);
        }
        pollfd p{fd, POLLIN, 0};
        int r = poll(&p, 1, slice);
        if (r > 0) return true;
        if (r < 0 && errno != EINTR) return false;
        waited += slice;
    }
}

// Reads exactly one request head (through "\r\n\r\n") and nothing after it: the
// head is located with MSG_PEEK first, so a body that arrived in the same segment
// stays in the receive queue. That unread body is what turns close into RST.
std::optional<std::string> read_head(int fd, int idle_timeout_ms) {
    std::string peeked;
    bool first = true;
    for (;;) {
        if (!wait_readable(fd, first ? idle_timeout_ms : 10000)) return std::nullopt;
        first = false;
        char buf[16384];
        ssize_t n = recv(fd, buf, sizeof buf, MSG_PEEK);
        if (n <= 0) return std::nullopt;
        peeked.assign(buf, static_cast<size_t>(n));
        auto end = peeked.find("\r\n\r\n");
        if (end != std::string::npos) {
            size_t want = end + 4;
            std::string head(want, '\0');
            size_t got = 0;
            while (got < want) {
                ssize_t r = recv(fd, head.data() + got, want - got, 0);
                if (r <= 0) return std::nullopt;
                got += static_cast<size_t>(r);
            }
            return head;
        }
        if (peeked.size() >= sizeof buf) return std::nullopt;  // head too large
        // Head incomplete: wait for more bytes (peek again sees old + new data).
        // Sleep briefly so that a readable-but-incomplete socket does not spin.
        usleep(1000);
    }
}

size_t content_length(const std::string &head) {
    // Case-insensitive search for the header name at a line start.
    std::string lower(head);
    for (auto &c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    auto pos = lower.find("\r\ncontent-length:");
    if (pos == std::string::npos) return 0;
    return static_cast<size_t>(std::strtoull(lower.c_str() + pos + 17, nullptr, 10));
}

bool discard(int fd, size_t n) {
    char buf[16384];
    while (n > 0) {
        if (!wait_readable(fd, 10000)) return false;
        ssize_t r = recv(fd, buf, std::min(n, sizeof buf), 0);
        if (r <= 0) return false;
        n -= static_cast<size_t>(r);
    }
    return true;
}

bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t r = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        data.remove_prefix(static_cast<size_t>(r));
    }
    return true;
}

// Allocates and touches memory until killed. Bounded: gives up after
// oom_max_mb with exit status 4 (the test then fails: no OOM kill).
[[noreturn]] void allocate_until_killed(const Options &opt) {
    if (!opt.require_cgroup.empty()) {
        FILE *f = std::fopen("/proc/self/cgroup", "r");
        std::string text;
        char buf[512];
        while (f && std::fgets(buf, sizeof buf, f)) text += buf;
        if (f) std::fclose(f);
        if (text.find(opt.require_cgroup) == std::string::npos) {
            std::fprintf(stderr, "oom: not in cgroup '%s', refusing to allocate:\n%s", opt.require_cgroup.c_str(),
                         text.c_str());
            _exit(3);
        }
    }
    if (!opt.quiet) std::fprintf(stderr, "oom: allocating until killed (request body unread)\n");
    constexpr size_t kChunk = 1u << 20;
    for (int i = 0; i < opt.oom_max_mb; ++i) {
        auto *p = static_cast<volatile char *>(std::malloc(kChunk));
        if (!p) break;
        for (size_t off = 0; off < kChunk; off += 4096) p[off] = static_cast<char>(i);
    }
    std::fprintf(stderr, "oom: still alive after %d MiB, giving up\n", opt.oom_max_mb);
    _exit(4);
}

// 200 with Content-Length slow_bytes, 16 KiB every 10 ms. false when the peer
// went away (the usual end: a client abort made nginx drop the connection).
bool send_slowly(int fd, const Options &opt) {
    std::string head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
                       std::to_string(opt.slow_bytes) + "\r\nConnection: keep-alive\r\n\r\n";
    if (!send_all(fd, head)) return false;
    const std::string chunk(16384, 's');
    for (size_t sent = 0; sent < opt.slow_bytes && !g_stop.load();) {
        size_t n = std::min(chunk.size(), opt.slow_bytes - sent);
        if (!send_all(fd, std::string_view(chunk).substr(0, n))) return false;
        sent += n;
        usleep(10000);
    }
    return true;
}

void serve(int fd, const Options &opt) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (;;) {
        auto head = read_head(fd, opt.keepalive_timeout_ms);
        if (!head) break;  // peer closed, idle timeout (FIN) or stop
        const bool spared = g_requests.fetch_add(1) < opt.spare_requests;
        const Mode mode = spared ? Mode::Ok : opt.mode;
        if (mode == Mode::Crash || mode == Mode::Shutdown || mode == Mode::Oom)
            discard(fd, std::min(content_length(*head), opt.read_body_bytes));
        if (mode == Mode::Crash) {
            if (!opt.quiet) {
                std::fprintf(stderr, "crash: aborting with the request body unread\n");
            }
            std::abort();
        }
        if (mode == Mode::Shutdown) {
            // Not the handler that ends this backend cleanly: the default
            // action, as for a server that does not drain on SIGTERM.
            signal(SIGTERM, SIG_DFL);
            raise(SIGTERM);
        }
        if (mode == Mode::Reset) {
            linger l{1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
            break;  // close below sends RST
        }
        if (mode == Mode::Oom) allocate_until_killed(opt);
        if (!discard(fd, content_length(*head))) break;
        if (mode == Mode::Slow) {
            if (!send_slowly(fd, opt)) break;
            continue;
        }
        static constexpr std::string_view body = "ok from rstwatch-test-backend\n";
        std::string resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\nConnection: keep-alive\r\n\r\n";
        resp += body;
        if (!send_all(fd, resp)) break;
    }
    close(fd);
}

}  // namespace

int main(int argc, char **argv) {
    Options opt;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(2);
            return argv[++i];
        };
        if (a == "--listen") {
            opt.listen = value();
        } else if (a == "--mode") {
            std::string m = value();
            if (m == "ok") opt.mode = Mode::Ok;
            else if (m == "crash") opt.mode = Mode::Crash;
            else if (m == "shutdown") opt.mode = Mode::Shutdown;
            else if (m == "reset") opt.mode = Mode::Reset;
            else if (m == "oom") opt.mode = Mode::Oom;
            else if (m == "slow") opt.mode = Mode::Slow;
            else usage(2);
        } else if (a == "--keepalive-timeout") {
            opt.keepalive_timeout_ms = std::atoi(value().c_str());
        } else if (a == "--oom-max-mb") {
            opt.oom_max_mb = std::atoi(value().c_str());
        } else if (a == "--require-cgroup") {
            opt.require_cgroup = value();
        } else if (a == "--slow-bytes") {
            opt.slow_bytes = static_cast<size_t>(std::strtoull(value().c_str(), nullptr, 10));
        } else if (a == "--spare") {
            opt.spare_requests = std::atol(value().c_str());
        } else if (a == "--read-body") {
            opt.read_body_bytes = static_cast<size_t>(std::strtoull(value().c_str(), nullptr, 10));
        } else if (a == "--quiet") {
            opt.quiet = true;
        } else if (a == "-h" || a == "--help") {
            usage(0);
        } else {
            usage(2);
        }
    }

    // A crash must not leave core files in the test's working directory, nor
    // take seconds to dump.
    rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);

    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);

    sockaddr_storage addr;
    socklen_t len = 0;
    if (!parse_addr(opt.listen, addr, len)) {
        std::fprintf(stderr, "rstwatch-test-backend: bad --listen '%s' (want 127.0.0.1:8081 or [::1]:8081)\n",
                     opt.listen.c_str());
        return 2;
    }
    int lfd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) {
        std::perror("socket");
        return 1;
    }
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (addr.ss_family == AF_INET6) setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(lfd, reinterpret_cast<sockaddr *>(&addr), len) < 0) {
        std::fprintf(stderr, "rstwatch-test-backend: bind %s: %s\n", opt.listen.c_str(), std::strerror(errno));
        return 1;
    }
    if (listen(lfd, 128) < 0) {
        std::perror("listen");
        return 1;
    }
    sockaddr_storage bound{};
    socklen_t blen = sizeof bound;
    getsockname(lfd, reinterpret_cast<sockaddr *>(&bound), &blen);
    std::printf("listening %s\n", format_addr(bound).c_str());
    std::fflush(stdout);

    while (!g_stop.load()) {
        pollfd p{lfd, POLLIN, 0};
        int r = poll(&p, 1, 200);
        if (r <= 0) continue;  // timeout or EINTR: re-check the stop flag
        int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        std::thread(serve, fd, std::cref(opt)).detach();
    }
    close(lfd);
    if (!opt.quiet) std::fprintf(stderr, "rstwatch-test-backend: stopping\n");
    // Detached connection threads may be blocked in poll; _exit skips their
    // destructors. The kernel closes their sockets.
    std::fflush(stdout);
    _exit(0);
}
