// rstwatch: pins every TCP reset on the nginx worker that owned the
// connection, its upstream and its idle age. main() only parses the command
// line, sets up logging and turns fatal errors into one clear message.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "agent.h"
#include "cli.h"
#include "errors.h"
#include "loader.h"
#include "procfs.h"

int main(int argc, char **argv)
{
    using namespace rstwatch;
    CliOutcome cli = parse_command_line(argc, argv, procfs::pid_exists);
    if (cli.action == CliOutcome::Action::Exit) {
        std::fputs(cli.message.c_str(), cli.exit_code ? stderr : stdout);
        return cli.exit_code;
    }

    // Events own stdout; the log goes to stderr.
    auto logger = spdlog::stderr_color_mt("rstwatch");
    logger->set_pattern("rstwatch: [%l] %v");
    spdlog::set_default_logger(logger);
    spdlog::set_level(cli.run.verbosity > 1   ? spdlog::level::trace
                      : cli.run.verbosity > 0 ? spdlog::level::debug
                                              : spdlog::level::info);
    route_libbpf_logging(cli.run.verbosity > 0);

    try {
        return run_agent(cli.run);
    } catch (const FatalError &e) {
        spdlog::error("{}", e.what());
        if (!e.hint().empty())
            spdlog::error("hint: {}", e.hint());
        return 1;
    }
}
