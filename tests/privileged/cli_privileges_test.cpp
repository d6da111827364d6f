// The agent binary's answers to bad input and missing privileges, and a
// clean attach/detach, run as a user would run it.
#include <bpf/bpf.h>
#include <grp.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "agent_binary.h"
#include "privileged.h"

namespace {

struct Outcome {
    int exit_code = -1;
    std::string out, err;
};

// Runs the agent, optionally as the unprivileged user nobody.
Outcome run_agent(const std::vector<std::string> &args, bool as_nobody = false)
{
    rwtest::BinaryRun run = rwtest::run_agent_binary(args, as_nobody);
    return {run.signal ? 128 + run.signal : run.exit_code, run.out, run.err};
}

pid_t a_pid_that_does_not_exist()
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    waitpid(pid, nullptr, 0);
    return pid;  // reaped: free until the kernel wraps around
}

}  // namespace

TEST(AgentBinary, UnknownFlagIsRejectedByName)
{
    Outcome o = run_agent({"run", "--no-such-flag"});
    EXPECT_NE(o.exit_code, 0);
    EXPECT_NE(o.err.find("--no-such-flag"), std::string::npos) << o.err;
}

TEST(AgentBinary, MissingPidIsNamed)
{
    pid_t gone = a_pid_that_does_not_exist();
    Outcome o = run_agent({"run", "--pid", std::to_string(gone)});
    EXPECT_EQ(o.exit_code, 2);
    EXPECT_NE(o.err.find("no process with pid " + std::to_string(gone)), std::string::npos) << o.err;
}

TEST(AgentBinary, WithoutPrivilegesSaysWhichAreNeeded)
{
    REQUIRE_ROOT();  // to drop to nobody
    Outcome o = run_agent({"run", "--duration", "1"}, /*as_nobody=*/true);
    ASSERT_NE(o.exit_code, 99) << "could not drop privileges";
    EXPECT_EQ(o.exit_code, 1);
    EXPECT_NE(o.err.find("root"), std::string::npos) << o.err;
    EXPECT_NE(o.err.find("CAP_BPF"), std::string::npos) << o.err;
    EXPECT_NE(o.err.find("CAP_PERFMON"), std::string::npos) << o.err;
}

TEST(AgentBinary, AttachesAndDetachesCleanly)
{
    REQUIRE_ROOT();
    Outcome o = run_agent({"run", "-v", "--pid", std::to_string(getpid()), "--duration", "1", "--format", "json",
                           "--store", "none", "--socket", "none"});
    EXPECT_EQ(o.exit_code, 0) << o.err;
    EXPECT_NE(o.err.find("attached"), std::string::npos) << o.err;
    EXPECT_NE(o.out.find("\"type\":\"tables\""), std::string::npos) << o.out;
    // The agent names the ids of the programs it attached (-v); none may
    // outlive it. Other agents on the host do not matter.
    const auto ids = rwtest::attached_prog_ids(o.err);
    EXPECT_GE(ids.size(), 5u) << o.err;
    for (__u32 id : ids)
        EXPECT_FALSE(rwtest::prog_loaded(id)) << "prog id " << id << " still loaded after the agent exited";
}

namespace {

bool wait_for_text(const char *path, const std::string &text, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        std::ifstream in(path);
        std::stringstream ss;
        ss << in.rdbuf();
        if (ss.str().find(text) != std::string::npos)
            return true;
        usleep(20 * 1000);
    }
    return false;
}

size_t count_of(const std::string &haystack, const std::string &needle)
{
    size_t n = 0;
    for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1))
        n++;
    return n;
}

}  // namespace

TEST(AgentBinary, SigusrPrintsTablesWithoutStoppingAndSigtermExitsCleanly)
{
    REQUIRE_ROOT();
    char out_path[] = "/tmp/rstwatch-usr1-out-XXXXXX";
    char err_path[] = "/tmp/rstwatch-usr1-err-XXXXXX";
    int out_fd = mkstemp(out_path), err_fd = mkstemp(err_path);
    const std::string self = std::to_string(getpid());
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        execl(RSTWATCH_BIN, RSTWATCH_BIN, "run", "--pid", self.c_str(), "--duration", "20", "--format", "json",
              "--store", "none", "--socket", "none", nullptr);
        _exit(127);
    }
    auto cleanup = [&] {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        unlink(out_path);
        unlink(err_path);
    };
    ASSERT_TRUE(wait_for_text(err_path, "attached", 10000)) << "agent did not attach";
    kill(pid, SIGUSR1);
    const bool printed = wait_for_text(out_path, "\"type\":\"tables\"", 3000);
    const bool still_running = waitpid(pid, nullptr, WNOHANG) == 0;
    kill(pid, SIGTERM);
    int status = 0;
    const bool exited = [&] {
        for (int waited = 0; waited < 2000; waited += 10) {
            if (waitpid(pid, &status, WNOHANG) == pid)
                return true;
            usleep(10 * 1000);
        }
        return false;
    }();
    std::ifstream in(out_path);
    std::stringstream out;
    out << in.rdbuf();
    if (!exited)
        cleanup();
    else {
        unlink(out_path);
        unlink(err_path);
    }
    close(out_fd);
    close(err_fd);
    EXPECT_TRUE(printed) << "SIGUSR1 printed no tables";
    EXPECT_TRUE(still_running) << "SIGUSR1 stopped the agent";
    ASSERT_TRUE(exited) << "SIGTERM did not stop the agent within 2 s";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_EQ(count_of(out.str(), "\"type\":\"tables\""), 2u) << "tables on SIGUSR1 and again at exit";
}
