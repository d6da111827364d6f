// rstwatch explain's I/O: time zones from the system's tz database, error
// logs read line by line (cut lines, gzip, the last line without a
// newline), and the whole command on a real run's lines and records, which
// is README.md's explain sample.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/errors.h"
#include "control/control.h"
#include "control/control_protocol.h"
#include "control/explain_command.h"
#include "control/log_reader.h"
#include "control/time_zone.h"
#include "outputs/event_json.h"
#include "outputs/store.h"
#include "readme_sample.h"

namespace rstwatch {
namespace {

namespace fs = std::filesystem;

const std::string kSampleDir = std::string(RSTWATCH_TEST_DATA) + "/explain";
const std::string kReadme = std::string(RSTWATCH_SOURCE_DIR) + "/README.md";
constexpr const char *kSampleBegin = "<!-- explain-sample:begin -->\n```text\n";
constexpr const char *kSampleEnd = "```\n<!-- explain-sample:end -->";

using readme_sample::read_text;

class TempDir {
public:
    TempDir() : path_(fs::temp_directory_path() / ("rstwatch-explain-" + std::to_string(getpid())))
    {
        fs::create_directories(path_);
    }
    ~TempDir() { fs::remove_all(path_); }
    std::string at(const std::string &name) const { return (path_ / name).string(); }

private:
    fs::path path_;
};

// Restores the process's TZ after a test that sets one.
class TimeZoneTest : public ::testing::Test {
protected:
    void SetUp() override
    {
        const char *tz = std::getenv("TZ");
        saved_ = tz ? std::optional<std::string>(tz) : std::nullopt;
    }
    void TearDown() override
    {
        saved_ ? setenv("TZ", saved_->c_str(), 1) : unsetenv("TZ");
        tzset();
    }
    std::optional<std::string> saved_;
};

TEST_F(TimeZoneTest, NamesFromTheTzDatabaseOnly)
{
    for (const char *zone : {"UTC", "Etc/UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"})
        EXPECT_EQ(time_zone_problem(zone), "") << zone;
    for (const char *zone : {"", "Mars/Olympus", "../../etc/passwd", "/etc/localtime", "Europe", "--json",
                             "Europe/Berlin\n"})
        EXPECT_NE(time_zone_problem(zone), "") << zone;
}

TEST_F(TimeZoneTest, LocalTimesBecomeUtcAcrossDaylightSavingChanges)
{
    use_time_zone("Europe/Berlin");
    // Winter (UTC+1) and summer (UTC+2).
    EXPECT_EQ(local_to_utc({2026, 1, 15, 12, 0, 0}), std::vector<int64_t>{seconds_as_if_utc({2026, 1, 15, 11, 0, 0})});
    EXPECT_EQ(local_to_utc({2026, 7, 15, 12, 0, 0}), std::vector<int64_t>{seconds_as_if_utc({2026, 7, 15, 10, 0, 0})});
    // 2026-10-25 02:30 happens twice (03:00 CEST becomes 02:00 CET): both.
    EXPECT_EQ(local_to_utc({2026, 10, 25, 2, 30, 0}),
              (std::vector<int64_t>{seconds_as_if_utc({2026, 10, 25, 0, 30, 0}), seconds_as_if_utc({2026, 10, 25, 1, 30, 0})}));
    // 2026-03-29 02:30 never happens (02:00 CET becomes 03:00 CEST): the offset from before.
    EXPECT_EQ(local_to_utc({2026, 3, 29, 2, 30, 0}), std::vector<int64_t>{seconds_as_if_utc({2026, 3, 29, 1, 30, 0})});
    use_time_zone("UTC");
    EXPECT_EQ(local_to_utc({2026, 10, 25, 2, 30, 0}), std::vector<int64_t>{seconds_as_if_utc({2026, 10, 25, 2, 30, 0})});
}

std::vector<std::string> lines_of(LogReader &reader)
{
    std::vector<std::string> lines;
    while (auto line = reader.next())
        lines.emplace_back(*line);
    return lines;
}

TEST(LogReader, LinesCutLinesAndTheLastLineWithoutNewline)
{
    TempDir dir;
    // One too long within a read, and one longer than a read.
    std::ofstream(dir.at("error.log")) << "first\n" << std::string(LineSplitter::kMaxLine * 3, 'x') << "\nsecond\n"
                                       << std::string(LineSplitter::kMaxLine * 10, 'y') << "\n\nlast without newline";
    LogReader reader(dir.at("error.log"), false, false);
    std::vector<std::string> lines = lines_of(reader);
    ASSERT_EQ(lines.size(), 6u);
    EXPECT_EQ(lines[0], "first");
    EXPECT_EQ(lines[1].size(), LineSplitter::kMaxLine) << "cut, the rest skipped";
    EXPECT_EQ(lines[1].find_first_not_of('x'), std::string::npos);
    EXPECT_EQ(lines[2], "second");
    EXPECT_EQ(lines[3].size(), LineSplitter::kMaxLine);
    EXPECT_EQ(lines[4], "");
    EXPECT_EQ(lines[5], "last without newline");
}

TEST(LogReader, GzipRotatedFilesAreKnownByTheirBytes)
{
    TempDir dir;
    gzFile gz = gzopen(dir.at("error.log.2").c_str(), "wb");  // no .gz in the name
    ASSERT_NE(gz, nullptr);
    std::string text;
    for (int i = 0; i < 100000; ++i)
        text += "line " + std::to_string(i) + "\n";
    gzwrite(gz, text.data(), static_cast<unsigned>(text.size()));
    gzclose(gz);
    LogReader reader(dir.at("error.log.2"), true, true);
    EXPECT_FALSE(reader.followed()) << "a rotated file does not grow";
    std::vector<std::string> lines = lines_of(reader);
    ASSERT_EQ(lines.size(), 100000u);
    EXPECT_EQ(lines.back(), "line 99999");
}

TEST(LogReader, AGzipFileCutShortGivesWhatItHas)
{
    TempDir dir;
    std::string text;
    for (int i = 0; i < 20000; ++i)
        text += "line " + std::to_string(i) + "\n";
    gzFile gz = gzopen(dir.at("whole.gz").c_str(), "wb");
    ASSERT_NE(gz, nullptr);
    gzwrite(gz, text.data(), static_cast<unsigned>(text.size()));
    gzclose(gz);
    const std::string bytes = read_text(dir.at("whole.gz"));
    std::ofstream(dir.at("cut.gz"), std::ios::binary) << bytes.substr(0, bytes.size() / 2);
    LogReader reader(dir.at("cut.gz"), false, false);
    std::vector<std::string> lines = lines_of(reader);
    EXPECT_GT(lines.size(), 1000u);
    EXPECT_LT(lines.size(), 20000u);
    EXPECT_EQ(lines.front(), "line 0");
}

TEST(LogReader, NamesTheFileItCannotRead)
{
    TempDir dir;
    fs::create_directory(dir.at("folder"));
    for (const std::string &path : {dir.at("missing.log"), dir.at("folder")}) {
        try {
            LogReader reader(path, false, false);
            ADD_FAILURE() << path << " was accepted";
        } catch (const FatalError &e) {
            EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
            EXPECT_FALSE(e.hint().empty());
        }
    }
}

TEST(LogReader, FollowedFromTheEndSeesOnlyNewLines)
{
    TempDir dir;
    std::ofstream(dir.at("error.log")) << "old\n";
    LogReader reader(dir.at("error.log"), true, true);
    EXPECT_TRUE(reader.followed());
    EXPECT_FALSE(reader.next());
    std::ofstream(dir.at("error.log"), std::ios::app) << "new\npartial";
    reader.check_rotation();
    EXPECT_EQ(lines_of(reader), std::vector<std::string>{"new"}) << "a partial line waits for its end";
    std::ofstream(dir.at("error.log"), std::ios::app) << " line\n";
    EXPECT_EQ(lines_of(reader), std::vector<std::string>{"partial line"});
}

// The store of a real run, from the agent's --json lines.
void store_records(const std::string &jsonl, const std::string &store_path)
{
    std::vector<Event> events;
    std::istringstream in(read_text(jsonl));
    for (std::string line; std::getline(in, line);)
        if (auto event = event_from_json(nlohmann::json::parse(line)))
            events.push_back(std::move(*event));
    auto store = Store::open_for_writing(store_path);
    ASSERT_EQ(store->append(events), "");
}

std::string explain_text(const ExplainSettings &settings)
{
    std::FILE *out = std::tmpfile();
    run_explain(settings, out);
    std::rewind(out);
    std::string text;
    char buffer[4096];
    for (size_t n; (n = std::fread(buffer, 1, sizeof(buffer), out)) > 0;)
        text.append(buffer, n);
    std::fclose(out);
    return text;
}

TEST(ExplainCommand, ReadmeSampleIsWhatExplainPrintsForARealRun)
{
    TempDir dir;
    store_records(kSampleDir + "/records.jsonl", dir.at("rstwatch.db"));
    ExplainSettings settings;
    settings.store_path = dir.at("rstwatch.db");
    settings.time_zone = "UTC";  // the run's host
    settings.files = {kSampleDir + "/error.log"};
    const std::string sample = explain_text(settings);
    EXPECT_NE(sample.find("3 about a failed upstream connection: 3 matched with a reset, 0 not."), std::string::npos)
        << sample;

    readme_sample::expect_readme_block(kReadme, kSampleBegin, kSampleEnd, sample,
                                 "tests/unit/unit_explain_command --gtest_filter='*Readme*' (data/explain)");
}

// --socket: the agent is asked to write out what it holds, and says where
// its store is.
TEST(ExplainCommand, ThroughTheAgentsSocket)
{
    TempDir dir;
    store_records(kSampleDir + "/records.jsonl", dir.at("rstwatch.db"));
    int flushes = 0;
    ControlServer agent(dir.at("rstwatch.sock"),
                        control_protocol({nullptr, dir.at("rstwatch.db"), [&] { ++flushes; }, nullptr}), getuid());
    ExplainSettings settings;
    settings.socket_path = dir.at("rstwatch.sock");
    settings.time_zone = "UTC";
    settings.json = true;
    settings.files = {kSampleDir + "/error.log"};
    const std::string out = explain_text(settings);
    EXPECT_GE(flushes, 1);
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 3) << out;
    EXPECT_EQ(out.find("\"matched\":false"), std::string::npos) << out;

    // An agent that keeps no store cannot be asked.
    ControlServer storeless(dir.at("storeless.sock"), control_protocol({nullptr, "", [] {}, nullptr}), getuid());
    settings.socket_path = dir.at("storeless.sock");
    try {
        explain_text(settings);
        ADD_FAILURE() << "an agent without a store was asked";
    } catch (const FatalError &e) {
        EXPECT_NE(std::string(e.what()).find("--socket: "), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("--store none"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace rstwatch
