#include "netns_lab.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <stdexcept>
#include <thread>

namespace rstwatch::testlab {

namespace fs = std::filesystem;

bool CommandResult::ok() const { return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }

namespace {

std::string resolve(const std::string &prog) {
    if (prog.find('/') != std::string::npos) return prog;
    for (const char *dir : {"/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"}) {
        std::string p = std::string(dir) + prog;
        if (access(p.c_str(), X_OK) == 0) return p;
    }
    return prog;  // execv fails: status 127 with the reason in the output
}

std::string join(const std::vector<std::string> &argv) {
    std::string s;
    for (const auto &a : argv) s += (s.empty() ? "" : " ") + a;
    return s;
}

std::vector<std::string> in_ns(const std::string &ns, std::vector<std::string> argv) {
    if (ns.empty()) return argv;
    std::vector<std::string> out = {"/usr/sbin/ip", "netns", "exec", ns};
    argv[0] = resolve(argv[0]);
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
}

bool is_v6(const std::string &addr) { return addr.find(':') != std::string::npos; }

std::atomic<int> g_lab_counter{0};

}  // namespace

CommandResult run_command(std::vector<std::string> argv, std::chrono::milliseconds timeout) {
    argv[0] = resolve(argv[0]);
    CommandResult r;
    ChildProcess p(argv);
    auto st = p.wait(timeout);
    if (!st) {
        p.terminate(100ms);
        r.status = -1;
    } else {
        r.status = *st;
    }
    p.wait_output_closed(2s);
    r.output = p.stdout_text() + p.stderr_text();
    return r;
}

std::string run_checked(std::vector<std::string> argv, std::chrono::milliseconds timeout) {
    const std::string text = join(argv);
    auto r = run_command(std::move(argv), timeout);
    if (!r.ok()) {
        throw std::runtime_error("`" + text + "` failed (" +
                                 (r.status < 0 ? std::string("timeout") : ChildProcess::describe_status(r.status)) +
                                 "): " + r.output);
    }
    return r.output;
}

NetnsLab::NetnsLab() {
    const int n = g_lab_counter.fetch_add(1);
    // pid (<= 7 digits) + one base-36 character: "rwt4194304z" is 11, which
    // leaves 4 characters for interface suffixes.
    static constexpr char kDigits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    tag_ = "rwt" + std::to_string(getpid()) + kDigits[n % 36];

    // A /24 of 198.18.0.0/15 (and the /48 with the same number) that nothing
    // on the host uses yet. Start from the pid so that concurrent runs differ.
    auto addrs = run_command({"ip", "-o", "addr", "show"});
    auto routes4 = run_command({"ip", "-4", "route", "show", "table", "all"});
    auto routes6 = run_command({"ip", "-6", "route", "show", "table", "all"});
    if (!addrs.ok()) throw std::runtime_error("NetnsLab: `ip addr` failed: " + addrs.output);
    const std::string used = addrs.output + routes4.output + routes6.output;
    for (int i = 0; i < 512; ++i) {
        int b = (static_cast<int>(getpid()) * 7 + n * 13 + i) % 512;
        block_ = b;
        // Check both spellings that could appear in ip's output.
        std::string v4 = "198." + std::to_string(18 + b / 256) + "." + std::to_string(b % 256) + ".";
        char v6[32];
        std::snprintf(v6, sizeof v6, "2001:db8:%x:", b + 1);
        if (used.find(v4) == std::string::npos && used.find(v6) == std::string::npos) return;
    }
    throw std::runtime_error("NetnsLab: no free /24 left in 198.18.0.0/15");
}

NetnsLab::~NetnsLab() {
    // Processes first: a namespace lives on while a process is inside it.
    for (auto it = spawned_.rbegin(); it != spawned_.rend(); ++it) it->proc->terminate(2s);
    spawned_.clear();
    for (const auto &l : host_links_) run_command({"ip", "link", "del", l});
    for (auto it = namespaces_.rbegin(); it != namespaces_.rend(); ++it) run_command({"ip", "netns", "del", *it});
}

std::string NetnsLab::ip4(int subnet, int host) const {
    return "198." + std::to_string(18 + block_ / 256) + "." + std::to_string(block_ % 256) + "." +
           std::to_string(subnet * 16 + host);
}

std::string NetnsLab::ip6(int subnet, int host) const {
    char buf[64];
    // +1: block 0 would be "2001:db8:0:...", which compresses differently.
    std::snprintf(buf, sizeof buf, "2001:db8:%x:%x::%x", block_ + 1, subnet, host);
    // Canonical text (RFC 5952), as nginx and the agent print it: subnet 0
    // makes "2001:db8:b:0::2" into "2001:db8:b::2".
    in6_addr a{};
    char out[INET6_ADDRSTRLEN] = {};
    if (inet_pton(AF_INET6, buf, &a) == 1 && inet_ntop(AF_INET6, &a, out, sizeof out)) return out;
    return buf;
}

std::string NetnsLab::net4(int subnet) const { return ip4(subnet, 0) + "/" + std::to_string(kPrefix4); }

std::string NetnsLab::net6(int subnet) const {
    char buf[64];
    std::snprintf(buf, sizeof buf, "2001:db8:%x:%x::/%d", block_ + 1, subnet, kPrefix6);
    return buf;
}

std::string NetnsLab::add_namespace(const std::string &short_name) {
    const std::string ns = tag_ + "-" + short_name;
    exec_checked("", {"ip", "netns", "add", ns});
    namespaces_.push_back(ns);
    exec_checked(ns, {"ip", "link", "set", "lo", "up"});
    return ns;
}

bool NetnsLab::has_namespace(const std::string &ns) const {
    for (const auto &n : namespaces_)
        if (n == ns) return true;
    return false;
}

void NetnsLab::end_processes_in(const std::string &ns) {
    for (auto it = spawned_.begin(); it != spawned_.end();) {
        if (it->ns == ns) {
            it->proc->terminate(2s);
            it = spawned_.erase(it);
        } else {
            ++it;
        }
    }
}

void NetnsLab::delete_namespace(const std::string &ns) {
    if (!has_namespace(ns)) throw std::invalid_argument("NetnsLab: not ours: " + ns);
    end_processes_in(ns);
    exec_checked("", {"ip", "netns", "del", ns});
    std::erase(namespaces_, ns);
}

std::string NetnsLab::ifname(const std::string &suffix) const {
    std::string name = tag_ + suffix;
    if (name.size() > 15) throw std::invalid_argument("NetnsLab: interface name too long: " + name);
    return name;
}

void NetnsLab::add_veth(const std::string &a_ns, const std::string &a_if, const std::string &b_ns,
                        const std::string &b_if) {
    // Created in the host namespace, then each end moved: ip can create the
    // peer directly in a namespace, but not the first end.
    exec_checked("", {"ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if});
    bool a_in_host = a_ns.empty(), b_in_host = b_ns.empty();
    if (a_in_host) host_links_.push_back(a_if);
    else if (b_in_host) host_links_.push_back(b_if);
    try {
        if (!a_in_host) exec_checked("", {"ip", "link", "set", a_if, "netns", a_ns});
        if (!b_in_host) exec_checked("", {"ip", "link", "set", b_if, "netns", b_ns});
    } catch (...) {
        // Whichever end is still in the host namespace; deleting it deletes both.
        run_command({"ip", "link", "del", a_if});
        run_command({"ip", "link", "del", b_if});
        throw;
    }
    exec_checked(a_ns, {"ip", "link", "set", a_if, "up"});
    exec_checked(b_ns, {"ip", "link", "set", b_if, "up"});
}

void NetnsLab::delete_link(const std::string &ns, const std::string &name) {
    exec_checked(ns, {"ip", "link", "del", name});
    if (ns.empty()) std::erase(host_links_, name);
    // Its peer may have been the one we remembered in the host namespace.
    for (auto it = host_links_.begin(); it != host_links_.end();) {
        if (!run_command({"ip", "link", "show", *it}).ok()) it = host_links_.erase(it);
        else ++it;
    }
}

void NetnsLab::add_address(const std::string &ns, const std::string &name, const std::string &cidr) {
    if (is_v6(cidr)) {
        // nodad: no 1-2 s of "tentative" during which connect() fails.
        exec_checked(ns, {"ip", "-6", "addr", "add", cidr, "dev", name, "nodad"});
    } else {
        exec_checked(ns, {"ip", "-4", "addr", "add", cidr, "dev", name});
    }
}

void NetnsLab::add_route(const std::string &ns, const std::string &dest, const std::string &via) {
    exec_checked(ns, {"ip", is_v6(via) ? "-6" : "-4", "route", "add", dest, "via", via});
}

void NetnsLab::set_mtu(const std::string &ns, const std::string &name, int mtu) {
    exec_checked(ns, {"ip", "link", "set", name, "mtu", std::to_string(mtu)});
}

void NetnsLab::enable_forwarding(const std::string &ns) {
    sysctl(ns, "net.ipv4.ip_forward", "1");
    sysctl(ns, "net.ipv6.conf.all.forwarding", "1");
}

void NetnsLab::sysctl(const std::string &ns, const std::string &key, const std::string &value) {
    if (ns.empty()) throw std::invalid_argument("NetnsLab: no sysctls in the host namespace");
    exec_checked(ns, {"sysctl", "-q", "-w", key + "=" + value});
}

CommandResult NetnsLab::exec(const std::string &ns, std::vector<std::string> argv, std::chrono::milliseconds timeout) {
    if (ns.empty() && resolve(argv[0]) != "/usr/sbin/ip" && resolve(argv[0]) != "/sbin/ip" &&
        resolve(argv[0]) != "/bin/ip")
        throw std::invalid_argument("NetnsLab: only `ip` runs in the host namespace: " + join(argv));
    if (!ns.empty() && !has_namespace(ns)) throw std::invalid_argument("NetnsLab: not ours: " + ns);
    return run_command(in_ns(ns, std::move(argv)), timeout);
}

std::string NetnsLab::exec_checked(const std::string &ns, std::vector<std::string> argv,
                                   std::chrono::milliseconds timeout) {
    const std::string text = (ns.empty() ? "" : "[" + ns + "] ") + join(argv);
    auto r = exec(ns, std::move(argv), timeout);
    if (!r.ok()) {
        throw std::runtime_error("NetnsLab: `" + text + "` failed (" +
                                 (r.status < 0 ? std::string("timeout") : ChildProcess::describe_status(r.status)) +
                                 "): " + r.output);
    }
    return r.output;
}

ChildProcess &NetnsLab::spawn(const std::string &ns, std::vector<std::string> argv) {
    if (!has_namespace(ns)) throw std::invalid_argument("NetnsLab: not ours: " + ns);
    spawned_.push_back({ns, std::make_unique<ChildProcess>(in_ns(ns, std::move(argv)))});
    return *spawned_.back().proc;
}

void NetnsLab::run_in(const std::string &ns, const std::function<void()> &fn) {
    if (!has_namespace(ns)) throw std::invalid_argument("NetnsLab: not ours: " + ns);
    std::exception_ptr error;
    std::thread t([&] {
        try {
            int fd = open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0) throw std::runtime_error("NetnsLab: open /run/netns/" + ns + " failed");
            // Only this thread moves: the network namespace is per thread.
            int r = setns(fd, CLONE_NEWNET);
            close(fd);
            if (r < 0) throw std::runtime_error("NetnsLab: setns into " + ns + " failed");
            fn();
        } catch (...) {
            error = std::current_exception();
        }
    });
    t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace rstwatch::testlab
