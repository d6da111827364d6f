#include "app/cli.h"

#include <CLI/CLI.hpp>

#include <charconv>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "control/time_zone.h"
#include "outputs/metrics.h"

extern "C" {
#include "rstwatch_abi.h"
}

namespace rstwatch {

namespace {

constexpr const char *kRunExamples = R"(
Examples:
  rstwatch run                     # nginx's resets, one line each; tables on Ctrl-C
  rstwatch run --pid 1234          # an nginx master and its workers, present and future
  rstwatch run --json -d 600       # ten minutes of JSON lines, then the tables as JSON
  rstwatch run --comm envoy --comm haproxy
  kill -USR1 $(pidof rstwatch)     # print the tables without stopping
  rstwatch run --metrics 127.0.0.1:9477 --retain-days 7   # always on (see deploy/rstwatch.service)
  rstwatch run --store none --socket none -d 60           # nothing kept, no control socket
)";

constexpr const char *kDumpExamples = R"(
Examples:
  rstwatch dump                          # the running agent's tables
  rstwatch dump --by upstream --since 10m
  rstwatch dump --by cause --format csv > causes.csv
  rstwatch dump --store /var/lib/rstwatch/rstwatch.db --since 1d   # no agent running
)";

constexpr const char *kExplainExamples = R"(
Examples:
  rstwatch explain                       # /var/log/nginx/error.log, with the agent's store
  rstwatch explain /var/log/nginx/error.log.2.gz /var/log/nginx/error.log.1 /var/log/nginx/error.log
  rstwatch explain --follow              # lines as nginx writes them (tail -F); the summary on Ctrl-C
  rstwatch explain --since 1h --json | jq -c 'select(.matched) | {time, cause, hint}'
  rstwatch explain --tz Europe/Berlin --store copy.db web1-error.log   # a log from another host
  zcat error.log.3.gz | rstwatch explain -
)";

// Linux's PID_MAX_LIMIT: no pid is larger.
constexpr uint64_t kMaxPid = 4194304;
// Past these a deadline or a cut-off no longer fits the clocks' 64-bit
// nanoseconds; nobody means more.
constexpr double kMaxDurationS = 1e9;     // 31 years
constexpr double kMaxRetainDays = 36500;  // 100 years
// The ring buffer's size is a u32 number of bytes and a power of two.
constexpr uint64_t kMinRingKb = 4, kMaxRingKb = 2097152;  // 4 KiB (a page) to 2 GiB

std::string path_or_none(const std::string &s) { return s == "none" ? std::string() : s; }

// CLI11 takes the next argument as a missing value even when it is an
// option (`--comm --duration 1` would track a process named "--duration"),
// and parses integers with strtoull's base 0 ("010" would be pid 8). So
// values that look like options are refused, and whole numbers are decimal
// digits, passed on without leading zeros (a transform, not a check).
const CLI::Validator kNotAnOption(
    [](std::string &value) -> std::string {
        if (!value.empty() && value[0] == '-')
            return "'" + value + "' looks like an option, not a value";
        return {};
    },
    "");

CLI::Validator whole_number(uint64_t lo, uint64_t hi, const std::string &what)
{
    return CLI::Validator(
        [lo, hi, what](std::string &value) -> std::string {
            uint64_t n = 0;
            auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
            if (value.empty() || ec != std::errc() || end != value.data() + value.size() || n < lo || n > hi)
                return "'" + value + "' is not " + what + " (a whole number from " + std::to_string(lo) + " to " +
                       std::to_string(hi) + ")";
            value = std::to_string(n);
            return {};
        },
        "");
}

// A number above 0 and at most `max`, as a person writes it: 2.5, 600, 1e3.
CLI::Validator positive_number(double max, const std::string &unit)
{
    std::ostringstream bound;
    bound << std::fixed << std::setprecision(0) << max;
    return CLI::Validator(
        [max, unit, bound = bound.str()](std::string &value) -> std::string {
            double x = 0;
            if (!CLI::detail::lexical_cast(value, x) || !std::isfinite(x) || !(x > 0) || x > max)
                return "'" + value + "' is not a number of " + unit + " above 0 and at most " + bound;
            return {};
        },
        "");
}

const CLI::Validator kRingBufferKb(
    [](std::string &value) -> std::string {
        std::string error = whole_number(kMinRingKb, kMaxRingKb, "a ring buffer size in KiB")(value);
        if (error.empty() && (std::stoull(value) & (std::stoull(value) - 1)))
            error = "'" + value + "' KiB is not a power of two (4, 8, ... 4096, ... 2097152)";
        return error;
    },
    "");

// An empty path would quietly mean "none" (or stderr, for the log).
CLI::Validator a_path(const std::string &instead)
{
    return CLI::Validator(
        [instead](std::string &value) -> std::string {
            if (value.empty())
                return "an empty path: give a path" + instead;
            return kNotAnOption(value);
        },
        "");
}

const CLI::Validator kDuration(
    [](std::string &value) -> std::string {
        return parse_duration(value) ? std::string() : "'" + value + "' is not a duration such as 90s, 10m, 2h or 1d";
    },
    "");

const CLI::Validator kTimeZone(
    [](std::string &value) -> std::string {
        if (std::string error = kNotAnOption(value); !error.empty())
            return error;
        return time_zone_problem(value);
    },
    "");

const CLI::Validator kListenAddress(
    [](std::string &value) -> std::string {
        std::string error;
        parse_listen_address(value, &error);
        return error;
    },
    "");

// What `rstwatch run` takes before it becomes RunSettings.
struct RunArgs {
    RunSettings run;
    std::vector<std::string> comms;
    std::vector<uint32_t> pids;
    bool all = false;
    double duration = 0;
    std::string table_format;
    std::string socket_path = kDefaultSocketPath, store_path = kDefaultStorePath, metrics;
};

CLI::App *add_run_command(CLI::App &app, RunArgs &a)
{
    CLI::App *cmd = app.add_subcommand("run", "Attach and report every TCP reset on tracked connections");
    cmd->footer(kRunExamples);
    cmd->add_flag("--json", a.run.json, "One JSON object per line instead of text");
    auto *comm = cmd->add_option("--comm", a.comms, "Track processes with this name (repeatable; default nginx)")
                     ->check(kNotAnOption)
                     ->check([](const std::string &name) -> std::string {
                         if (name.empty() || name.size() >= RW_COMM_LEN)
                             return "process names are 1 to 15 characters (the kernel's comm)";
                         return {};
                     });
    auto *pid = cmd->add_option("-p,--pid", a.pids, "Track this process and its children (repeatable)")
                    ->transform(whole_number(1, kMaxPid, "a process id"));
    cmd->add_flag("--all", a.all, "Track every process's TCP connections")->excludes(comm)->excludes(pid);
    cmd->add_option("-d,--duration", a.duration, "Stop after this many seconds")
        ->check(positive_number(kMaxDurationS, "seconds"));
    cmd->add_option("--format", a.table_format, "Format of the attribution tables")
        ->check(CLI::IsMember({"table", "json"}));
    cmd->add_flag("--ttl-evidence", a.run.ttl_evidence,
                  "Record the TTL of the backend's data and of each reset, to tell a middlebox's reset from the "
                  "backend's when the backend is on another host (one BPF run per received TCP segment). Without "
                  "it, kernels that allow it (see --check) give the TTLs of the reset and of the backend's SYN-ACK "
                  "at no cost per segment");
    cmd->add_flag("--check", a.run.check,
                  "Print what this kernel and these privileges allow (evidence, causes, program builds) and exit: "
                  "0 if rstwatch can run here");
    cmd->add_flag("-v,--verbose", a.run.verbosity, "More logging, libbpf's included (repeatable)");
    cmd->add_option("--ring-buffer-kb", a.run.ring_buffer_kb, "Ring buffer size in KiB (a power of two, 4 to 2097152)")
        ->transform(kRingBufferKb)
        ->group("Advanced");
    cmd->add_option("--socket", a.socket_path, "Control socket for `rstwatch dump` (\"none\": no socket)")
        ->check(a_path(", or none"))
        ->capture_default_str();
    cmd->add_option("--store", a.store_path, "SQLite store of every record (\"none\": keep nothing)")
        ->check(a_path(", or none"))
        ->capture_default_str();
    cmd->add_option("--retain-days", a.run.retain_days, "Delete stored records older than this")
        ->check(positive_number(kMaxRetainDays, "days"))
        ->capture_default_str();
    cmd->add_option("--max-db-mb", a.run.max_db_mb, "Delete the oldest stored records past this size")
        ->transform(whole_number(1, uint64_t(1) << 30, "a size in MiB"))
        ->capture_default_str();
    cmd->add_option("--metrics", a.metrics,
                    "Serve Prometheus metrics on ADDR:PORT (a bare port is loopback), e.g. 127.0.0.1:9477")
        ->check(kListenAddress);
    cmd->add_option("--log-file", a.run.log_file, "Log here instead of stderr (reopened on SIGHUP)")
        ->check(a_path(" (leave --log-file out to log to stderr)"));
    cmd->add_option("--record", a.run.record_path,
                    "Also write every raw record to FILE, to replay or attach to a bug report")
        ->check(a_path(" (leave --record out to record nothing)"))
        ->group("Advanced");
    return cmd;
}

CLI::App *add_dump_command(CLI::App &app, DumpSettings &dump, std::string &since)
{
    CLI::App *cmd = app.add_subcommand("dump", "Print the tables of a running agent, or of a store");
    cmd->footer(kDumpExamples);
    cmd->add_option("--socket", dump.socket_path, "The agent's control socket")
        ->check(a_path(""))
        ->capture_default_str();
    cmd->add_option("--store", dump.store_path, "Read this store instead of asking an agent")->check(a_path(""));
    cmd->add_option("--by", dump.by, "One table: resets by worker, by upstream, or by cause")
        ->check(CLI::IsMember({"all", "worker", "upstream", "cause"}));
    cmd->add_option("--since", since, "Only records this recent: 90s, 10m, 2h, 1d (read from the store)")
        ->check(kDuration);
    cmd->add_option("--format", dump.format, "table, json or csv (csv needs one table: --by)")
        ->check(CLI::IsMember({"table", "json", "csv"}));
    return cmd;
}

// What `rstwatch explain` takes before it becomes ExplainSettings.
struct ExplainArgs {
    ExplainSettings settings;
    std::string since;
    std::vector<std::string> files;
};

CLI::App *add_explain_command(CLI::App &app, ExplainArgs &a)
{
    CLI::App *cmd = app.add_subcommand(
        "explain", "Under each upstream-failure line of nginx's error log: the reset's cause and what to change");
    cmd->footer(kExplainExamples);
    auto *store = cmd->add_option("--store", a.settings.store_path,
                                  std::string("Read this store (default ") + kDefaultStorePath + "; no agent needed)")
                      ->check(a_path(""));
    cmd->add_option("--socket", a.settings.socket_path, "Ask the agent on this control socket for its store instead")
        ->check(a_path(""))
        ->excludes(store);
    cmd->add_option("--since", a.since, "Only lines this recent: 90s, 10m, 2h, 1d")->check(kDuration);
    cmd->add_flag("--follow", a.settings.follow,
                  "Go on as nginx writes (like tail -F, across logrotate); the summary on Ctrl-C");
    cmd->add_flag("--json", a.settings.json, "One JSON object per upstream-failure line, no summary");
    cmd->add_option("--tz", a.settings.time_zone,
                    "nginx's time zone: a tz database name (Europe/Berlin) or UTC; default: this host's")
        ->check(kTimeZone);
    cmd->add_option("FILE", a.files,
                    std::string("nginx error logs, oldest first (default ") + kDefaultErrorLog +
                        "; .gz files too; - for standard input)")
        ->check(CLI::Validator(
            [](std::string &value) -> std::string { return value.empty() ? "an empty path: give a file" : ""; },
            ""));
    return cmd;
}

CliOutcome finish_explain(ExplainArgs &a)
{
    CliOutcome out;
    out.action = CliOutcome::Action::Explain;
    out.explain = std::move(a.settings);
    if (!a.files.empty())
        out.explain.files = std::move(a.files);
    if (!a.since.empty())
        out.explain.since_s = parse_duration(a.since);
    if (out.explain.store_path.empty() && out.explain.socket_path.empty())
        out.explain.store_path = kDefaultStorePath;
    return out;
}

CliOutcome usage_error(const std::string &message)
{
    CliOutcome out;
    out.exit_code = 2;
    out.message = "rstwatch: " + message + "\n";
    return out;
}

CliOutcome finish_run(RunArgs &a, const PidExists &pid_exists)
{
    RunSettings run = std::move(a.run);
    run.socket_path = path_or_none(a.socket_path);
    run.store_path = path_or_none(a.store_path);
    if (!a.metrics.empty()) {
        auto address = parse_listen_address(a.metrics, nullptr);  // checked by kListenAddress
        run.metrics_host = address->host;
        run.metrics_port = address->port;
    }
    if (a.comms.size() > RW_MAX_COMMS || a.pids.size() > RW_MAX_PIDS)
        return usage_error("at most " + std::to_string(RW_MAX_COMMS) + " --comm and " + std::to_string(RW_MAX_PIDS) +
                           " --pid values");
    for (uint32_t pid : a.pids)
        if (!pid_exists(pid))
            return usage_error("--pid: no process with pid " + std::to_string(pid));

    run.filter.all = a.all;
    run.filter.pids = a.pids;
    run.filter.comms = a.comms;
    if (!a.all && a.comms.empty() && a.pids.empty())
        run.filter.comms = {"nginx"};
    if (a.duration > 0)
        run.duration_s = a.duration;
    if (a.table_format.empty())
        run.table_format = run.json ? TableFormat::Json : TableFormat::Table;
    else
        run.table_format = a.table_format == "json" ? TableFormat::Json : TableFormat::Table;

    CliOutcome out;
    out.action = CliOutcome::Action::Run;
    out.run = std::move(run);
    return out;
}

// CLI11's own exit codes (105 and so on) say nothing to a shell script:
// every mistake on the command line is a usage error, exit 2.
std::string failure_message(const CLI::App *app, const CLI::Error &e)
{
    std::string command = "rstwatch";
    for (const CLI::App *sub : app->get_subcommands())
        command += " " + sub->get_name();
    return "rstwatch: " + std::string(e.what()) + "\n`" + command + " --help` lists the " +
           (command == "rstwatch" ? "commands (run, dump, explain)" : "options") + ".\n";
}

}  // namespace

CliOutcome parse_command_line(int argc, const char *const argv[], const PidExists &pid_exists)
{
    CLI::App app{"rstwatch: why did nginx's upstream connection get reset?", "rstwatch"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "rstwatch 0.1.0");
    app.failure_message(failure_message);
    RunArgs run;
    DumpSettings dump;
    std::string since;
    add_run_command(app, run);
    CLI::App *dump_cmd = add_dump_command(app, dump, since);
    ExplainArgs explain;
    CLI::App *explain_cmd = add_explain_command(app, explain);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError &e) {
        CliOutcome out;
        std::ostringstream msg, err;
        out.exit_code = app.exit(e, msg, err) == 0 ? 0 : 2;
        out.message = msg.str() + err.str();
        return out;
    }
    if (explain_cmd->parsed())
        return finish_explain(explain);
    if (!dump_cmd->parsed())
        return finish_run(run, pid_exists);

    if (!since.empty())
        dump.since_s = parse_duration(since);
    if (dump.format == "csv" && dump.by == "all")
        dump.by = "worker";
    CliOutcome out;
    out.action = CliOutcome::Action::Dump;
    out.dump = dump;
    return out;
}

std::optional<double> parse_duration(const std::string &text)
{
    if (text.empty())
        return std::nullopt;
    size_t used = 0;
    double value = 0;
    try {
        value = std::stod(text, &used);
    } catch (const std::exception &) {
        return std::nullopt;
    }
    std::string unit = text.substr(used);
    double scale = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : 0;
    // Finite once scaled: 1e307d is not.
    if (scale == 0 || !(value > 0) || !std::isfinite(value * scale))
        return std::nullopt;
    return value * scale;
}

}  // namespace rstwatch
