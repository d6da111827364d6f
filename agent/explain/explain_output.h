// What `rstwatch explain` prints: each upstream-failure line with its reset
// (text or one JSON object; the JSON fields are a contract, in
// docs/usage.md), and a summary at the end. Pure.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "explain/matcher.h"

namespace rstwatch {

// The line as nginx wrote it, then indented: the cause, the decisive
// evidence and the hint, or why there is no reset. Ends with a newline.
std::string explanation_text(const Explanation &e);

// One object: line, time, pid, upstream, error, matched; then cause,
// confidence, evidence, hint, record_time and ambiguous, or why_unmatched.
nlohmann::ordered_json explanation_json(const Explanation &e);

// Lines by cause and upstream, unmatched lines by reason. Bounded: past
// kMaxRows cause and upstream pairs, the rest share one "(other)" row.
class ExplainSummary {
public:
    static constexpr size_t kMaxRows = 4096;

    void add(const Explanation &e);
    void count_line_read() { ++lines_read_; }
    std::string text() const;

private:
    struct Row {
        uint64_t lines = 0;
        uint64_t ambiguous = 0;
    };
    uint64_t lines_read_ = 0;
    uint64_t failures_ = 0;
    uint64_t matched_ = 0;
    std::map<std::pair<std::string, std::string>, Row> by_cause_upstream_;
    std::map<Unmatched, uint64_t> unmatched_;
};

}  // namespace rstwatch
