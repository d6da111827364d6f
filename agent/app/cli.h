// The command line, parsed into plain settings. Pure: checks that need the
// system (does this pid exist?) come in through a callback so that unit
// tests can answer them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "control/dump_command.h"
#include "control/explain_command.h"
#include "kernel/tracking_filter.h"

namespace rstwatch {

enum class TableFormat { Table, Json };

constexpr const char *kDefaultStorePath = "/var/lib/rstwatch/rstwatch.db";

struct RunSettings {
    TrackingFilter filter;           // default: comm "nginx"
    bool json = false;               // one JSON object per event line
    TableFormat table_format = TableFormat::Table;  // JSON by default with --json
    std::optional<double> duration_s;
    int verbosity = 0;
    // 4 MiB: about 600 ms of a 36k resets/s storm. 2 MiB lost records in a
    // benchmark storm while the generator took both CPUs from the consumer
    // (docs/BENCHMARKS.md, run 4). Mapped into the agent twice over (the
    // ring's wrap-around), it counts double in RSS.
    uint32_t ring_buffer_kb = 4096;
    bool ttl_evidence = false;       // attach tcp:tcp_probe (see LoaderOptions)
    bool check = false;              // print what this kernel gives, attach nothing

    // Always-on use. An empty path ("none" on the command line) disables.
    std::string socket_path = kDefaultSocketPath;  // control socket for `rstwatch dump`
    std::string store_path = kDefaultStorePath;    // SQLite store of every record
    double retain_days = 30;
    uint64_t max_db_mb = 512;
    std::string metrics_host;                      // "" = no metrics endpoint
    uint16_t metrics_port = 0;
    std::string log_file;                          // "" = stderr; reopened on SIGHUP
    std::string record_path;                       // "" = no recording (pipeline/recording.h)
};

struct CliOutcome {
    enum class Action { Run, Dump, Explain, Exit } action = Action::Exit;
    int exit_code = 0;
    std::string message;  // help text, or the error (already worded for a person)
    RunSettings run;
    DumpSettings dump;
    ExplainSettings explain;
};

// "90", "30s", "10m", "2h", "1d" -> seconds; nullopt if not that shape or not positive.
std::optional<double> parse_duration(const std::string &text);

using PidExists = std::function<bool(uint32_t)>;

CliOutcome parse_command_line(int argc, const char *const argv[], const PidExists &pid_exists);

}  // namespace rstwatch
