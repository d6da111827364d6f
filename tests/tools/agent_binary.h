// The rstwatch binary the tests run: the build's own, or the one named by
// RSTWATCH_BIN in the environment (the kernel matrix installs the .deb in
// each guest and runs the tests on /usr/bin/rstwatch).
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef RSTWATCH_BUILT_BIN
#error "RSTWATCH_BUILT_BIN: the build's rstwatch, set by tests/*/CMakeLists.txt"
#endif

namespace rwtest {

inline const char *agent_binary()
{
    const char *installed = std::getenv("RSTWATCH_BIN");
    return installed && *installed ? installed : RSTWATCH_BUILT_BIN;
}

// How one run of the binary ended, and what it printed.
struct BinaryRun {
    int exit_code = -1;  // -1 unless it exited
    int signal = 0;      // the signal that ended it, if one did
    bool timed_out = false;
    std::string out, err;
};

// Runs the binary with args (stdin /dev/null), as the user nobody when
// as_nobody (99: could not become nobody); killed after `timeout`.
inline BinaryRun run_agent_binary(const std::vector<std::string> &args, bool as_nobody = false,
                                  std::chrono::seconds timeout = std::chrono::seconds(120))
{
    char out_path[] = "/tmp/rstwatch-run-out-XXXXXX";
    char err_path[] = "/tmp/rstwatch-run-err-XXXXXX";
    int out_fd = mkstemp(out_path), err_fd = mkstemp(err_path);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(open("/dev/null", O_RDONLY), 0);
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        if (as_nobody && (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0))
            _exit(99);
        std::vector<char *> argv{const_cast<char *>(agent_binary())};
        for (const auto &a : args)
            argv.push_back(const_cast<char *>(a.c_str()));
        argv.push_back(nullptr);
        execv(agent_binary(), argv.data());
        _exit(127);
    }
    BinaryRun run;
    int status = 0;
    const auto give_up = std::chrono::steady_clock::now() + timeout;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > give_up) {
            run.timed_out = true;
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    run.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    auto slurp = [](const char *path) {
        std::ifstream in(path);
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    };
    run.out = slurp(out_path);
    run.err = slurp(err_path);
    close(out_fd);
    close(err_fd);
    unlink(out_path);
    unlink(err_path);
    return run;
}

}  // namespace rwtest

#define RSTWATCH_BIN (rwtest::agent_binary())
