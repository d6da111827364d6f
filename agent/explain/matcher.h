// Which recorded reset an nginx error-log line is about: the worker that
// logged it, its upstream and its time. Pure: the records come through
// ResetRecords (the store, in agent/control) and local times are turned
// into UTC by a function the caller gives (the system's time zones).
//
// Times: nginx writes local time to the second, the time it cached when
// its event loop last woke (ngx_time_update() after epoll_wait()); the
// agent stamps each reset to the microsecond, in UTC, when the kernel
// handles it. A line of second S is matched with the resets of its worker
// and upstream from S - 1.25 s to S + 1.5 s (Explainer::kMatchBefore,
// kMatchAfter), the nearest to [S, S + 1) first.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "explain/error_log_line.h"

namespace rstwatch {

// A reset as the store keeps it, reduced to what explain matches and shows.
struct ResetRecord {
    int64_t id = 0;         // the store's row: tells two records of one microsecond apart
    int64_t time_ns = 0;    // UTC
    uint32_t pid = 0;       // the worker whose connection it was
    std::string upstream;   // canonical_address() of the record's remote
    std::string cause, confidence;
    std::vector<std::string> evidence;
    std::string hint;       // "" for none
};

// Where the records come from (agent/control: the store).
class ResetRecords {
public:
    virtual ~ResetRecords() = default;
    // Received resets on upstream connections with a known owner, with
    // from_ns <= time_ns < to_ns, oldest first, at most `limit`.
    virtual std::vector<ResetRecord> upstream_resets(int64_t from_ns, int64_t to_ns, size_t limit) = 0;
    // The time of the oldest record of any kind; nullopt when there is none.
    virtual std::optional<int64_t> first_record_ns() = 0;
    // Whether any record of this process lies in [from_ns, to_ns).
    virtual bool has_records_of(uint32_t pid, int64_t from_ns, int64_t to_ns) = 0;
    // Records before the time returned are all in; later ones may still be
    // on their way from a running agent. `wanted_ns` is how far the caller
    // would like that to be (the source may ask the agent to write out what
    // it holds).
    virtual int64_t complete_until_ns(int64_t wanted_ns) = 0;
};

// A local time to the UTC seconds it may be: one, two in the hour a
// daylight-saving change repeats, none in the hour it skips.
using LocalToUtc = std::function<std::vector<int64_t>(const CivilTime &)>;

// Why a line has no reset, in the summary's order.
enum class Unmatched {
    None,
    LineUnreadable,  // no time or no worker pid
    UnixSocket,      // the upstream is a unix socket: no TCP
    BackendFin,      // "upstream prematurely closed connection": a FIN, not a reset
    NoAgent,         // before the store's first record
    NotTracked,      // no record of the worker within an hour
    NotRecorded,     // the worker's resets are there, but not this one
};

// A short label per reason: the summary's rows, and what why_unmatched begins with.
const char *unmatched_label(Unmatched reason);

struct Explanation {
    UpstreamFailureLine line;
    std::optional<int64_t> time_s;   // the line's time in UTC seconds
    std::optional<ResetRecord> record;
    // Several resets of this worker with this upstream were near enough in
    // time: the nearest was taken (the earliest not yet matched on a tie).
    bool ambiguous = false;
    Unmatched unmatched = Unmatched::None;
    std::string why_unmatched;       // "<label>: <details>"
};

// Resets around the current lines, loaded from the records as the lines
// move on: memory holds the resets of a few seconds, however long the log.
class RecordWindow {
public:
    explicit RecordWindow(ResetRecords &records) : records_(records) {}
    struct Held {
        ResetRecord record;
        bool used = false;  // matched with a line already
    };
    // Makes [from_ns, to_ns) loaded, up to what the records have complete.
    void cover(int64_t from_ns, int64_t to_ns);
    const std::deque<Held> &held() const { return held_; }
    void mark_used(const ResetRecord &record);

private:
    void load(int64_t to_ns);

    ResetRecords &records_;
    std::deque<Held> held_;  // oldest first
    bool loaded_ = false;
    int64_t lo_ = 0, hi_ = 0;  // [lo_, hi_) is loaded
};

class Explainer {
public:
    // Resets from kMatchBefore before a line's second to kMatchAfter after
    // its end. Before: the reset came first and nginx's loop woke later, by
    // up to a loop iteration of a busy worker (1 s is generous), and the
    // clocks may differ (0.25 s). After: only by that skew and by nginx's
    // timer_resolution, which updates the cached time at most that often
    // (0.25 s allows for the usual 100 ms). The clocks: the agent turns the
    // kernel's monotonic stamps into UTC with an offset taken at its start,
    // so a clock step since (not NTP's slewing) moves nginx's times and not
    // the agent's.
    static constexpr int64_t kMatchBefore = 1'250'000'000;
    static constexpr int64_t kMatchAfter = 500'000'000;

    Explainer(ResetRecords &records, LocalToUtc to_utc)
        : records_(records), window_(records), to_utc_(std::move(to_utc))
    {
    }

    Explanation explain(UpstreamFailureLine line);
    // The line's candidate UTC seconds (empty without a time).
    std::vector<int64_t> utc_seconds(const UpstreamFailureLine &line);
    // The latest time a reset matching this line can have; nullopt when the
    // line cannot be matched by time.
    std::optional<int64_t> window_end_ns(const UpstreamFailureLine &line);

private:
    // The best reset for a line in one of its candidate seconds.
    struct Pick {
        std::optional<ResetRecord> record;
        bool used = false;      // matched with another line already
        int64_t distance = 0;   // ns outside the line's second
        int64_t second = 0;
        size_t candidates = 0;  // resets of the worker and upstream in the window
    };
    Pick pick(const UpstreamFailureLine &line, int64_t second);
    Explanation unmatched(Explanation e, Unmatched reason);
    Unmatched not_found_reason(const Explanation &e);
    std::string unmatched_details(const Explanation &e);
    bool worker_has_records(uint32_t pid, int64_t second);

    ResetRecords &records_;
    RecordWindow window_;
    LocalToUtc to_utc_;
    std::optional<CivilTime> last_civil_;
    std::vector<int64_t> last_utc_;
    std::map<std::pair<uint32_t, int64_t>, bool> worker_seen_;  // (pid, hour) -> has records
};

}  // namespace rstwatch
