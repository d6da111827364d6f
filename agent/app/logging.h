// Where the agent logs: stderr (events own stdout), or a file that SIGHUP
// reopens after logrotate moved it.
#pragma once

#include <string>

namespace rstwatch {

// Installs the default logger; throws FatalError if the file cannot be
// opened. With stderr_never_blocks (the agent), a log on stderr is written
// without ever blocking the thread that logs (NonBlockingLogSink, output.h).
void setup_logging(const std::string &file, int verbosity, bool stderr_never_blocks = false);
// Reopens the log file (a no-op when logging to stderr).
void reopen_log();

}  // namespace rstwatch
