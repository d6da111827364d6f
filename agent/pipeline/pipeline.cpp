#include "pipeline/pipeline.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "outputs/format.h"
#include "outputs/metrics.h"
#include "outputs/reporter.h"
#include "outputs/store.h"
#include "tables/tables.h"

namespace rstwatch {

namespace {

// Held events past which the pipeline reports before the ring is drained:
// after a stall one pass hands over thousands of records, and a backlog
// is never all decoded in memory at once (events older than the hold-back
// leave at once).
constexpr size_t kReportEvery = 1024;

}  // namespace

EventPipeline::EventPipeline(DecodeContext decode, Diagnoser diagnoser, PipelineOutputs outputs,
                             PipelineOptions options)
    : decode_(std::move(decode)), diagnoser_(std::move(diagnoser)), out_(outputs), options_(std::move(options))
{
}

void EventPipeline::take(std::span<const uint8_t> record)
{
    DecodeResult decoded = decode_record(record, decode_);
    if (!decoded.event) {
        count_error("undecodable record from BPF: " + decoded.error);
        return;
    }
    if (auto *oom = std::get_if<OomEvent>(&*decoded.event); oom && oom->cgroup.empty() && options_.cgroup_of)
        oom->cgroup = options_.cgroup_of(oom->pid);
    newest_mono_ns_ = std::max(newest_mono_ns_, std::visit([](const auto &e) { return e.mono_ns; }, *decoded.event));
    // Every event is evidence, shown or not.
    diagnoser_.add(std::move(*decoded.event));
    // The newest record's time stands for "now": no later than the clock,
    // so nothing leaves before its hold-back, and a replay decides as the
    // live run did.
    if (diagnoser_.held() >= kReportEvery)
        release_ready(newest_mono_ns_);
}

void EventPipeline::release_ready(uint64_t now_mono_ns) { report(diagnoser_.take_ready(now_mono_ns)); }

void EventPipeline::release_all() { report(diagnoser_.take_all()); }

void EventPipeline::complete_tables() { out_.tables.set_idle_clusters(diagnoser_.idle_clusters()); }

void EventPipeline::report(std::vector<Event> events)
{
    for (const Event &event : events) {
        // A reset with no tracked owner is the far side of a flow: the
        // backend's own reset on this host. Shown only with --all.
        const auto *reset = std::get_if<ResetEvent>(&event);
        if (reset && !reset->owner_known && !options_.report_unowned)
            continue;
        // One event that cannot be shown (a bug, memory) is counted with
        // the undecodable ones; the agent and what it holds go on.
        try {
            report_one(event);
        } catch (const std::exception &e) {
            count_error(std::string("cannot report an event: ") + e.what());
        }
    }
}

void EventPipeline::report_one(const Event &event)
{
    out_.tables.add(event);
    out_.metrics.add(event);
    // Serialised once for the output and the store: in a reset storm
    // building JSON is most of the agent's work.
    std::string json;
    if (out_.store || out_.reporter.wants_json())
        json = to_json_line(event);
    // stdout never blocks (lines past its buffer are counted); the store's
    // push waits only as its wait_for_room allows.
    out_.reporter.event(event, json);
    if (out_.store)
        out_.store->push(make_store_row(event, std::move(json)));
}

void EventPipeline::count_error(const std::string &what)
{
    if (decode_errors_++ == 0)
        spdlog::error("{}", what);
}

}  // namespace rstwatch
