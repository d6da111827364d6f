// Shared by the privileged tests: the root requirement, and sockets on
// loopback whose far end lives in a child process.
#pragma once

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

// Skips without root, but fails under CI=true: there a skip would hide
// that the real-kernel tests never ran.
#define REQUIRE_ROOT()                                                                     \
    do {                                                                                   \
        if (geteuid() != 0) {                                                              \
            const char *ci = std::getenv("CI");                                            \
            if (ci && std::string(ci) == "true")                                           \
                FAIL() << "privileged test needs root and CI=true forbids skipping";       \
            GTEST_SKIP() << "needs root (loads BPF programs)";                             \
        }                                                                                  \
    } while (0)

namespace rwtest {

// The ids of the BPF programs an agent run with -v says it attached
// ("... as prog id N"): exactly its own, whatever else runs on the host.
inline std::vector<__u32> attached_prog_ids(const std::string &agent_log)
{
    std::vector<__u32> ids;
    std::istringstream log(agent_log);
    for (std::string line; std::getline(log, line);)
        if (auto at = line.find(" as prog id "); at != std::string::npos)
            ids.push_back(static_cast<__u32>(std::stoul(line.substr(at + 12))));
    return ids;
}

inline bool prog_loaded(__u32 id)
{
    int fd = bpf_prog_get_fd_by_id(id);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

inline uint64_t monotonic_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + ts.tv_nsec;
}

struct Address {
    sockaddr_storage ss{};
    socklen_t len = 0;
    bool v6 = false;
};

inline Address loopback(bool v6, uint16_t port)
{
    Address a;
    a.v6 = v6;
    if (v6) {
        auto *s6 = reinterpret_cast<sockaddr_in6 *>(&a.ss);
        s6->sin6_family = AF_INET6;
        s6->sin6_addr = in6addr_loopback;
        s6->sin6_port = htons(port);
        a.len = sizeof(*s6);
    } else {
        auto *s4 = reinterpret_cast<sockaddr_in *>(&a.ss);
        s4->sin_family = AF_INET;
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        s4->sin_port = htons(port);
        a.len = sizeof(*s4);
    }
    return a;
}

// "127.0.0.1:port" / "[::1]:port", the agent's endpoint notation.
inline std::string endpoint_of(int fd, bool peer)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if ((peer ? getpeername(fd, reinterpret_cast<sockaddr *>(&ss), &len)
              : getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len)) != 0)
        return "?";
    char buf[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET6) {
        auto *s6 = reinterpret_cast<sockaddr_in6 *>(&ss);
        inet_ntop(AF_INET6, &s6->sin6_addr, buf, sizeof(buf));
        return "[" + std::string(buf) + "]:" + std::to_string(ntohs(s6->sin6_port));
    }
    auto *s4 = reinterpret_cast<sockaddr_in *>(&ss);
    inet_ntop(AF_INET, &s4->sin_addr, buf, sizeof(buf));
    return std::string(buf) + ":" + std::to_string(ntohs(s4->sin_port));
}

// A descriptor closed when it goes: a test that an ASSERT ends early
// leaves no socket or pipe behind it, and a child waiting on a pipe's read
// end sees EOF and leaves. (Children _exit(), so only the parent closes.)
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd &&other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    Fd &operator=(Fd &&other) noexcept
    {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    Fd(const Fd &) = delete;
    Fd &operator=(const Fd &) = delete;
    ~Fd() { reset(); }

    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    // For a call that closes it itself (close_with_reset).
    int release() { return std::exchange(fd_, -1); }
    void reset()
    {
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

struct Pipe {
    Fd read_end, write_end;

    // Both ends close-on-exec; false when pipe2() fails.
    bool open()
    {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0)
            return false;
        read_end = Fd(fds[0]);
        write_end = Fd(fds[1]);
        return true;
    }
};

// A forked child, killed and reaped however the test ends (an ASSERT
// returns early); reap() when the test waits for it itself.
class KilledOnExit {
public:
    explicit KilledOnExit(pid_t pid) : pid_(pid) {}
    KilledOnExit(const KilledOnExit &) = delete;
    KilledOnExit &operator=(const KilledOnExit &) = delete;
    ~KilledOnExit()
    {
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
    }
    // waitpid()'s status, once.
    int reap()
    {
        int status = -1;
        if (pid_ > 0 && waitpid(pid_, &status, 0) == pid_)
            pid_ = -1;
        return status;
    }

private:
    pid_t pid_;
};

// RSTWATCH_TIME_SCALE, at least 1: the kernel matrix sets it, a TCG guest
// being several times slower than the host.
inline int time_scale()
{
    const char *scale = std::getenv("RSTWATCH_TIME_SCALE");
    return scale ? std::max(1, std::atoi(scale)) : 1;
}

// A wall-clock bound of the host, scaled.
inline std::chrono::milliseconds time_limit(std::chrono::milliseconds on_the_host)
{
    return on_the_host * time_scale();
}

inline int listen_on_loopback(bool v6)
{
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    Address a = loopback(v6, 0);
    if (bind(fd, reinterpret_cast<sockaddr *>(&a.ss), a.len) != 0 || listen(fd, 64) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

inline uint16_t port_of(int fd)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len);
    return ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6 *>(&ss)->sin6_port
                                          : reinterpret_cast<sockaddr_in *>(&ss)->sin_port);
}

inline int connect_to(bool v6, uint16_t port)
{
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    Address a = loopback(v6, port);
    if (connect(fd, reinterpret_cast<sockaddr *>(&a.ss), a.len) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

// Close so that the kernel sends a reset instead of a FIN.
inline void close_with_reset(int fd)
{
    linger lg{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

}  // namespace rwtest
