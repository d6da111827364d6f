#include "explain/explain_output.h"

#include <algorithm>
#include <vector>

#include "common/text_table.h"
#include "common/units.h"

namespace rstwatch {

namespace {

constexpr int64_t kSecond = 1'000'000'000;
constexpr const char *kIndent = "    ";

// "2026-11-24T01:30:00Z": nginx's lines are to the second.
std::string rfc3339_seconds(int64_t second)
{
    std::string text = format_rfc3339_us(second * kSecond);
    return text.substr(0, text.find('.')) + "Z";
}

// The fact that decided the cause: the diagnosis lists what the connection
// was doing first and what tells the causes apart last.
std::string decisive_evidence(const ResetRecord &r) { return r.evidence.empty() ? "" : r.evidence.back(); }

std::string upstream_or_dash(const Explanation &e) { return e.line.upstream.empty() ? "-" : e.line.upstream; }

}  // namespace

std::string explanation_text(const Explanation &e)
{
    std::string out = e.line.raw + "\n";
    if (!e.record) {
        out += std::string(kIndent) + "unmatched: " + e.why_unmatched + "\n";
        return out;
    }
    const ResetRecord &r = *e.record;
    out += std::string(kIndent) + "cause: " + r.cause + " (" + r.confidence + "), the reset at " +
           format_time_of_day_us(r.time_ns) + " UTC";
    if (e.ambiguous)
        out += " (ambiguous: the worker had other resets from this upstream then; the nearest was taken)";
    out += "\n";
    if (std::string why = decisive_evidence(r); !why.empty())
        out += std::string(kIndent) + "why: " + why + "\n";
    if (!r.hint.empty())
        out += std::string(kIndent) + "fix: " + r.hint + "\n";
    return out;
}

nlohmann::ordered_json explanation_json(const Explanation &e)
{
    nlohmann::ordered_json j;
    j["line"] = e.line.raw;
    j["time"] = e.time_s ? nlohmann::ordered_json(rfc3339_seconds(*e.time_s)) : nullptr;
    j["pid"] = e.line.pid ? nlohmann::ordered_json(*e.line.pid) : nullptr;
    j["upstream"] = e.line.upstream.empty() ? nullptr : nlohmann::ordered_json(e.line.upstream);
    j["error"] = e.line.error;
    j["matched"] = e.record.has_value();
    if (!e.record) {
        j["why_unmatched"] = e.why_unmatched;
        return j;
    }
    const ResetRecord &r = *e.record;
    j["cause"] = r.cause;
    j["confidence"] = r.confidence;
    j["evidence"] = r.evidence;
    j["hint"] = r.hint.empty() ? nullptr : nlohmann::ordered_json(r.hint);
    j["record_time"] = format_rfc3339_us(r.time_ns);
    j["ambiguous"] = e.ambiguous;
    return j;
}

void ExplainSummary::add(const Explanation &e)
{
    ++failures_;
    if (!e.record) {
        ++unmatched_[e.unmatched];
        return;
    }
    ++matched_;
    auto key = std::make_pair(e.record->cause, upstream_or_dash(e));
    if (by_cause_upstream_.size() >= kMaxRows && !by_cause_upstream_.count(key))
        key = {"(other)", "(other)"};
    Row &row = by_cause_upstream_[key];
    ++row.lines;
    row.ambiguous += e.ambiguous ? 1 : 0;
}

std::string ExplainSummary::text() const
{
    std::string out = "\n";
    out += std::to_string(lines_read_) + " lines read, " + std::to_string(failures_) +
           " about a failed upstream connection: " + std::to_string(matched_) + " matched with a reset, " +
           std::to_string(failures_ - matched_) + " not.\n";
    if (!by_cause_upstream_.empty()) {
        std::vector<std::pair<std::pair<std::string, std::string>, Row>> rows(by_cause_upstream_.begin(),
                                                                             by_cause_upstream_.end());
        std::stable_sort(rows.begin(), rows.end(),
                         [](const auto &a, const auto &b) { return a.second.lines > b.second.lines; });
        TextTable table({{"cause"}, {"upstream"}, {"lines", true}, {"ambiguous", true}});
        for (const auto &[key, row] : rows)
            table.add_row({key.first, key.second, std::to_string(row.lines), std::to_string(row.ambiguous)});
        out += "\nLines by cause and upstream:\n";
        out += table.render();
    }
    if (!unmatched_.empty()) {
        TextTable table({{"reason"}, {"lines", true}});
        for (const auto &[reason, lines] : unmatched_)
            table.add_row({unmatched_label(reason), std::to_string(lines)});
        out += "\nUnmatched lines by reason:\n";
        out += table.render();
    }
    return out;
}

}  // namespace rstwatch
