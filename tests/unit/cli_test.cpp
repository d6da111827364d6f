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

TEST(Cli, MistakesExitNonZeroWithAMessage)
{
    for (std::vector<const char *> bad : {std::vector<const char *>{"run", "--bogus"},
                                          {"run", "--all", "--pid", "1"},
                                          {"run", "--duration", "-1"},
                                          {"run", "--format", "xml"},
                                          {"run", "--comm", "a-name-longer-than-15"},
                                          {"run", "--ring-buffer-kb", "3000"},
                                          {"frobnicate"},
                                          {}}) {
        auto out = parse(bad);
        EXPECT_EQ(out.action, CliOutcome::Action::Exit);
        EXPECT_NE(out.exit_code, 0) << (bad.empty() ? "(no args)" : bad.back());
        EXPECT_FALSE(out.message.empty());
    }
}

TEST(Cli, TooManyPidsAreRefused)
{
    auto out = parse({"run", "-p", "1", "-p", "2", "-p", "3", "-p", "4", "-p", "5", "-p", "6", "-p", "7", "-p",
                      "8", "-p", "9"});
    EXPECT_EQ(out.exit_code, 2);
    EXPECT_NE(out.message.find("at most 8"), std::string::npos) << out.message;
}

TEST(Cli, HelpEndsWithExamples)
{
    auto out = parse({"run", "--help"});
    EXPECT_EQ(out.exit_code, 0);
    EXPECT_NE(out.message.find("Examples:"), std::string::npos);
}
