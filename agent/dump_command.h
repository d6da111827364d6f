// `rstwatch dump`: asks the running agent over its control socket, or reads
// a store when no agent runs, and prints the tables.
#pragma once

#include "cli.h"

namespace rstwatch {

// Returns the exit code; throws FatalError with a hint.
int run_dump(const DumpSettings &settings);

}  // namespace rstwatch
