// End-to-end: a real nginx (own prefix, 2 workers, upstream keep-alive) in front
// of rstwatch-test-backend in crash mode. The backend aborts with the request
// body unread, the kernel resets the connection, nginx logs
//   recv() failed (104: Connection reset by peer) while reading response header from upstream
// and answers 502. rstwatch must pin that reset on the worker that logged it,
// with the same upstream address.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "agent_binary.h"
#include "nginx_lab.h"
#include "scenario_harness.h"

namespace {

using namespace std::chrono_literals;
using rstwatch::testlab::ChildProcess;
using rstwatch::testlab::http_request;
using rstwatch::testlab::NginxLab;
using rstwatch::testlab::NginxLabOptions;
using rstwatch::testlab::parse_upstream_reset_line;
using rstwatch::testlab::UpstreamResetLine;
using rstwatch::scenarios::json_lines;
using rstwatch::scenarios::str;
using json = nlohmann::json;

// Starts the backend and returns it with its "addr:port" as it printed it.
std::unique_ptr<ChildProcess> start_backend(const std::string &mode, bool ipv6, std::string &addr) {
    auto backend = std::make_unique<ChildProcess>(std::vector<std::string>{
        RSTWATCH_TEST_BACKEND_BIN, "--listen", ipv6 ? "[::1]:0" : "127.0.0.1:0", "--mode", mode});
    if (!backend->wait_for_output("\n", 5s, ChildProcess::Stream::Stdout)) return backend;
    std::string out = backend->stdout_text();
    const std::string tag = "listening ";
    auto at = out.find(tag);
    if (at != std::string::npos) addr = out.substr(at + tag.size(), out.find('\n', at) - at - tag.size());
    return backend;
}

// 2 workers, upstream keep-alive 16: the production shape the agent must handle.
NginxLabOptions lab_options(const std::string &upstream) {
    NginxLabOptions o;
    o.upstreams = {upstream};
    return o;
}

// The rst record that matches nginx's error-log line: received from the upstream.
const json *find_upstream_rst(const std::vector<json> &records, const std::string &upstream) {
    for (const auto &r : records) {
        if (str(r, "type") == "rst" && str(r, "direction") == "received" && str(r, "role") == "upstream" &&
            str(r, "remote") == upstream)
            return &r;
    }
    return nullptr;
}

class CrashBackend : public ::testing::TestWithParam<bool /*ipv6 upstream*/> {};

// nginx really logs the 104 line for a crashing backend, from a worker,
// naming the backend's address; and rstwatch pins the reset nginx
// complained about on the worker that logged it, with that upstream. One
// nginx and one crash per address family.
TEST_P(CrashBackend, AgentPinsResetOnWorkerThatLogged104) {
    REQUIRE_ROOT();
    const bool ipv6 = GetParam();
    std::string backend_addr;
    auto backend = start_backend("crash", ipv6, backend_addr);
    ASSERT_FALSE(backend_addr.empty()) << "backend did not start: " << backend->stderr_text();

    NginxLab lab(lab_options(backend_addr));
    const pid_t master = lab.master_pid();

    ChildProcess agent({RSTWATCH_BIN, "run", "--json", "--pid", std::to_string(master), "--duration", "30",
                        "--store", "none", "--socket", "none"});
    ASSERT_TRUE(agent.wait_for_output("attached", 60s, ChildProcess::Stream::Stderr))
        << "agent did not attach (" << (agent.running() ? "still running" : "exited") << ")\nstderr:\n"
        << agent.stderr_text();

    EXPECT_EQ(http_request(lab.listen_port(), "POST", "/orders", std::string(512, 'x')), 502);
    auto resets = lab.wait_for_error_log_resets(1, 5s);
    ASSERT_EQ(resets.size(), 1u) << "error.log:\n" << lab.error_log();
    const UpstreamResetLine line = resets[0];
    EXPECT_NE(line.context.find("while reading response header from upstream"), std::string::npos) << line.line;
    EXPECT_EQ(line.upstream, backend_addr) << line.line;
    const auto workers = lab.worker_pids();
    EXPECT_NE(std::find(workers.begin(), workers.end(), line.pid), workers.end())
        << "pid " << line.pid << " is not one of the workers";
    // The backend really died (abort), as in a crash.
    auto backend_status = backend->wait(5s);
    ASSERT_TRUE(backend_status.has_value());
    EXPECT_TRUE(WIFSIGNALED(*backend_status) && WTERMSIG(*backend_status) == SIGABRT)
        << ChildProcess::describe_status(*backend_status);

    // Give the agent until its record shows up (ring-buffer polling), bounded.
    for (int i = 0; i < 50 && !find_upstream_rst(json_lines(agent.stdout_text()), line.upstream); ++i)
        std::this_thread::sleep_for(100ms);

    ASSERT_TRUE(agent.signal(SIGINT)) << "agent exited early:\n" << agent.stderr_text();
    auto status = agent.wait(15s);
    ASSERT_TRUE(status.has_value()) << "agent ignored SIGINT for 15 s";
    EXPECT_TRUE(WIFEXITED(*status)) << ChildProcess::describe_status(*status);

    const std::string out = agent.stdout_text();
    const auto records = json_lines(out);
    SCOPED_TRACE("nginx error.log line: " + line.line + "\nagent stdout:\n" + out + "\nagent stderr:\n" +
                 agent.stderr_text());

    const json *rst = find_upstream_rst(records, line.upstream);
    ASSERT_NE(rst, nullptr) << "no received upstream rst with remote " << line.upstream;
    ASSERT_TRUE(rst->contains("pid") && (*rst)["pid"].is_number_integer()) << rst->dump();
    const pid_t pid = (*rst)["pid"].get<pid_t>();
    EXPECT_EQ(pid, line.pid) << "reset pinned on pid " << pid << ", nginx logged it from " << line.pid;
    EXPECT_NE(pid, master) << "pinned on the master, not the worker";
    EXPECT_EQ(str(*rst, "comm"), "nginx");
    EXPECT_EQ(str(*rst, "family"), ipv6 ? "ipv6" : "ipv4");

    const bool has_tables = std::any_of(records.begin(), records.end(),
                                        [](const json &r) { return str(r, "type") == "tables"; });
    EXPECT_TRUE(has_tables) << "no {\"type\":\"tables\"} line at exit";
}

INSTANTIATE_TEST_SUITE_P(Families, CrashBackend, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool> &i) { return i.param ? "IPv6" : "IPv4"; });

// The parser the tests above rely on; pure, no root.
TEST(NginxErrorLog, ParsesUpstreamResetLine) {
    auto r = parse_upstream_reset_line(
        "2026/11/24 02:30:00 [error] 1234#1234: *5 recv() failed (104: Connection reset by peer) while reading "
        "response header from upstream, client: 127.0.0.1, server: , request: \"POST / HTTP/1.1\", upstream: "
        "\"http://127.0.0.1:8081/\", host: \"127.0.0.1:8080\"");
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->pid, 1234);
    EXPECT_EQ(r->upstream, "127.0.0.1:8081");
    EXPECT_EQ(r->context, "while reading response header from upstream");
}

TEST(NginxErrorLog, ParsesIPv6UpstreamWithPath) {
    auto r = parse_upstream_reset_line(
        "2026/11/24 02:30:00 [error] 77#77: *9 recv() failed (104: Connection reset by peer) while reading "
        "upstream, client: 127.0.0.1, server: , request: \"GET /a HTTP/1.1\", upstream: "
        "\"http://[::1]:8081/a/b?c=d\", host: \"x\"");
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->pid, 77);
    EXPECT_EQ(r->upstream, "[::1]:8081");
}

TEST(NginxErrorLog, IgnoresOtherLines) {
    // Client-side reset: not an upstream reset.
    EXPECT_FALSE(parse_upstream_reset_line(
        "2026/11/24 02:30:00 [info] 9#9: *1 recv() failed (104: Connection reset by peer) while reading client "
        "request body, client: 127.0.0.1, server: , request: \"POST / HTTP/1.1\", host: \"x\""));
    EXPECT_FALSE(parse_upstream_reset_line(
        "2026/11/24 02:30:00 [error] 9#9: *1 upstream prematurely closed connection while reading response header "
        "from upstream, client: 127.0.0.1, upstream: \"http://127.0.0.1:1/\""));
    EXPECT_FALSE(parse_upstream_reset_line(""));
}

}  // namespace
