#include "remote_causes.h"

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "nginx_lab.h"

namespace rstwatch::scenarios {

using testlab::RemoteHost;

namespace {

// Behind the guest: 198.19.200.0/28 the middlebox's backend, .16/28 the
// link to the MTU scenario's router, .32/28 its backend.
constexpr const char *kBehindGuest = "198.19.200.0/24";

const std::string kSmallBody(512, 'p');
// A body larger than the backend's first window: its kernel acknowledges
// some before the backend dies with the rest unread.
const std::string kLargeBody(69 * 1024, 'u');

// A backend in the guest, owned by the scenario; teardown is the VM's end.
class RemoteScenario : public Scenario {
public:
    RemoteScenario(RemoteHost &host, bool ttl, int port) : host_(host), ttl_(ttl), port_(port) {}
    std::vector<std::string> agent_flags() const override {
        return ttl_ ? std::vector<std::string>{"--ttl-evidence"} : std::vector<std::string>{};
    }
    // Most of them: pool a connection, then POST on it (not retried by nginx).
    void warm(const Front &f) override { warm_statuses.push_back(f.request("GET", "/warm")); }
    void trigger(const Front &f) override { trigger_statuses.push_back(f.request("POST", "/orders", kSmallBody)); }

protected:
    // Starts rstwatch-test-backend in the guest (in namespace `ns` if given)
    // at addr:port and waits until this host can connect to it.
    void start_backend(const std::string &addr, const std::string &args, const std::string &ns = "") {
        const std::string exec = ns.empty() ? "" : "ip netns exec " + ns + " ";
        const std::string log = "/tmp/backend-" + std::to_string(port_) + ".log";
        pid_ = host_.sh_checked("setsid " + exec + backend_bin() + " --listen " + addr + ":" +
                                std::to_string(port_) + " --quiet " + args + " >" + log + " 2>&1 </dev/null & echo $!");
        pid_.erase(pid_.find_last_not_of("\n") + 1);
        upstream = addr + ":" + std::to_string(port_);
        if (!testlab::wait_for_listen(static_cast<uint16_t>(port_), std::chrono::seconds(20), addr))
            throw std::runtime_error(name() + ": the backend in the guest does not answer at " + upstream + ":\n" +
                                     host_.sh("cat " + log).output);
    }
    // Whether the backend process ended within `wait` (checked right after
    // the trigger: the last scenario's power cycle ends every process).
    bool backend_ended(std::chrono::seconds wait) const {
        const std::string n = std::to_string(wait.count() * 10);
        return host_.sh("i=0; while kill -0 " + pid_ + " 2>/dev/null; do i=$((i+1)); [ $i -ge " + n +
                        " ] && exit 1; sleep 0.1; done")
                   .status == 0;
    }
    // What went wrong with the reproduction, found during the trigger.
    std::string check_reproduction() const override { return problem_; }

    RemoteHost &host_;
    bool ttl_;
    int port_;
    std::string pid_;
    std::string problem_;
};

// The backend reads the request head (and, pooled, part of a large body)
// and dies: abort() or SIGTERM's default action. From nginx's side a crash,
// an OOM kill and a stop look the same.
class RemoteBackendDies : public RemoteScenario {
public:
    RemoteBackendDies(RemoteHost &host, bool ttl, int port, std::string cause, std::string mode, bool pooled)
        : RemoteScenario(host, ttl, port), cause_(std::move(cause)), mode_(std::move(mode)), pooled_(pooled) {}
    std::string name() const override { return "remote_" + cause_ + (pooled_ ? "_pooled" : "_fresh"); }
    std::string actual_cause() const override { return cause_; }
    std::string expected_cause() const override { return "unknown"; }
    std::vector<std::string> expected_evidence() const override {
        if (pooled_) return {"the backend acknowledged part of the request", "candidates: backend_crash"};
        return {"candidates: backend_crash, backend_oom, backend_shutdown"};
    }
    std::string upstream_extra() const override { return pooled_ ? "keepalive 16;" : ""; }
    void setup(NetnsLab &) override {
        start_backend(host_.ip4(), "--mode " + mode_ + (pooled_ ? " --spare 1 --read-body 32768" : ""));
    }
    void warm(const Front &f) override {
        if (pooled_) warm_statuses.push_back(f.request("GET", "/warm"));
    }
    void trigger(const Front &f) override {
        trigger_statuses.push_back(f.request("POST", "/orders", pooled_ ? kLargeBody : kSmallBody));
        if (!backend_ended(std::chrono::seconds(3))) problem_ = "the " + mode_ + " backend still runs";
    }

private:
    std::string cause_, mode_;
    bool pooled_;
};

// keepalive_race: the backend closes connections idle for 1 s, and the
// guest drops its FIN (as when it is lost or still in flight): nginx reuses
// the connection 2 s later and meets a closed socket.
class RemoteKeepaliveRace : public RemoteScenario {
public:
    using RemoteScenario::RemoteScenario;
    std::string name() const override { return "remote_keepalive_race"; }
    std::string actual_cause() const override { return "keepalive_race"; }
    std::string expected_cause() const override { return "unknown"; }
    std::vector<std::string> expected_evidence() const override {
        return {"candidates: keepalive_race, stale_reuse, middlebox_idle"};
    }
    void setup(NetnsLab &) override {
        host_.sh_checked("iptables -A OUTPUT -p tcp --sport " + std::to_string(port_) +
                         " --tcp-flags FIN FIN -j DROP");
        start_backend(host_.ip4(), "--mode ok --keepalive-timeout 1000");
    }
    std::chrono::milliseconds idle() const override { return 2000ms; }
};

// middlebox_idle: the guest routes for a backend in a namespace of its own
// and forgets flows idle for 3 s; a segment of a forgotten flow gets a reset
// from the guest (REJECT --reject-with tcp-reset). The backend's segments
// reach nginx with TTL 63, the guest's reset with 64: only --ttl-evidence
// sees that.
class RemoteMiddlebox : public RemoteScenario {
public:
    using RemoteScenario::RemoteScenario;
    std::string name() const override { return "remote_middlebox_idle"; }
    std::string actual_cause() const override { return "middlebox_idle"; }
    std::string expected_cause() const override { return ttl_ ? "middlebox_idle" : "unknown"; }
    std::vector<std::string> expected_evidence() const override {
        if (ttl_) return {"RST TTL 64 vs connection TTL 63: sent by a hop closer than the backend"};
        return {"candidates: keepalive_race, stale_reuse, middlebox_idle"};
    }
    void setup(NetnsLab &) override {
        host_.sh_checked(R"(set -e
ip netns add mbb
ip link add mb0 type veth peer name mb1 netns mbb
ip addr add 198.19.200.1/28 dev mb0
ip link set mb0 up
ip -n mbb addr add 198.19.200.2/28 dev mb1
ip -n mbb link set mb1 up
ip -n mbb link set lo up
ip -n mbb route add default via 198.19.200.1
sysctl -qw net.ipv4.ip_forward=1
iptables -A FORWARD -p tcp -d 198.19.200.0/28 -m conntrack --ctstate INVALID -j REJECT --reject-with tcp-reset
iptables -A FORWARD -p tcp -s 198.19.200.0/28 -m conntrack --ctstate INVALID -j REJECT --reject-with tcp-reset
iptables -A FORWARD -m conntrack --ctstate NEW,ESTABLISHED,RELATED -j ACCEPT
sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_established=3
sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0
)");
        start_backend("198.19.200.2", "--mode ok", "mbb");
    }
    std::chrono::milliseconds idle() const override { return 4500ms; }
};

// mtu_blackhole: guest -> router namespace -> backend namespace; the
// router's link towards the guest has MTU 1280 and the router drops its own
// "fragmentation needed". The backend is an nginx whose /big answer (with a
// 2 KiB header) never gets through; after send_timeout 2s it resets the
// connection. nginx retries the GET once on a fresh connection (its first
// try was on a cached one), which ends the same way: two 104 lines.
class RemoteMtuBlackhole : public RemoteScenario {
public:
    using RemoteScenario::RemoteScenario;
    std::string name() const override { return "remote_mtu_blackhole"; }
    std::string actual_cause() const override { return "mtu_blackhole"; }
    std::string expected_cause() const override { return "unknown"; }
    std::vector<std::string> expected_evidence() const override {
        return {"candidates: the backend gave up on the connection"};
    }
    void setup(NetnsLab &) override {
        host_.sh_checked(topology_script());
        host_.sh_checked(backend_nginx_script());
        upstream = "198.19.200.34:" + std::to_string(port_);
        if (!testlab::wait_for_listen(static_cast<uint16_t>(port_), std::chrono::seconds(20), "198.19.200.34"))
            throw std::runtime_error("the MTU scenario's backend nginx does not answer:\n" +
                                     host_.sh("cat /tmp/mtu/error.log").output);
    }
    void warm(const Front &f) override { warm_statuses.push_back(f.request("GET", "/small")); }
    void trigger(const Front &f) override {
        trigger_statuses.push_back(f.request("GET", "/big", {}, 20s));
        const std::string log = host_.sh("cat /tmp/mtu/error.log").output;
        if (log.find("timed out") == std::string::npos)
            problem_ = "the backend nginx did not time out sending:\n" + log;
    }
    size_t expected_104() const override { return 2; }

private:
    static std::string topology_script() {
        return R"(set -e
ip netns add mtr
ip netns add mtb
ip link add mt0 type veth peer name mt1 netns mtr
ip addr add 198.19.200.17/28 dev mt0
ip link set mt0 up
ip -n mtr addr add 198.19.200.18/28 dev mt1
ip -n mtr link set mt1 mtu 1280 up
ip -n mtr link set lo up
ip -n mtr link add mt2 type veth peer name mt3 netns mtb
ip -n mtr addr add 198.19.200.33/28 dev mt2
ip -n mtr link set mt2 up
ip -n mtb addr add 198.19.200.34/28 dev mt3
ip -n mtb link set mt3 up
ip -n mtb link set lo up
ip -n mtb route add default via 198.19.200.33
ip -n mtr route add default via 198.19.200.17
ip route add 198.19.200.32/28 via 198.19.200.18
sysctl -qw net.ipv4.ip_forward=1
ip netns exec mtr sysctl -qw net.ipv4.ip_forward=1
ip netns exec mtr iptables -A OUTPUT -p icmp --icmp-type fragmentation-needed -j DROP
)";
    }
    std::string backend_nginx_script() const {
        const std::string pad(2048, 'x');
        return "set -e\nmkdir -p /tmp/mtu/www\nchmod 755 /tmp/mtu /tmp/mtu/www\n"
               "echo 'small answer, fits any MTU' >/tmp/mtu/www/small\n"
               "head -c 1048576 /dev/zero | tr '\\0' b >/tmp/mtu/www/big\nchmod 644 /tmp/mtu/www/*\n"
               "cat >/tmp/mtu/nginx.conf <<'EOF'\n"
               "daemon on; pid /tmp/mtu/nginx.pid; error_log /tmp/mtu/error.log info; worker_processes 1;\n"
               "events {}\nhttp { access_log off; keepalive_timeout 60s; client_body_temp_path /tmp/mtu;\n"
               "  server { listen 198.19.200.34:" + std::to_string(port_) + "; root /tmp/mtu/www;\n"
               "    send_timeout 2s; reset_timedout_connection on;\n"
               "    location = /big { add_header X-Pad \"" + pad + "\"; } } }\nEOF\n"
               "ip netns exec mtb nginx -p /tmp/mtu -c /tmp/mtu/nginx.conf\n";
    }
};

// The backend host loses power under nginx's pooled connection and comes
// back: its new kernel has never heard of the connection and resets the
// request that reuses it. Runs last: the power cycle ends every backend.
class RemoteHostRestart : public RemoteScenario {
public:
    using RemoteScenario::RemoteScenario;
    std::string name() const override { return "remote_host_restart"; }
    std::string actual_cause() const override { return "stale_reuse"; }
    std::string expected_cause() const override { return "unknown"; }
    std::vector<std::string> expected_evidence() const override {
        return {"candidates: keepalive_race, stale_reuse, middlebox_idle"};
    }
    void setup(NetnsLab &) override { start_backend(host_.ip4(), "--mode ok"); }
    void trigger(const Front &f) override {
        host_.power_cycle();
        RemoteScenario::trigger(f);
    }
};

}  // namespace

RemoteBackends::RemoteBackends() {
    testlab::RemoteHostOptions o;
    if (const char *k = std::getenv("RSTWATCH_REMOTE_KERNEL"); k && *k) o.kernel = k;
    host_ = std::make_unique<RemoteHost>(o);
    testlab::run_checked({"ip", "route", "add", kBehindGuest, "via", host_->ip4()});
}

RemoteBackends::~RemoteBackends() {
    // Deleting the tap (RemoteHost) takes the route along; this is for order.
    testlab::run_command({"ip", "route", "del", kBehindGuest});
}

std::vector<std::unique_ptr<Scenario>> RemoteBackends::scenarios(bool ttl) {
    RemoteHost &h = *host_;
    std::vector<std::unique_ptr<Scenario>> s;
    s.push_back(std::make_unique<RemoteBackendDies>(h, ttl, 8101, "backend_crash", "crash", false));
    s.push_back(std::make_unique<RemoteBackendDies>(h, ttl, 8102, "backend_crash", "crash", true));
    s.push_back(std::make_unique<RemoteBackendDies>(h, ttl, 8103, "backend_shutdown", "shutdown", false));
    s.push_back(std::make_unique<RemoteKeepaliveRace>(h, ttl, 8104));
    s.push_back(std::make_unique<RemoteMiddlebox>(h, ttl, 8105));
    s.push_back(std::make_unique<RemoteMtuBlackhole>(h, ttl, 8106));
    s.push_back(std::make_unique<RemoteHostRestart>(h, ttl, 8107));  // last: the power cycle
    return s;
}

bool remote_backends_enabled() {
    const char *v = std::getenv("RSTWATCH_REMOTE_BACKENDS");
    return !(v && std::string(v) == "no");
}

}  // namespace rstwatch::scenarios
