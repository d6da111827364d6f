// The way back from format.h's JSON to an Event: the durable store keeps
// each record as the JSON the user saw, and the agent rebuilds its tables
// from it on start (and `rstwatch dump --store` does the same offline).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "events/records.h"

namespace rstwatch {

// "2026-11-24T02:30:00.123456Z" -> nanoseconds since the epoch; nullopt
// when it is not that shape.
std::optional<int64_t> parse_rfc3339_us(std::string_view text);

// An Event from to_json(Event)'s output. Fields the JSON does not carry
// (mono_ns; the reason's number, unless it was shown as REASON_<n>) stay at
// their defaults; the reason and the state come back as their enums; the
// evidence and hint come back as the words recorded (EvidenceCode::Recorded,
// HintCode::Recorded). What the tables use (owner, role, remote, direction,
// timings, cause, hint) comes back. nullopt with *error set when the object
// is not a record.
std::optional<Event> event_from_json(const nlohmann::json &j, std::string *error = nullptr);

}  // namespace rstwatch
