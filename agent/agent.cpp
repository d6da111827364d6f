#include "agent.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "decode.h"
#include "diagnosis.h"
#include "errors.h"
#include "format.h"
#include "kernel_features.h"
#include "loader.h"
#include "procfs.h"
#include "reset_reasons.h"
#include "seed.h"
#include "tables.h"

namespace rstwatch {

namespace {

volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_print_tables = 0;

void on_stop_signal(int) { g_stop = 1; }
void on_tables_signal(int) { g_print_tables = 1; }

void install_signal_handlers()
{
    struct sigaction sa = {};
    sa.sa_handler = on_stop_signal;  // no SA_RESTART: the poll returns -EINTR
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    sa.sa_handler = on_tables_signal;
    sigaction(SIGUSR1, &sa, nullptr);
}

uint64_t monotonic_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + ts.tv_nsec;
}

int64_t realtime_minus_monotonic_ns()
{
    timespec rt{}, mono{};
    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_gettime(CLOCK_REALTIME, &rt);
    return (rt.tv_sec - mono.tv_sec) * 1'000'000'000LL + (rt.tv_nsec - mono.tv_nsec);
}

// Writes event lines and tables to stdout, flushed once per batch.
class Reporter {
public:
    Reporter(const RunSettings &settings) : settings_(settings) {}

    void event(const Event &e)
    {
        std::string line = settings_.json ? to_json(e).dump() : format_text(e);
        line += '\n';
        std::fwrite(line.data(), 1, line.size(), stdout);
    }

    void tables(const AttributionTables &t)
    {
        std::string text = settings_.table_format == TableFormat::Json ? t.to_json().dump() + "\n"
                                                                        : t.render_text();
        std::fwrite(text.data(), 1, text.size(), stdout);
        flush();
    }

    void flush() { std::fflush(stdout); }

private:
    const RunSettings &settings_;
};

}  // namespace

int run_agent(const RunSettings &settings)
{
    const KernelFeatures &kernel = running_kernel();
    auto missing = missing_prerequisites(kernel);
    if (!missing.empty()) {
        std::string all;
        for (const auto &m : missing)
            all += (all.empty() ? "" : "; ") + m;
        throw FatalError(all);
    }

    std::string reasons_error;
    ResetReasonNames reasons = ResetReasonNames::load_from_tracefs(&reasons_error);
    if (!reasons_error.empty())
        spdlog::warn("reset reason names unavailable ({}); sent resets show reason numbers", reasons_error);

    DecodeContext decode_ctx;
    decode_ctx.realtime_offset_ns = realtime_minus_monotonic_ns();
    decode_ctx.reason_name = [&reasons](uint32_t code) { return reasons.name(code); };

    Diagnoser diagnoser;
    AttributionTables tables;
    Reporter reporter(settings);
    uint64_t decode_errors = 0;

    auto on_record = [&](std::span<const uint8_t> bytes) {
        DecodeResult decoded = decode_record(bytes, decode_ctx);
        if (!decoded.event) {
            if (decode_errors++ == 0)
                spdlog::error("undecodable record from BPF: {}", decoded.error);
            return;
        }
        if (auto *oom = std::get_if<OomEvent>(&*decoded.event))
            oom->cgroup = procfs::cgroup_path(oom->pid);  // now, while the victim is still there
        // Every event is evidence, shown or not.
        diagnoser.add(std::move(*decoded.event));
    };
    auto report = [&](std::vector<Event> events) {
        for (const Event &event : events) {
            // A reset with no tracked owner is the far side of a flow: the
            // backend's own reset on this host. Shown only with --all.
            if (const auto *reset = std::get_if<ResetEvent>(&event); reset && !reset->owner_known &&
                                                                       !settings.filter.all)
                continue;
            tables.add(event);
            reporter.event(event);
        }
    };

    LoaderOptions options;
    options.filter = settings.filter;
    options.ring_buffer_bytes = settings.ring_buffer_kb * 1024;
    install_signal_handlers();
    BpfSession session(options, kernel, on_record);

    SeedReport seed = seed_existing_connections(session.conns_map_fd(), settings.filter);
    for (const auto &problem : seed.problems)
        spdlog::warn("seeding: {}", problem);
    std::string what = settings.filter.all ? std::string("every process") : std::string();
    for (const auto &c : settings.filter.comms)
        what += (what.empty() ? "comm " : ", comm ") + c;
    for (auto p : settings.filter.pids)
        what += (what.empty() ? "pid " : ", pid ") + std::to_string(p) + " and children";
    spdlog::info("attached to {} tracepoints; tracking {}; {} existing connections of {} processes seeded",
                 session.attached_programs().size(), what, seed.seeded, seed.processes);

    using clock = std::chrono::steady_clock;
    const auto deadline = settings.duration_s
                              ? clock::now() + std::chrono::duration_cast<clock::duration>(
                                                   std::chrono::duration<double>(*settings.duration_s))
                              : clock::time_point::max();
    // What the tables show beyond the events themselves, refreshed before each print.
    auto publish_lost = [&] {
        tables.set_lost({session.counters().records_lost, decode_errors});
        tables.set_idle_clusters(diagnoser.idle_clusters());
    };

    while (!g_stop && clock::now() < deadline) {
        int n = session.poll(100);
        if (n < 0 && n != -EINTR) {
            spdlog::error("ring buffer poll failed: {}", std::strerror(-n));
            break;
        }
        report(diagnoser.take_ready(monotonic_ns()));
        reporter.flush();
        if (g_print_tables) {
            g_print_tables = 0;
            publish_lost();
            reporter.tables(tables);
        }
    }

    session.drain();
    report(diagnoser.take_all());
    publish_lost();
    reporter.tables(tables);
    BpfCounters counters = session.counters();
    if (counters.records_lost)
        spdlog::warn("{} records lost: the ring buffer was full (raise --ring-buffer-kb)", counters.records_lost);
    spdlog::info("detached after {} records", counters.records_emitted);
    return 0;
}

}  // namespace rstwatch
