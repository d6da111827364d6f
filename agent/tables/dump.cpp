#include "tables/dump.h"

#include <vector>

#include "common/text_table.h"

namespace rstwatch {

namespace {

struct Column {
    const char *key;
    const char *header;
    bool right = false;
};

const std::vector<Column> &columns_for(DumpBy by)
{
    static const std::vector<Column> worker = {
        {"pid", "PID", true},        {"comm", "COMM"},           {"upstream", "UPSTREAM"},
        {"received", "RECEIVED", true}, {"sent", "SENT", true}, {"last_seen", "LAST SEEN"},
        {"idle_ms_median", "IDLE MEDIAN MS", true}, {"idle_ms_max", "IDLE MAX MS", true}};
    static const std::vector<Column> upstream = {
        {"upstream", "UPSTREAM"}, {"received", "RECEIVED", true}, {"sent", "SENT", true},
        {"workers", "WORKERS", true}, {"last_seen", "LAST SEEN"},
        {"idle_ms_median", "IDLE MEDIAN MS", true}, {"idle_ms_max", "IDLE MAX MS", true}};
    static const std::vector<Column> cause = {{"upstream", "UPSTREAM"}, {"cause", "CAUSE"},
                                              {"resets", "RESETS", true}, {"high_confidence", "HIGH CONF", true},
                                              {"last_seen", "LAST SEEN"}, {"hint", "HINT"}};
    switch (by) {
    case DumpBy::Upstream: return upstream;
    case DumpBy::Cause: return cause;
    default: return worker;
    }
}

std::string cell(const nlohmann::json &row, const char *key)
{
    auto it = row.find(key);
    if (it == row.end() || it->is_null())
        return "-";
    if (it->is_string())
        return it->get<std::string>();
    if (it->is_number_float()) {
        char buf[32];
        std::snprintf(buf, sizeof(buf), "%.1f", it->get<double>());
        return buf;
    }
    return it->dump();
}

std::string csv_field(const std::string &s)
{
    if (s.find_first_of(",\"\n") == std::string::npos)
        return s;
    std::string out = "\"";
    for (char c : s)
        out += c == '"' ? std::string("\"\"") : std::string(1, c);
    return out + "\"";
}

std::string lost_line(const nlohmann::json &tables)
{
    const auto &lost = tables.value("lost", nlohmann::json::object());
    std::string out = "Lost events: ring buffer full " + std::to_string(lost.value("ring_buffer_full", 0)) +
                      ", undecodable " + std::to_string(lost.value("decode_errors", 0));
    if (lost.contains("not_stored"))
        out += ", not stored " + std::to_string(lost.value("not_stored", 0));
    return out + "\n";
}

}  // namespace

nlohmann::json dump_response(const AttributionTables &tables, const std::string &source)
{
    return {{"tables", tables.to_json()}, {"text", tables.render_text()}, {"source", source}};
}

const char *dump_table_key(DumpBy by)
{
    switch (by) {
    case DumpBy::Upstream: return "by_upstream";
    case DumpBy::Cause: return "by_upstream_cause";
    default: return "by_worker_upstream";
    }
}

std::string render_dump(const nlohmann::json &response, DumpBy by, DumpFormat format)
{
    const nlohmann::json &tables = response.value("tables", nlohmann::json::object());
    if (by == DumpBy::All && format == DumpFormat::Json)
        return tables.dump() + "\n";
    if (by == DumpBy::All && format == DumpFormat::Table)
        return response.value("text", std::string());

    const nlohmann::json rows = tables.value(dump_table_key(by), nlohmann::json::array());
    if (format == DumpFormat::Json)
        return rows.dump() + "\n";

    const auto &cols = columns_for(by);
    std::vector<std::vector<std::string>> cells;
    for (const auto &row : rows) {
        std::vector<std::string> r;
        for (const auto &c : cols)
            r.push_back(cell(row, c.key));
        cells.push_back(std::move(r));
    }
    std::string out;
    if (format == DumpFormat::Csv) {
        for (size_t i = 0; i < cols.size(); ++i)
            out += (i ? "," : "") + std::string(cols[i].key);
        out += "\n";
        for (const auto &r : cells) {
            for (size_t i = 0; i < r.size(); ++i)
                out += (i ? "," : "") + csv_field(r[i] == "-" ? std::string() : r[i]);
            out += "\n";
        }
        return out;
    }
    if (cells.empty())
        return "  (none)\n" + lost_line(tables);
    std::vector<TextTable::Column> headers;
    for (const auto &c : cols)
        headers.push_back({c.header, c.right});
    TextTable table(std::move(headers));
    for (auto &r : cells)
        table.add_row(std::move(r));
    out += table.render();
    return out + lost_line(tables);
}

}  // namespace rstwatch
