#include "kernel/seed.h"

#include <bpf/bpf.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <tuple>

#include "kernel/procfs.h"
#include "kernel/unique_fd.h"

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

// The socket's bound address bytes and port, in rw_endpoint's layout.
bool bound_endpoint(int fd, __u8 (&addr)[16], __u16 &port, __u16 &family)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) != 0)
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

// The tracked processes holding one listening socket (fork shares it), by
// the socket's bound address.
struct Holder {
    uint32_t pid;
    uint32_t ppid;
    std::string comm;
};
using Listeners = std::map<std::tuple<__u16, __u16, std::string>, std::vector<Holder>>;

void scan_process(uint32_t pid, uint32_t ppid, const std::string &comm, Listeners &listeners, SeedReport &report)
{
    UniqueFd pidfd(pidfd_open(static_cast<pid_t>(pid)));
    if (!pidfd.valid()) {
        if (errno != ESRCH)
            report.problems.push_back("pid " + std::to_string(pid) + ": pidfd_open: " + std::strerror(errno));
        return;
    }
    report.processes++;
    for (int fd : procfs::socket_fds(pid)) {
        UniqueFd dup(pidfd_getfd(pidfd.get(), fd));
        if (!dup.valid()) {
            if (errno == EPERM)
                report.problems.push_back("pid " + std::to_string(pid) +
                                          ": pidfd_getfd not permitted (needs CAP_SYS_PTRACE)");
            if (errno == EPERM || errno == ESRCH)
                return;
            continue;
        }
        if (!is_inet_tcp(dup.get()) || int_sockopt(dup.get(), SOL_SOCKET, SO_ACCEPTCONN) != 1)
            continue;
        rw_endpoint bound{};
        if (bound_endpoint(dup.get(), bound.addr, bound.port, bound.family))
            listeners[{bound.family, bound.port, std::string(bound.addr, bound.addr + 16)}].push_back({pid, ppid, comm});
    }
}

// The listener's owner is the holder whose parent does not hold it too:
// nginx's master, which opened it before forking the workers.
void record_listeners(int listeners_fd, __u8 *listened_ports, const Listeners &listeners, SeedReport &report)
{
    for (const auto &[key, holders] : listeners) {
        const auto &[family, port, addr] = key;
        std::set<uint32_t> pids;
        for (const Holder &h : holders)
            pids.insert(h.pid);
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
        std::strncpy(owner.owner_comm, top->comm.c_str(), sizeof(owner.owner_comm) - 1);
        // The mark before the entry, as the BPF side does: a reset must
        // never skip a listener that exists.
        __atomic_store_n(&listened_ports[port], 1, __ATOMIC_SEQ_CST);
        // A bind() since attach already recorded its caller: keep it.
        if (bpf_map_update_elem(listeners_fd, &bound, &owner, BPF_NOEXIST) == 0 || errno == EEXIST)
            report.listeners++;
        else
            report.problems.push_back("listener table update: " + std::string(std::strerror(errno)));
    }
}

}  // namespace

SeedReport seed_listeners(int listeners_fd, __u8 *listened_ports, const TrackingFilter &filter)
{
    SeedReport report;
    Listeners listeners;
    for (uint32_t pid : procfs::list_pids()) {
        auto comm = procfs::comm(pid);
        auto ppid = procfs::parent_pid(pid);
        if (!comm || !ppid || !filter.matches(pid, *ppid, *comm))
            continue;
        scan_process(pid, *ppid, *comm, listeners, report);
    }
    record_listeners(listeners_fd, listened_ports, listeners, report);
    return report;
}

size_t sweep_listeners(int listeners_fd)
{
    std::vector<rw_endpoint> gone;
    rw_endpoint key{}, next{};
    const void *prev = nullptr;
    while (bpf_map_get_next_key(listeners_fd, prev, &next) == 0) {
        rw_listener owner{};
        // The same pid with another name is a new process that got the old one's pid.
        if (bpf_map_lookup_elem(listeners_fd, &next, &owner) == 0) {
            auto comm = procfs::comm(owner.owner_tgid);
            if (!comm || std::strncmp(comm->c_str(), owner.owner_comm, sizeof(owner.owner_comm)) != 0)
                gone.push_back(next);
        }
        key = next;
        prev = &key;
    }
    size_t removed = 0;
    for (const auto &ep : gone)
        removed += bpf_map_delete_elem(listeners_fd, &ep) == 0;
    return removed;
}

}  // namespace rstwatch
