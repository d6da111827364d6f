// The built binary, given every option of every subcommand with values a
// person might get wrong: each is refused with a message naming the option
// and exit 2 (the command line) or 1 (what the system says), never a signal
// or a hang; and a refused start leaves no store, socket or log behind.
//
// Mistakes on the command line need no root. The start-up checks (--store,
// --socket, --log-file, --metrics) come after the agent's privileges are
// checked, so they are tried only where the agent could run: as root, on a
// kernel `rstwatch run --check` accepts. Every run also gets --duration 1
// and a store and socket in a temporary folder, so that a value wrongly
// accepted ends quickly and touches nothing real.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "agent_binary.h"

namespace fs = std::filesystem;

namespace {

using Args = std::vector<std::string>;

std::string joined(const Args &args)
{
    std::string s = "rstwatch";
    for (const auto &a : args)
        s += " '" + a + "'";
    return s;
}

// Every file below dir, folders included.
std::set<std::string> tree(const fs::path &dir)
{
    std::set<std::string> names;
    for (const auto &entry : fs::recursive_directory_iterator(dir))
        names.insert(entry.path().string());
    return names;
}

class BadInput : public ::testing::Test {
protected:
    void SetUp() override
    {
        char tmpl[] = "/tmp/rstwatch-bad-input.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        fs::create_directory(dir_ / "scratch");
        fs::create_directory(dir_ / "folder");
        ASSERT_EQ(mkfifo((dir_ / "fifo").c_str(), 0600), 0);
        std::ofstream(dir_ / "text") << "not a store\n";
        std::ofstream(dir_ / "empty");
        std::ofstream(dir_ / "unreadable") << "secret\n";
        chmod((dir_ / "unreadable").c_str(), 0);
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::string at(const std::string &name) const { return (dir_ / name).string(); }

    // Refused: exit `code`, `option` named on stderr, no signal, no hang.
    void expect_refused(const Args &args, int code, const std::string &option, bool as_nobody = false)
    {
        SCOPED_TRACE(joined(args));
        rwtest::BinaryRun o = rwtest::run_agent_binary(args, as_nobody, std::chrono::seconds(20));
        EXPECT_FALSE(o.timed_out) << "still running after 20 s";
        EXPECT_EQ(o.signal, 0) << "killed by signal " << o.signal << "\n" << o.err;
        EXPECT_EQ(o.exit_code, code) << o.err;
        EXPECT_NE(o.err.find(option), std::string::npos) << "stderr does not name " << option << ":\n" << o.err;
    }

    // `rstwatch run OPTION VALUE` (or OPTION alone, for nullptr) with the
    // safety net: a store and socket in dir_/scratch and --duration 1,
    // but for the option under test.
    Args run_with(const std::string &option, const char *value) const
    {
        Args args{"run"};
        if (option != "--duration")
            args.insert(args.end(), {"--duration", "1"});
        if (option != "--store")
            args.insert(args.end(), {"--store", at("scratch/rstwatch.db")});
        if (option != "--socket")
            args.insert(args.end(), {"--socket", at("scratch/rstwatch.sock")});
        args.push_back(option);
        if (value)
            args.push_back(value);
        return args;
    }

    fs::path dir_;
};

// Values that are not what the option takes; nullptr: the value is missing.
struct BadValues {
    std::string option;
    std::vector<const char *> values;
};

const char *const kHuge[] = {"4294967296", "18446744073709551616", "1e309"};

}  // namespace

TEST_F(BadInput, RunOptionsRefuseMalformedValues)
{
    const std::vector<BadValues> cases = {
        {"--comm", {"", "a-name-longer-than-15", "--json", nullptr}},
        {"--pid", {"abc", "-1", "0", "1.5", "0x10", "4194305", "", nullptr}},
        {"--duration", {"abc", "-5", "0", "nan", "inf", "1e10", "", nullptr}},
        {"--format", {"xml", "", nullptr}},
        {"--ring-buffer-kb", {"abc", "-4", "0", "2", "3000", "4194304", "", nullptr}},
        {"--socket", {"", nullptr}},
        {"--store", {"", nullptr}},
        {"--retain-days", {"abc", "-1", "0", "nan", "36501", "", nullptr}},
        {"--max-db-mb", {"abc", "-1", "0", "1.5", "1073741825", "", nullptr}},
        {"--metrics", {"nonsense:x", "99999", "65536", ":80", "[::1]", "127.0.0.1:-1", "", nullptr}},
        {"--log-file", {"", nullptr}},
        {"--record", {"", "--json", nullptr}},
    };
    for (const auto &c : cases) {
        for (const char *value : c.values)
            expect_refused(run_with(c.option, value), 2, c.option);
        if (c.option != "--comm" && c.option != "--format" && c.option != "--socket" && c.option != "--store" &&
            c.option != "--metrics" && c.option != "--log-file" && c.option != "--record")
            for (const char *value : kHuge)
                expect_refused(run_with(c.option, value), 2, c.option);
    }
    for (const char *flag : {"--json", "--all", "--ttl-evidence", "--check", "--verbose"})
        expect_refused(run_with(std::string(flag) + "=maybe", nullptr), 2, flag);
    Args both = run_with("--pid", "1");
    both.push_back("--all");
    expect_refused(both, 2, "--all");
    expect_refused(run_with("--no-such-option", nullptr), 2, "--no-such-option");
    expect_refused({"run", "--duration", "1", "--duration", "2"}, 2, "--duration");
    EXPECT_TRUE(tree(dir_ / "scratch").empty()) << "a refused start left files behind";
}

TEST_F(BadInput, DumpOptionsRefuseMalformedValues)
{
    const std::vector<BadValues> cases = {
        {"--by", {"xml", "", nullptr}},
        {"--format", {"xml", "", nullptr}},
        {"--since", {"abc", "-5", "0", "5w", "1e309", "1e306d", "", nullptr}},
        {"--socket", {"", nullptr}},
        {"--store", {"", nullptr}},
    };
    for (const auto &c : cases)
        for (const char *value : c.values) {
            Args args{"dump", c.option};
            if (value)
                args.push_back(value);
            expect_refused(args, 2, c.option);
        }
    expect_refused({"dump", "--no-such-option"}, 2, "--no-such-option");
    expect_refused({"frobnicate"}, 2, "run, dump");
    expect_refused({}, 2, "run, dump");
}

TEST_F(BadInput, DumpNamesWhatItCannotReach)
{
    for (const char *socket : {"nope.sock", "text", "folder", "fifo"})
        expect_refused({"dump", "--socket", at(socket)}, 1, "--socket");
    expect_refused({"dump", "--socket", at(std::string(120, 'x'))}, 1, "--socket");
    for (const char *store : {"nope.db", "folder", "fifo", "text", "empty", "text/x.db"})
        expect_refused({"dump", "--store", at(store)}, 1, "--store");
    // Root reads any file: ask as nobody (who may enter dir_).
    chmod(dir_.c_str(), 0755);
    expect_refused({"dump", "--store", at("unreadable")}, 1, "--store", /*as_nobody=*/geteuid() == 0);
}

TEST_F(BadInput, ExplainOptionsRefuseMalformedValues)
{
    const std::vector<BadValues> cases = {
        {"--since", {"abc", "-5", "0", "5w", "1e309", "1e306d", "", nullptr}},
        {"--tz", {"", "Mars/Olympus", "../../etc/passwd", "/etc/localtime", "Europe", "--json", nullptr}},
        {"--store", {"", nullptr}},
        {"--socket", {"", nullptr}},
    };
    for (const auto &c : cases)
        for (const char *value : c.values) {
            Args args{"explain", c.option};
            if (value)
                args.insert(args.end(), {value, at("text")});
            expect_refused(args, 2, c.option);
        }
    for (const char *flag : {"--json", "--follow"})
        expect_refused({"explain", std::string(flag) + "=maybe", at("text")}, 2, flag);
    expect_refused({"explain", "--store", at("a.db"), "--socket", at("a.sock"), at("text")}, 2, "--socket");
    expect_refused({"explain", ""}, 2, "FILE");
    expect_refused({"explain", "--no-such-option"}, 2, "--no-such-option");
}

TEST_F(BadInput, ExplainNamesWhatItCannotRead)
{
    // The log, before the store: not there, a folder, not readable.
    for (const char *log : {"nope.log", "folder"})
        expect_refused({"explain", "--store", at("nope.db"), at(log)}, 1, at(log));
    chmod(dir_.c_str(), 0755);
    expect_refused({"explain", "--store", at("nope.db"), at("unreadable")}, 1, at("unreadable"),
                   /*as_nobody=*/geteuid() == 0);
    // A store that is not one, and no agent on the socket.
    for (const char *store : {"nope.db", "folder", "fifo", "text", "empty"})
        expect_refused({"explain", "--store", at(store), at("text")}, 1, "--store");
    for (const char *socket : {"nope.sock", "text", "folder"})
        expect_refused({"explain", "--socket", at(socket), at("text")}, 1, "--socket");
}

TEST_F(BadInput, RefusedStartsCreateNothing)
{
    if (rwtest::run_agent_binary({"run", "--check"}).exit_code != 0)
        GTEST_SKIP() << "the agent cannot run here (rstwatch run --check): its start-up checks come after that";
    // A port that is taken, and an address that is not this host's (TEST-NET-1).
    int taken = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    ASSERT_EQ(bind(taken, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)), 0);
    ASSERT_EQ(listen(taken, 1), 0);
    getsockname(taken, reinterpret_cast<sockaddr *>(&addr), &len);
    const std::string taken_port = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));

    const std::vector<std::pair<std::string, std::string>> cases = {
        {"--log-file", at("missing/rstwatch.log")}, {"--log-file", at("folder")},
        {"--log-file", at("fifo")},                 {"--log-file", at("text/rstwatch.log")},
        {"--socket", at("missing/rstwatch.sock")},  {"--socket", at("text")},
        {"--socket", at("folder")},                 {"--socket", at(std::string(120, 'x'))},
        {"--store", at("folder")},                  {"--store", at("fifo")},
        {"--store", at("text")},                    {"--store", at("text/rstwatch.db")},
        {"--metrics", "192.0.2.1:9477"},            {"--metrics", taken_port},
        {"--record", at("missing/rstwatch.rec")},   {"--record", at("folder")},
    };
    const auto before = tree(dir_);
    for (const auto &[option, value] : cases) {
        expect_refused(run_with(option, value.c_str()), 1, option);
        EXPECT_EQ(tree(dir_), before) << option << " " << value << ": a refused start left files behind";
    }
    close(taken);
}
