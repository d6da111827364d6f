// The running kernel's numbering of enum sk_rst_reason: from BTF enumerators,
// and from real and synthetic tcp_send_reset format files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "kernel/reset_reason_names.h"

using rstwatch::ResetReason;
using rstwatch::ResetReasonTable;
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

ResetReasonTable parse_ok(std::string_view text)
{
    std::string error;
    auto table = ResetReasonTable::parse_format(text, &error);
    EXPECT_TRUE(table.has_value()) << error;
    return table ? *table : ResetReasonTable{};
}

std::string parse_error(std::string_view text)
{
    std::string error;
    auto table = ResetReasonTable::parse_format(text, &error);
    EXPECT_FALSE(table.has_value());
    return error;
}

}  // namespace

TEST(ResetReasons, RealKernelFormat)
{
    // Copied from /sys/kernel/tracing on Linux 6.18.
    ResetReasonTable table = parse_ok(read_fixture("tcp_send_reset.format"));
    EXPECT_EQ(table.size(), 25u) << "every reason; MAX is the enum's end, no reason";
    EXPECT_TRUE(table.unknown_names().empty()) << "this build knows every 6.18 name";
    EXPECT_EQ(table.reason(0), ResetReason::NotSpecified);
    EXPECT_EQ(table.reason(1), ResetReason::NoSocket);
    EXPECT_EQ(table.reason(8), ResetReason::TcpAbortOnData);
    EXPECT_EQ(table.reason(9), ResetReason::TcpTimewaitSocket);
    EXPECT_EQ(table.reason(11), ResetReason::TcpAbortOnClose);
    EXPECT_EQ(table.reason(24), ResetReason::Error);
    EXPECT_EQ(table.reason(25), ResetReason::Unknown);
}

TEST(ResetReasons, NumberingFollowsTheKernel)
{
    // Synthetic 6.10-shaped list: value 9 means something else there.
    ResetReasonTable table = parse_ok(read_fixture("tcp_send_reset.v6_10.format"));
    EXPECT_EQ(table.size(), 17u);
    EXPECT_EQ(table.reason(0), ResetReason::NotSpecified);
    EXPECT_EQ(table.reason(8), ResetReason::TcpAbortOnData);
    EXPECT_EQ(table.reason(9), ResetReason::MptcpRstEunspec);
    EXPECT_EQ(table.reason(16), ResetReason::Error);
    EXPECT_EQ(table.reason(24), ResetReason::Unknown);
}

TEST(ResetReasons, BtfEnumerators)
{
    // As the kernel's BTF names them, in 6.10's numbering, with a name this
    // build does not know.
    ResetReasonTable table = ResetReasonTable::from_enumerators({{"SK_RST_REASON_NOT_SPECIFIED", 0},
                                                                 {"SK_RST_REASON_TCP_TIMEWAIT_SOCKET", 9},
                                                                 {"SK_RST_REASON_MPTCP_RST_EUNSPEC", 10},
                                                                 {"SK_RST_REASON_TCP_SOMETHING_NEW", 30},
                                                                 {"SK_RST_REASON_MAX", 31}});
    EXPECT_EQ(table.size(), 4u);
    EXPECT_EQ(table.reason(9), ResetReason::TcpTimewaitSocket);
    EXPECT_EQ(table.reason(10), ResetReason::MptcpRstEunspec);
    EXPECT_EQ(table.reason(30), ResetReason::Unknown);
    EXPECT_EQ(table.unknown_names(), std::vector<std::string>{"TCP_SOMETHING_NEW=30"});
    EXPECT_TRUE(ResetReasonTable::from_enumerators({}).empty());
}

TEST(ResetReasons, NamesRoundTrip)
{
    for (int r = 0; r < static_cast<int>(ResetReason::Unknown); r++) {
        const auto reason = static_cast<ResetReason>(r);
        EXPECT_EQ(rstwatch::reset_reason_from_name(rstwatch::reset_reason_name(reason)), reason);
        EXPECT_EQ(rstwatch::reset_reason_from_name(std::string("SK_RST_REASON_") + rstwatch::reset_reason_name(reason)),
                  reason);
    }
    EXPECT_FALSE(rstwatch::reset_reason_from_name("UNKNOWN"));
    EXPECT_FALSE(rstwatch::reset_reason_from_name("REASON_9"));
}

TEST(ResetReasons, KernelWithoutReasonFieldGivesEmptyTable)
{
    // 6.1-shaped: no reason; its family list ({ 2, "AF_INET" }) must not
    // be taken for reasons.
    ResetReasonTable table = parse_ok(read_fixture("tcp_send_reset.v6_1.format"));
    EXPECT_TRUE(table.empty());
    EXPECT_EQ(table.reason(2), ResetReason::Unknown);
}

TEST(ResetReasons, StateListIsNotTakenEvenWhenNumeric)
{
    // Here the state list comes first and has numeric values that overlap
    // the reason numbers.
    ResetReasonTable table = parse_ok(
        "format:\n\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;\n\n"
        "print fmt: \"state=%s reason=%s\", __print_symbolic(REC->state, { 1, \"TCP_ESTABLISHED\" }, "
        "{ 2, \"TCP_SYN_SENT\" }), __print_symbolic(REC->reason, { 0, \"NOT_SPECIFIED\" }, "
        "{ 1, \"NO_SOCKET\" })\n");
    EXPECT_EQ(table.size(), 2u);
    EXPECT_EQ(table.reason(1), ResetReason::NoSocket);
    EXPECT_EQ(table.reason(2), ResetReason::Unknown);
}

TEST(ResetReasons, HexValuesAndUnresolvedSymbols)
{
    // A symbol the kernel did not resolve to a number is skipped, not guessed.
    ResetReasonTable table = parse_ok(
        "print fmt: \"reason=%s\", __print_symbolic(REC->reason, { 0x1a, \"TCP_FLAGS\" }, "
        "{ SK_RST_REASON_FOO, \"FOO\" }, {3,\"TCP_OLD_ACK\"})\n");
    EXPECT_EQ(table.size(), 2u);
    EXPECT_EQ(table.reason(26), ResetReason::TcpFlags);
    EXPECT_EQ(table.reason(3), ResetReason::TcpOldAck);
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
    EXPECT_FALSE(ResetReasonTable::parse_format("nothing", nullptr).has_value());
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

const std::vector<std::pair<std::string, uint32_t>> kNoEnum;

TEST_F(TracefsDirs, BtfWinsOverTracefs)
{
    std::string tracing = tracefs_with("tracing", "tcp_send_reset.format");
    std::string error = "stale";
    ResetReasonTable table =
        rstwatch::load_reset_reasons(true, {{"SK_RST_REASON_MPTCP_RST_EUNSPEC", 9}}, {tracing}, &error);
    EXPECT_EQ(error, "");
    EXPECT_EQ(table.reason(9), ResetReason::MptcpRstEunspec) << "BTF's numbering, not tracefs's";
}

TEST_F(TracefsDirs, FallsBackToSecondMountPoint)
{
    std::string second = tracefs_with("debug_tracing", "tcp_send_reset.format");
    std::string error = "stale";
    ResetReasonTable table = rstwatch::load_reset_reasons(true, kNoEnum, {(root_ / "missing").string(), second}, &error);
    EXPECT_EQ(error, "");
    EXPECT_EQ(table.reason(1), ResetReason::NoSocket);
}

TEST_F(TracefsDirs, FirstMountPointWins)
{
    std::string first = tracefs_with("tracing", "tcp_send_reset.v6_10.format");
    std::string second = tracefs_with("debug_tracing", "tcp_send_reset.format");
    ResetReasonTable table = rstwatch::load_reset_reasons(true, kNoEnum, {first, second}, nullptr);
    EXPECT_EQ(table.reason(9), ResetReason::MptcpRstEunspec);
}

TEST_F(TracefsDirs, BtfWithoutTheEnumIsAKernelWithoutReasons)
{
    std::string error = "stale";
    ResetReasonTable table = rstwatch::load_reset_reasons(true, kNoEnum, {(root_ / "a").string()}, &error);
    EXPECT_TRUE(table.empty());
    EXPECT_EQ(error, "") << "before 6.10 there is nothing to read";
}

TEST_F(TracefsDirs, NothingReadableGivesEmptyTableAndError)
{
    std::string a = (root_ / "a").string(), b = (root_ / "b").string();
    std::string error;
    ResetReasonTable table = rstwatch::load_reset_reasons(false, kNoEnum, {a, b}, &error);
    EXPECT_TRUE(table.empty());
    EXPECT_EQ(table.reason(11), ResetReason::Unknown);
    EXPECT_NE(error.find(a + "/events/tcp/tcp_send_reset/format"), std::string::npos) << error;
    EXPECT_NE(error.find(b + "/events/tcp/tcp_send_reset/format"), std::string::npos) << error;
}
