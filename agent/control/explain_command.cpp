#include "control/explain_command.h"

#include <signal.h>
#include <time.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <csignal>
#include <functional>
#include <memory>
#include <thread>

#include "common/errors.h"
#include "control/control.h"
#include "control/log_reader.h"
#include "control/time_zone.h"
#include "explain/explain_output.h"
#include "explain/matcher.h"
#include "outputs/store.h"

namespace rstwatch {

namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kSecond = 1'000'000'000;
// A reset reaches the store within about a second: the agent reads the
// ring buffer at least twice a second, holds each event 50 ms for its
// evidence, and commits every 250 ms. So a line is decided once the store
// is this far past the latest time its reset could have.
constexpr int64_t kStoreSettle = 2 * kSecond;
// Asked over the socket, the agent first commits what it holds.
constexpr int64_t kAgentSettle = 1 * kSecond;
constexpr auto kFlushEvery = std::chrono::milliseconds(250);
constexpr auto kPollEvery = std::chrono::milliseconds(250);
// A line stamped further ahead than this (another zone, a wrong clock) is
// not waited for.
constexpr int64_t kFutureLimit = 10 * kSecond;

volatile std::sig_atomic_t g_stop = 0;

int64_t realtime_now_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * kSecond + ts.tv_nsec;
}

std::string string_or(const nlohmann::json &j, const char *key, const std::string &fallback)
{
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

// A stored record's JSON (docs/usage.md, "type": "rst"), as explain uses it.
std::optional<ResetRecord> record_from_row(const Store::StoredReset &row)
{
    auto j = nlohmann::json::parse(row.json, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object())
        return std::nullopt;
    auto pid = j.find("pid");
    if (pid == j.end() || !pid->is_number_integer())
        return std::nullopt;
    ResetRecord r;
    r.id = row.id;
    r.time_ns = row.time_ns;
    r.pid = pid->get<uint32_t>();
    const std::string remote = string_or(j, "remote", "");
    r.upstream = canonical_address(remote).value_or(remote);
    r.cause = string_or(j, "cause", "unknown");
    r.confidence = string_or(j, "confidence", "low");
    r.hint = string_or(j, "hint", "");
    if (auto evidence = j.find("evidence"); evidence != j.end() && evidence->is_array())
        for (const auto &fact : *evidence)
            if (fact.is_string())
                r.evidence.push_back(fact.get<std::string>());
    return r;
}

// The store, read-only, while an agent may be writing it. With `flush`
// (an agent's store, found through its socket), the agent is asked to
// write out what it holds before the newest records are relied on.
class StoreResets : public ResetRecords {
public:
    StoreResets(std::unique_ptr<Store> store, std::function<void()> flush)
        : store_(std::move(store)), flush_(std::move(flush))
    {
    }

    std::vector<ResetRecord> upstream_resets(int64_t from_ns, int64_t to_ns, size_t limit) override
    {
        std::vector<ResetRecord> out;
        for (const Store::StoredReset &row : store_->upstream_resets(from_ns, to_ns, limit)) {
            if (auto r = record_from_row(row))
                out.push_back(std::move(*r));
            else
                ++unreadable_;
        }
        return out;
    }
    std::optional<int64_t> first_record_ns() override
    {
        if (!first_)
            first_ = store_->first_time_ns();  // an empty store may fill up while followed
        return first_;
    }
    bool has_records_of(uint32_t pid, int64_t from_ns, int64_t to_ns) override
    {
        return store_->has_records_of(pid, from_ns, to_ns);
    }
    int64_t complete_until_ns(int64_t wanted_ns) override
    {
        // Later than this host's clock (another host's store, a clock set
        // back): no reset of then is still on its way.
        if (wanted_ns > realtime_now_ns() + kFutureLimit)
            return wanted_ns;
        if (!flush_)
            return realtime_now_ns() - kStoreSettle;
        if (wanted_ns > agent_complete_until_ && Clock::now() - last_flush_ >= kFlushEvery) {
            last_flush_ = Clock::now();
            agent_complete_until_ = realtime_now_ns() - kAgentSettle;
            flush_();
        }
        return agent_complete_until_;
    }
    uint64_t unreadable() const { return unreadable_; }
    const std::string &path() const { return store_->path(); }

private:
    std::unique_ptr<Store> store_;
    std::function<void()> flush_;
    std::optional<int64_t> first_;
    Clock::time_point last_flush_{};
    int64_t agent_complete_until_ = 0;
    uint64_t unreadable_ = 0;
};

// The agent on the socket writes out what it holds and says where its store is.
std::string flush_agent(const std::string &socket_path)
{
    nlohmann::json response;
    try {
        response = control_request(socket_path, {{"cmd", "flush"}});
    } catch (const FatalError &e) {
        throw FatalError(e.what(), "start `rstwatch run`, or give explain the store it writes (--store)");
    }
    if (response.contains("error")) {
        const std::string error = response["error"].get<std::string>();
        throw FatalError("the agent on " + socket_path + " answered: " + error,
                         error.find("unknown command") != std::string::npos
                             ? "an agent older than `rstwatch explain` cannot be asked: give its --store instead"
                             : "explain needs the agent's records: run it with a store (the default)");
    }
    if (!response.contains("store") || !response["store"].is_string())
        throw FatalError("the agent on " + socket_path + " gave no store path");
    return response["store"].get<std::string>();
}

std::unique_ptr<StoreResets> open_records(const ExplainSettings &settings)
{
    if (settings.socket_path.empty()) {
        auto store = as_option("--store", [&] { return Store::open_read_only(settings.store_path); });
        return std::make_unique<StoreResets>(std::move(store), nullptr);
    }
    const std::string socket = settings.socket_path;
    const std::string path = as_option("--socket", [&] { return flush_agent(socket); });
    auto store = as_option("--socket", [&] { return Store::open_read_only(path); });
    auto flush = [socket, warned = false]() mutable {
        try {
            flush_agent(socket);
        } catch (const FatalError &e) {
            if (!std::exchange(warned, true))
                spdlog::warn("{} (reading the store on its own from now on)", e.what());
        }
    };
    return std::make_unique<StoreResets>(std::move(store), flush);
}

void on_stop_signal(int) { g_stop = 1; }

// SIGINT and SIGTERM end a --follow with the summary: the loops look at
// the flag at least every 250 ms.
void stop_on_signals()
{
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
}

// Log lines are bytes: what is not UTF-8 is replaced, not thrown over.
std::string json_line(const Explanation &e)
{
    return explanation_json(e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

// One pass over the input: every line is parsed, the upstream failures
// among them explained and printed as they come.
class ExplainRun {
public:
    ExplainRun(const ExplainSettings &settings, std::FILE *out, StoreResets &records)
        : settings_(settings), out_(out), records_(records), explainer_(records, local_to_utc)
    {
        if (settings.since_s)
            since_ns_ = realtime_now_ns() - static_cast<int64_t>(std::min(*settings.since_s, 1e11) * 1e9);
    }

    // What `reader` has now.
    void read(LogReader &reader)
    {
        while (!g_stop) {
            auto text = reader.next();
            if (!text)
                return;
            summary_.count_line_read();
            if (auto failure = parse_upstream_failure(*text))
                explain(std::move(*failure));
        }
    }

    void finish()
    {
        if (!settings_.json)
            std::fputs(summary_.text().c_str(), out_);
        std::fflush(out_);
        if (records_.unreadable())
            spdlog::warn("{}: {} records could not be read back and were left out", records_.path(),
                         records_.unreadable());
    }

private:
    void explain(UpstreamFailureLine line)
    {
        if (since_ns_) {
            const std::vector<int64_t> seconds = explainer_.utc_seconds(line);
            if (!seconds.empty() && (seconds.back() + 1) * kSecond <= *since_ns_)
                return;
        }
        wait_for_records(line);
        Explanation e = explainer_.explain(std::move(line));
        const std::string text = settings_.json ? json_line(e) : explanation_text(e);
        std::fwrite(text.data(), 1, text.size(), out_);
        if (settings_.follow)
            std::fflush(out_);
        summary_.add(e);
    }

    // A line of the last seconds: its reset may not be in the store yet.
    void wait_for_records(const UpstreamFailureLine &line)
    {
        const std::optional<int64_t> end = explainer_.window_end_ns(line);
        if (!end || line.kind == FailureKind::PrematureClose)
            return;
        while (!g_stop && *end <= realtime_now_ns() + kFutureLimit && records_.complete_until_ns(*end) < *end)
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }

    const ExplainSettings &settings_;
    std::FILE *out_;
    StoreResets &records_;
    Explainer explainer_;
    ExplainSummary summary_;
    std::optional<int64_t> since_ns_;
};

std::vector<std::unique_ptr<LogReader>> open_logs(const ExplainSettings &settings)
{
    // --follow starts at the files' ends, unless --since asks for their last lines.
    const bool from_end = settings.follow && !settings.since_s;
    std::vector<std::unique_ptr<LogReader>> readers;
    for (const std::string &path : settings.files) {
        auto reader = std::make_unique<LogReader>(path, settings.follow, from_end);
        if (from_end && !reader->followed() && path != "-") {
            spdlog::info("{}: not followed (it does not grow); --since reads its last lines", path);
            continue;
        }
        readers.push_back(std::move(reader));
    }
    return readers;
}

void follow(ExplainRun &run, std::vector<std::unique_ptr<LogReader>> &readers)
{
    std::string names;
    for (const auto &reader : readers)
        if (reader->followed())
            names += (names.empty() ? "" : ", ") + reader->path();
    if (names.empty()) {
        spdlog::warn("--follow: none of the files can be followed (standard input and .gz files are read once)");
        return;
    }
    spdlog::info("following {} (Ctrl-C for the summary)", names);
    while (!g_stop) {
        for (auto &reader : readers) {
            reader->check_rotation();
            run.read(*reader);
        }
        std::this_thread::sleep_for(kPollEvery);
    }
}

}  // namespace

int run_explain(const ExplainSettings &settings, std::FILE *out)
{
    use_time_zone(settings.time_zone);
    // The logs first: the command's own input, and the likelier mistake.
    std::vector<std::unique_ptr<LogReader>> readers = open_logs(settings);
    std::unique_ptr<StoreResets> records = open_records(settings);
    if (out == stdout)
        std::setvbuf(stdout, nullptr, settings.follow ? _IOLBF : _IOFBF, 1 << 20);
    if (settings.follow)
        stop_on_signals();
    g_stop = 0;
    ExplainRun run(settings, out, *records);
    for (auto &reader : readers)
        run.read(*reader);
    if (settings.follow)
        follow(run, readers);
    run.finish();
    return 0;
}

}  // namespace rstwatch
