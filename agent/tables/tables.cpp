#include "tables/tables.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "common/units.h"
#include "common/text_table.h"

namespace rstwatch {

// ---- IdleSummary ----------------------------------------------------------

uint64_t IdleSummary::next_random()
{
    // splitmix64: small, fast and good enough to pick reservoir slots.
    uint64_t z = (rng_state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void IdleSummary::add(double ms)
{
    ++count_;
    max_ = count_ == 1 ? ms : std::max(max_, ms);
    if (samples_.size() < kMaxSamples) {
        samples_.push_back(ms);
        return;
    }
    // Algorithm R: the count_-th value replaces a sample with probability
    // kMaxSamples / count_, which keeps the sample uniform over all values.
    uint64_t slot = next_random() % count_;
    if (slot < kMaxSamples)
        samples_[slot] = ms;
}

std::optional<double> IdleSummary::median() const
{
    if (samples_.empty())
        return std::nullopt;
    std::vector<double> s = samples_;
    size_t mid = s.size() / 2;
    std::nth_element(s.begin(), s.begin() + mid, s.end());
    double upper = s[mid];
    if (s.size() % 2 == 1)
        return upper;
    double lower = *std::max_element(s.begin(), s.begin() + mid);
    return (lower + upper) / 2.0;
}

std::optional<double> IdleSummary::max() const
{
    if (count_ == 0)
        return std::nullopt;
    return max_;
}

void ResetCounts::add(const ResetEvent &e)
{
    if (e.direction == Direction::Received)
        ++received;
    else
        ++sent;
    last_seen_ns = std::max(last_seen_ns, e.time_ns);
    if (e.idle_ms)
        idle.add(*e.idle_ms);
}

// ---- AttributionTables: counting -------------------------------------------

AttributionTables::AttributionTables(HintWords hint_words, size_t max_rows_per_table)
    : hint_words_(hint_words), by_worker_upstream_(max_rows_per_table), by_upstream_(max_rows_per_table),
      by_upstream_cause_(max_rows_per_table), by_worker_cause_(max_rows_per_table)
{
}

void AttributionTables::add(const Event &e)
{
    if (const auto *reset = std::get_if<ResetEvent>(&e))
        add_reset(*reset);
    else
        add_oom(std::get<OomEvent>(e));
}

void AttributionTables::add_reset(const ResetEvent &e)
{
    // Without an owner we cannot say which worker or upstream this was.
    if (!e.owner_known) {
        ++unowned_resets_;
        return;
    }
    // Resets on connections nginx accepted are between the client and
    // nginx, and nginx resetting its own upstream connection because its
    // client left is caused by the client: neither explains "reset by peer
    // ... from upstream".
    const Cause cause = e.diagnosis ? e.diagnosis->cause : Cause::Unknown;
    if (e.role != Role::Upstream || cause == Cause::ClientSide) {
        ++client_side_resets_;
        return;
    }
    // Folded keys are counted by hash; the strings are built only then.
    auto hash = [](const std::string &s) { return std::hash<std::string>{}(s); };
    const std::string pid = std::to_string(e.pid);
    by_upstream_cause_.row_for({e.remote, cause}, [&] { return hash(e.remote + to_string(cause)); }).add(e);
    by_worker_cause_.row_for({e.pid, e.comm, cause}, [&] {
        return hash(pid + '\0' + e.comm + '\0' + to_string(cause));
    }).add(e);
    by_worker_upstream_.row_for({e.pid, e.comm, e.remote}, [&] {
        return hash(pid + '\0' + e.comm + '\0' + e.remote);
    }).add(e);

    UpstreamRow &up = by_upstream_.row_for(e.remote, [&] { return hash(e.remote); });
    up.counts.add(e);
    auto at = std::lower_bound(up.workers.begin(), up.workers.end(), e.pid);
    if ((at == up.workers.end() || *at != e.pid) && up.workers.size() < kMaxWorkersPerUpstream)
        up.workers.insert(at, e.pid);

    // The histogram counts whole milliseconds, as bcc's tools do.
    if (e.idle_ms)
        idle_histogram_.add(static_cast<uint64_t>(std::max(0.0, std::floor(*e.idle_ms))));
}

void AttributionTables::CauseRow::add(const ResetEvent &e)
{
    ++resets;
    if (e.diagnosis && e.diagnosis->confidence == Confidence::High)
        ++high_confidence;
    last_seen_ns = std::max(last_seen_ns, e.time_ns);
    if (e.diagnosis && !e.diagnosis->hint.empty())
        hint = e.diagnosis->hint;
}

void AttributionTables::add_oom(const OomEvent &e)
{
    if (oom_kills_.size() >= kMaxOomKills) {
        oom_kills_.pop_front();
        ++oom_kills_dropped_;
    }
    oom_kills_.push_back(e);
}

uint64_t AttributionTables::folded_keys() const
{
    return by_worker_upstream_.folded_keys() + by_upstream_.folded_keys();
}

// ---- Output helpers --------------------------------------------------------

namespace {

constexpr const char *kOther = "(other)";

// Rows of a table in output order: most resets first, ties by key so the
// output is stable; the "(other)" row, if any, last.
template <typename Key, typename Row, typename Total>
std::vector<std::pair<const Key *, const Row *>> ordered_rows(
    const detail::FoldingTable<Key, Row> &table, Total total)
{
    std::vector<std::pair<const Key *, const Row *>> out;
    for (const auto &[key, row] : table.rows())
        out.emplace_back(&key, &row);
    std::stable_sort(out.begin(), out.end(), [&](const auto &a, const auto &b) {
        return total(*a.second) > total(*b.second);
    });
    if (table.other())
        out.emplace_back(nullptr, &*table.other());
    return out;
}

std::string last_seen_text(int64_t ns) { return ns ? format_rfc3339_us(ns) : "-"; }


template <typename Key, typename Row>
std::string folded_note(const detail::FoldingTable<Key, Row> &table, const char *what)
{
    return std::string("  (") + (table.folded_keys_is_lower_bound() ? "at least " : "") +
           std::to_string(table.folded_keys()) + " more " + what + " folded into " + kOther +
           ": the table keeps " + std::to_string(table.max_rows()) + " rows)\n";
}

}  // namespace

// ---- AttributionTables: text -----------------------------------------------

// Resets by worker x upstream and by upstream, with their idle times.
std::string AttributionTables::reset_tables_text() const
{
    std::string out;
    bool approximate_median = false;

    out += "Resets by nginx worker x upstream\n";
    if (by_worker_upstream_.rows().empty()) {
        out += "  (none)\n";
    } else {
        TextTable t({{"PID", true},
                     {"COMM"},
                     {"UPSTREAM"},
                     {"RECEIVED", true},
                     {"SENT", true},
                     {"LAST SEEN"},
                     {"IDLE MEDIAN", true},
                     {"IDLE MAX", true}});
        for (auto [key, row] : ordered_rows(by_worker_upstream_, std::mem_fn(&ResetCounts::total))) {
            approximate_median |= !row->idle.exact();
            t.add_row({key ? std::to_string(key->pid) : "-", key ? key->comm : kOther,
                       key ? key->upstream : kOther, std::to_string(row->received),
                       std::to_string(row->sent), last_seen_text(row->last_seen_ns),
                       format_ms(row->idle.median()), format_ms(row->idle.max())});
        }
        out += t.render();
        if (by_worker_upstream_.other())
            out += folded_note(by_worker_upstream_, "worker x upstream keys");
    }

    out += "\nResets by upstream\n";
    if (by_upstream_.rows().empty()) {
        out += "  (none)\n";
    } else {
        TextTable t({{"UPSTREAM"},
                     {"RECEIVED", true},
                     {"SENT", true},
                     {"WORKERS", true},
                     {"LAST SEEN"},
                     {"IDLE MEDIAN", true},
                     {"IDLE MAX", true}});
        auto total = [](const UpstreamRow &r) { return r.counts.total(); };
        for (auto [key, row] : ordered_rows(by_upstream_, total)) {
            const ResetCounts &c = row->counts;
            approximate_median |= !c.idle.exact();
            std::string workers = std::to_string(row->workers.size());
            if (row->workers.size() >= kMaxWorkersPerUpstream)
                workers += "+";
            t.add_row({key ? *key : kOther, std::to_string(c.received), std::to_string(c.sent),
                       workers, last_seen_text(c.last_seen_ns), format_ms(c.idle.median()),
                       format_ms(c.idle.max())});
        }
        out += t.render();
        if (by_upstream_.other())
            out += folded_note(by_upstream_, "upstreams");
    }
    if (approximate_median)
        out += "  (idle medians of rows with more than " + std::to_string(IdleSummary::kMaxSamples) +
               " resets are estimated from a sample of " +
               std::to_string(IdleSummary::kMaxSamples) + ")\n";

    return out;
}

// Upstream resets by cause (with what to change) and by worker x cause.
std::string AttributionTables::cause_tables_text() const
{
    std::string out;
    out += "\nUpstream resets by cause\n";
    if (by_upstream_cause_.rows().empty()) {
        out += "  (none)\n";
    } else {
        TextTable t({{"UPSTREAM"}, {"CAUSE"}, {"RESETS", true}, {"HIGH CONF", true}, {"LAST SEEN"}});
        std::vector<std::string> hints;
        for (auto [key, row] : ordered_rows(by_upstream_cause_, std::mem_fn(&CauseRow::total))) {
            t.add_row({key ? key->first : kOther, key ? to_string(key->second) : kOther,
                       std::to_string(row->resets), std::to_string(row->high_confidence),
                       last_seen_text(row->last_seen_ns)});
            if (key && !row->hint.empty())
                hints.push_back("  " + key->first + " " + to_string(key->second) + ": " + hint_words_(row->hint) +
                                "\n");
        }
        out += t.render();
        if (!hints.empty())
            out += "  What to change:\n";
        for (const auto &h : hints)
            out += "  " + h;
    }

    out += "\nUpstream resets by nginx worker x cause\n";
    if (by_worker_cause_.rows().empty()) {
        out += "  (none)\n";
    } else {
        TextTable t({{"PID", true}, {"COMM"}, {"CAUSE"}, {"RESETS", true}, {"LAST SEEN"}});
        for (auto [key, row] : ordered_rows(by_worker_cause_, std::mem_fn(&CauseRow::total)))
            t.add_row({key ? std::to_string(key->pid) : "-", key ? key->comm : kOther,
                       key ? to_string(key->cause) : kOther, std::to_string(row->resets),
                       last_seen_text(row->last_seen_ns)});
        out += t.render();
    }

    return out;
}

// Pool idle clusters and the idle time histogram.
std::string AttributionTables::idle_text() const
{
    std::string out;
    out += "\nPool idle clusters (resets on reused connections)\n";
    if (idle_clusters_.empty()) {
        out += "  (none)\n";
    } else {
        TextTable t({{"UPSTREAM"}, {"CAUSE"}, {"RESETS", true}, {"MIN", true}, {"MEDIAN", true}, {"MAX", true}});
        for (const auto &c : idle_clusters_)
            t.add_row({c.upstream, to_string(c.cause), std::to_string(c.count), format_ms(c.min_ms),
                       format_ms(c.median_ms), format_ms(c.max_ms)});
        out += t.render();
        for (const auto &c : idle_clusters_)
            out += "  " + c.upstream + ": " + hint_words_(c.hint) + "\n";
    }

    out += "\nIdle time before reset, upstream connections (ms)\n";
    out += idle_histogram_.count() ? idle_histogram_.render("idle_ms") : "  (none)\n";

    return out;
}

std::string AttributionTables::render_text() const
{
    std::string out = reset_tables_text() + cause_tables_text() + idle_text();

    out += "\nOOM kills\n";
    if (oom_kills_.empty()) {
        out += "  (none)\n";
    } else {
        TextTable t({{"TIME"}, {"PID", true}, {"COMM"}, {"RSS", true}, {"CGROUP"}});
        for (const OomEvent &k : oom_kills_)
            t.add_row({format_rfc3339_us(k.time_ns), std::to_string(k.pid), k.comm,
                       k.rss_kb ? std::to_string(*k.rss_kb) + "kB" : "-",
                       k.cgroup.empty() ? "-" : k.cgroup});
        out += t.render();
        if (oom_kills_dropped_)
            out += "  (" + std::to_string(oom_kills_dropped_) + " older OOM kills not shown)\n";
    }

    out += "\nClient-side resets (downstream/other connections, not upstream failures): " +
           std::to_string(client_side_resets_) + "\n";
    out += "Resets with no known owner: " + std::to_string(unowned_resets_) + "\n";
    out += "Lost events: ring buffer full " + std::to_string(lost_.ring_buffer_full) +
           ", undecodable " + std::to_string(lost_.decode_errors) + "\n";
    if (lost_.left_unread)
        out += "Left unread in the ring buffer at exit: " + std::to_string(lost_.left_unread) + "\n";
    if (lost_.not_stored)
        out += "Not written to the store (queue full or write failed): " + std::to_string(*lost_.not_stored) + "\n";
    return out;
}

// ---- AttributionTables: JSON -----------------------------------------------

// LossCounts' members by their names; not_stored only with a store, and
// left_unread only when the stop left some.
nlohmann::json AttributionTables::lost_json() const
{
    nlohmann::json lost = {{"ring_buffer_full", lost_.ring_buffer_full},
                           {"decode_errors", lost_.decode_errors},
                           {"owners_unresolved", lost_.owners_unresolved},
                           {"listeners_dropped", lost_.listeners_dropped}};
    if (lost_.not_stored)
        lost["not_stored"] = *lost_.not_stored;
    if (lost_.left_unread)
        lost["left_unread"] = lost_.left_unread;
    return lost;
}

// Resets by cause, their hints, and the pool idle clusters.
void AttributionTables::add_cause_json(nlohmann::json &j) const
{
    nlohmann::json by_up_cause = nlohmann::json::array();
    for (auto [key, row] : ordered_rows(by_upstream_cause_, std::mem_fn(&CauseRow::total)))
        by_up_cause.push_back({{"upstream", key ? key->first : kOther},
                               {"cause", key ? to_string(key->second) : kOther},
                               {"resets", row->resets},
                               {"high_confidence", row->high_confidence},
                               {"last_seen", format_rfc3339_us(row->last_seen_ns)},
                               {"hint", row->hint.empty() ? nlohmann::json(nullptr)
                                                          : nlohmann::json(hint_words_(row->hint))}});
    j["by_upstream_cause"] = by_up_cause;

    nlohmann::json by_worker_cause = nlohmann::json::array();
    for (auto [key, row] : ordered_rows(by_worker_cause_, std::mem_fn(&CauseRow::total)))
        by_worker_cause.push_back({{"pid", key ? nlohmann::json(key->pid) : nlohmann::json(nullptr)},
                                   {"comm", key ? key->comm : kOther},
                                   {"cause", key ? to_string(key->cause) : kOther},
                                   {"resets", row->resets},
                                   {"last_seen", format_rfc3339_us(row->last_seen_ns)}});
    j["by_worker_cause"] = by_worker_cause;

    nlohmann::json clusters = nlohmann::json::array();
    for (const auto &c : idle_clusters_)
        clusters.push_back({{"upstream", c.upstream},
                            {"cause", to_string(c.cause)},
                            {"resets", c.count},
                            {"pool_idle_ms_min", c.min_ms},
                            {"pool_idle_ms_median", c.median_ms},
                            {"pool_idle_ms_max", c.max_ms},
                            {"hint", hint_words_(c.hint)}});
    j["idle_clusters"] = clusters;
}

nlohmann::json AttributionTables::to_json() const
{
    nlohmann::json j;
    j["type"] = "tables";

    nlohmann::json by_worker = nlohmann::json::array();
    for (auto [key, row] : ordered_rows(by_worker_upstream_, std::mem_fn(&ResetCounts::total))) {
        by_worker.push_back({{"pid", key ? nlohmann::json(key->pid) : nlohmann::json(nullptr)},
                             {"comm", key ? key->comm : kOther},
                             {"upstream", key ? key->upstream : kOther},
                             {"received", row->received},
                             {"sent", row->sent},
                             {"last_seen", format_rfc3339_us(row->last_seen_ns)},
                             {"idle_ms_median", ms_to_json(row->idle.median())},
                             {"idle_ms_max", ms_to_json(row->idle.max())}});
    }
    j["by_worker_upstream"] = by_worker;

    nlohmann::json by_up = nlohmann::json::array();
    auto total = [](const UpstreamRow &r) { return r.counts.total(); };
    for (auto [key, row] : ordered_rows(by_upstream_, total)) {
        const ResetCounts &c = row->counts;
        by_up.push_back({{"upstream", key ? *key : kOther},
                         {"received", c.received},
                         {"sent", c.sent},
                         {"workers", row->workers.size()},
                         {"last_seen", format_rfc3339_us(c.last_seen_ns)},
                         {"idle_ms_median", ms_to_json(c.idle.median())},
                         {"idle_ms_max", ms_to_json(c.idle.max())}});
    }
    j["by_upstream"] = by_up;

    add_cause_json(j);

    j["idle_histogram"] = idle_histogram_.to_json();

    nlohmann::json ooms = nlohmann::json::array();
    for (const OomEvent &k : oom_kills_)
        ooms.push_back({{"time", format_rfc3339_us(k.time_ns)},
                        {"pid", k.pid},
                        {"comm", k.comm},
                        {"rss_kb", k.rss_kb ? nlohmann::json(*k.rss_kb) : nlohmann::json(nullptr)},
                        {"cgroup", k.cgroup.empty() ? nlohmann::json(nullptr) : nlohmann::json(k.cgroup)}});
    j["oom_kills"] = ooms;
    j["oom_kills_dropped"] = oom_kills_dropped_;

    j["lost"] = lost_json();
    j["client_side_resets"] = client_side_resets_;
    j["unowned_resets"] = unowned_resets_;
    j["folded_rows"] = folded_keys();
    return j;
}

}  // namespace rstwatch
