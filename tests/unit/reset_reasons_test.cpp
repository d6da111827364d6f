// ResetReasonNames against real and synthetic tcp_send_reset format files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "kernel/reset_reason_names.h"

using rstwatch::ResetReasonNames;
namespace fs = std::filesystem;

namespace {

std::string read_fixture(const std::string &name)
{
    std::ifstream in(std::string(RSTWATCH_TEST_DATA) + "/" + name);
    EXPECT_TRUE(in) << "missing fixture " << name;
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

ResetReasonNames parse_ok(std::string_view text)
{
    std::string error;
    auto table = ResetReasonNames::parse_format(text, &error);
    EXPECT_TRUE(table.has_value()) << error;
    return table ? *table : ResetReasonNames{};
}

std::string parse_error(std::string_view text)
{
    std::string error;
    auto table = ResetReasonNames::parse_format(text, &error);
    EXPECT_FALSE(table.has_value());
    return error;
}

}  // namespace

TEST(ResetReasons, RealKernelFormat)
{
    // Copied from /sys/kernel/tracing on Linux 6.18.
    ResetReasonNames names = parse_ok(read_fixture("tcp_send_reset.format"));
    EXPECT_FALSE(names.empty());
    EXPECT_EQ(names.size(), 26u);
    EXPECT_EQ(names.name(0), "NOT_SPECIFIED");
    EXPECT_EQ(names.name(1), "NO_SOCKET");
    EXPECT_EQ(names.name(9), "TCP_TIMEWAIT_SOCKET");
    EXPECT_EQ(names.name(11), "TCP_ABORT_ON_CLOSE");
    EXPECT_EQ(names.name(24), "ERROR");
}

TEST(ResetReasons, NumberingFollowsTheKernel)
{
    // Synthetic 6.10-shaped list: value 9 means something else there.
    ResetReasonNames names = parse_ok(read_fixture("tcp_send_reset.v6_10.format"));
    EXPECT_EQ(names.size(), 18u);
    EXPECT_EQ(names.name(0), "NOT_SPECIFIED");
    EXPECT_EQ(names.name(8), "TCP_ABORT_ON_DATA");
    EXPECT_EQ(names.name(9), "MPTCP_RST_EUNSPEC");
    EXPECT_EQ(names.name(16), "ERROR");
    EXPECT_EQ(names.name(24), "REASON_24");
}

TEST(ResetReasons, KernelWithoutReasonFieldGivesEmptyTable)
{
    // 6.1-shaped: no reason; its family list ({ 2, "AF_INET" }) must not
    // be taken for reasons.
    ResetReasonNames names = parse_ok(read_fixture("tcp_send_reset.v6_1.format"));
    EXPECT_TRUE(names.empty());
    EXPECT_EQ(names.name(2), "REASON_2");
}

TEST(ResetReasons, StateListIsNotTakenEvenWhenNumeric)
{
    // Here the state list comes first and has numeric values that overlap
    // the reason numbers.
    ResetReasonNames names = parse_ok(
        "format:\n\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;\n\n"
        "print fmt: \"state=%s reason=%s\", __print_symbolic(REC->state, { 1, \"TCP_ESTABLISHED\" }, "
        "{ 2, \"TCP_SYN_SENT\" }), __print_symbolic(REC->reason, { 0, \"NOT_SPECIFIED\" }, "
        "{ 1, \"NO_SOCKET\" })\n");
    EXPECT_EQ(names.size(), 2u);
    EXPECT_EQ(names.name(1), "NO_SOCKET");
    EXPECT_EQ(names.name(2), "REASON_2");
}

TEST(ResetReasons, HexValuesAndUnresolvedSymbols)
{
    // A symbol the kernel did not resolve to a number is skipped, not guessed.
    ResetReasonNames names = parse_ok(
        "print fmt: \"reason=%s\", __print_symbolic(REC->reason, { 0x1a, \"LATER\" }, "
        "{ SK_RST_REASON_FOO, \"FOO\" }, {3,\"TIGHT\"})\n");
    EXPECT_EQ(names.size(), 2u);
    EXPECT_EQ(names.name(26), "LATER");
    EXPECT_EQ(names.name(3), "TIGHT");
}

TEST(ResetReasons, Errors)
{
    EXPECT_NE(parse_error("name: tcp_send_reset\nformat:\n").find("print fmt"), std::string::npos);
    EXPECT_NE(parse_error("\tfield:enum sk_rst_reason reason;\toffset:28;\n"
                          "print fmt: \"reason=%d\", REC->reason\n")
                  .find("no __print_symbolic"),
              std::string::npos);
    EXPECT_NE(parse_error("print fmt: \"r=%s\", __print_symbolic(REC->reason, { 0, \"NOT_SPECIFIED\" ")
                  .find("malformed"),
              std::string::npos);
    EXPECT_NE(parse_error("print fmt: \"r=%s\", __print_symbolic(REC->reason, { 0, NOT_QUOTED })\n")
                  .find("malformed"),
              std::string::npos);
    // A null error pointer is allowed.
    EXPECT_FALSE(ResetReasonNames::parse_format("nothing", nullptr).has_value());
}

class TracefsDirs : public ::testing::Test {
protected:
    void SetUp() override
    {
        root_ = fs::temp_directory_path() /
                ("rstwatch_unit_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                 "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(root_);
        fs::create_directories(root_);
    }
    void TearDown() override { fs::remove_all(root_); }

    std::string tracefs_with(const std::string &name, const std::string &fixture)
    {
        fs::path dir = root_ / name / "events/tcp/tcp_send_reset";
        fs::create_directories(dir);
        fs::copy_file(fs::path(RSTWATCH_TEST_DATA) / fixture, dir / "format");
        return (root_ / name).string();
    }

    fs::path root_;
};

TEST_F(TracefsDirs, FallsBackToSecondMountPoint)
{
    std::string second = tracefs_with("debug_tracing", "tcp_send_reset.format");
    std::string error = "stale";
    ResetReasonNames names =
        rstwatch::load_reset_reason_names({(root_ / "missing").string(), second}, &error);
    EXPECT_EQ(error, "");
    EXPECT_EQ(names.name(1), "NO_SOCKET");
}

TEST_F(TracefsDirs, FirstMountPointWins)
{
    std::string first = tracefs_with("tracing", "tcp_send_reset.v6_10.format");
    std::string second = tracefs_with("debug_tracing", "tcp_send_reset.format");
    ResetReasonNames names = rstwatch::load_reset_reason_names({first, second}, nullptr);
    EXPECT_EQ(names.name(9), "MPTCP_RST_EUNSPEC");
}

TEST_F(TracefsDirs, NothingReadableGivesEmptyTableAndError)
{
    std::string a = (root_ / "a").string(), b = (root_ / "b").string();
    std::string error;
    ResetReasonNames names = rstwatch::load_reset_reason_names({a, b}, &error);
    EXPECT_TRUE(names.empty());
    EXPECT_EQ(names.name(11), "REASON_11");
    EXPECT_NE(error.find(a + "/events/tcp/tcp_send_reset/format"), std::string::npos) << error;
    EXPECT_NE(error.find(b + "/events/tcp/tcp_send_reset/format"), std::string::npos) << error;
}
