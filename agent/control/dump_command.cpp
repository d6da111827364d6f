#include "control/dump_command.h"

#include <time.h>

#include <cstdio>

#include "control/control.h"
#include "tables/dump.h"
#include "common/errors.h"
#include "outputs/evidence_text.h"
#include "outputs/store.h"

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

}  // namespace

int run_dump(const DumpSettings &settings)
{
    nlohmann::json response;
    if (!settings.store_path.empty()) {
        auto store = Store::open_read_only(settings.store_path);
        int64_t since_ns = 0;
        if (settings.since_s) {
            timespec ts{};
            clock_gettime(CLOCK_REALTIME, &ts);
            since_ns = ts.tv_sec * 1'000'000'000LL + ts.tv_nsec - static_cast<int64_t>(*settings.since_s * 1e9);
        }
        AttributionTables tables(hint_text);
        uint64_t skipped = 0;
        store->for_each(since_ns, [&](Event &&e) { tables.add(e); }, &skipped);
        if (skipped)
            std::fprintf(stderr, "rstwatch: %llu records of the store could not be read and were skipped\n",
                         static_cast<unsigned long long>(skipped));
        response = dump_response(tables, "store");
    } else {
        nlohmann::json request = {{"cmd", "dump"}};
        if (settings.since_s)
            request["since_s"] = *settings.since_s;
        response = control_request(settings.socket_path, request);
        if (response.contains("error"))
            throw FatalError("the agent on " + settings.socket_path + " answered: " +
                             response["error"].get<std::string>());
    }
    std::string text = render_dump(response, by_of(settings.by), format_of(settings.format));
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
}

}  // namespace rstwatch
