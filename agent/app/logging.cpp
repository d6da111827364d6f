#include "app/logging.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "common/errors.h"
#include "outputs/output.h"

namespace rstwatch {

namespace {

std::string g_file;
bool g_stderr_never_blocks = false;

std::shared_ptr<spdlog::logger> make_logger()
{
    std::shared_ptr<spdlog::logger> logger;
    if (g_file.empty()) {
        if (g_stderr_never_blocks) {
            logger = std::make_shared<spdlog::logger>("rstwatch", std::make_shared<NonBlockingLogSink>(STDERR_FILENO));
            spdlog::register_logger(logger);
        } else {
            logger = spdlog::stderr_color_mt("rstwatch");
        }
        logger->set_pattern("rstwatch: [%l] %v");
    } else {
        try {
            logger = spdlog::basic_logger_mt("rstwatch", g_file);
        } catch (const spdlog::spdlog_ex &e) {
            throw FatalError(std::string("cannot open the log file: ") + e.what(), "check --log-file");
        }
        logger->set_pattern("%Y-%m-%dT%H:%M:%S.%f%z rstwatch[%P]: [%l] %v");
        logger->flush_on(spdlog::level::info);
    }
    return logger;
}

}  // namespace

void setup_logging(const std::string &file, int verbosity, bool stderr_never_blocks)
{
    g_file = file;
    g_stderr_never_blocks = stderr_never_blocks;
    spdlog::drop("rstwatch");
    auto logger = make_logger();
    spdlog::set_default_logger(logger);
    spdlog::set_level(verbosity > 1   ? spdlog::level::trace
                      : verbosity > 0 ? spdlog::level::debug
                                      : spdlog::level::info);
}

void reopen_log()
{
    if (g_file.empty())
        return;
    auto level = spdlog::get_level();
    spdlog::drop("rstwatch");
    try {
        spdlog::set_default_logger(make_logger());
    } catch (const FatalError &e) {
        // Keep logging somewhere rather than nowhere.
        g_file.clear();
        spdlog::set_default_logger(make_logger());
        spdlog::error("{}; logging to stderr", e.what());
    }
    spdlog::set_level(level);
    spdlog::info("log reopened");
}

}  // namespace rstwatch
