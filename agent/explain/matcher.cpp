#include "explain/matcher.h"

#include <algorithm>

#include "common/units.h"

namespace rstwatch {

namespace {

constexpr int64_t kSecond = 1'000'000'000;
// Lines of several workers interleave a little out of time order: keep
// what lies this far behind the current line before dropping it.
constexpr int64_t kKeepBehind = 10 * kSecond;
// Records per query; a second's worth or so in a reset storm.
constexpr size_t kBatch = 1024;
// A worker that has records within this of a line was tracked then.
constexpr int64_t kTrackedWithin = 3600;
constexpr size_t kMaxWorkersRemembered = 4096;

// How far a reset's time lies outside the line's second; 0 inside it.
int64_t distance_to_second(int64_t time_ns, int64_t second)
{
    const int64_t begin = second * kSecond, end = begin + kSecond;
    return time_ns < begin ? begin - time_ns : time_ns >= end ? time_ns - end + 1 : 0;
}

}  // namespace

const char *unmatched_label(Unmatched reason)
{
    switch (reason) {
    case Unmatched::None: return "";
    case Unmatched::LineUnreadable: return "line not readable";
    case Unmatched::UnixSocket: return "unix-socket upstream";
    case Unmatched::BackendFin: return "the backend's FIN, not a reset";
    case Unmatched::NoAgent: return "no agent was running then";
    case Unmatched::NotTracked: return "process not tracked";
    case Unmatched::NotRecorded: return "no record of this reset";
    }
    return "";
}

// ---- RecordWindow -------------------------------------------------------------

void RecordWindow::cover(int64_t from_ns, int64_t to_ns)
{
    if (!loaded_ || from_ns < lo_ || from_ns > hi_) {
        // Another file, or a gap in the log: start over here rather than
        // read every record in between.
        held_.clear();
        lo_ = hi_ = from_ns;
        loaded_ = true;
    }
    const int64_t keep_from = from_ns - kKeepBehind;
    while (!held_.empty() && held_.front().record.time_ns < keep_from)
        held_.pop_front();
    lo_ = std::max(lo_, keep_from);
    load(std::min(to_ns, records_.complete_until_ns(to_ns)));
}

void RecordWindow::load(int64_t to_ns)
{
    while (hi_ < to_ns) {
        std::vector<ResetRecord> batch = records_.upstream_resets(hi_, to_ns, kBatch);
        int64_t next = to_ns;
        if (batch.size() >= kBatch) {
            // The last nanosecond may go on in the next batch: ask again from it.
            const int64_t last = batch.back().time_ns;
            if (last == batch.front().time_ns)
                next = last + 1;  // a whole batch in one nanosecond: take it, skip the rest of it
            else {
                next = last;
                while (!batch.empty() && batch.back().time_ns == last)
                    batch.pop_back();
            }
        }
        for (ResetRecord &r : batch)
            held_.push_back(Held{std::move(r), false});
        hi_ = next;
    }
}

void RecordWindow::mark_used(const ResetRecord &record)
{
    auto it = std::lower_bound(held_.begin(), held_.end(), record.time_ns,
                               [](const Held &h, int64_t t) { return h.record.time_ns < t; });
    for (; it != held_.end() && it->record.time_ns == record.time_ns; ++it)
        if (it->record.id == record.id)
            it->used = true;
}

// ---- Explainer --------------------------------------------------------------

std::vector<int64_t> Explainer::utc_seconds(const UpstreamFailureLine &line)
{
    if (!line.time)
        return {};
    // Lines come in bursts of one second: one conversion each.
    if (!last_civil_ || !(*last_civil_ == *line.time)) {
        last_utc_ = to_utc_(*line.time);
        last_civil_ = line.time;
    }
    return last_utc_;
}

std::optional<int64_t> Explainer::window_end_ns(const UpstreamFailureLine &line)
{
    std::vector<int64_t> seconds = utc_seconds(line);
    if (seconds.empty() || !line.pid)
        return std::nullopt;
    return (*std::max_element(seconds.begin(), seconds.end()) + 1) * kSecond + kMatchAfter;
}

Explainer::Pick Explainer::pick(const UpstreamFailureLine &line, int64_t second)
{
    window_.cover(second * kSecond - kMatchBefore, (second + 1) * kSecond + kMatchAfter);
    // Without an address (the line was cut short) the worker and the time decide.
    const bool any_upstream = line.upstream_kind != UpstreamKind::Inet;
    Pick best;
    best.second = second;
    // The window holds resets in time order: only this line's stretch of it.
    const auto &held = window_.held();
    const auto by_time = [](const RecordWindow::Held &h, int64_t t) { return h.record.time_ns < t; };
    auto it = std::lower_bound(held.begin(), held.end(), second * kSecond - kMatchBefore, by_time);
    const auto end = std::lower_bound(it, held.end(), (second + 1) * kSecond + kMatchAfter, by_time);
    for (; it != end; ++it) {
        const RecordWindow::Held &h = *it;
        const ResetRecord &r = h.record;
        if (r.pid != *line.pid || (!any_upstream && r.upstream != line.upstream))
            continue;
        ++best.candidates;
        // Not matched yet, nearest, earliest: two lines of one second take
        // that second's two resets in order.
        const int64_t distance = distance_to_second(r.time_ns, second);
        if (best.record && std::tie(h.used, distance) >= std::tie(best.used, best.distance))
            continue;
        best.record = r;
        best.used = h.used;
        best.distance = distance;
    }
    return best;
}

Explanation Explainer::explain(UpstreamFailureLine line)
{
    Explanation e;
    e.line = std::move(line);
    const std::vector<int64_t> seconds = utc_seconds(e.line);
    if (!seconds.empty())
        e.time_s = seconds.front();
    if (e.line.kind == FailureKind::PrematureClose)
        return unmatched(std::move(e), Unmatched::BackendFin);
    if (e.line.upstream_kind == UpstreamKind::Unix)
        return unmatched(std::move(e), Unmatched::UnixSocket);
    if (seconds.empty() || !e.line.pid)
        return unmatched(std::move(e), Unmatched::LineUnreadable);
    Pick best;
    size_t seconds_with_a_reset = 0;
    for (int64_t second : seconds) {
        Pick p = pick(e.line, second);
        if (!p.record)
            continue;
        ++seconds_with_a_reset;
        if (!best.record || std::tie(p.used, p.distance) < std::tie(best.used, best.distance))
            best = std::move(p);
    }
    if (!best.record) {
        const Unmatched reason = not_found_reason(e);
        return unmatched(std::move(e), reason);
    }
    window_.mark_used(*best.record);
    e.time_s = best.second;
    e.ambiguous = best.candidates > 1 || best.used || seconds_with_a_reset > 1;
    e.record = std::move(best.record);
    return e;
}

Explanation Explainer::unmatched(Explanation e, Unmatched reason)
{
    e.unmatched = reason;
    e.why_unmatched = std::string(unmatched_label(reason)) + ": " + unmatched_details(e);
    return e;
}

// A failure line with no reset: when no agent ran, or the worker was not
// tracked, or its record is missing.
Unmatched Explainer::not_found_reason(const Explanation &e)
{
    const std::optional<int64_t> first = records_.first_record_ns();
    if (!first || *window_end_ns(e.line) <= *first)
        return Unmatched::NoAgent;
    if (!worker_has_records(*e.line.pid, *e.time_s))
        return Unmatched::NotTracked;
    return Unmatched::NotRecorded;
}

bool Explainer::worker_has_records(uint32_t pid, int64_t second)
{
    const auto key = std::make_pair(pid, second / kTrackedWithin);
    if (auto it = worker_seen_.find(key); it != worker_seen_.end())
        return it->second;
    if (worker_seen_.size() >= kMaxWorkersRemembered)
        worker_seen_.clear();
    const bool seen =
        records_.has_records_of(pid, (second - kTrackedWithin) * kSecond, (second + kTrackedWithin) * kSecond);
    worker_seen_.emplace(key, seen);
    return seen;
}

std::string Explainer::unmatched_details(const Explanation &e)
{
    const std::string worker = e.line.pid ? "worker " + std::to_string(*e.line.pid) : "the worker";
    switch (e.unmatched) {
    case Unmatched::None:
        return "";
    case Unmatched::LineUnreadable:
        return "no nginx time (YYYY/MM/DD HH:MM:SS) or worker (PID#TID) where nginx writes them; the line may "
               "have been cut or mangled";
    case Unmatched::UnixSocket:
        return "rstwatch traces TCP resets, and a unix socket has none. There, 104 or 32 means the backend "
               "closed its end, or its process ended, with nginx's request unread: check the backend's log and "
               "restarts at that time";
    case Unmatched::BackendFin:
        return "the backend closed the connection before a complete response; rstwatch traces resets, so there "
               "is no record. Usually its process ended (crashed, killed, restarted) with nothing left unread, "
               "it closed an idle keep-alive connection as nginx reused it, or it sent less than its "
               "Content-Length. Check the backend's log and restarts at that time, and that keepalive_timeout in "
               "nginx's upstream block is below the backend's idle timeout";
    case Unmatched::NoAgent: {
        auto first = records_.first_record_ns();
        if (!first)
            return "the store holds no records";
        return "the store's first record is from " + format_rfc3339_us(*first) +
               " (older ones may have been deleted: --retain-days, --max-db-mb)";
    }
    case Unmatched::NotTracked:
        return "no record of " + worker +
               " within an hour of this line: the process was not tracked (rstwatch run tracks processes named "
               "nginx, or those of --pid and --comm), or no agent was running then";
    case Unmatched::NotRecorded:
        return worker + "'s resets are in the store, but none from " +
               (e.line.upstream.empty() ? std::string("any upstream") : e.line.upstream) +
               " at that time: its record was lost (rstwatch dump shows lost events), or nginx's clock or time "
               "zone is not the agent's (--tz)";
    }
    return "";
}

}  // namespace rstwatch
