// `rstwatch run`: load, attach, seed, then turn ring-buffer records into
// lines and attribution tables until told to stop.
#pragma once

#include "app/cli.h"

namespace rstwatch {

// Returns the process exit code; throws FatalError for what stops the start.
int run_agent(const RunSettings &settings);

}  // namespace rstwatch
