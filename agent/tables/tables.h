// The attribution aggregate: which nginx worker saw resets from which
// upstream, how long the connections had been idle, which processes the
// OOM killer took, and what was lost on the way. Pure logic; the agent feeds
// it decoded events and prints it at exit (or on a signal).
//
// Memory is bounded because the agent runs for days: each table keeps at
// most `max_rows` keys, further keys are folded into one "(other)" row and
// the output says how many; medians come from a bounded sample.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "diagnosis/diagnosis.h"
#include "tables/histogram.h"
#include "events/loss.h"
#include "events/records.h"

namespace rstwatch {


// Count, exact maximum and median of idle times (ms) for one table row.
// The median is exact up to kMaxSamples values; past that it is the median
// of a uniform sample of kMaxSamples values (reservoir sampling, Vitter's
// Algorithm R, with a fixed seed so runs are reproducible). With 256 samples
// the estimate's rank has a standard error of about 3 percentile points,
// plenty for comparing idle time with an upstream's keepalive timeout.
// Memory: at most kMaxSamples doubles (2 KiB) per row.
class IdleSummary {
public:
    static constexpr size_t kMaxSamples = 256;

    void add(double ms);
    uint64_t count() const { return count_; }
    bool exact() const { return count_ <= kMaxSamples; }
    std::optional<double> median() const;
    std::optional<double> max() const;

private:
    uint64_t next_random();

    std::vector<double> samples_;  // at most kMaxSamples
    uint64_t count_ = 0;
    double max_ = 0;
    uint64_t rng_state_ = 0x9e3779b97f4a7c15ull;
};

struct ResetCounts {
    uint64_t received = 0;
    uint64_t sent = 0;
    int64_t last_seen_ns = 0;  // CLOCK_REALTIME of the latest reset
    IdleSummary idle;

    uint64_t total() const { return received + sent; }
    void add(const ResetEvent &e);
};

namespace detail {

// A map that holds at most max_rows keys; the rest share one "(other)" row.
// Distinct folded keys are counted through their hashes, themselves capped
// (kMaxTrackedFolds), past which the count is a lower bound.
template <typename Key, typename Row>
class FoldingTable {
public:
    static constexpr size_t kMaxTrackedFolds = 65536;

    explicit FoldingTable(size_t max_rows) : max_rows_(max_rows) {}

    // `hash_of()` is called only for a key that gets folded.
    template <typename HashOf>
    Row &row_for(const Key &key, HashOf &&hash_of)
    {
        if (auto it = rows_.find(key); it != rows_.end())
            return it->second;
        if (rows_.size() < max_rows_)
            return rows_[key];
        if (folded_hashes_.size() < kMaxTrackedFolds)
            folded_hashes_.insert(hash_of());
        else
            folded_saturated_ = true;
        if (!other_)
            other_.emplace();
        return *other_;
    }

    size_t max_rows() const { return max_rows_; }
    const std::map<Key, Row> &rows() const { return rows_; }
    const std::optional<Row> &other() const { return other_; }
    uint64_t folded_keys() const { return folded_hashes_.size(); }
    bool folded_keys_is_lower_bound() const { return folded_saturated_; }

private:
    size_t max_rows_;
    std::map<Key, Row> rows_;
    std::optional<Row> other_;
    std::unordered_set<size_t> folded_hashes_;
    bool folded_saturated_ = false;
};

}  // namespace detail

// The words for a hint. They are made in agent/outputs (evidence_text.h's
// hint_text), a layer above this one: whoever builds the tables hands them in.
using HintWords = std::string (*)(const Hint &);

class AttributionTables {
public:
    static constexpr size_t kDefaultMaxRows = 4096;
    static constexpr size_t kMaxOomKills = 1024;      // the most recent are kept
    static constexpr size_t kMaxWorkersPerUpstream = 256;

    explicit AttributionTables(HintWords hint_words, size_t max_rows_per_table = kDefaultMaxRows);

    // Resets with a known owner and role upstream go into the tables and the
    // idle histogram; owned downstream/other resets are counted as client
    // side; resets with no known owner are counted apart. OOM kills are kept.
    void add(const Event &e);
    // What was lost on the way; not_stored is shown only when there is a store.
    void set_lost(const LossCounts &lost) { lost_ = lost; }
    // From the diagnosis engine, which keeps the pool idle samples.
    void set_idle_clusters(std::vector<IdleCluster> clusters) { idle_clusters_ = std::move(clusters); }

    uint64_t client_side_resets() const { return client_side_resets_; }
    uint64_t unowned_resets() const { return unowned_resets_; }
    // Distinct keys folded into "(other)", over both reset tables.
    uint64_t folded_keys() const;

    // Titled sections with aligned columns; empty sections say "(none)".
    std::string render_text() const;
    // {"type":"tables","by_worker_upstream":[...],"by_upstream":[...],
    //  "idle_histogram":[...],"oom_kills":[...],"lost":{...},
    //  "client_side_resets":n,"unowned_resets":n,"folded_rows":n,
    //  "oom_kills_dropped":n}. Rows sorted by total resets, descending; an
    // "(other)" row, if any, comes last. by_upstream's "workers" is a lower
    // bound once it reaches kMaxWorkersPerUpstream.
    nlohmann::json to_json() const;

private:

    struct WorkerUpstreamKey {
        uint32_t pid = 0;
        std::string comm;
        std::string upstream;
        auto operator<=>(const WorkerUpstreamKey &) const = default;
    };
    struct UpstreamRow {
        ResetCounts counts;
        std::vector<uint32_t> workers;  // distinct owner pids, sorted, bounded
    };

    // Resets of one cause, with the latest hint for them.
    struct CauseRow {
        uint64_t resets = 0;
        uint64_t high_confidence = 0;
        int64_t last_seen_ns = 0;
        Hint hint;

        uint64_t total() const { return resets; }
        void add(const ResetEvent &e);
    };
    struct WorkerCauseKey {
        uint32_t pid = 0;
        std::string comm;
        Cause cause = Cause::Unknown;
        auto operator<=>(const WorkerCauseKey &) const = default;
    };
    using UpstreamCauseKey = std::pair<std::string, Cause>;

    void add_reset(const ResetEvent &e);
    void add_oom(const OomEvent &e);
    std::string reset_tables_text() const;
    std::string cause_tables_text() const;
    std::string idle_text() const;
    void add_cause_json(nlohmann::json &j) const;
    nlohmann::json lost_json() const;

    HintWords hint_words_;
    detail::FoldingTable<WorkerUpstreamKey, ResetCounts> by_worker_upstream_;
    detail::FoldingTable<std::string, UpstreamRow> by_upstream_;
    detail::FoldingTable<UpstreamCauseKey, CauseRow> by_upstream_cause_;
    detail::FoldingTable<WorkerCauseKey, CauseRow> by_worker_cause_;
    std::vector<IdleCluster> idle_clusters_;
    Log2Histogram idle_histogram_;
    std::deque<OomEvent> oom_kills_;
    uint64_t oom_kills_dropped_ = 0;
    LossCounts lost_;
    uint64_t client_side_resets_ = 0;
    uint64_t unowned_resets_ = 0;
};

}  // namespace rstwatch
