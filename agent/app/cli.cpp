#include "app/cli.h"

#include <CLI/CLI.hpp>

#include <cmath>
#include <sstream>

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

std::string path_or_none(const std::string &s) { return s == "none" ? std::string() : s; }

}  // namespace

CliOutcome parse_command_line(int argc, const char *const argv[], const PidExists &pid_exists)
{
    CliOutcome out;
    CLI::App app{"rstwatch: why did nginx's upstream connection get reset?", "rstwatch"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "rstwatch 0.1.0");

    RunSettings run;
    std::vector<std::string> comms;
    std::vector<uint32_t> pids;
    bool all = false;
    double duration = 0;
    std::string table_format;

    CLI::App *run_cmd = app.add_subcommand("run", "Attach and report every TCP reset on tracked connections");
    run_cmd->footer(kRunExamples);
    run_cmd->add_flag("--json", run.json, "One JSON object per line instead of text");
    auto *comm_opt = run_cmd->add_option("--comm", comms, "Track processes with this name (repeatable; default nginx)")
                         ->check([](const std::string &name) -> std::string {
                             if (name.empty() || name.size() >= RW_COMM_LEN)
                                 return "process names are 1 to 15 characters (the kernel's comm)";
                             return {};
                         });
    auto *pid_opt = run_cmd->add_option("-p,--pid", pids, "Track this process and its children (repeatable)")
                        ->check(CLI::Range(1u, 4194304u));
    run_cmd->add_flag("--all", all, "Track every process's TCP connections")
        ->excludes(comm_opt)
        ->excludes(pid_opt);
    run_cmd->add_option("-d,--duration", duration, "Stop after this many seconds")
        ->check(CLI::PositiveNumber);
    run_cmd->add_option("--format", table_format, "Format of the attribution tables")
        ->check(CLI::IsMember({"table", "json"}));
    run_cmd->add_flag("--ttl-evidence", run.ttl_evidence,
                      "Record the TTL of the backend's data and of each reset, to tell a middlebox's reset "
                      "from the backend's when the backend is on another host (one BPF run per received "
                      "TCP segment)");
    run_cmd->add_flag("--check", run.check,
                      "Print what this kernel and these privileges allow (evidence, causes, program builds) "
                      "and exit: 0 if rstwatch can run here");
    run_cmd->add_flag("-v,--verbose", run.verbosity, "More logging, libbpf's included (repeatable)");
    run_cmd->add_option("--ring-buffer-kb", run.ring_buffer_kb, "Ring buffer size in KiB (power of two)")
        ->check([](const std::string &s) -> std::string {
            unsigned long kb = std::stoul(s);
            if (kb < 4 || (kb & (kb - 1)))
                return "must be a power of two of at least 4";
            return {};
        })
        ->group("Advanced");

    std::string socket_path = kDefaultSocketPath, store_path = kDefaultStorePath, metrics;
    run_cmd->add_option("--socket", socket_path, "Control socket for `rstwatch dump` (\"none\": no socket)")
        ->capture_default_str();
    run_cmd->add_option("--store", store_path, "SQLite store of every record (\"none\": keep nothing)")
        ->capture_default_str();
    run_cmd->add_option("--retain-days", run.retain_days, "Delete stored records older than this")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    run_cmd->add_option("--max-db-mb", run.max_db_mb, "Delete the oldest stored records past this size")
        ->check(CLI::Range(1ul, 1ul << 30))
        ->capture_default_str();
    run_cmd->add_option("--metrics", metrics,
                        "Serve Prometheus metrics on ADDR:PORT (a bare port is loopback), e.g. 127.0.0.1:9477");
    run_cmd->add_option("--log-file", run.log_file, "Log here instead of stderr (reopened on SIGHUP)");
    run_cmd->add_option("--record", run.record_path,
                        "Also write every raw record to FILE, to replay or attach to a bug report")
        ->group("Advanced");

    DumpSettings dump;
    std::string since;
    CLI::App *dump_cmd = app.add_subcommand("dump", "Print the tables of a running agent, or of a store");
    dump_cmd->footer(kDumpExamples);
    dump_cmd->add_option("--socket", dump.socket_path, "The agent's control socket")->capture_default_str();
    dump_cmd->add_option("--store", dump.store_path, "Read this store instead of asking an agent");
    dump_cmd->add_option("--by", dump.by, "One table: resets by worker, by upstream, or by cause")
        ->check(CLI::IsMember({"all", "worker", "upstream", "cause"}));
    dump_cmd->add_option("--since", since, "Only records this recent: 90s, 10m, 2h, 1d (read from the store)")
        ->check([](const std::string &s) -> std::string {
            return parse_duration(s) ? std::string() : "want a duration such as 90s, 10m, 2h or 1d";
        });
    dump_cmd->add_option("--format", dump.format, "table, json or csv (csv needs one table: --by)")
        ->check(CLI::IsMember({"table", "json", "csv"}));

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError &e) {
        std::ostringstream msg, err;
        out.exit_code = app.exit(e, msg, err);
        out.message = msg.str() + err.str();
        return out;
    }

    if (dump_cmd->parsed()) {
        if (!since.empty())
            dump.since_s = parse_duration(since);
        if (dump.format == "csv" && dump.by == "all")
            dump.by = "worker";
        out.action = CliOutcome::Action::Dump;
        out.dump = dump;
        return out;
    }

    run.socket_path = path_or_none(socket_path);
    run.store_path = path_or_none(store_path);
    if (!metrics.empty()) {
        std::string error;
        auto address = parse_listen_address(metrics, &error);
        if (!address) {
            out.exit_code = 2;
            out.message = "rstwatch: --metrics " + error + "\n";
            return out;
        }
        run.metrics_host = address->host;
        run.metrics_port = address->port;
    }

    if (comms.size() > RW_MAX_COMMS || pids.size() > RW_MAX_PIDS) {
        out.exit_code = 2;
        out.message = "rstwatch: at most " + std::to_string(RW_MAX_COMMS) + " --comm and " +
                      std::to_string(RW_MAX_PIDS) + " --pid values\n";
        return out;
    }
    for (uint32_t pid : pids) {
        if (!pid_exists(pid)) {
            out.exit_code = 2;
            out.message = "rstwatch: no process with pid " + std::to_string(pid) + "\n";
            return out;
        }
    }

    run.filter.all = all;
    run.filter.pids = pids;
    run.filter.comms = comms;
    if (!all && comms.empty() && pids.empty())
        run.filter.comms = {"nginx"};
    if (duration > 0)
        run.duration_s = duration;
    if (table_format.empty())
        run.table_format = run.json ? TableFormat::Json : TableFormat::Table;
    else
        run.table_format = table_format == "json" ? TableFormat::Json : TableFormat::Table;

    out.action = CliOutcome::Action::Run;
    out.run = run;
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
    if (scale == 0 || !(value > 0) || !std::isfinite(value))
        return std::nullopt;
    return value * scale;
}

}  // namespace rstwatch
