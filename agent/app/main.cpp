// rstwatch: pins every TCP reset on the nginx worker that owned the
// connection, its upstream and its idle age. main() only parses the command
// line, sets up logging and turns fatal errors into one clear message.
#include <spdlog/spdlog.h>

#include <cstdio>

#include "app/agent.h"
#include "app/cli.h"
#include "control/dump_command.h"
#include "control/explain_command.h"
#include "common/errors.h"
#include "kernel/loader.h"
#include "app/logging.h"
#include "app/preflight.h"
#include "kernel/procfs.h"

int main(int argc, char **argv)
{
    using namespace rstwatch;
    CliOutcome cli = parse_command_line(argc, argv, procfs::pid_exists);
    if (cli.action == CliOutcome::Action::Exit) {
        std::fputs(cli.message.c_str(), cli.exit_code ? stderr : stdout);
        return cli.exit_code;
    }

    try {
        if (cli.action == CliOutcome::Action::Dump) {
            setup_logging("", 0);
            return run_dump(cli.dump);
        }
        if (cli.action == CliOutcome::Action::Explain) {
            setup_logging("", 0);
            return run_explain(cli.explain);
        }
        // Events own stdout; the log goes to stderr, and to --log-file only
        // once the start is sure: a refused start creates nothing.
        setup_logging("", cli.run.verbosity, /*stderr_never_blocks=*/true);
        check_before_start(cli.run);
        if (!cli.run.log_file.empty())
            setup_logging(cli.run.log_file, cli.run.verbosity, /*stderr_never_blocks=*/true);
        route_libbpf_logging(cli.run.verbosity > 0);
        return run_agent(cli.run);
    } catch (const FatalError &e) {
        spdlog::error("{}", e.what());
        if (!e.hint().empty())
            spdlog::error("hint: {}", e.hint());
        return 1;
    }
}
