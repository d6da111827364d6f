// The rstwatch binary the tests run: the build's own, or the one named by
// RSTWATCH_BIN in the environment (the kernel matrix installs the .deb in
// each guest and runs the tests on /usr/bin/rstwatch).
#pragma once

#include <cstdlib>

#ifndef RSTWATCH_BUILT_BIN
#error "RSTWATCH_BUILT_BIN: the build's rstwatch, set by tests/*/CMakeLists.txt"
#endif

namespace rwtest {

inline const char *agent_binary()
{
    const char *installed = std::getenv("RSTWATCH_BIN");
    return installed && *installed ? installed : RSTWATCH_BUILT_BIN;
}

}  // namespace rwtest

#define RSTWATCH_BIN (rwtest::agent_binary())
