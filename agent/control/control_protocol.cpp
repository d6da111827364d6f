#include "control/control_protocol.h"

#include <time.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <filesystem>

#include "outputs/evidence_text.h"
#include "outputs/store.h"
#include "tables/dump.h"

namespace rstwatch {

namespace {

// --since: rebuilt from the store on the client's thread, so that reading a
// large store never holds up the ring-buffer consumer.
nlohmann::json dump_since(const ControlledAgent &agent, const nlohmann::json &since)
{
    if (!since.is_number() || !(since.get<double>() > 0))
        return {{"error", "since_s must be a positive number of seconds"}};
    if (agent.store_path.empty())
        return {{"error", "--since reads the store, and this agent runs without one (--store none)"}};
    agent.flush_store();
    AttributionTables recent(hint_text);
    uint64_t skipped = 0;
    add_from_store(agent.store_path, realtime_ns_ago(since.get<double>()), recent, &skipped);
    if (skipped)
        spdlog::warn("store {}: {} records could not be read back and were skipped", agent.store_path, skipped);
    agent.fill_lost(recent);
    nlohmann::json response = dump_response(recent, "store");
    response["since_s"] = since;
    return response;
}

// For `rstwatch explain --socket`: everything reported so far is in the
// store when this answers, and the client reads it there.
nlohmann::json flush(const ControlledAgent &agent)
{
    if (agent.store_path.empty())
        return {{"error", "this agent runs without a store (--store none): explain needs its records"}};
    agent.flush_store();
    std::error_code ec;
    const std::filesystem::path absolute = std::filesystem::absolute(agent.store_path, ec);
    return {{"ok", true}, {"store", ec ? agent.store_path : absolute.string()}};
}

}  // namespace

ControlServer::Handler control_protocol(ControlledAgent agent)
{
    return [agent = std::move(agent)](const nlohmann::json &request) -> nlohmann::json {
        const std::string cmd = request["cmd"].get<std::string>();
        if (cmd == "ping")
            return {{"ok", true}, {"pid", getpid()}};
        if (cmd == "flush")
            return flush(agent);
        if (cmd != "dump")
            return {{"error", "unknown command \"" + cmd + "\" (known: dump, flush, ping)"}};
        if (request.contains("since_s"))
            return dump_since(agent, request["since_s"]);
        return agent.main_thread->call(request, kLiveDumpTimeout);
    };
}

uint64_t add_from_store(const std::string &path, int64_t since_ns, AttributionTables &tables, uint64_t *skipped)
{
    auto store = Store::open_read_only(path);
    uint64_t added = 0;
    store->for_each(
        since_ns,
        [&](Event &&e) {
            tables.add(e);
            ++added;
        },
        skipped);
    return added;
}

int64_t realtime_ns_ago(double seconds)
{
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    // In double: a --since of 1e300 s must not overflow the int64.
    const double now_ns = ts.tv_sec * 1e9 + ts.tv_nsec;
    const double ago_ns = now_ns - seconds * 1e9;
    return ago_ns > 0 ? static_cast<int64_t>(ago_ns) : 0;
}

}  // namespace rstwatch
