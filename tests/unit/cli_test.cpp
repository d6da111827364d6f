// Command-line parsing: what a user types becomes the settings, and mistakes
// become one clear message and a non-zero exit.
#include <gtest/gtest.h>

#include <vector>

#include "app/cli.h"

using namespace rstwatch;

namespace {

CliOutcome parse(std::vector<const char *> args, PidExists exists = [](uint32_t) { return true; })
{
    args.insert(args.begin(), "rstwatch");
    return parse_command_line(static_cast<int>(args.size()), args.data(), exists);
}

}  // namespace

TEST(Cli, RunTracksNginxByDefault)
{
    auto out = parse({"run"});
    ASSERT_EQ(out.action, CliOutcome::Action::Run);
    EXPECT_EQ(out.run.filter.comms, std::vector<std::string>{"nginx"});
    EXPECT_TRUE(out.run.filter.pids.empty());
    EXPECT_FALSE(out.run.filter.all);
    EXPECT_FALSE(out.run.json);
    EXPECT_EQ(out.run.table_format, TableFormat::Table);
    EXPECT_FALSE(out.run.duration_s);
}

TEST(Cli, PidsAndCommsReplaceTheDefault)
{
    auto out = parse({"run", "--pid", "42", "-p", "43", "--comm", "envoy", "--json", "-d", "2.5"});
    ASSERT_EQ(out.action, CliOutcome::Action::Run) << out.message;
    EXPECT_EQ(out.run.filter.pids, (std::vector<uint32_t>{42, 43}));
    EXPECT_EQ(out.run.filter.comms, std::vector<std::string>{"envoy"});
    EXPECT_TRUE(out.run.json);
    EXPECT_EQ(out.run.table_format, TableFormat::Json) << "--json makes the tables JSON too";
    EXPECT_EQ(out.run.duration_s, 2.5);
}

TEST(Cli, TableFormatCanBeChosenApartFromEvents)
{
    auto out = parse({"run", "--json", "--format", "table"});
    ASSERT_EQ(out.action, CliOutcome::Action::Run);
    EXPECT_EQ(out.run.table_format, TableFormat::Table);
}

TEST(Cli, MissingPidIsNamed)
{
    auto out = parse({"run", "--pid", "4242"}, [](uint32_t pid) { return pid != 4242; });
    EXPECT_EQ(out.action, CliOutcome::Action::Exit);
    EXPECT_EQ(out.exit_code, 2);
    EXPECT_NE(out.message.find("no process with pid 4242"), std::string::npos) << out.message;
}

TEST(Cli, MistakesAreUsageErrorsThatNameTheOption)
{
    struct Case {
        std::vector<const char *> args;
        const char *named;
    };
    for (const Case &c : std::vector<Case>{{{"run", "--bogus"}, "--bogus"},
                                           {{"run", "--all", "--pid", "1"}, "--all"},
                                           {{"run", "--duration", "-1"}, "--duration"},
                                           {{"run", "--format", "xml"}, "--format"},
                                           {{"run", "--comm", "a-name-longer-than-15"}, "--comm"},
                                           {{"run", "--ring-buffer-kb", "3000"}, "--ring-buffer-kb"},
                                           {{"dump", "--since", "5w"}, "--since"},
                                           {{"explain", "--since", "5w"}, "--since"},
                                           {{"explain", "--tz", "Mars/Olympus"}, "--tz"},
                                           {{"explain", "--tz", "../../etc/passwd"}, "--tz"},
                                           {{"explain", "--store", "a.db", "--socket", "b.sock"}, "--socket"},
                                           {{"explain", ""}, "FILE"},
                                           {{"frobnicate"}, "run, dump"},
                                           {{}, "run, dump"}}) {
        auto out = parse(c.args);
        EXPECT_EQ(out.action, CliOutcome::Action::Exit);
        EXPECT_EQ(out.exit_code, 2) << c.named << ": CLI11's own codes (105...) mean nothing to a script";
        EXPECT_EQ(out.message.rfind("rstwatch: ", 0), 0u) << out.message;
        EXPECT_NE(out.message.find(c.named), std::string::npos) << out.message;
    }
}

// The cases a new user hit: an abort, a 32-bit overflow, a 300-digit range.
TEST(Cli, NumbersAreCheckedAsAPersonWritesThem)
{
    auto out = parse({"run", "--ring-buffer-kb", "abc"});
    EXPECT_EQ(out.exit_code, 2);
    EXPECT_NE(out.message.find("'abc' is not a ring buffer size in KiB"), std::string::npos) << out.message;

    out = parse({"run", "--ring-buffer-kb", "4194304"});  // 4 GiB: a u32 of bytes overflows
    EXPECT_EQ(out.exit_code, 2);
    EXPECT_NE(out.message.find("from 4 to 2097152"), std::string::npos) << out.message;
    out = parse({"run", "--ring-buffer-kb", "2097152"});
    ASSERT_EQ(out.action, CliOutcome::Action::Run) << out.message;
    EXPECT_EQ(out.run.ring_buffer_kb, 2097152u);

    out = parse({"run", "--duration", "-5"});
    EXPECT_EQ(out.exit_code, 2);
    EXPECT_NE(out.message.find("'-5' is not a number of seconds above 0 and at most 1000000000"), std::string::npos)
        << out.message;
    EXPECT_LT(out.message.size(), 200u) << out.message;

    for (const char *nan : {"nan", "inf", "1e309"})
        EXPECT_EQ(parse({"run", "--retain-days", nan}).exit_code, 2) << nan;

    // CLI11 alone would read "010" in base 8: pid 8.
    out = parse({"run", "--pid", "010"});
    ASSERT_EQ(out.action, CliOutcome::Action::Run) << out.message;
    EXPECT_EQ(out.run.filter.pids, std::vector<uint32_t>{10});
    EXPECT_EQ(parse({"run", "--max-db-mb", "18446744073709551615"}).exit_code, 2) << "-1 as an unsigned";
}

TEST(Cli, NoValueIsNotQuietlyNothing)
{
    // An empty path would have meant "none", the log on stderr, no metrics.
    for (const char *option : {"--store", "--socket", "--log-file", "--metrics"}) {
        auto out = parse({"run", option, ""});
        EXPECT_EQ(out.exit_code, 2) << option;
        EXPECT_NE(out.message.find(option), std::string::npos) << out.message;
    }
    EXPECT_EQ(parse({"dump", "--store", ""}).exit_code, 2);
    // CLI11 takes the next argument as the missing value, option or not.
    auto out = parse({"run", "--comm", "--json"});
    EXPECT_EQ(out.exit_code, 2);
    EXPECT_NE(out.message.find("'--json' looks like an option"), std::string::npos) << out.message;
    EXPECT_EQ(parse({"run", "--store", "--json"}).exit_code, 2);
}

TEST(Cli, TooManyPidsAreRefused)
{
    auto out = parse({"run", "-p", "1", "-p", "2", "-p", "3", "-p", "4", "-p", "5", "-p", "6", "-p", "7", "-p",
                      "8", "-p", "9"});
    EXPECT_EQ(out.exit_code, 2);
    EXPECT_NE(out.message.find("at most 8"), std::string::npos) << out.message;
}

TEST(Cli, ExplainReadsNginxsLogWithTheStoreByDefault)
{
    auto out = parse({"explain"});
    ASSERT_EQ(out.action, CliOutcome::Action::Explain) << out.message;
    EXPECT_EQ(out.explain.files, std::vector<std::string>{"/var/log/nginx/error.log"});
    EXPECT_EQ(out.explain.store_path, kDefaultStorePath);
    EXPECT_EQ(out.explain.socket_path, "");
    EXPECT_FALSE(out.explain.since_s);

    out = parse({"explain", "--socket", "/run/x.sock", "--since", "10m", "--follow", "--json", "--tz",
                 "Europe/Berlin", "a.log", "-", "b.log.2.gz"});
    ASSERT_EQ(out.action, CliOutcome::Action::Explain) << out.message;
    EXPECT_EQ(out.explain.files, (std::vector<std::string>{"a.log", "-", "b.log.2.gz"}));
    EXPECT_EQ(out.explain.store_path, "") << "the agent's store, through its socket";
    EXPECT_EQ(out.explain.since_s, 600);
    EXPECT_TRUE(out.explain.follow && out.explain.json);
    EXPECT_EQ(out.explain.time_zone, "Europe/Berlin");
}

TEST(Cli, HelpEndsWithExamples)
{
    auto out = parse({"run", "--help"});
    EXPECT_EQ(out.exit_code, 0);
    EXPECT_NE(out.message.find("Examples:"), std::string::npos);
}
