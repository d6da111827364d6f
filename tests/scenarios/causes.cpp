#include "causes.h"

#include <sys/stat.h>
#include <sys/wait.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "memory_cgroup.h"

namespace rstwatch::scenarios {

using testlab::ChildProcess;
using testlab::MemoryCgroup;
using testlab::NginxLab;
using testlab::NginxLabOptions;
namespace fs = std::filesystem;

namespace {

constexpr int kBackendPort = 8080;  // inside a namespace of its own: always free

std::string endpoint(const std::string &ip, int port) {
    return (ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":" + std::to_string(port);
}

// "listening ADDR:PORT" as the backend prints it; throws when it did not.
std::string wait_listening(ChildProcess &backend) {
    if (!backend.wait_for_output("\n", 5s, ChildProcess::Stream::Stdout))
        throw std::runtime_error("backend did not start: " + backend.stderr_text());
    std::string out = backend.stdout_text();
    const std::string tag = "listening ";
    auto at = out.find(tag);
    if (at == std::string::npos) throw std::runtime_error("backend said: " + out + backend.stderr_text());
    return out.substr(at + tag.size(), out.find('\n', at) - at - tag.size());
}

// Connects from the host to a backend in a namespace until it answers. Fresh
// links lose the first SYN now and then (IPv6 neighbour discovery settling);
// priming keeps those SYN retransmissions out of the connection nginx will
// pool, whose counters are evidence for the agent.
void prime_path(const std::string &ip) {
    if (!testlab::wait_for_listen(kBackendPort, 5s, ip))
        throw std::runtime_error("the host cannot reach the backend at " + ip);
}

std::string addr_of(const NetnsLab &net, bool ipv6, int subnet, int host) {
    return ipv6 ? net.ip6(subnet, host) : net.ip4(subnet, host);
}

// host <-> ns over one veth on `subnet`: host .1, namespace .2, both families.
void link_host_to(NetnsLab &net, const std::string &ns, const std::string &sfx, int subnet) {
    const std::string h = net.ifname(sfx + "0"), n = net.ifname(sfx + "1");
    net.add_veth("", h, ns, n);
    net.add_address("", h, net.ip4(subnet, 1) + "/" + std::to_string(NetnsLab::kPrefix4));
    net.add_address(ns, n, net.ip4(subnet, 2) + "/" + std::to_string(NetnsLab::kPrefix4));
    net.add_address("", h, net.ip6(subnet, 1) + "/" + std::to_string(NetnsLab::kPrefix6));
    net.add_address(ns, n, net.ip6(subnet, 2) + "/" + std::to_string(NetnsLab::kPrefix6));
}

// host (front_subnet .1) <-> router (.2) <-> (back_subnet .1) router, backend .2.
// The host reaches back_subnet through the router; the backend's default
// route is the router. Returns the router-side interface towards the host.
// router <-> backend over one veth on back_subnet: router .1, backend .2; the
// backend's default route is the router.
void link_router_to(NetnsLab &net, const std::string &router, const std::string &backend, const std::string &sfx,
                    int back_subnet) {
    const std::string r = net.ifname(sfx + "2"), b = net.ifname(sfx + "3");
    net.add_veth(router, r, backend, b);
    net.add_address(router, r, net.ip4(back_subnet, 1) + "/" + std::to_string(NetnsLab::kPrefix4));
    net.add_address(backend, b, net.ip4(back_subnet, 2) + "/" + std::to_string(NetnsLab::kPrefix4));
    net.add_address(router, r, net.ip6(back_subnet, 1) + "/" + std::to_string(NetnsLab::kPrefix6));
    net.add_address(backend, b, net.ip6(back_subnet, 2) + "/" + std::to_string(NetnsLab::kPrefix6));
    net.add_route(backend, "default", net.ip4(back_subnet, 1));
    net.add_route(backend, "default", net.ip6(back_subnet, 1));
}

std::string routed_path(NetnsLab &net, const std::string &router, const std::string &backend,
                        const std::string &sfx, int front_subnet, int back_subnet) {
    link_host_to(net, router, sfx, front_subnet);
    link_router_to(net, router, backend, sfx, back_subnet);
    net.enable_forwarding(router);
    net.add_route("", net.net4(back_subnet), net.ip4(front_subnet, 2));
    net.add_route("", net.net6(back_subnet), net.ip6(front_subnet, 2));
    return net.ifname(sfx + "1");
}

std::string iptables(bool ipv6) { return ipv6 ? "ip6tables" : "iptables"; }

const std::string kBody(512, 'p');  // a POST body the crashing backends leave unread

// A backend on the loopback, owned by the scenario.
class LoopbackScenario : public Scenario {
protected:
    void start_loopback(bool ipv6, std::vector<std::string> args) {
        std::vector<std::string> argv = {backend_bin(), "--listen", ipv6 ? "[::1]:0" : "127.0.0.1:0"};
        argv.insert(argv.end(), args.begin(), args.end());
        backend_ = std::make_unique<ChildProcess>(argv);
        upstream = wait_listening(*backend_);
    }
    std::unique_ptr<ChildProcess> backend_;
};

// The backend reads the request head and dies with the body unread; closing
// a socket with unread data sends a RST (RFC 2525 2.17).
//   backend_crash     abort(): SIGABRT
//   backend_shutdown  a deploy without drain: SIGTERM, default action
class BackendDies : public LoopbackScenario {
public:
    BackendDies(bool ipv6, std::string cause, std::string mode, int signal)
        : ipv6_(ipv6), cause_(std::move(cause)), mode_(std::move(mode)), signal_(signal) {}
    std::string name() const override { return cause_; }
    std::string expected_cause() const override { return cause_; }
    std::vector<std::string> expected_evidence() const override {
        return {"was exiting on SIG" + std::string(sigabbrev_np(signal_)) + " when the reset left its socket",
                "before any response byte"};
    }
    void setup(NetnsLab &) override { start_loopback(ipv6_, {"--mode", mode_, "--quiet"}); }
    void trigger(const Front &f) override { trigger_statuses.push_back(f.request("POST", "/orders", kBody)); }
    std::string check_reproduction() const override {
        auto st = backend_->wait(3s);
        if (!st) return "the " + mode_ + " backend is still running";
        if (!(WIFSIGNALED(*st) && WTERMSIG(*st) == signal_))
            return "backend ended with " + ChildProcess::describe_status(*st) + ", not SIG" + sigabbrev_np(signal_);
        return "";
    }

private:
    bool ipv6_;
    std::string cause_, mode_;
    int signal_;
};

// backend_oom: the backend runs in a memory cgroup limited to 64 MiB, reads
// the request head, then allocates until the memcg OOM killer SIGKILLs it;
// its socket still holds the unread body, so the kernel resets it.
class BackendOom : public LoopbackScenario {
public:
    explicit BackendOom(bool ipv6) : ipv6_(ipv6) {}
    std::string name() const override { return "backend_oom"; }
    std::string expected_cause() const override { return "backend_oom"; }
    // The victim's memory cgroup, as the kernel had it when the OOM killer chose it.
    std::vector<std::string> expected_evidence() const override {
        return {"killed by the OOM killer", "cgroup " + cgroup_->relative_path()};
    }
    void setup(NetnsLab &net) override {
        cgroup_ = std::make_unique<MemoryCgroup>(net.tag() + "-oom", 64u << 20);
        // The backend refuses to allocate unless it sits in our cgroup: a
        // failed move must not let it eat the host's memory.
        start_loopback(ipv6_, {"--mode", "oom", "--quiet", "--oom-max-mb", "512", "--require-cgroup",
                               cgroup_->relative_path()});
        cgroup_->add(backend_->pid());
    }
    void trigger(const Front &f) override { trigger_statuses.push_back(f.request("POST", "/upload", kBody)); }
    std::string check_reproduction() const override {
        auto st = backend_->wait(5s);
        if (!st) return "the oom backend is still running";
        if (!(WIFSIGNALED(*st) && WTERMSIG(*st) == SIGKILL))
            return "backend ended with " + ChildProcess::describe_status(*st) + ", not SIGKILL:\n" +
                   backend_->stderr_text();
        if (cgroup_->oom_kills() < 1) return "the cgroup counted no OOM kill";
        return "";
    }
    ~BackendOom() override {
        backend_.reset();  // out of the cgroup before it is removed
        cgroup_.reset();
    }

private:
    bool ipv6_;
    std::unique_ptr<MemoryCgroup> cgroup_;
};

// keepalive_race: the backend (own namespace) closes keep-alive connections
// idle for 1 s, but its FIN never leaves (iptables OUTPUT drop in its
// namespace), so nginx keeps the connection pooled. 2 s later a POST reuses
// it; the backend's kernel has a closed socket (FIN_WAIT1) and answers the
// data with a RST. Deterministic version of the race in which the FIN is
// still in flight when nginx writes.
class KeepaliveRace : public Scenario {
public:
    explicit KeepaliveRace(bool ipv6) : ipv6_(ipv6) {}
    std::string name() const override { return "keepalive_race"; }
    std::string expected_cause() const override { return "keepalive_race"; }
    std::vector<std::string> expected_evidence() const override { return {"data arriving after its close was answered with a reset", "pooled connection reused after"}; }
    void setup(NetnsLab &net) override {
        ns_ = net.add_namespace("ka");
        link_host_to(net, ns_, "ka", 1);
        net.exec_checked(ns_, {iptables(ipv6_), "-A", "OUTPUT", "-p", "tcp", "--sport", std::to_string(kBackendPort),
                               "--tcp-flags", "FIN", "FIN", "-j", "DROP"});
        const std::string ip = addr_of(net, ipv6_, 1, 2);
        auto &b = net.spawn(ns_, {backend_bin(), "--listen", endpoint(ip, kBackendPort), "--mode", "ok", "--quiet",
                                  "--keepalive-timeout", "1000"});
        upstream = wait_listening(b);
        prime_path(ip);
    }
    void warm(const Front &f) override { warm_statuses.push_back(f.request("GET", "/warm")); }
    std::chrono::milliseconds idle() const override { return 2000ms; }
    void trigger(const Front &f) override { trigger_statuses.push_back(f.request("POST", "/orders", kBody)); }

private:
    bool ipv6_;
    std::string ns_;
};

// middlebox_idle: nginx -> router namespace -> backend namespace. The router's
// conntrack forgets established flows idle for 3 s, and with tcp_loose=0 a
// mid-stream segment of a forgotten flow is INVALID, which the router answers
// with a RST of its own (REJECT --reject-with tcp-reset), as stateful
// firewalls and NAT gateways do. That RST has TTL/hop limit 64 at nginx; the
// backend's forwarded segments arrive with 63.
class MiddleboxIdle : public Scenario {
public:
    MiddleboxIdle(bool ipv6, bool ttl_evidence) : ipv6_(ipv6), ttl_(ttl_evidence) {}
    std::string name() const override { return "middlebox_idle"; }
    std::string actual_cause() const override { return "middlebox_idle"; }
    std::string expected_cause() const override { return ttl_ ? "middlebox_idle" : "unknown"; }
    std::vector<std::string> expected_evidence() const override {
        if (!ttl_) return {"candidates: keepalive_race, stale_reuse, middlebox_idle"};
        return {"RST TTL 64 vs connection TTL 63: sent by a hop closer than the backend", "pooled connection reused after"};
    }
    // The backend is on another host as far as nginx can tell: only TTLs tell the two apart.
    std::vector<std::string> agent_flags() const override {
        return ttl_ ? std::vector<std::string>{"--ttl-evidence"} : std::vector<std::string>{};
    }
    void setup(NetnsLab &net) override {
        router_ = net.add_namespace("mbr");
        backend_ns_ = net.add_namespace("mbb");
        routed_path(net, router_, backend_ns_, "mb", 2, 3);
        for (const std::string &ipt : {std::string("iptables"), std::string("ip6tables")}) {
            net.exec_checked(router_, {ipt, "-A", "FORWARD", "-p", "tcp", "-m", "conntrack", "--ctstate", "INVALID",
                                       "-j", "REJECT", "--reject-with", "tcp-reset"});
            net.exec_checked(router_, {ipt, "-A", "FORWARD", "-m", "conntrack", "--ctstate",
                                       "NEW,ESTABLISHED,RELATED", "-j", "ACCEPT"});
        }
        // After the rules: they make conntrack active in the router namespace.
        net.sysctl(router_, "net.netfilter.nf_conntrack_tcp_timeout_established", "3");
        net.sysctl(router_, "net.netfilter.nf_conntrack_tcp_loose", "0");
        const std::string ip = addr_of(net, ipv6_, 3, 2);
        auto &b = net.spawn(backend_ns_, {backend_bin(), "--listen", endpoint(ip, kBackendPort), "--mode", "ok",
                                          "--quiet"});
        upstream = wait_listening(b);
        prime_path(ip);
    }
    void warm(const Front &f) override { warm_statuses.push_back(f.request("GET", "/warm")); }
    std::chrono::milliseconds idle() const override { return 4500ms; }
    void trigger(const Front &f) override { trigger_statuses.push_back(f.request("POST", "/orders", kBody)); }

private:
    bool ipv6_, ttl_;
    std::string router_, backend_ns_;
};

// stale_reuse: a pooled connection outlives the backend host it points to.
// nginx -> router -> backend namespace. The warm-up pools a connection; then
// the router's link to the backend goes away first (so no FIN can reach
// nginx), the backend is killed, its namespace deleted and created again with
// the same addresses and a new backend (a replaced host or container behind a
// stable route). nginx still has the connection pooled; the POST on it reaches
// a kernel that never heard of it, whose new listener answers with a RST (no
// connection socket; traced on every kernel, the listener being a full one).
// The router keeps nginx's own route and device untouched: deleting the
// device nginx's socket routes through would shrink its MSS (the socket's
// cached route falls back to a device without MTU) and distort the picture.
class StaleReuse : public Scenario {
public:
    explicit StaleReuse(bool ipv6) : ipv6_(ipv6) {}
    std::string name() const override { return "stale_reuse"; }
    std::string expected_cause() const override { return "stale_reuse"; }
    std::vector<std::string> expected_evidence() const override { return {"the backend's kernel had no socket for this connection", "pooled connection reused after"}; }
    void setup(NetnsLab &net) override {
        router_ = net.add_namespace("str");
        backend_ns_ = net.add_namespace("stb");
        routed_path(net, router_, backend_ns_, "st", 4, 7);
        start_backend(net);
        prime_path(addr_of(net, ipv6_, 7, 2));
    }
    void warm(const Front &f) override { warm_statuses.push_back(f.request("GET", "/warm")); }
    std::chrono::milliseconds idle() const override { return 200ms; }
    void before_trigger(NetnsLab &net) override {
        net.delete_link(router_, net.ifname("st2"));
        net.delete_namespace(backend_ns_);  // ends the backend, then the namespace
        backend_ns_ = net.add_namespace("stb");
        link_router_to(net, router_, backend_ns_, "st", 7);
        start_backend(net);
        // The router's neighbour entry for the new backend is gone with the
        // old link; resolve it now (IPv6 neighbour discovery on a fresh link
        // can take a second), or the POST's first transmissions are lost and
        // the reset comes late, which looks like a different cause.
        const std::string ip = addr_of(net, ipv6_, 7, 2);
        bool reachable = false;
        net.run_in(router_, [&] { reachable = testlab::wait_for_listen(kBackendPort, 5s, ip); });
        if (!reachable) throw std::runtime_error("the router cannot reach the replacement backend");
    }
    void trigger(const Front &f) override { trigger_statuses.push_back(f.request("POST", "/orders", kBody)); }
    std::string check_reproduction() const override {
        return backend_ && backend_->running() ? "" : "the replacement backend is not running";
    }

private:
    void start_backend(NetnsLab &net) {
        const std::string ip = addr_of(net, ipv6_, 7, 2);
        backend_ = &net.spawn(backend_ns_,
                              {backend_bin(), "--listen", endpoint(ip, kBackendPort), "--mode", "ok", "--quiet"});
        upstream = wait_listening(*backend_);
    }
    bool ipv6_;
    std::string router_, backend_ns_;
    ChildProcess *backend_ = nullptr;  // owned by the NetnsLab
};

// mtu_blackhole: nginx -> router -> backend, where the router's link towards
// nginx has MTU 1280 while both ends use 1500 (MSS 1460), and the router
// drops its own ICMP "fragmentation needed" / "packet too big". Small
// answers pass; a response whose first segment is larger never arrives. The
// backend is an nginx serving a file with a 2 KiB response header (so even
// the header cannot pass), `send_timeout 2s; reset_timedout_connection on;`:
// it gives up on the stalled send with a RST, which the front nginx logs as
// 104 while reading the response header.
class MtuBlackhole : public Scenario {
public:
    explicit MtuBlackhole(bool ipv6) : ipv6_(ipv6) {}
    std::string name() const override { return "mtu_blackhole"; }
    std::string expected_cause() const override { return "mtu_blackhole"; }
    std::vector<std::string> expected_evidence() const override { return {"retransmission timeouts in a row when it gave up"}; }
    // A GET on a cached connection would be retried once (a second 104).
    std::string location_extra() const override { return "proxy_next_upstream off;"; }
    void setup(NetnsLab &net) override {
        router_ = net.add_namespace("mtr");
        backend_ns_ = net.add_namespace("mtb");
        const std::string towards_nginx = routed_path(net, router_, backend_ns_, "mt", 5, 6);
        net.set_mtu(router_, towards_nginx, 1280);
        net.exec_checked(router_, {"iptables", "-A", "OUTPUT", "-p", "icmp", "--icmp-type", "fragmentation-needed",
                                   "-j", "DROP"});
        net.exec_checked(router_, {"ip6tables", "-A", "OUTPUT", "-p", "icmpv6", "--icmpv6-type", "packet-too-big",
                                   "-j", "DROP"});

        char tmpl[] = "/tmp/rstwatch-mtu-www.XXXXXX";
        if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
        www_ = tmpl;
        chmod(www_.c_str(), 0755);  // the backend's workers are not root
        std::ofstream(www_ / "small") << "small answer, fits any MTU\n";
        std::ofstream(www_ / "big") << std::string(1u << 20, 'b');  // > the 16 KiB initial send buffer
        chmod((www_ / "small").c_str(), 0644);
        chmod((www_ / "big").c_str(), 0644);

        NginxLabOptions o;
        o.netns = backend_ns_;
        o.listen_host = addr_of(net, ipv6_, 6, 2);
        o.listen_port = kBackendPort;
        o.worker_processes = 1;
        o.upstream_keepalive = 0;
        o.error_log_level = "info";  // its "timed out" line is at info
        o.server_extra = "root " + www_.string() +
                         "; send_timeout 2s; reset_timedout_connection on; "
                         "location = /big { add_header X-Pad \"" +
                         std::string(2048, 'x') + "\"; }";
        backend_ = std::make_unique<NginxLab>(o);
        upstream = endpoint(o.listen_host, kBackendPort);
        prime_path(o.listen_host);
    }
    // The health check: a small answer passes the narrow link.
    void warm(const Front &f) override { warm_statuses.push_back(f.request("GET", "/small")); }
    void trigger(const Front &f) override { trigger_statuses.push_back(f.request("GET", "/big", {}, 15s)); }
    // Only the front's error log counts; the backend nginx logs its timeout.
    std::string check_reproduction() const override {
        if (backend_->error_log().find("timed out") == std::string::npos)
            return "the backend nginx did not time out sending:\n" + backend_->error_log();
        return "";
    }
    void teardown() override {
        if (backend_) backend_->stop();
    }
    ~MtuBlackhole() override {
        backend_.reset();
        std::error_code ec;
        if (!www_.empty()) fs::remove_all(www_, ec);
    }

private:
    bool ipv6_;
    std::string router_, backend_ns_;
    fs::path www_;
    std::unique_ptr<NginxLab> backend_;
};

// Healthy traffic: a bounded number of GETs and POSTs over upstream
// keep-alive. Nothing is reset.
class Healthy : public LoopbackScenario {
public:
    std::string name() const override { return "healthy"; }
    std::string expected_cause() const override { return ""; }
    void setup(NetnsLab &) override { start_loopback(false, {"--mode", "ok", "--quiet"}); }
    void trigger(const Front &f) override {
        for (int i = 0; i < 20; ++i) trigger_statuses.push_back(f.request("GET", "/item/" + std::to_string(i)));
        for (int i = 0; i < 5; ++i) trigger_statuses.push_back(f.request("POST", "/orders", kBody));
    }
    size_t expected_104() const override { return 0; }
    int expected_trigger_status() const override { return 200; }
};

// Client aborts: the backend streams a 4 MiB answer slowly; three clients
// read 64 KiB each and reset their connection. nginx sees the client's RST
// and drops the upstream connection mid-response (sending the backend a RST
// itself). None of that is an upstream failure.
class ClientAbort : public LoopbackScenario {
public:
    std::string name() const override { return "client_abort"; }
    std::string expected_cause() const override { return "client_side"; }
    void setup(NetnsLab &) override { start_loopback(false, {"--mode", "slow", "--quiet"}); }
    void trigger(const Front &f) override {
        for (int i = 0; i < 3; ++i) {
            long got = testlab::http_request_abort(f.port, f.prefix + "/download", 64 * 1024, 5s);
            trigger_statuses.push_back(got > 0 ? 200 : -1);  // 200: got part of the answer, then aborted
            std::this_thread::sleep_for(200ms);
        }
    }
    size_t expected_104() const override { return 0; }
    int expected_trigger_status() const override { return 200; }
};

}  // namespace

std::unique_ptr<Scenario> make_backend_crash(bool ipv6) {
    return std::make_unique<BackendDies>(ipv6, "backend_crash", "crash", SIGABRT);
}
std::unique_ptr<Scenario> make_backend_shutdown(bool ipv6) {
    return std::make_unique<BackendDies>(ipv6, "backend_shutdown", "shutdown", SIGTERM);
}
std::unique_ptr<Scenario> make_backend_oom(bool ipv6) { return std::make_unique<BackendOom>(ipv6); }
std::unique_ptr<Scenario> make_keepalive_race(bool ipv6) { return std::make_unique<KeepaliveRace>(ipv6); }
std::unique_ptr<Scenario> make_middlebox_idle(bool ipv6, bool ttl_evidence) {
    return std::make_unique<MiddleboxIdle>(ipv6, ttl_evidence);
}
std::unique_ptr<Scenario> make_stale_reuse(bool ipv6) { return std::make_unique<StaleReuse>(ipv6); }
std::unique_ptr<Scenario> make_mtu_blackhole(bool ipv6) { return std::make_unique<MtuBlackhole>(ipv6); }
std::unique_ptr<Scenario> make_healthy() { return std::make_unique<Healthy>(); }
std::unique_ptr<Scenario> make_client_abort() { return std::make_unique<ClientAbort>(); }

}  // namespace rstwatch::scenarios
