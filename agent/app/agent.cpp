#include "app/agent.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>

#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>

#include "control/control.h"
#include "events/decode.h"
#include "diagnosis/diagnosis.h"
#include "tables/dump.h"
#include "common/errors.h"
#include "outputs/evidence_text.h"
#include "outputs/format.h"
#include "kernel/kernel_features.h"
#include "kernel/kernel_support.h"
#include "kernel/loader.h"
#include "app/logging.h"
#include "outputs/metrics.h"
#include "outputs/metrics_server.h"
#include "outputs/output.h"
#include "kernel/procfs.h"
#include "kernel/reset_reason_names.h"
#include "kernel/ring_fill.h"
#include "kernel/seed.h"
#include "outputs/store.h"
#include "tables/tables.h"

namespace rstwatch {

namespace {

// Held events past which the consumer reports before its poll returns.
constexpr size_t kReportEvery = 1024;

volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_print_tables = 0;
volatile sig_atomic_t g_reopen = 0;

void on_stop_signal(int) { g_stop = 1; }
void on_tables_signal(int) { g_print_tables = 1; }
void on_reopen_signal(int) { g_reopen = 1; }

void install_signal_handlers()
{
    struct sigaction sa = {};
    sa.sa_handler = on_stop_signal;  // no SA_RESTART: the poll returns -EINTR
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    sa.sa_handler = on_tables_signal;
    sigaction(SIGUSR1, &sa, nullptr);
    sa.sa_handler = on_reopen_signal;  // logrotate: reopen the log and the store
    sigaction(SIGHUP, &sa, nullptr);
}

int64_t realtime_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

// Rebuilds tables from the store's records at or after since_ns.
uint64_t load_from_store(const std::string &path, int64_t since_ns, AttributionTables &tables)
{
    auto store = Store::open_read_only(path);
    uint64_t loaded = 0, skipped = 0;
    store->for_each(
        since_ns,
        [&](Event &&e) {
            tables.add(e);
            ++loaded;
        },
        &skipped);
    if (skipped)
        spdlog::warn("store {}: {} records could not be read back and were skipped", path, skipped);
    return loaded;
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

// Event lines and tables, to stdout through a NonBlockingOutput: a reader
// that stops reading costs lines on stdout, never the consumer's pace.
class Reporter {
public:
    explicit Reporter(const RunSettings &settings) : settings_(settings), out_(STDOUT_FILENO, {}) {}

    // After a batch of events, as stdio's fflush() was: one write per batch.
    void flush() { out_.flush(); }
    // The reader has not taken everything: the consumer comes back soon.
    bool pending() const { return out_.pending(); }

    bool wants_json() const { return settings_.json; }

    // `json`: the event's to_json_line(), which the caller has made for
    // the store too; required with --json.
    void event(const Event &e, const std::string &json)
    {
        if (settings_.json)
            out_.push_line(json);  // no copy but the one into the buffer
        else
            out_.push(format_text(e) + '\n');  // a "why:" and a "fix:" line follow the event's
    }

    void tables(const AttributionTables &t)
    {
        out_.push(settings_.table_format == TableFormat::Json ? t.to_json().dump() + "\n" : t.render_text());
        out_.flush();
    }

    // Says (at most every 10 s) that lines were not printed, and why.
    void log_not_printed(bool final_report)
    {
        const OutputStats &s = out_.stats();
        auto now = std::chrono::steady_clock::now();
        if (s.lines_dropped == logged_dropped_ || (!final_report && now - last_log_ < std::chrono::seconds(10)))
            return;
        logged_dropped_ = s.lines_dropped;
        last_log_ = now;
        spdlog::warn("{} lines not printed {}: {} (every event is still in the tables{})", s.lines_dropped,
                     final_report ? "in all" : "so far",
                     s.broken_errno ? "stdout failed (" + std::string(std::strerror(s.broken_errno)) + ")"
                                    : std::string("stdout is not being read fast enough, or at all"),
                     settings_.store_path.empty() ? "" : " and the store");
    }

    // The last lines get a bounded time to go out; the agent never hangs on stdout.
    void stop()
    {
        out_.stop();
        log_not_printed(true);
    }

private:
    const RunSettings &settings_;
    NonBlockingOutput out_;
    uint64_t logged_dropped_ = 0;
    std::chrono::steady_clock::time_point last_log_{};
};

// How full the BPF ring buffer is, as the consumer finds it: for the
// store's waits, the fill metric and the exit log. Reading it loads the
// producers' position, a cache line they write from other CPUs, so it is
// read at the first record after each wakeup (when the ring is fullest),
// every kEvery records after that, and when the store's queue is full:
// not for every record.
class RingFillWatch {
public:
    void attach(int map_fd, uint64_t bytes) { ring_.emplace(map_fd, bytes); }
    bool readable() const { return ring_ && ring_->ok(); }
    // The fill now; it counts towards the peaks.
    double sample()
    {
        const double fill = ring_ ? ring_->ratio() : 0;
        peak_ = std::max(peak_, fill);
        window_peak_ = std::max(window_peak_, fill);
        return fill;
    }
    void woke() { countdown_ = 0; }
    void took_record()
    {
        if (countdown_-- == 0) {
            sample();
            countdown_ = kEvery - 1;
        }
    }
    // The fullest over this window and the last: what the metric shows.
    double recent_peak(std::chrono::steady_clock::time_point now)
    {
        const double recent = std::max(window_peak_, last_window_peak_);
        if (now - window_start_ >= kWindow) {
            last_window_peak_ = window_peak_;
            window_peak_ = 0;
            window_start_ = now;
        }
        return recent;
    }
    double peak() const { return peak_; }

private:
    static constexpr uint32_t kEvery = 64;  // 12 KiB of records, 0.3% of the default ring
    static constexpr std::chrono::seconds kWindow{10};
    std::optional<RingFill> ring_;
    uint32_t countdown_ = 0;
    double peak_ = 0, window_peak_ = 0, last_window_peak_ = 0;
    std::chrono::steady_clock::time_point window_start_ = std::chrono::steady_clock::now();
};

}  // namespace

// `rstwatch run --check [--json]`: what this kernel gives, on stdout.
int print_kernel_check(const KernelFeatures &kernel, const std::vector<std::string> &missing, bool json)
{
    utsname uts{};
    uname(&uts);
    const KernelSupport support = probe_kernel_support(kernel);
    std::string out;
    if (json) {
        nlohmann::json j = {{"kernel", uts.release}, {"can_run", missing.empty()}, {"missing", missing}};
        if (kernel.has_vmlinux_btf())
            for (const SupportRow &row : support_rows(support))
                j["facilities"].push_back({{"facility", row.facility}, {"since", row.since}, {"present", row.present},
                                           {"without_it", row.present ? "" : row.without_it}});
        j["sent_resets_without_socket"] = kernel.has_vmlinux_btf() && support.sent_resets_without_socket;
        out = j.dump() + "\n";
    } else {
        out = std::string("kernel ") + uts.release + "\n";
        if (kernel.has_vmlinux_btf())
            out += support_table(support);
        for (const auto &m : missing)
            out += "cannot run: " + m + "\n";
        out += missing.empty() ? "rstwatch can run here\n" : "";
    }
    std::fputs(out.c_str(), stdout);
    return missing.empty() ? 0 : 1;
}

int run_agent(const RunSettings &settings)
{
    const KernelFeatures &kernel = running_kernel();
    auto missing = missing_prerequisites(kernel);
    if (settings.check)
        return print_kernel_check(kernel, missing, settings.json);
    if (!missing.empty()) {
        std::string all;
        for (const auto &m : missing)
            all += (all.empty() ? "" : "; ") + m;
        throw FatalError(all);
    }

    DecodeContext decode_ctx;
    decode_ctx.realtime_offset_ns = realtime_minus_monotonic_ns();
    std::string reasons_error;
    decode_ctx.reasons = load_reset_reasons(kernel, &reasons_error);
    if (!reasons_error.empty())
        spdlog::warn("reset reason names unavailable ({}); sent resets show reason numbers", reasons_error);
    for (const std::string &name : decode_ctx.reasons.unknown_names())
        spdlog::warn("reset reason {} is new to this build: shown as REASON_<n>", name);

    const KernelSupport support = probe_kernel_support(kernel);
    Diagnoser diagnoser(KernelEvidence{support.sent_resets_without_socket, support.oom_kills});
    AttributionTables tables(hint_text);
    Reporter reporter(settings);
    Metrics metrics;
    uint64_t consumer_errors = 0;  // records undecodable, or events that could not be reported

    // What could refuse a second agent (socket, store) comes first, before
    // anything attaches.
    RingFillWatch ring_fill;  // attached once the ring exists; outlives the writer, which asks it
    std::unique_ptr<StoreWriter> writer;
    MainThreadCalls main_thread;
    if (!settings.socket_path.empty())
        ControlServer::check_free(settings.socket_path);  // before a store file is made
    if (!settings.store_path.empty()) {
        StoreWriter::Options store_options;
        store_options.limits = {settings.retain_days, settings.max_db_mb};
        // A full queue means the writer is behind (a reset storm, a slow
        // disk). The ring buffer is then its overflow: its memory is paid
        // for anyway, and it holds an event in under 200 bytes where a
        // queued row takes about 1 KiB. So the consumer waits for room while
        // the ring is less than half full; past that it drops the row
        // (counted, "not stored") rather than let the ring overflow, since an
        // event lost there is lost to the output and the tables too.
        store_options.wait_for_room = [&ring_fill] {
            return ring_fill.readable() && ring_fill.sample() < 0.5 ? std::chrono::milliseconds(100)
                                                                   : std::chrono::milliseconds(0);
        };
        const std::string path = settings.store_path;
        writer = std::make_unique<StoreWriter>([path] { return Store::open_for_writing(path); }, store_options);
        // The tables start with what earlier runs saw, within retention.
        const int64_t since = realtime_ns() - static_cast<int64_t>(settings.retain_days * 86400.0 * 1e9);
        uint64_t loaded = load_from_store(path, since, tables);
        spdlog::info("store {}: {} earlier records loaded into the tables", path, loaded);
    }

    // The tables' view of the lost counts that metrics holds.
    auto set_lost_of = [&](AttributionTables &t) {
        LostTotals lost = metrics.lost();
        t.set_lost({lost.ring_buffer, lost.consumer});
        if (writer)
            t.set_not_stored(lost.store);
    };
    std::unique_ptr<ControlServer> control;
    if (!settings.socket_path.empty()) {
        auto handler = [&](const nlohmann::json &request) -> nlohmann::json {
            const std::string cmd = request["cmd"].get<std::string>();
            if (cmd == "ping")
                return {{"ok", true}, {"pid", getpid()}};
            if (cmd != "dump")
                return {{"error", "unknown command \"" + cmd + "\" (known: dump, ping)"}};
            if (!request.contains("since_s"))
                return main_thread.call(request, std::chrono::seconds(5));
            // --since: rebuilt from the store on this thread, so that reading
            // a large store never holds up the ring-buffer consumer.
            const auto &since = request["since_s"];
            if (!since.is_number() || since.get<double>() <= 0)
                return {{"error", "since_s must be a positive number of seconds"}};
            if (!writer)
                return {{"error", "--since reads the store, and this agent runs without one (--store none)"}};
            writer->flush();  // what was reported so far, in the store
            AttributionTables recent(hint_text);
            load_from_store(writer->path(), realtime_ns() - static_cast<int64_t>(since.get<double>() * 1e9), recent);
            set_lost_of(recent);
            nlohmann::json response = dump_response(recent, "store");
            response["since_s"] = since;
            return response;
        };
        control = std::make_unique<ControlServer>(settings.socket_path, handler);
        spdlog::info("control socket {} (rstwatch dump --socket {})", settings.socket_path, settings.socket_path);
    }
    std::unique_ptr<MetricsServer> metrics_server;
    if (!settings.metrics_host.empty()) {
        metrics_server = std::make_unique<MetricsServer>(ListenAddress{settings.metrics_host, settings.metrics_port}, metrics);
        std::string host = settings.metrics_host.find(':') != std::string::npos ? "[" + settings.metrics_host + "]"
                                                                                 : settings.metrics_host;
        spdlog::info("metrics on http://{}:{}/metrics", host, metrics_server->port());
        if (!is_loopback_host(settings.metrics_host))
            spdlog::warn("metrics served on {}, not loopback: anyone who can reach it sees upstream names", host);
    }

    auto report = [&](std::vector<Event> events) {
        for (const Event &event : events) {
            // A reset with no tracked owner is the far side of a flow: the
            // backend's own reset on this host. Shown only with --all.
            if (const auto *reset = std::get_if<ResetEvent>(&event); reset && !reset->owner_known &&
                                                                       !settings.filter.all)
                continue;
            // One event that cannot be shown (a bug, memory) is counted
            // with the undecodable ones; the agent and what it holds go on.
            try {
                tables.add(event);
                metrics.add(event);
                // Serialised once for the output and the store: in a reset storm
                // building JSON is most of the agent's work.
                std::string json;
                if (writer || reporter.wants_json())
                    json = to_json_line(event);
                // stdout never blocks (lines past its buffer are counted); the
                // store's push waits only as its wait_for_room allows.
                reporter.event(event, json);
                if (writer)
                    writer->push(make_store_row(event, std::move(json)));
            } catch (const std::exception &e) {
                if (consumer_errors++ == 0)
                    spdlog::error("cannot report an event: {}", e.what());
            }
        }
    };

    auto on_record = [&](std::span<const uint8_t> bytes) {
        ring_fill.took_record();
        DecodeResult decoded = decode_record(bytes, decode_ctx);
        if (!decoded.event) {
            if (consumer_errors++ == 0)
                spdlog::error("undecodable record from BPF: {}", decoded.error);
            return;
        }
        if (auto *oom = std::get_if<OomEvent>(&*decoded.event))
            if (oom->cgroup.empty())  // not read by BPF: the victim was not on the CPU
                oom->cgroup = printable_name(procfs::cgroup_path(oom->pid));
        // Every event is evidence, shown or not.
        diagnoser.add(std::move(*decoded.event));
        // One poll hands over everything waiting in the ring: after a stall
        // that is thousands of records. Report as we go, so that a backlog
        // is never all decoded in memory at once (events older than the
        // hold-back leave at once).
        if (diagnoser.held() >= kReportEvery)
            report(diagnoser.take_ready(monotonic_ns()));
    };
    LoaderOptions options;
    options.filter = settings.filter;
    options.ring_buffer_bytes = settings.ring_buffer_kb * 1024;
    options.ttl_evidence = settings.ttl_evidence;
    install_signal_handlers();
    BpfSession session(options, kernel, on_record);
    ring_fill.attach(session.records_map_fd(), options.ring_buffer_bytes);
    if (!ring_fill.readable())
        spdlog::debug("ring buffer fill level not readable: rstwatch_ring_buffer_fill_ratio stays 0");

    SeedReport seed = seed_listeners(session.listeners_map_fd(), session.listened_ports(), settings.filter);
    for (const auto &problem : seed.problems)
        spdlog::warn("seeding: {}", problem);
    std::string what = settings.filter.all ? std::string("every process") : std::string();
    for (const auto &c : settings.filter.comms)
        what += (what.empty() ? "comm " : ", comm ") + c;
    for (auto p : settings.filter.pids)
        what += (what.empty() ? "pid " : ", pid ") + std::to_string(p) + " and children";
    std::string hooks;
    for (const auto &h : session.attached_programs())
        hooks += (hooks.empty() ? "" : ", ") + h;
    spdlog::info("attached to {} hooks ({}); tracking {}; {} listening sockets of {} processes seeded",
                 session.attached_programs().size(), hooks, what, seed.listeners, seed.processes);
    if (std::string gaps = evidence_gaps_line(session.kernel_support(), settings.ttl_evidence); !gaps.empty())
        spdlog::warn("this kernel cannot give some evidence (rstwatch run --check): {}", gaps);

    using clock = std::chrono::steady_clock;
    const auto deadline = settings.duration_s
                              ? clock::now() + std::chrono::duration_cast<clock::duration>(
                                                   std::chrono::duration<double>(*settings.duration_s))
                              : clock::time_point::max();
    // Lost events, everywhere they are shown: metrics, tables and (when they
    // grow, at most every 10 s) the log.
    LostTotals logged_lost;
    auto last_lost_log = clock::now();
    auto publish_lost = [&] {
        BpfCounters bpf = session.counters();
        LostTotals lost{bpf.records_lost, consumer_errors, writer ? writer->stats().lost() : 0, bpf.owners_unresolved,
                        bpf.endpoints_dropped};
        metrics.set_lost(lost);
        set_lost_of(tables);
        bool grew = lost.ring_buffer > logged_lost.ring_buffer || lost.consumer > logged_lost.consumer ||
                    lost.store > logged_lost.store || lost.owners > logged_lost.owners ||
                    lost.endpoints > logged_lost.endpoints;
        if (grew && clock::now() - last_lost_log >= std::chrono::seconds(10)) {
            spdlog::warn("lost events so far: ring buffer full {} (raise --ring-buffer-kb), undecodable or unreportable {}, "
                         "not stored {}; resets whose owner no longer held their socket's credentials {}; "
                         "listeners not recorded (table full) {}",
                         lost.ring_buffer, lost.consumer, lost.store, lost.owners, lost.endpoints);
            logged_lost = lost;
            last_lost_log = clock::now();
        }
    };
    // Before the tables are shown: the clusters are computed only then.
    auto complete_tables = [&] {
        publish_lost();
        tables.set_idle_clusters(diagnoser.idle_clusters());
    };
    auto answer = [&](const nlohmann::json &) {
        complete_tables();
        nlohmann::json response = dump_response(tables, "live");
        response["pid"] = getpid();
        response["store"] = writer ? nlohmann::json(writer->path()) : nlohmann::json(nullptr);
        return response;
    };

    // A stopped nginx's listeners would name it as the owner of whatever
    // is accepted on its ports next. Workers started since the last sweep
    // (a reload) have their credentials learnt then, not in softirq.
    constexpr auto kListenerSweepEvery = std::chrono::seconds(10);
    auto last_sweep = clock::now();
    while (!g_stop && clock::now() < deadline) {
        // Idle, the agent wakes twice a second (signals, control requests and
        // metrics gauges); while events wait for their hold-back, or lines
        // for stdout's reader, sooner.
        int timeout_ms = diagnoser.holding() || reporter.pending() ? 60 : 500;
        if (deadline != clock::time_point::max())
            timeout_ms = static_cast<int>(std::clamp<int64_t>(
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count() + 1, 0,
                timeout_ms));
        ring_fill.woke();
        int n = session.poll(timeout_ms);
        if (n < 0 && n != -EINTR) {
            spdlog::error("ring buffer poll failed: {}", std::strerror(-n));
            break;
        }
        // Not a sample now: the poll has just drained the ring.
        metrics.set_ring_buffer_fill(ring_fill.recent_peak(clock::now()));
        report(diagnoser.take_ready(monotonic_ns()));
        reporter.flush();
        publish_lost();
        reporter.log_not_printed(false);
        if (clock::now() - last_sweep >= kListenerSweepEvery) {
            if (size_t gone = sweep_listeners(session.listeners_map_fd()))
                spdlog::debug("{} listeners whose process is gone forgotten", gone);
            session.learn_cred_holders();
            last_sweep = clock::now();
        }
        main_thread.run_pending(answer);
        if (g_print_tables) {
            g_print_tables = 0;
            complete_tables();
            reporter.tables(tables);
        }
        if (g_reopen) {
            g_reopen = 0;
            reopen_log();
            if (writer)
                writer->reopen();
        }
    }

    // Shutdown: stop answering, hand over what is held, flush the store;
    // the programs detach when the session goes.
    main_thread.close();
    control.reset();
    metrics_server.reset();
    session.drain();
    report(diagnoser.take_all());
    if (writer)
        writer->stop();
    complete_tables();
    reporter.tables(tables);
    reporter.stop();
    BpfCounters counters = session.counters();
    if (counters.records_lost)
        spdlog::warn("{} records lost: the ring buffer was full (raise --ring-buffer-kb)", counters.records_lost);
    if (counters.owners_unresolved)
        spdlog::warn("{} resets were on sockets whose credentials no process held any more: owner unknown",
                     counters.owners_unresolved);
    if (counters.endpoints_dropped)
        spdlog::warn("{} listeners were not recorded: their BPF table was full", counters.endpoints_dropped);
    if (writer) {
        StoreWriterStats s = writer->stats();
        spdlog::info("store {}: {} records written{}; queue peak {} of {} KiB, longest write {} ms", writer->path(),
                     s.written, s.lost() ? ", " + std::to_string(s.lost()) + " not written" : std::string(),
                     s.queue_peak_bytes >> 10, writer->options().queue_capacity_bytes >> 10,
                     s.longest_write.count() / 1000);
        if (s.waits_for_room)
            spdlog::info("store: the ring buffer held events while the store's queue was full: {} waits, {} ms in "
                         "all",
                         s.waits_for_room, s.waited_for_room.count() / 1000);
    }
    spdlog::info("detached after {} records (ring buffer peak fill {:.1f}%); {} owners looked up by the agent, {} "
                 "unresolved",
                 counters.records_emitted, ring_fill.peak() * 100, counters.owner_lookups, counters.owners_unresolved);
    return 0;
}

}  // namespace rstwatch
