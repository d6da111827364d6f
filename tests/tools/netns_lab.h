// Network namespaces for scenario tests: a backend behind a veth, a router
// namespace with its own firewall, a path with a smaller MTU.
//
// Rules this class keeps so that tests cannot hurt the machine they run on:
//   - addresses only from 198.18.0.0/15 (RFC 2544 benchmarking) and
//     2001:db8::/32 (documentation); each NetnsLab takes one /24 and one /48
//     that no host interface or route uses yet;
//   - names are unique per run ("rwt<pid><n>..."), interface names <= 15 chars;
//   - firewall rules and sysctls are only ever set inside the namespaces it
//     created (deleting the namespace deletes them); the host namespace only
//     gets the host end of a veth, its address and routes through it;
//   - the destructor ends the processes it started (by pid), deletes the veth
//     ends it left in the host namespace, then the namespaces. Also on failure.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nginx_lab.h"

namespace rstwatch::testlab {

struct CommandResult {
    int status = -1;     // raw wait status; -1 when it did not finish in time
    std::string output;  // stdout + stderr
    bool ok() const;
};

// Runs argv (argv[0] a path or a name under /usr/sbin, /usr/bin, /sbin, /bin),
// bounded by timeout (then SIGKILL).
CommandResult run_command(std::vector<std::string> argv, std::chrono::milliseconds timeout = 10s);
// run_command, throwing std::runtime_error with the command and its output
// when it fails; returns the output.
std::string run_checked(std::vector<std::string> argv, std::chrono::milliseconds timeout = 10s);

class NetnsLab {
public:
    // Picks the run-unique name prefix and a free address block. Throws
    // std::runtime_error when `ip` is missing or no block is free.
    NetnsLab();
    ~NetnsLab();
    NetnsLab(const NetnsLab &) = delete;
    NetnsLab &operator=(const NetnsLab &) = delete;

    // "rwt<pid><n>": every name this lab creates starts with it.
    const std::string &tag() const { return tag_; }

    // Addresses of this lab's block. subnet 0..15, host 1..14:
    //   ip4(1, 2) == "198.18.B.18"  (a /28 per subnet)
    //   ip6(1, 2) == "2001:db8:B:1::2" (a /64 per subnet)
    std::string ip4(int subnet, int host) const;
    std::string ip6(int subnet, int host) const;
    std::string net4(int subnet) const;  // "198.18.B.16/28"
    std::string net6(int subnet) const;  // "2001:db8:B:1::/64"
    static constexpr int kPrefix4 = 28;
    static constexpr int kPrefix6 = 64;

    // Creates namespace tag()+"-"+short_name with lo up; returns its full name.
    std::string add_namespace(const std::string &short_name);
    // Ends the lab processes started in it, then deletes it (and with it its
    // interfaces, their veth peers, its firewall rules and sysctls).
    void delete_namespace(const std::string &ns);
    bool has_namespace(const std::string &ns) const;

    // Interface name tag()+suffix; throws when longer than 15 characters.
    std::string ifname(const std::string &suffix) const;

    // A veth pair with end a_if in namespace a_ns and b_if in b_ns ("" is the
    // host namespace). Both ends are set up. Names come from ifname().
    void add_veth(const std::string &a_ns, const std::string &a_if, const std::string &b_ns,
                  const std::string &b_if);
    void delete_link(const std::string &ns, const std::string &ifname);

    // "198.18.B.18/28" or "2001:db8:B:1::2/64" (IPv6 with nodad: usable at once).
    void add_address(const std::string &ns, const std::string &ifname, const std::string &cidr);
    // dest is a prefix or "default"; IPv6 when via contains ':'.
    void add_route(const std::string &ns, const std::string &dest, const std::string &via);
    void set_mtu(const std::string &ns, const std::string &ifname, int mtu);
    // IPv4 and IPv6 forwarding on (a router namespace).
    void enable_forwarding(const std::string &ns);
    // sysctl -w key=value inside ns; refuses the host namespace.
    void sysctl(const std::string &ns, const std::string &key, const std::string &value);

    // argv run inside ns ("" = host: only for `ip`). exec_checked throws with
    // the command's output when it fails.
    CommandResult exec(const std::string &ns, std::vector<std::string> argv,
                       std::chrono::milliseconds timeout = 10s);
    std::string exec_checked(const std::string &ns, std::vector<std::string> argv,
                             std::chrono::milliseconds timeout = 10s);

    // Starts argv[0] (a path) inside ns through `ip netns exec`, which execs it:
    // the pid is the program's own. Owned by the lab (ended before the
    // namespace is deleted); the reference stays valid while the lab lives.
    ChildProcess &spawn(const std::string &ns, std::vector<std::string> argv);

    // Runs fn on a thread that has entered ns's network namespace (sockets it
    // creates live there), and waits for it. Exceptions from fn are rethrown.
    void run_in(const std::string &ns, const std::function<void()> &fn);

private:
    struct Spawned {
        std::string ns;
        std::unique_ptr<ChildProcess> proc;
    };
    void end_processes_in(const std::string &ns);

    std::string tag_;
    int block_ = 0;  // 0..511 within 198.18.0.0/15
    std::vector<std::string> namespaces_;
    std::vector<std::string> host_links_;  // veth ends we put in the host namespace
    std::vector<Spawned> spawned_;
};

}  // namespace rstwatch::testlab
