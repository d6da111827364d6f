// `rstwatch dump`: the attribution tables of a running agent (over its
// control socket) or of a store, as a table, JSON or CSV. Pure: the
// response comes in as JSON, the text goes out as a string.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "tables/tables.h"

namespace rstwatch {

enum class DumpBy { All, Worker, Upstream, Cause };
enum class DumpFormat { Table, Json, Csv };

// What the agent answers to {"cmd":"dump"} and what `dump --store` builds:
// {"tables": <AttributionTables::to_json()>, "text": <render_text()>,
//  "source": "live"|"store", ...extra}.
nlohmann::json dump_response(const AttributionTables &tables, const std::string &source);

// The rows `--by` selects from the tables JSON: by_worker_upstream,
// by_upstream or by_upstream_cause.
const char *dump_table_key(DumpBy by);

// Renders a dump response. DumpBy::All with Table prints the agent's full
// text; with Json the whole tables object; with Csv the worker rows.
std::string render_dump(const nlohmann::json &response, DumpBy by, DumpFormat format);

}  // namespace rstwatch
