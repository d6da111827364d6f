// The event pipeline on recorded ring-buffer bytes: no root, no kernel.
// data/keepalive_race.rwrec is a real run: the KeepaliveRace scenario with
// RSTWATCH_SCENARIO_AGENT_ARGS="--record ...". A change to the records'
// layout (bpf/rstwatch_abi.h) needs it recorded again the same way.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/errors.h"
#include "outputs/evidence_text.h"
#include "outputs/metrics.h"
#include "outputs/reporter.h"
#include "pipeline/pipeline.h"
#include "pipeline/recording.h"
#include "readme_sample.h"
#include "tables/tables.h"

namespace rstwatch {
namespace {

const std::string kRecording = std::string(RSTWATCH_TEST_DATA) + "/keepalive_race.rwrec";
const std::string kReadme = std::string(RSTWATCH_SOURCE_DIR) + "/README.md";
constexpr const char *kSampleBegin = "<!-- sample-output:begin -->\n```text\n";
constexpr const char *kSampleEnd = "```\n<!-- sample-output:end -->";

std::string read_file(const std::string &path) { return readme_sample::read_text(path); }

// A temporary file that the Reporter writes into, read back at the end.
class CapturedOutput {
public:
    CapturedOutput() : path_(std::filesystem::temp_directory_path() / ("rstwatch-pipeline-" + std::to_string(getpid())))
    {
        fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    }
    ~CapturedOutput()
    {
        ::close(fd_);
        std::filesystem::remove(path_);
    }
    int fd() const { return fd_; }
    std::string text() const { return read_file(path_); }

private:
    std::filesystem::path path_;
    int fd_ = -1;
};

struct Replayed {
    std::string output;  // what `rstwatch run` printed for these records
    nlohmann::json tables;
    uint64_t decode_errors = 0;
};

// The recording through a pipeline as the agent builds it; events only
// (the tables' text is checked elsewhere).
Replayed replay(const std::string &path, bool json)
{
    CapturedOutput captured;
    AttributionTables tables(hint_text);
    Metrics metrics;
    Replayed out;
    {
        Reporter reporter(captured.fd(), {.json_events = json});
        RecordingHeader header = replay_recording(path, [](std::span<const uint8_t>) {});
        EventPipeline pipeline(header.decode_context(), Diagnoser(KernelEvidence{true, true}),
                               PipelineOutputs{tables, metrics, reporter, nullptr}, PipelineOptions{});
        replay_recording(path, [&](std::span<const uint8_t> record) { pipeline.take(record); });
        pipeline.release_all();
        pipeline.complete_tables();
        reporter.stop();
        out.decode_errors = pipeline.decode_errors();
    }
    out.output = captured.text();
    out.tables = tables.to_json();
    return out;
}

std::vector<nlohmann::json> json_lines(const std::string &text)
{
    std::vector<nlohmann::json> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        lines.push_back(nlohmann::json::parse(line));
    return lines;
}

TEST(Pipeline, ReplayOfARealKeepaliveRaceNamesItsCause)
{
    Replayed r = replay(kRecording, true);
    EXPECT_EQ(r.decode_errors, 0u);
    std::vector<nlohmann::json> events = json_lines(r.output);
    ASSERT_EQ(events.size(), 1u) << r.output;  // nginx's reset; the backend's side is evidence only
    const nlohmann::json &e = events[0];
    EXPECT_EQ(e["cause"], "keepalive_race");
    EXPECT_EQ(e["confidence"], "high");
    EXPECT_EQ(e["direction"], "received");
    EXPECT_EQ(e["role"], "upstream");
    EXPECT_EQ(e["comm"], "nginx");
    EXPECT_EQ(e["remote"], "198.18.155.18:8080");
    EXPECT_EQ(e["reused"], true);
    EXPECT_NEAR(e["pool_idle_ms"].get<double>(), 2004.0, 1.0);
    EXPECT_EQ(r.tables["by_upstream"].size(), 1u);
}

TEST(Pipeline, ReadmeSampleIsTheReplayedTextOutput)
{
    readme_sample::expect_readme_block(kReadme, kSampleBegin, kSampleEnd, replay(kRecording, false).output,
                                 "tests/unit/unit_pipeline --gtest_filter='*Readme*' (data/keepalive_race.rwrec)");
}

TEST(Pipeline, UndecodableRecordIsCountedAndTheRestGoesOn)
{
    CapturedOutput captured;
    AttributionTables tables(hint_text);
    Metrics metrics;
    Reporter reporter(captured.fd(), {.json_events = true});
    RecordingHeader header = replay_recording(kRecording, [](std::span<const uint8_t>) {});
    EventPipeline pipeline(header.decode_context(), Diagnoser(), PipelineOutputs{tables, metrics, reporter, nullptr},
                           PipelineOptions{});
    const uint8_t garbage[7] = {1, 2, 3, 4, 5, 6, 7};
    pipeline.take(garbage);
    replay_recording(kRecording, [&](std::span<const uint8_t> record) { pipeline.take(record); });
    pipeline.release_all();
    reporter.stop();
    EXPECT_EQ(pipeline.decode_errors(), 1u);
    EXPECT_EQ(json_lines(captured.text()).size(), 1u);
}

TEST(Recording, WrittenRecordsReadBackInOrder)
{
    const std::string path = std::filesystem::temp_directory_path() / ("rstwatch-rec-" + std::to_string(getpid()));
    {
        RecordingWriter writer(path, {.realtime_offset_ns = 42, .reset_reasons = {{3, "NO_SOCKET"}}, .kernel = "k"});
        const uint8_t a[3] = {1, 2, 3}, b[1] = {9};
        writer.write(a);
        writer.write(b);
    }
    std::vector<std::vector<uint8_t>> records;
    RecordingHeader h =
        replay_recording(path, [&](std::span<const uint8_t> r) { records.emplace_back(r.begin(), r.end()); });
    std::filesystem::remove(path);
    EXPECT_EQ(h.realtime_offset_ns, 42);
    EXPECT_EQ(h.decode_context().reasons.reason(3), ResetReason::NoSocket);
    EXPECT_EQ(h.decode_context().reasons.reason(4), ResetReason::Unknown);
    EXPECT_EQ(records, (std::vector<std::vector<uint8_t>>{{1, 2, 3}, {9}}));
}

TEST(Recording, CutShortOrForeignFilesAreRefusedByName)
{
    const std::string cut = std::filesystem::temp_directory_path() / ("rstwatch-cut-" + std::to_string(getpid()));
    std::string bytes = read_file(kRecording);
    std::ofstream(cut) << bytes.substr(0, bytes.size() - 5);
    auto nothing = [](std::span<const uint8_t>) {};
    try {
        replay_recording(cut, nothing);
        ADD_FAILURE() << "a cut recording was read";
    } catch (const FatalError &e) {
        EXPECT_NE(std::string(e.what()).find(cut + ": cut short"), std::string::npos) << e.what();
    }
    std::ofstream(cut) << "GET / HTTP/1.1\n";
    EXPECT_THROW(replay_recording(cut, nothing), FatalError);
    std::filesystem::remove(cut);
    EXPECT_THROW(replay_recording(cut, nothing), FatalError);  // missing
}

}  // namespace
}  // namespace rstwatch
