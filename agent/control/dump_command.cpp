#include "control/dump_command.h"

#include <cstdio>

#include "common/errors.h"
#include "control/control.h"
#include "control/control_protocol.h"
#include "outputs/evidence_text.h"
#include "tables/dump.h"

namespace rstwatch {

namespace {

DumpBy by_of(const std::string &s)
{
    return s == "worker" ? DumpBy::Worker : s == "upstream" ? DumpBy::Upstream : s == "cause" ? DumpBy::Cause : DumpBy::All;
}

DumpFormat format_of(const std::string &s)
{
    return s == "json" ? DumpFormat::Json : s == "csv" ? DumpFormat::Csv : DumpFormat::Table;
}

nlohmann::json from_store(const DumpSettings &settings)
{
    AttributionTables tables(hint_text);
    uint64_t skipped = 0;
    add_from_store(settings.store_path, settings.since_s ? realtime_ns_ago(*settings.since_s) : 0, tables, &skipped);
    if (skipped)
        std::fprintf(stderr, "rstwatch: %llu records of the store could not be read and were skipped\n",
                     static_cast<unsigned long long>(skipped));
    return dump_response(tables, "store");
}

}  // namespace

int run_dump(const DumpSettings &settings)
{
    nlohmann::json response;
    if (!settings.store_path.empty()) {
        response = as_option("--store", [&] { return from_store(settings); });
    } else {
        nlohmann::json request = {{"cmd", "dump"}};
        if (settings.since_s)
            request["since_s"] = *settings.since_s;
        response = as_option("--socket", [&] { return control_request(settings.socket_path, request); });
        if (response.contains("error"))
            throw FatalError("the agent on " + settings.socket_path + " answered: " +
                             response["error"].get<std::string>());
    }
    std::string text = render_dump(response, by_of(settings.by), format_of(settings.format));
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
}

}  // namespace rstwatch
