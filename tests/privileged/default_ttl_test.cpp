// TTL evidence without --ttl-evidence. Where fentry can attach and
// tcp_reset() is given the reset's skb (KernelSupport::ttls_by_fentry:
// Debian's 6.1 and 6.12), a received reset carries its own TTL and that of
// the backend's SYN-ACK, with nothing run per segment. Elsewhere (this
// project's 6.18 host, Debian's 5.10) the agent runs without them, says so
// at start, and records them as unknown.
#include <nlohmann/json.hpp>

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <thread>

extern "C" {
#include "rstwatch_abi.h"
}

#include "agent_binary.h"
#include "events/decode.h"
#include "kernel/kernel_features.h"
#include "kernel/kernel_support.h"
#include "kernel/loader.h"
#include "kernel/reset_reason_names.h"
#include "netns_lab.h"
#include "privileged.h"

using namespace std::chrono_literals;
using nlohmann::json;
using rstwatch::testlab::ChildProcess;
using rstwatch::testlab::NetnsLab;

namespace {

constexpr uint16_t kBackendPort = 8080;  // in a namespace of its own: free
// The idle time after which the router's conntrack has forgotten the flow.
constexpr int kConntrackTimeoutS = 3;

std::string bracketed(const std::string &ip) { return ip.find(':') != std::string::npos ? "[" + ip + "]" : ip; }

// This host -> router -> backend, each its own namespace. The router's
// conntrack forgets an idle flow after 3 s and then answers the flow's next
// segment with a reset of its own (a stateful firewall's idle timeout): that
// reset arrives with TTL 64, the backend's segments, forwarded once, with 63.
class MiddleboxPath {
public:
    explicit MiddleboxPath(bool v6) : v6_(v6)
    {
        router_ = net_.add_namespace("ttr");
        backend_ = net_.add_namespace("ttb");
        link("", router_, "f", 0);
        link(router_, backend_, "b", 1);
        net_.enable_forwarding(router_);
        net_.add_route("", v6 ? net_.net6(1) : net_.net4(1), ip(0, 2));
        net_.add_route(backend_, "default", ip(1, 1));
        // The conntrack match makes conntrack track the router's flows; with
        // tcp_loose 0 a forgotten flow's next segment is INVALID.
        net_.exec_checked(router_, {v6 ? "ip6tables" : "iptables", "-A", "FORWARD", "-p", "tcp", "-m", "conntrack",
                                    "--ctstate", "INVALID", "-j", "REJECT", "--reject-with", "tcp-reset"});
        net_.sysctl(router_, "net.netfilter.nf_conntrack_tcp_timeout_established", std::to_string(kConntrackTimeoutS));
        net_.sysctl(router_, "net.netfilter.nf_conntrack_tcp_loose", "0");
        ChildProcess &b = net_.spawn(backend_, {RSTWATCH_TEST_BACKEND_BIN, "--listen",
                                                bracketed(ip(1, 2)) + ":" + std::to_string(kBackendPort), "--mode",
                                                "ok", "--quiet"});
        if (!b.wait_for_output("listening", rwtest::time_limit(5s), ChildProcess::Stream::Stdout))
            throw std::runtime_error("the backend did not start: " + b.stderr_text());
        // A fresh path loses a first SYN now and then (neighbour discovery).
        if (!rstwatch::testlab::wait_for_listen(kBackendPort, rwtest::time_limit(10s), ip(1, 2)))
            throw std::runtime_error("the backend is not reachable through the router");
    }

    std::string backend_ip() const { return ip(1, 2); }
    std::string backend_endpoint() const { return bracketed(ip(1, 2)) + ":" + std::to_string(kBackendPort); }

private:
    std::string ip(int subnet, int host) const { return v6_ ? net_.ip6(subnet, host) : net_.ip4(subnet, host); }

    // a (.1) <-> b (.2) on `subnet`.
    void link(const std::string &a, const std::string &b, const std::string &sfx, int subnet)
    {
        const std::string a_if = net_.ifname(sfx + "0"), b_if = net_.ifname(sfx + "1");
        const std::string prefix = "/" + std::to_string(v6_ ? NetnsLab::kPrefix6 : NetnsLab::kPrefix4);
        net_.add_veth(a, a_if, b, b_if);
        net_.add_address(a, a_if, ip(subnet, 1) + prefix);
        net_.add_address(b, b_if, ip(subnet, 2) + prefix);
    }

    bool v6_;
    NetnsLab net_;
    std::string router_, backend_;
};

// One request and its response on `fd`; false if no 200 came.
bool exchange(int fd)
{
    const std::string request = "GET /ttl HTTP/1.1\r\nHost: backend\r\n\r\n";
    if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size()))
        return false;
    char buf[512];
    const ssize_t n = read(fd, buf, sizeof(buf));
    return n > 12 && std::string(buf, 12) == "HTTP/1.1 200";
}

// The agent's JSON line for the reset `local` received, or null.
json received_reset(const std::string &agent_stdout, const std::string &local)
{
    std::istringstream lines(agent_stdout);
    for (std::string line; std::getline(lines, line);) {
        json e = json::parse(line, nullptr, false);
        if (!e.is_discarded() && e.value("type", "") == "rst" && e.value("direction", "") == "received" &&
            e.value("local", "") == local)
            return e;
    }
    return nullptr;
}

std::unique_ptr<ChildProcess> start_agent()
{
    auto agent = std::make_unique<ChildProcess>(std::vector<std::string>{
        RSTWATCH_BIN, "run", "--pid", std::to_string(getpid()), "--json", "--socket", "none", "--store", "none",
        "--duration", "300"});
    if (!agent->wait_for_output("; tracking ", rwtest::time_limit(30s), ChildProcess::Stream::Stderr))
        ADD_FAILURE() << "the agent did not attach:\n" << agent->stderr_text();
    return agent;
}

// The agent in its default mode sees a middlebox's reset on a pooled
// connection, and the TTLs that tell it from the backend's where the kernel
// gives them at no cost per segment.
void expect_middlebox_ttls(bool v6)
{
    MiddleboxPath path(v6);
    auto agent = start_agent();
    rwtest::Fd conn(rstwatch::testlab::tcp_connect(path.backend_ip(), kBackendPort, rwtest::time_limit(5s)));
    ASSERT_TRUE(conn.valid()) << strerror(errno);
    const std::string local = rwtest::endpoint_of(conn.get(), false);
    ASSERT_TRUE(exchange(conn.get())) << "no response through the router";
    std::this_thread::sleep_for(std::chrono::seconds(kConntrackTimeoutS) + 1500ms);
    EXPECT_FALSE(exchange(conn.get()));
    EXPECT_EQ(errno, ECONNRESET) << "the router should have reset the forgotten flow";

    json reset;
    const auto give_up = std::chrono::steady_clock::now() + rwtest::time_limit(15s);
    while ((reset = received_reset(agent->stdout_text(), local)).is_null() && std::chrono::steady_clock::now() < give_up)
        std::this_thread::sleep_for(50ms);
    agent->terminate();
    agent->wait_output_closed(5s);
    ASSERT_FALSE(reset.is_null()) << "no received reset for " << local << " in:\n"
                                  << agent->stdout_text() << agent->stderr_text();

    std::printf("the agent's record of the router's reset: rst_ttl %s, data_ttl %s, cause %s\n",
                reset["rst_ttl"].dump().c_str(), reset["data_ttl"].dump().c_str(), reset["cause"].dump().c_str());
    // What the kernel offers, and what the agent said at start it gets.
    const bool by_default = rstwatch::probe_kernel_support(rstwatch::running_kernel()).ttls_by_fentry;
    const bool gap_named = agent->stderr_text().find("no TTLs by default") != std::string::npos;
    EXPECT_EQ(gap_named, !by_default) << agent->stderr_text();
    if (by_default) {
        EXPECT_EQ(reset["rst_ttl"], 64) << reset.dump();
        EXPECT_EQ(reset["data_ttl"], 63) << "the backend's SYN-ACK, one hop away: " << reset.dump();
    } else {
        EXPECT_TRUE(reset["rst_ttl"].is_null()) << reset.dump();
        EXPECT_TRUE(reset["data_ttl"].is_null()) << reset.dump();
    }
}

// The running kernel, except that ftrace claims it can attach to every
// function asked about: the loader then tries the fentry programs wherever
// the BTF allows them, also where the kernel refuses them.
class FtraceClaimedEverywhere final : public rstwatch::KernelFeatures {
public:
    bool has_vmlinux_btf() const override { return real().has_vmlinux_btf(); }
    bool has_btf_tracepoint(const std::string &n) const override { return real().has_btf_tracepoint(n); }
    bool has_kernel_function(const std::string &n) const override { return real().has_kernel_function(n); }
    bool has_btf_enum(const std::string &n) const override { return real().has_btf_enum(n); }
    std::vector<std::pair<std::string, uint32_t>> btf_enum_values(const std::string &n) const override
    {
        return real().btf_enum_values(n);
    }
    bool has_struct_member(const std::string &t, const std::string &m) const override
    {
        return real().has_struct_member(t, m);
    }
    bool can_trace_function(const std::string &) const override { return true; }
    bool function_has_param(const std::string &f, const std::string &p) const override
    {
        return real().function_has_param(f, p);
    }
    bool tracepoint_first_arg_is_pointer(const std::string &n) const override
    {
        return real().tracepoint_first_arg_is_pointer(n);
    }
    bool has_classic_tracepoint(const std::string &c, const std::string &n) const override
    {
        return real().has_classic_tracepoint(c, n);
    }
    unsigned jiffies_hz() const override { return real().jiffies_hz(); }
    bool is_root() const override { return real().is_root(); }
    bool has_capability(int cap) const override { return real().has_capability(cap); }
    std::string cgroup2_mount() const override { return real().cgroup2_mount(); }

private:
    static const KernelFeatures &real() { return rstwatch::running_kernel(); }
};

bool contains(const std::vector<std::string> &v, const std::string &s)
{
    return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

TEST(DefaultTtls, MiddleboxResetAndBackendTtlsWithoutTtlEvidenceIPv4)
{
    REQUIRE_ROOT();
    expect_middlebox_ttls(false);
}

TEST(DefaultTtls, MiddleboxResetAndBackendTtlsWithoutTtlEvidenceIPv6)
{
    REQUIRE_ROOT();
    expect_middlebox_ttls(true);
}

// A kernel whose BTF has tcp_reset(sk, skb) but which refuses fentry
// programs (this project's 6.18 host does, with EPERM; ftrace's list is
// unreadable there, so the agent does not try unless told it can): the
// agent loads without them and records no TTLs, rather than failing. Where
// fentry works (Debian's 6.1, 6.12) the same session has them, and a
// loopback reset carries TTL 64 for the reset and the SYN-ACK.
TEST(DefaultTtls, FentryTheKernelRefusesIsLeftOutAndTheRestRuns)
{
    REQUIRE_ROOT();
    const FtraceClaimedEverywhere kernel;
    rstwatch::LoaderOptions options;
    options.filter.pids = {static_cast<uint32_t>(getpid())};
    std::vector<rstwatch::ResetEvent> resets;
    rstwatch::DecodeContext ctx{0, rstwatch::load_reset_reasons(rstwatch::running_kernel(), nullptr)};
    rstwatch::BpfSession session(options, kernel, [&](std::span<const uint8_t> bytes) {
        rstwatch::DecodeResult r = rstwatch::decode_record(bytes, ctx);
        if (r.event)
            if (auto *reset = std::get_if<rstwatch::ResetEvent>(&*r.event))
                resets.push_back(*reset);
    });
    const bool offered = rstwatch::probe_kernel_support(kernel).ttls_by_fentry;
    const bool kept = session.kernel_support().ttls_by_fentry;
    const auto &attached = session.attached_programs();
    EXPECT_EQ(contains(attached, "fentry/tcp_reset"), kept);
    EXPECT_EQ(contains(attached, "fentry/tcp_finish_connect"), kept);
    if (offered && !kept) {
        EXPECT_TRUE(contains(session.disabled_programs(), "on_tcp_reset"));
        EXPECT_TRUE(contains(session.disabled_programs(), "on_tcp_finish_connect"));
    }
    // Where ftrace really lists the functions, nothing may be lost.
    if (rstwatch::probe_kernel_support(rstwatch::running_kernel()).ttls_by_fentry)
        EXPECT_TRUE(kept);

    rwtest::Fd listener(rwtest::listen_on_loopback(false));
    ASSERT_TRUE(listener.valid());
    rwtest::Fd client(rwtest::connect_to(false, rwtest::port_of(listener.get())));
    ASSERT_TRUE(client.valid());
    const std::string local = rwtest::endpoint_of(client.get(), false);
    rwtest::close_with_reset(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    char c;
    EXPECT_LT(recv(client.get(), &c, 1, 0), 0);

    const auto give_up = std::chrono::steady_clock::now() + rwtest::time_limit(3s);
    const rstwatch::ResetEvent *received = nullptr;
    while (!received && std::chrono::steady_clock::now() < give_up) {
        session.poll(50);
        for (const auto &e : resets)
            if (e.direction == rstwatch::Direction::Received && e.local == local)
                received = &e;
    }
    ASSERT_NE(received, nullptr) << "the reset programs run either way";
    EXPECT_EQ(received->rst_ttl, kept ? 64 : 0);
    EXPECT_EQ(received->data_ttl, kept ? 64 : 0);
}
