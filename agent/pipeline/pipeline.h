// The agent's event path: ring-buffer records in, one at a time, from the
// kernel (kernel/loader.h) or a recording (pipeline/recording.h); decoded,
// held back a moment so that the other side's evidence can arrive,
// diagnosed, then handed to the tables, the metrics, the reporter (stdout)
// and the store. Nothing here needs root: tests feed it recorded bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "diagnosis/diagnosis.h"
#include "events/decode.h"

namespace rstwatch {

class AttributionTables;
class Metrics;
class Reporter;
class StoreWriter;

// Where diagnosed events go. The store is optional (--store none).
struct PipelineOutputs {
    AttributionTables &tables;
    Metrics &metrics;
    Reporter &reporter;
    StoreWriter *store = nullptr;
};

struct PipelineOptions {
    // --all: resets with no tracked owner (the backend's side of a flow on
    // this host) are reported too; otherwise they are evidence only.
    bool report_unowned = false;
    // The cgroup of an OOM victim, where BPF could not read it (the victim
    // was not on the CPU); the agent asks /proc. Unset: left empty.
    std::function<std::string(uint32_t pid)> cgroup_of;
};

class EventPipeline {
public:
    EventPipeline(DecodeContext decode, Diagnoser diagnoser, PipelineOutputs outputs, PipelineOptions options);

    // One record as the ring buffer holds it. An undecodable one is counted
    // (decode_errors) and logged once; the pipeline goes on.
    void take(std::span<const uint8_t> record);
    // Reports the events whose hold-back has passed at now_mono_ns
    // (CLOCK_MONOTONIC, as the records' times).
    void release_ready(uint64_t now_mono_ns);
    // Reports everything held: at shutdown, or at the end of a recording.
    void release_all();
    // Events are waiting for their hold-back: come back soon.
    bool holding() const { return diagnoser_.holding(); }
    // Records that could not be decoded, and events that could not be reported.
    uint64_t decode_errors() const { return decode_errors_; }
    // Before the tables are shown: the idle clusters are computed only then.
    void complete_tables();

private:
    void report(std::vector<Event> events);
    void report_one(const Event &event);
    void count_error(const std::string &what);

    DecodeContext decode_;
    Diagnoser diagnoser_;
    PipelineOutputs out_;
    PipelineOptions options_;
    uint64_t decode_errors_ = 0;
    uint64_t newest_mono_ns_ = 0;  // of the records taken so far
};

}  // namespace rstwatch
