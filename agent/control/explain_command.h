// `rstwatch explain`: nginx's error log, each upstream-failure line with the
// reset the agent recorded for it (agent/explain matches them), from the
// store or from a running agent's.
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace rstwatch {

constexpr const char *kDefaultErrorLog = "/var/log/nginx/error.log";

struct ExplainSettings {
    std::string store_path;             // read this store ...
    std::string socket_path;            // ... or the store of the agent on this socket
    std::optional<double> since_s;      // only lines this recent
    bool follow = false;                // read on as the logs grow (tail -F)
    bool json = false;                  // one JSON object per line, no summary
    std::string time_zone;              // nginx's; "" for the host's
    std::vector<std::string> files{kDefaultErrorLog};  // "-": standard input
};

// Returns the exit code; throws FatalError naming the file or option at fault.
int run_explain(const ExplainSettings &settings, std::FILE *out = stdout);

}  // namespace rstwatch
