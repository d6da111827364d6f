// `rstwatch dump`: asks the running agent over its control socket, or reads
// a store when no agent runs, and prints the tables.
#pragma once

#include <optional>
#include <string>

#include "control/control.h"

namespace rstwatch {

struct DumpSettings {
    std::string socket_path = kDefaultSocketPath;
    std::string store_path;             // set: read this store, no agent needed
    std::string by = "all";             // all | worker | upstream | cause
    std::optional<double> since_s;      // only records this recent (from the store)
    std::string format = "table";       // table | json | csv
};

// Returns the exit code; throws FatalError with a hint.
int run_dump(const DumpSettings &settings);

}  // namespace rstwatch
