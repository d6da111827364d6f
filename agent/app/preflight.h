// What refuses `rstwatch run` before it creates anything: missing privileges
// or kernel facilities, and paths it could not use. The checks themselves
// create nothing, so a refused start leaves no store file, socket or log
// behind.
#pragma once

#include "app/cli.h"

namespace rstwatch {

// Throws FatalError naming the option at fault (--store, --socket,
// --log-file, --metrics). With --check only the log file is checked: the
// check's own report says what the kernel or the privileges lack.
void check_before_start(const RunSettings &settings);

}  // namespace rstwatch
