// rstwatch: pins every TCP reset on the nginx worker that owned the
// connection, its upstream and its idle age. main() only parses the command
// line, sets up logging and turns fatal errors into one clear message.
#include <spdlog/spdlog.h>

#include <cstdio>

#include "app/agent.h"
#include "app/cli.h"
#include "control/dump_command.h"
#include "common/errors.h"
#include "kernel/loader.h"
#include "app/logging.h"
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
        // Events own stdout; the log goes to stderr (or --log-file).
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
