// The command line, parsed into plain settings. Pure: checks that need the
// system (does this pid exist?) come in through a callback so that unit
// tests can answer them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tracking_filter.h"

namespace rstwatch {

enum class TableFormat { Table, Json };

struct RunSettings {
    TrackingFilter filter;           // default: comm "nginx"
    bool json = false;               // one JSON object per event line
    TableFormat table_format = TableFormat::Table;  // JSON by default with --json
    std::optional<double> duration_s;
    int verbosity = 0;
    uint32_t ring_buffer_kb = 4096;
};

struct CliOutcome {
    enum class Action { Run, Exit } action = Action::Exit;
    int exit_code = 0;
    std::string message;  // help text, or the error (already worded for a person)
    RunSettings run;
};

using PidExists = std::function<bool(uint32_t)>;

CliOutcome parse_command_line(int argc, const char *const argv[], const PidExists &pid_exists);

}  // namespace rstwatch
