// A backend host on another kernel: a QEMU guest (scripts/vmtest, one of
// Debian's kernels under TCG) on a tap device, reachable from this host at
// its own addresses, while nginx and the agent run here. Scenario tests put
// backends in it, and power-cycle it to see what a backend host that loses
// power looks like from nginx's side.
//
// The guest runs rstwatch-test-remote-shell; sh() sends it a /bin/sh script
// (run as root in the guest) and returns its output and exit status. The
// guest's root is this machine's / read-only with a tmpfs on top (its writes
// vanish with it); its /tmp and /run are fresh, but the build directory (where
// rstwatch-test-backend is) is visible at its host path, as is the repository.
//
// Rules it keeps, like NetnsLab:
//   - addresses only from 198.18.0.0/15 and 2001:db8::/32: the tap gets
//     198.18.<subnet>.1/24 and 2001:db8:<subnet>::1/64, the guest .2 and ::2;
//     the constructor refuses a subnet that an address or route here uses;
//   - the tap's name is unique per run ("rwtap<pid><n>", <= 15 characters);
//   - the destructor stops the VM (by the pid of the vmtest it started) and
//     deletes the tap; so does a constructor that throws half-way.
// One VM at a time: power_cycle() kills the old VM before it boots the new one.
// A VM lives at most an hour (vmtest --timeout). Construct and power-cycle
// from a thread that outlives the VM: vmtest is a ChildProcess, whose
// parent-death signal follows the thread that started it.
// Inside a scripts/vmtest guest it would boot a VM in the VM (minutes under
// TCG): the kernel matrix leaves its tests out.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "nginx_lab.h"

namespace rstwatch::testlab {

struct RemoteHostOptions {
    std::string kernel = "6.1";  // a name of `scripts/vmtest --list`
    int subnet = 200;            // 1..255: 198.18.<subnet>.0/24, 2001:db8:<subnet>::/64
};

class RemoteHost {
public:
    // Creates the tap, boots the VM and waits (<= 180 s) until its shell
    // answers. Throws std::runtime_error (with the tail of vmtest's stderr when
    // the VM is at fault) and leaves nothing behind.
    explicit RemoteHost(RemoteHostOptions options = {});
    ~RemoteHost();
    RemoteHost(const RemoteHost &) = delete;
    RemoteHost &operator=(const RemoteHost &) = delete;

    // The guest's addresses ("198.18.200.2", "2001:db8:200::2": no brackets)
    // and this host's end of the tap.
    std::string ip4() const;
    std::string ip6() const;
    std::string host_ip4() const;
    std::string host_ip6() const;
    const std::string &tap_name() const { return tap_; }
    // The guest's `uname -r` (read at each boot).
    const std::string &kernel_release() const { return kernel_release_; }
    // How long the last boot took: vmtest started (or, for power_cycle(), the
    // power cut) until the shell answered.
    std::chrono::milliseconds boot_duration() const { return boot_duration_; }
    // What the current VM's vmtest printed on stderr so far (its boot, with
    // "guest up after N s"; the guest's own stderr): for failure messages.
    std::string vm_log() const;

    struct ShellResult {
        // sh's exit status (128 + signal when one ended it); -1 when the shell
        // could not be reached, the connection broke or timeout expired
        // (output then ends with a line saying which).
        int status = -1;
        std::string output;  // stdout and stderr, interleaved
    };
    // Runs script with /bin/sh -c as root in the guest, cwd /. On timeout the
    // script is left running there. A process meant to outlive the script
    // must redirect its output (`setsid prog >/tmp/log 2>&1 &`).
    ShellResult sh(const std::string &script, std::chrono::seconds timeout = std::chrono::seconds(60));
    // sh(), throwing std::runtime_error with script and output unless status 0.
    std::string sh_checked(const std::string &script, std::chrono::seconds timeout = std::chrono::seconds(60));

    // The backend host loses power and comes back: QEMU is killed outright
    // (SIGKILL: the guest sends nothing more, no FIN, no RST), then a new VM
    // boots on the same tap with the same MAC and addresses; returns once its
    // shell answers, with how long that took. Processes started in the old
    // guest are gone, as are its files.
    std::chrono::milliseconds power_cycle();

private:
    void create_tap();
    void delete_tap();
    void boot(std::chrono::steady_clock::time_point started);
    void wait_for_shell(std::chrono::steady_clock::time_point deadline);
    void stop_vm();
    void cut_power();
    void wait_until_tap_released(std::chrono::milliseconds timeout);
    [[noreturn]] void fail_boot(const std::string &why) const;

    RemoteHostOptions options_;
    std::string tap_;
    bool tap_created_ = false;
    std::unique_ptr<ChildProcess> vmtest_;
    std::string kernel_release_;
    std::chrono::milliseconds boot_duration_{0};
};

}  // namespace rstwatch::testlab
