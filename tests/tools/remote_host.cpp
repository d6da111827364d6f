#include "remote_host.h"

#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "netns_lab.h"

#ifndef RSTWATCH_REPO_DIR
#error "RSTWATCH_REPO_DIR: the source tree (for scripts/vmtest), set by tests/tools/CMakeLists.txt"
#endif
#ifndef RSTWATCH_REMOTE_SHELL_BIN
#error "RSTWATCH_REMOTE_SHELL_BIN: the build's rstwatch-test-remote-shell, set by tests/tools/CMakeLists.txt"
#endif

namespace rstwatch::testlab {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint16_t kShellPort = 7000;
// A boot under TCG takes about 8 s here; slow machines and a busy CI get room.
constexpr auto kBootTimeout = std::chrono::seconds(180);
// vmtest stops QEMU (SIGTERM, SIGKILL after 5 s) and its output forwarders.
constexpr auto kVmtestStopGrace = std::chrono::seconds(20);
// vmtest's wall-clock limit for one VM: a bound should everything else fail
// (a test that dies outright takes the VM along: parent-death signals).
constexpr int kVmLifetimeSeconds = 3600;

std::atomic<int> g_host_counter{0};

// The last `lines` lines of text.
std::string tail_lines(const std::string &text, int lines) {
    size_t at = text.size();
    while (lines-- > 0 && at > 0) {
        at = text.rfind('\n', at - 1);
        if (at == std::string::npos) return text;
    }
    return text.substr(at + 1);
}

// Canonical IPv6 text (RFC 5952), as nginx and the agent print it.
std::string canonical_ip6(const std::string &text) {
    in6_addr a{};
    char out[INET6_ADDRSTRLEN] = {};
    if (inet_pton(AF_INET6, text.c_str(), &a) == 1 && inet_ntop(AF_INET6, &a, out, sizeof out)) return out;
    return text;
}

bool send_all(int fd, const std::string &text) {
    size_t sent = 0;
    while (sent < text.size()) {
        ssize_t n = send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        sent += static_cast<size_t>(n);
    }
    return true;
}

// Reads fd until EOF; false when deadline passes first or the read fails.
bool read_until_eof(int fd, std::string &out, Clock::time_point deadline) {
    char buf[8192];
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        pollfd p{fd, POLLIN, 0};
        if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) == 0) return false;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return false;
        if (n == 0) return true;
        out.append(buf, static_cast<size_t>(n));
    }
}

// The shell's answer: output, then "exit N\n".
RemoteHost::ShellResult parse_answer(const std::string &answer) {
    const size_t line = answer.size() >= 2 ? answer.rfind('\n', answer.size() - 2) : std::string::npos;
    const size_t last = line == std::string::npos ? 0 : line + 1;
    if (answer.empty() || answer.back() != '\n' || answer.compare(last, 5, "exit ") != 0)
        return {-1, answer + "\n(remote shell: no `exit N` line at the end of its answer)"};
    return {std::atoi(answer.c_str() + last + 5), answer.substr(0, last)};
}

}  // namespace

RemoteHost::RemoteHost(RemoteHostOptions options) : options_(std::move(options)) {
    if (options_.subnet < 1 || options_.subnet > 255)
        throw std::invalid_argument("RemoteHost: subnet " + std::to_string(options_.subnet) + " not in 1..255");
    // pid (<= 7 digits) + one base-36 character: at most 13 characters.
    static constexpr char kDigits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    tap_ = "rwtap" + std::to_string(getpid()) + kDigits[g_host_counter.fetch_add(1) % 36];
    try {
        create_tap();
        boot(Clock::now());
    } catch (...) {
        // No destructor runs for a half-built object.
        stop_vm();
        delete_tap();
        throw;
    }
}

RemoteHost::~RemoteHost() {
    stop_vm();
    delete_tap();
}

std::string RemoteHost::ip4() const { return "198.18." + std::to_string(options_.subnet) + ".2"; }
std::string RemoteHost::ip6() const { return canonical_ip6("2001:db8:" + std::to_string(options_.subnet) + "::2"); }
std::string RemoteHost::host_ip4() const { return "198.18." + std::to_string(options_.subnet) + ".1"; }
std::string RemoteHost::host_ip6() const {
    return canonical_ip6("2001:db8:" + std::to_string(options_.subnet) + "::1");
}

std::string RemoteHost::vm_log() const { return vmtest_ ? vmtest_->stderr_text() : std::string(); }

void RemoteHost::create_tap() {
    // Someone else's addresses or routes in this block: refuse rather than
    // shadow them (a NetnsLab of this run may hold it).
    const std::string used = run_checked({"ip", "-o", "addr", "show"}) +
                             run_checked({"ip", "-4", "route", "show", "table", "all"}) +
                             run_checked({"ip", "-6", "route", "show", "table", "all"});
    const std::string net4 = "198.18." + std::to_string(options_.subnet) + ".";
    const std::string net6 = "2001:db8:" + std::to_string(options_.subnet) + ":";
    if (used.find(net4) != std::string::npos || used.find(net6) != std::string::npos)
        throw std::runtime_error("RemoteHost: " + net4 + "0/24 or " + net6 +
                                 ":/64 is in use here; pick another subnet");
    if (fs::exists("/sys/class/net/" + tap_)) throw std::runtime_error("RemoteHost: " + tap_ + " exists already");
    // Persistent (ip tuntap's default): the tap outlives a QEMU killed in
    // power_cycle(), and the next VM attaches to it.
    run_checked({"ip", "tuntap", "add", "dev", tap_, "mode", "tap"});
    tap_created_ = true;
    run_checked({"ip", "-4", "addr", "add", host_ip4() + "/24", "dev", tap_});
    // nodad: usable at once, not "tentative" for a second or two.
    run_checked({"ip", "-6", "addr", "add", host_ip6() + "/64", "dev", tap_, "nodad"});
    // Up with no VM attached (NO-CARRIER) is fine: the prefix routes through
    // the tap exist, so rp_filter (strict or loose) accepts the guest's
    // packets, and nothing is forwarded: the guest is on the link.
    run_checked({"ip", "link", "set", tap_, "up"});
}

void RemoteHost::delete_tap() {
    if (!tap_created_) return;
    // Its addresses and routes go with it.
    run_command({"ip", "link", "del", tap_});
    tap_created_ = false;
}

void RemoteHost::boot(Clock::time_point started) {
    const std::string net = tap_ + "," + ip4() + "/24," + ip6() + "/64";
    vmtest_ = std::make_unique<ChildProcess>(std::vector<std::string>{
        RSTWATCH_REPO_DIR "/scripts/vmtest", "--kernel", options_.kernel, "--net", net, "--timeout",
        std::to_string(kVmLifetimeSeconds), "--",
        RSTWATCH_REMOTE_SHELL_BIN, "--listen", "0.0.0.0:" + std::to_string(kShellPort)});
    wait_for_shell(started + kBootTimeout);
    boot_duration_ = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
    kernel_release_ = sh_checked("uname -r");
    while (!kernel_release_.empty() && kernel_release_.back() == '\n') kernel_release_.pop_back();
}

void RemoteHost::wait_for_shell(Clock::time_point deadline) {
    // The shell says "listening" (over the guest's serial port) once it
    // accepts: no connection attempt before that, which would only meet ARP
    // timeouts or a refusal (a reset the agent under test would see).
    const auto until_deadline = [&] {
        return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    };
    if (!vmtest_->wait_for_output("listening ", until_deadline(), ChildProcess::Stream::Stdout))
        fail_boot(vmtest_->running() ? "the remote shell did not start in time" : "vmtest ended");
    while (Clock::now() < deadline) {
        if (!vmtest_->running()) fail_boot("vmtest ended");
        if (sh("true", std::chrono::seconds(10)).status == 0) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    fail_boot("the remote shell did not answer in time");
}

void RemoteHost::fail_boot(const std::string &why) const {
    std::string how;
    if (auto status = vmtest_->wait(std::chrono::milliseconds(0)))
        how = " (" + ChildProcess::describe_status(*status) + ")";
    throw std::runtime_error("RemoteHost: " + options_.kernel + " VM on " + tap_ + ": " + why + how +
                             "; vmtest's stderr ends with:\n" + tail_lines(vmtest_->stderr_text(), 40));
}

void RemoteHost::stop_vm() {
    if (!vmtest_) return;
    // SIGTERM: vmtest stops QEMU and removes its temp files; SIGKILL if it
    // hangs (QEMU then dies of its parent-death signal).
    vmtest_->terminate(kVmtestStopGrace);
    vmtest_.reset();
}

void RemoteHost::cut_power() {
    // vmtest SIGKILLs QEMU at once on SIGUSR1 and exits.
    vmtest_->signal(SIGUSR1);
    if (!vmtest_->wait(kVmtestStopGrace)) {
        vmtest_->signal(SIGKILL);
        vmtest_->wait(std::chrono::seconds(5));
    }
    vmtest_.reset();
}

void RemoteHost::wait_until_tap_released(std::chrono::milliseconds timeout) {
    // A tap takes one QEMU at a time; its carrier is off once the last one
    // closed it (at once after vmtest reaped QEMU; later after the SIGKILL
    // fallback).
    const auto deadline = Clock::now() + timeout;
    while (read_file("/sys/class/net/" + tap_ + "/carrier").starts_with("1")) {
        if (Clock::now() >= deadline) throw std::runtime_error("RemoteHost: the old VM still holds " + tap_);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
}

std::chrono::milliseconds RemoteHost::power_cycle() {
    const auto started = Clock::now();
    cut_power();
    wait_until_tap_released(std::chrono::seconds(10));
    boot(started);
    return boot_duration_;
}

RemoteHost::ShellResult RemoteHost::sh(const std::string &script, std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    const std::string where = "remote shell at " + ip4() + ":" + std::to_string(kShellPort);
    int fd = tcp_connect(ip4(), kShellPort, timeout);
    if (fd < 0) return {-1, where + ": connect: " + std::strerror(errno) + "\n"};
    std::string answer;
    const bool sent = send_all(fd, script) && shutdown(fd, SHUT_WR) == 0;
    const bool complete = sent && read_until_eof(fd, answer, deadline);
    close(fd);
    if (!sent) return {-1, where + ": sending the script failed\n"};
    if (!complete) return {-1, answer + "\n" + where + ": no complete answer within " +
                                   std::to_string(timeout.count()) + " s\n"};
    return parse_answer(answer);
}

std::string RemoteHost::sh_checked(const std::string &script, std::chrono::seconds timeout) {
    auto result = sh(script, timeout);
    if (result.status != 0)
        throw std::runtime_error("RemoteHost: script failed (status " + std::to_string(result.status) + "):\n" +
                                 script + "\n--- output:\n" + result.output);
    return result.output;
}

}  // namespace rstwatch::testlab
