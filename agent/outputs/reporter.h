// Event lines and tables for a person or a pipe (stdout), through a
// NonBlockingOutput: a reader that stops reading costs lines on stdout,
// never the consumer's pace.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "events/records.h"
#include "outputs/output.h"

namespace rstwatch {

class AttributionTables;

class Reporter {
public:
    struct Options {
        bool json_events = false;  // one JSON object per event, else text with why/fix lines
        bool json_tables = false;  // the tables as one JSON object, else text tables
        bool has_store = false;    // for the "not printed" log: the store still has them
    };

    // Does not own `fd` (stdout, or a test's pipe).
    Reporter(int fd, Options options) : options_(options), out_(fd, {}) {}

    // After a batch of events, as stdio's fflush() was: one write per batch.
    void flush() { out_.flush(); }
    // The reader has not taken everything: the consumer comes back soon.
    bool pending() const { return out_.pending(); }
    bool wants_json() const { return options_.json_events; }

    // `json`: the event's to_json_line(), which the caller has made for
    // the store too; required with json_events.
    void event(const Event &e, const std::string &json);
    void tables(const AttributionTables &t);
    // Says (at most every 10 s) that lines were not printed, and why.
    void log_not_printed(bool final_report);
    // The last lines get a bounded time to go out; the agent never hangs on stdout.
    void stop();

private:
    Options options_;
    NonBlockingOutput out_;
    uint64_t logged_dropped_ = 0;
    std::chrono::steady_clock::time_point last_log_{};
};

}  // namespace rstwatch
