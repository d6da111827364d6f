#include "kernel/reset_reason_names.h"

#include <fstream>
#include <sstream>

namespace rstwatch {

namespace {

void set_error(std::string *error, std::string text)
{
    if (error)
        *error = std::move(text);
}

}  // namespace

ResetReasonNames load_reset_reason_names(std::string *error)
{
    return load_reset_reason_names({"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}, error);
}

ResetReasonNames load_reset_reason_names(const std::vector<std::string> &tracefs_roots,
                                                     std::string *error)
{
    std::string problems;
    for (const std::string &root : tracefs_roots) {
        std::string path = root + "/events/tcp/tcp_send_reset/format";
        std::ifstream in(path);
        if (!in) {
            problems += (problems.empty() ? "" : "; ") + path + ": cannot read";
            continue;
        }
        std::ostringstream text;
        text << in.rdbuf();
        std::string parse_error;
        if (auto table = ResetReasonNames::parse_format(text.str(), &parse_error)) {
            if (error)
                error->clear();
            return *table;
        }
        problems += (problems.empty() ? "" : "; ") + path + ": " + parse_error;
    }
    set_error(error, "reset reason names unavailable (" + problems +
                         "); is tracefs mounted and are we root?");
    return {};
}

}  // namespace rstwatch
