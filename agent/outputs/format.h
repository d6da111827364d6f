// The outputs of one event: JSON (a contract with whoever parses it; field
// names never change meaning) and one human-readable line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/units.h"
#include "events/records.h"

namespace rstwatch {

// The event as one line of JSON (no newline): what --json prints and the
// store keeps. Millisecond figures are rounded to 0.001 ms; unknown values
// are null. Members in a fixed order, "type" and "time" first.
std::string to_json_line(const Event &e);
// The same, parsed: for readers and tests, not for the hot path.
nlohmann::json to_json(const Event &e);

// One line, no trailing newline, e.g.
// 02:30:00.123456 RST received upstream nginx[1234] 127.0.0.1:40312 -> 127.0.0.1:8081
//   ESTABLISHED idle=0.4ms pool_idle=5002.9ms since_request=0.4ms req=reused bytes_sent=1.2KiB
//   bytes_received=3.4KiB
// then, for a diagnosed reset, an indented "why:" and "fix:" line.
std::string format_text(const Event &e);

}  // namespace rstwatch
