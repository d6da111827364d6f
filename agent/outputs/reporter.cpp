#include "outputs/reporter.h"

#include <spdlog/spdlog.h>

#include <cstring>

#include "outputs/format.h"
#include "tables/tables.h"

namespace rstwatch {

void Reporter::event(const Event &e, const std::string &json)
{
    if (options_.json_events)
        out_.push_line(json);  // no copy but the one into the buffer
    else
        out_.push(format_text(e) + '\n');  // a "why:" and a "fix:" line follow the event's
}

void Reporter::tables(const AttributionTables &t)
{
    out_.push(options_.json_tables ? t.to_json().dump() + "\n" : t.render_text());
    out_.flush();
}

void Reporter::log_not_printed(bool final_report)
{
    const OutputStats &s = out_.stats();
    auto now = std::chrono::steady_clock::now();
    if (s.lines_dropped == logged_dropped_ || (!final_report && now - last_log_ < std::chrono::seconds(10)))
        return;
    logged_dropped_ = s.lines_dropped;
    last_log_ = now;
    spdlog::warn("{} lines not printed {}: {} (every event is still in the tables{})", s.lines_dropped,
                 final_report ? "in all" : "so far",
                 s.broken_errno ? "stdout failed (" + std::string(std::strerror(s.broken_errno)) + ")"
                                : std::string("stdout is not being read fast enough, or at all"),
                 options_.has_store ? " and the store" : "");
}

void Reporter::stop()
{
    out_.stop();
    log_not_printed(true);
}

}  // namespace rstwatch
