// RemoteHost: a backend host on another kernel (Debian's 6.1 in a QEMU guest
// on a tap). Proves what the remote-backend scenarios stand on: the guest
// boots, runs scripts, serves HTTP to this host over IPv4 and IPv6, and after
// a power cycle its fresh kernel resets a connection from before it. Each
// boot costs seconds under TCG, so one test walks through it all.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "netns_lab.h"
#include "nginx_lab.h"
#include "privileged.h"
#include "remote_host.h"

using namespace std::chrono_literals;
using rstwatch::testlab::RemoteHost;
using rstwatch::testlab::RemoteHostOptions;
namespace fs = std::filesystem;

namespace {

constexpr uint16_t kBackendPort = 8080;

bool tap_exists(const std::string &name) { return fs::exists("/sys/class/net/" + name); }

// The interfaces named like this process's RemoteHosts' taps.
std::vector<std::string> taps_of_this_run() {
    const std::string prefix = "rwtap" + std::to_string(getpid());
    std::vector<std::string> names;
    for (const auto &entry : fs::directory_iterator("/sys/class/net"))
        if (entry.path().filename().string().starts_with(prefix)) names.push_back(entry.path().filename());
    return names;
}

// "198.18.200.2:8080", "[2001:db8:200::2]:8080".
std::string endpoint(const std::string &ip, uint16_t port) {
    std::string text = ip.find(':') == std::string::npos ? ip : '[' + ip + ']';
    return text.append(":").append(std::to_string(port));
}

// rstwatch-test-backend in the guest, in the background (setsid, its output
// in a file: the shell's connection must not wait for it).
void start_backend(RemoteHost &host, const std::string &listen) {
    host.sh_checked("setsid " RSTWATCH_TEST_BACKEND_BIN " --listen " + listen +
                    " --mode ok --quiet >/tmp/backend-$$.log 2>&1 </dev/null &");
}

// A GET on an open keep-alive connection; true when a 200 came back (errno
// says why not when the connection failed).
bool get_on(int fd) {
    const std::string request = "GET / HTTP/1.1\r\nHost: backend\r\n\r\n";
    if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) return false;
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    return n > 12 && std::string(buf, static_cast<size_t>(n)).starts_with("HTTP/1.1 200");
}

}  // namespace

TEST(RemoteHost, BootsServesHttpAndResetsOldConnectionsAfterAPowerCycle) {
    REQUIRE_ROOT();
    std::string tap;
    {
        RemoteHost host;
        tap = host.tap_name();
        std::cout << "boot: " << host.boot_duration().count() << " ms; vmtest said:\n" << host.vm_log();
        EXPECT_TRUE(host.kernel_release().starts_with("6.1")) << host.kernel_release();
        EXPECT_TRUE(tap_exists(tap));

        auto three = host.sh("echo out; echo err >&2; exit 3");
        EXPECT_EQ(three.status, 3);
        EXPECT_EQ(three.output, "out\nerr\n");

        // Keep-alive connections over IPv4 and IPv6, each with a 200 on it.
        // (http_request would wait for a close the test backend never sends.)
        std::map<std::string, rwtest::Fd> connections;  // by the guest's address
        for (const std::string &ip : {host.ip4(), host.ip6()}) {
            start_backend(host, endpoint(ip, kBackendPort));
            ASSERT_TRUE(rstwatch::testlab::wait_for_listen(kBackendPort, 20s, ip)) << host.sh("cat /tmp/*.log").output;
            auto &connection = connections[ip] = rwtest::Fd(rstwatch::testlab::tcp_connect(ip, kBackendPort, 10s));
            ASSERT_TRUE(connection.valid()) << ip << ": " << std::strerror(errno);
            ASSERT_TRUE(get_on(connection.get())) << ip;
        }

        // Their other end vanishes without a word; the new kernel knows
        // nothing of them and answers the next request with a reset.
        const auto cycle = host.power_cycle();
        std::cout << "power_cycle: " << cycle.count() << " ms; vmtest said:\n" << host.vm_log();
        EXPECT_TRUE(host.kernel_release().starts_with("6.1")) << host.kernel_release();
        EXPECT_EQ(host.sh("ls /tmp/*.log").status, 2) << "the old guest's files outlived it";
        for (const auto &[ip, connection] : connections) {
            errno = 0;
            EXPECT_FALSE(get_on(connection.get())) << ip;
            EXPECT_EQ(errno, ECONNRESET) << ip << ": " << std::strerror(errno);
        }
    }
    EXPECT_FALSE(tap_exists(tap)) << tap << " outlived its RemoteHost";
}

// A VM that cannot boot (no such kernel) throws with vmtest's reason, and
// leaves no tap behind.
TEST(RemoteHost, FailedBootThrowsAndCleansUp) {
    REQUIRE_ROOT();
    try {
        RemoteHost host(RemoteHostOptions{.kernel = "4.19"});
        FAIL() << "booted a kernel vmtest does not know";
    } catch (const std::runtime_error &e) {
        EXPECT_NE(std::string(e.what()).find("unknown kernel '4.19'"), std::string::npos) << e.what();
    }
    EXPECT_EQ(taps_of_this_run(), std::vector<std::string>{});
}
