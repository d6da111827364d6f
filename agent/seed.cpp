#include "seed.h"

#include <bpf/bpf.h>
#include <netinet/in.h>
#include <netinet/tcp.h>  // tcp_info
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <tuple>

#include "procfs.h"
#include "unique_fd.h"

extern "C" {
#include "rstwatch_abi.h"
}

namespace rstwatch {

namespace {

// Debian 12's glibc predates wrappers for these (Linux 5.3 and 5.6).
int pidfd_open(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_getfd(int pidfd, int fd) { return static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0)); }

int int_sockopt(int fd, int level, int name)
{
    int value = -1;
    socklen_t len = sizeof(value);
    return getsockopt(fd, level, name, &value, &len) == 0 ? value : -1;
}

bool is_inet_tcp(int fd)
{
    int domain = int_sockopt(fd, SOL_SOCKET, SO_DOMAIN);
    return (domain == AF_INET || domain == AF_INET6) &&
           int_sockopt(fd, SOL_SOCKET, SO_TYPE) == SOCK_STREAM &&
           int_sockopt(fd, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_TCP;
}

// Address bytes and port of one end, in rw_endpoint's layout.
bool endpoint(int fd, bool peer, __u8 (&addr)[16], __u16 &port, __u16 &family)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int err = peer ? getpeername(fd, reinterpret_cast<sockaddr *>(&ss), &len)
                   : getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len);
    if (err != 0)
        return false;
    family = ss.ss_family;
    if (ss.ss_family == AF_INET) {
        const auto *s4 = reinterpret_cast<const sockaddr_in *>(&ss);
        std::memcpy(addr, &s4->sin_addr, 4);
        port = ntohs(s4->sin_port);
    } else {
        const auto *s6 = reinterpret_cast<const sockaddr_in6 *>(&ss);
        std::memcpy(addr, &s6->sin6_addr, 16);
        port = ntohs(s6->sin6_port);
    }
    return true;
}

// The socket's cookie (SO_COOKIE; asking for it makes the kernel assign
// one, which the BPF side then reads directly); 0 if it cannot be read.
__u64 socket_cookie(int fd)
{
    __u64 cookie = 0;
    socklen_t len = sizeof(cookie);
    return getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) == 0 ? cookie : 0;
}

int local_port(int fd)
{
    __u8 addr[16] = {};
    __u16 port = 0;
    __u16 family = 0;
    return endpoint(fd, false, addr, port, family) ? port : -1;
}

struct Candidate {
    std::unique_ptr<UniqueFd> fd;
    int port;
};

// The tracked processes holding one listening socket (fork shares it), by
// the socket's bound address.
struct Holder {
    uint32_t pid;
    uint32_t ppid;
    std::string comm;
    __u64 cookie;  // the listening socket's (SO_COOKIE); 0 if unknown
};
using Listeners = std::map<std::tuple<__u16, __u16, std::string>, std::vector<Holder>>;

constexpr uint8_t kTcpClose = 7;  // include/net/tcp_states.h

void seed_process(const SeedMaps &maps, uint32_t pid, uint32_t ppid, const std::string &comm,
                  Listeners &listeners, SeedReport &report)
{
    UniqueFd pidfd(pidfd_open(static_cast<pid_t>(pid)));
    if (!pidfd.valid()) {
        if (errno != ESRCH)
            report.problems.push_back("pid " + std::to_string(pid) + ": pidfd_open: " + std::strerror(errno));
        return;
    }
    report.processes++;

    // A connection whose local port is one this process listens on was
    // accepted (downstream); the others were connect()ed (upstream).
    std::set<int> listening_ports;
    std::vector<Candidate> connections;
    for (int fd : procfs::socket_fds(pid)) {
        auto dup = std::make_unique<UniqueFd>(pidfd_getfd(pidfd.get(), fd));
        if (!dup->valid()) {
            if (errno == EPERM)
                report.problems.push_back("pid " + std::to_string(pid) +
                                          ": pidfd_getfd not permitted (needs CAP_SYS_PTRACE)");
            if (errno == EPERM || errno == ESRCH)
                return;
            continue;
        }
        if (!is_inet_tcp(dup->get()))
            continue;
        int port = local_port(dup->get());
        if (int_sockopt(dup->get(), SOL_SOCKET, SO_ACCEPTCONN) == 1) {
            listening_ports.insert(port);
            rw_endpoint bound{};
            const __u64 cookie = socket_cookie(dup->get());
            if (endpoint(dup->get(), false, bound.addr, bound.port, bound.family)) {
                listeners[{bound.family, bound.port, std::string(bound.addr, bound.addr + 16)}].push_back(
                    {pid, ppid, comm, cookie});
            }
            continue;
        }
        tcp_info info{};
        socklen_t len = sizeof(info);
        if (getsockopt(dup->get(), IPPROTO_TCP, TCP_INFO, &info, &len) != 0 || info.tcpi_state == kTcpClose)
            continue;
        connections.push_back({std::move(dup), port});
    }

    for (const auto &c : connections) {
        rw_conn value{};
        value.owner_tgid = pid;
        std::strncpy(value.owner_comm, comm.c_str(), sizeof(value.owner_comm) - 1);
        value.role = listening_ports.count(c.port) ? RW_ROLE_DOWNSTREAM : RW_ROLE_UPSTREAM;
        value.flags = RW_CONN_SEEDED;
        const __u64 cookie = socket_cookie(c.fd->get());  // the owner table's key
        if (!cookie) {
            report.problems.push_back("pid " + std::to_string(pid) + ": SO_COOKIE: " + std::strerror(errno));
            continue;
        }
        rw_endpoint server{};
        if (value.role == RW_ROLE_UPSTREAM && endpoint(c.fd->get(), true, server.addr, server.port, server.family)) {
            const __u8 one = 1;
            bpf_map_update_elem(maps.upstream_endpoints, &server, &one, BPF_ANY);
        }
        if (bpf_map_update_elem(maps.conns, &cookie, &value, BPF_NOEXIST) == 0)
            report.seeded++;
        else if (errno == EEXIST)
            report.already_known++;
        else
            report.problems.push_back("pid " + std::to_string(pid) + ": owner table update: " +
                                      std::strerror(errno));
    }
}

// The listener's owner is the holder whose parent does not hold it too:
// nginx's master, which opened it before forking the workers. Its entry
// counts the distinct sockets on the endpoint (reuseport: one per worker),
// each recorded by cookie, so that it leaves with the last of them as a
// bind() since attach would; 0 (not counted, never leaves) if a cookie is
// unknown.
void seed_listeners(const SeedMaps &maps, const Listeners &listeners, SeedReport &report)
{
    for (const auto &[key, holders] : listeners) {
        const auto &[family, port, addr] = key;
        std::set<uint32_t> pids;
        std::set<__u64> cookies;
        bool counted = true;
        for (const Holder &h : holders) {
            pids.insert(h.pid);
            cookies.insert(h.cookie);
            counted = counted && h.cookie != 0;
        }
        const Holder *top = &holders.front();
        for (const Holder &h : holders)
            if (!pids.count(h.ppid)) {
                top = &h;
                break;
            }
        rw_endpoint bound{};
        bound.family = family;
        bound.port = port;
        std::memcpy(bound.addr, addr.data(), sizeof(bound.addr));
        rw_listener owner{};
        owner.owner_tgid = top->pid;
        owner.sockets = counted ? static_cast<__u32>(cookies.size()) : 0;
        std::strncpy(owner.owner_comm, top->comm.c_str(), sizeof(owner.owner_comm) - 1);
        // A bind() since attach already recorded its caller: keep it, and
        // its count, which these older sockets are not part of.
        if (bpf_map_update_elem(maps.listeners, &bound, &owner, BPF_NOEXIST) == 0) {
            report.listeners++;
            for (__u64 cookie : cookies) {
                if (!owner.sockets)
                    break;  // not counted: nothing to give back at destroy
                if (bpf_map_update_elem(maps.bound_sockets, &cookie, &bound, BPF_NOEXIST) != 0)
                    report.problems.push_back("bound socket table update: " + std::string(std::strerror(errno)));
            }
        } else if (errno == EEXIST) {
            report.listeners++;
        } else {
            report.problems.push_back("listener table update: " + std::string(std::strerror(errno)));
        }
    }
}

}  // namespace

SeedReport seed_existing_connections(const SeedMaps &maps, const TrackingFilter &filter)
{
    SeedReport report;
    Listeners listeners;
    for (uint32_t pid : procfs::list_pids()) {
        auto comm = procfs::comm(pid);
        auto ppid = procfs::parent_pid(pid);
        if (!comm || !ppid || !filter.matches(pid, *ppid, *comm))
            continue;
        seed_process(maps, pid, *ppid, *comm, listeners, report);
    }
    seed_listeners(maps, listeners, report);
    return report;
}

}  // namespace rstwatch
