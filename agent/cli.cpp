#include "cli.h"

#include <CLI/CLI.hpp>

#include <sstream>

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
)";

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
    run_cmd->add_flag("-v,--verbose", run.verbosity, "More logging, libbpf's included (repeatable)");
    run_cmd->add_option("--ring-buffer-kb", run.ring_buffer_kb, "Ring buffer size in KiB (power of two)")
        ->check([](const std::string &s) -> std::string {
            unsigned long kb = std::stoul(s);
            if (kb < 4 || (kb & (kb - 1)))
                return "must be a power of two of at least 4";
            return {};
        })
        ->group("Advanced");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError &e) {
        std::ostringstream msg, err;
        out.exit_code = app.exit(e, msg, err);
        out.message = msg.str() + err.str();
        return out;
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

}  // namespace rstwatch
