#include "app/agent.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "app/logging.h"
#include "common/errors.h"
#include "control/control.h"
#include "control/control_protocol.h"
#include "diagnosis/diagnosis.h"
#include "kernel/kernel_features.h"
#include "kernel/kernel_support.h"
#include "kernel/loader.h"
#include "kernel/procfs.h"
#include "kernel/reset_reason_names.h"
#include "kernel/ring_fill.h"
#include "kernel/seed.h"
#include "outputs/evidence_text.h"
#include "outputs/metrics.h"
#include "outputs/metrics_server.h"
#include "outputs/reporter.h"
#include "outputs/store.h"
#include "pipeline/pipeline.h"
#include "pipeline/recording.h"
#include "tables/dump.h"
#include "tables/tables.h"

namespace rstwatch {

namespace {

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

int64_t clock_ns(clockid_t clock)
{
    timespec ts{};
    clock_gettime(clock, &ts);
    return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

std::string tracked_description(const TrackingFilter &filter)
{
    std::string what = filter.all ? std::string("every process") : std::string();
    for (const auto &c : filter.comms)
        what += (what.empty() ? "comm " : ", comm ") + c;
    for (auto p : filter.pids)
        what += (what.empty() ? "pid " : ", pid ") + std::to_string(p) + " and children";
    return what;
}

std::string joined(const std::vector<std::string> &items)
{
    std::string all;
    for (const auto &item : items)
        all += (all.empty() ? "" : ", ") + item;
    return all;
}

std::string uname_release()
{
    utsname uts{};
    uname(&uts);
    return uts.release;
}

// One `rstwatch run`: what it opens, in the order that lets a refused
// start leave nothing behind, the loop, and the shutdown.
class AgentRun {
public:
    AgentRun(const RunSettings &settings, const KernelFeatures &kernel);
    int run();

private:
    void open_store();
    void open_control();
    void open_metrics();
    void attach();
    void serve_until_stopped();
    void after_each_pass();
    void shut_down();
    void log_summary() const;

    LossCounts losses() const;
    void publish_losses();
    nlohmann::json live_dump();
    int poll_timeout_ms(std::chrono::steady_clock::time_point deadline) const;

    const RunSettings &settings_;
    const KernelFeatures &kernel_;
    const int64_t realtime_offset_ns_ = clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC);
    ResetReasonTable reasons_;
    AttributionTables tables_{hint_text};
    Metrics metrics_;
    Reporter reporter_;
    RingFillWatch ring_fill_;  // attached once the ring exists; outlives the writer, which asks it
    std::unique_ptr<StoreWriter> writer_;
    MainThreadCalls main_thread_;
    std::unique_ptr<ControlServer> control_;
    std::unique_ptr<MetricsServer> metrics_server_;
    std::unique_ptr<RecordingWriter> recording_;
    std::unique_ptr<EventPipeline> pipeline_;
    std::unique_ptr<BpfSession> session_;

    bool stopping_ = false;  // shutting down: the store's pushes no longer wait
    uint64_t left_unread_ = 0;  // in the ring at exit, past the stop's drain
    LossCounts logged_losses_;
    std::chrono::steady_clock::time_point last_loss_log_ = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point last_sweep_ = std::chrono::steady_clock::now();
};

AgentRun::AgentRun(const RunSettings &settings, const KernelFeatures &kernel)
    : settings_(settings),
      kernel_(kernel),
      reporter_(STDOUT_FILENO, {.json_events = settings.json,
                                .json_tables = settings.table_format == TableFormat::Json,
                                .has_store = !settings.store_path.empty()})
{
    std::string reasons_error;
    reasons_ = load_reset_reasons(kernel, &reasons_error);
    if (!reasons_error.empty())
        spdlog::warn("reset reason names unavailable ({}); sent resets show reason numbers", reasons_error);
    for (const std::string &name : reasons_.unknown_names())
        spdlog::warn("reset reason {} is new to this build: shown as REASON_<n>", name);
}

int AgentRun::run()
{
    // main() has checked the paths (app/preflight.h): what could still
    // refuse a second agent (socket, store) comes first, before anything
    // attaches.
    open_store();
    open_control();
    open_metrics();
    attach();
    serve_until_stopped();
    shut_down();
    log_summary();
    return 0;
}

void AgentRun::open_store()
{
    if (settings_.store_path.empty())
        return;
    StoreWriter::Options options;
    options.limits = {settings_.retain_days, settings_.max_db_mb};
    // A full queue means the writer is behind (a reset storm, a slow disk).
    // The ring buffer is then its overflow: its memory is paid for anyway,
    // and it holds an event in under 200 bytes where a queued row takes
    // about 1 KiB. So the consumer waits for room while the ring is less
    // than half full; past that it drops the row (counted, "not stored")
    // rather than let the ring overflow, since an event lost there is lost
    // to the output and the tables too.
    // Once a stop is asked for nothing waits: a stop must not take as long
    // as the store's backlog (a row that does not fit is counted).
    options.wait_for_room = [this] {
        return !stopping_ && !g_stop && ring_fill_.readable() && ring_fill_.sample() < 0.5 ? std::chrono::milliseconds(100)
                                                                                : std::chrono::milliseconds(0);
    };
    const std::string path = settings_.store_path;
    writer_ = std::make_unique<StoreWriter>([path] { return Store::open_for_writing(path); }, options);
    // The tables start with what earlier runs saw, within retention.
    uint64_t skipped = 0;
    const uint64_t loaded = add_from_store(path, realtime_ns_ago(settings_.retain_days * 86400.0), tables_, &skipped);
    spdlog::info("store {}: {} earlier records loaded into the tables", path, loaded);
    if (skipped)
        spdlog::warn("store {}: {} records could not be read back and were skipped", path, skipped);
}

void AgentRun::open_control()
{
    if (settings_.socket_path.empty())
        return;
    ControlledAgent agent{&main_thread_, writer_ ? writer_->path() : std::string(),
                          [this] { writer_->flush(); },
                          [this](AttributionTables &tables) { tables.set_lost(metrics_.lost()); }};
    control_ = std::make_unique<ControlServer>(settings_.socket_path, control_protocol(std::move(agent)));
    spdlog::info("control socket {} (rstwatch dump --socket {})", settings_.socket_path, settings_.socket_path);
}

// On the main thread, between passes.
nlohmann::json AgentRun::live_dump()
{
    publish_losses();
    pipeline_->complete_tables();
    nlohmann::json response = dump_response(tables_, "live");
    response["pid"] = getpid();
    response["store"] = writer_ ? nlohmann::json(writer_->path()) : nlohmann::json(nullptr);
    return response;
}

void AgentRun::open_metrics()
{
    if (settings_.metrics_host.empty())
        return;
    metrics_server_ =
        std::make_unique<MetricsServer>(ListenAddress{settings_.metrics_host, settings_.metrics_port}, metrics_);
    const std::string host = settings_.metrics_host.find(':') != std::string::npos
                                 ? "[" + settings_.metrics_host + "]"
                                 : settings_.metrics_host;
    spdlog::info("metrics on http://{}:{}/metrics", host, metrics_server_->port());
    if (!is_loopback_host(settings_.metrics_host))
        spdlog::warn("metrics served on {}, not loopback: anyone who can reach it sees upstream names", host);
}

void AgentRun::attach()
{
    RecordingHeader header{realtime_offset_ns_, reasons_.names(), uname_release()};
    if (!settings_.record_path.empty())
        recording_ = std::make_unique<RecordingWriter>(settings_.record_path, header);
    LoaderOptions options;
    options.filter = settings_.filter;
    options.ring_buffer_bytes = settings_.ring_buffer_kb * 1024;
    options.ttl_evidence = settings_.ttl_evidence;
    install_signal_handlers();
    session_ = std::make_unique<BpfSession>(options, kernel_, [this](std::span<const uint8_t> record) {
        ring_fill_.took_record();
        if (recording_)
            recording_->write(record);
        pipeline_->take(record);
    });
    // Records wait in the ring until the first poll. The diagnosis knows
    // what the loaded programs give, which is less than the kernel offers
    // when one failed to load (loader.cpp: lose_fentry_program()).
    const KernelSupport &support = session_->kernel_support();
    pipeline_ = std::make_unique<EventPipeline>(
        header.decode_context(), Diagnoser(KernelEvidence{support.sent_resets_without_socket, support.oom_kills}),
        PipelineOutputs{tables_, metrics_, reporter_, writer_.get()},
        PipelineOptions{.report_unowned = settings_.filter.all,
                        .cgroup_of = [](uint32_t pid) { return printable_name(procfs::cgroup_path(pid)); }});
    ring_fill_.attach(session_->records_map_fd(), options.ring_buffer_bytes);
    if (!ring_fill_.readable())
        spdlog::debug("ring buffer fill level not readable: rstwatch_ring_buffer_fill_ratio stays 0");

    SeedReport seed = seed_listeners(session_->listeners_map_fd(), session_->listened_ports(), settings_.filter);
    for (const auto &problem : seed.problems)
        spdlog::warn("seeding: {}", problem);
    spdlog::info("attached to {} hooks ({}); tracking {}; {} listening sockets of {} processes seeded",
                 session_->attached_programs().size(), joined(session_->attached_programs()),
                 tracked_description(settings_.filter), seed.listeners, seed.processes);
    if (std::string gaps = evidence_gaps_line(session_->kernel_support(), settings_.ttl_evidence); !gaps.empty())
        spdlog::warn("this kernel cannot give some evidence (rstwatch run --check): {}", gaps);
}

// Idle, the agent wakes twice a second (signals, control requests and
// metrics gauges); while events wait for their hold-back, or lines for
// stdout's reader, sooner; with a backlog in the ring, at once.
int AgentRun::poll_timeout_ms(std::chrono::steady_clock::time_point deadline) const
{
    int timeout_ms = session_->backlog() ? 0 : pipeline_->holding() || reporter_.pending() ? 60 : 500;
    if (deadline == std::chrono::steady_clock::time_point::max())
        return timeout_ms;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::clamp<int64_t>(left.count() + 1, 0, timeout_ms));
}

// Each pass of the ring is bounded (BpfSession::kPassRecords, kPassNs), so
// a stop request, a control request and the metrics wait at most one pass
// however fast events arrive.
void AgentRun::serve_until_stopped()
{
    using clock = std::chrono::steady_clock;
    const auto deadline = settings_.duration_s ? clock::now() + std::chrono::duration_cast<clock::duration>(
                                                                    std::chrono::duration<double>(*settings_.duration_s))
                                               : clock::time_point::max();
    while (!g_stop && clock::now() < deadline) {
        ring_fill_.woke();
        int n = session_->poll(poll_timeout_ms(deadline));
        if (n < 0 && n != -EINTR) {
            spdlog::error("ring buffer poll failed: {}", std::strerror(-n));
            break;
        }
        after_each_pass();
    }
}

// A stopped nginx's listeners would name it as the owner of whatever is
// accepted on its ports next; workers started since the last sweep (a
// reload) have their credentials learnt then, not in softirq.
constexpr auto kListenerSweepEvery = std::chrono::seconds(10);

void AgentRun::after_each_pass()
{
    const auto now = std::chrono::steady_clock::now();
    // Not a sample now: the pass may have just drained the ring.
    metrics_.set_ring_buffer_fill(ring_fill_.recent_peak(now));
    pipeline_->release_ready(clock_ns(CLOCK_MONOTONIC));
    reporter_.flush();
    publish_losses();
    reporter_.log_not_printed(false);
    if (now - last_sweep_ >= kListenerSweepEvery) {
        if (size_t gone = sweep_listeners(session_->listeners_map_fd()))
            spdlog::debug("{} listeners whose process is gone forgotten", gone);
        session_->learn_cred_holders();
        last_sweep_ = now;
    }
    main_thread_.run_pending([this](const nlohmann::json &) { return live_dump(); });
    if (g_print_tables) {
        g_print_tables = 0;
        publish_losses();
        pipeline_->complete_tables();
        reporter_.tables(tables_);
    }
    if (g_reopen) {
        g_reopen = 0;
        reopen_log();
        if (writer_)
            writer_->reopen();
    }
}

LossCounts AgentRun::losses() const
{
    const BpfCounters bpf = session_->counters();
    LossCounts lost{.ring_buffer_full = bpf.ring_buffer_full,
                    .left_unread = left_unread_,
                    .decode_errors = pipeline_->decode_errors(),
                    .owners_unresolved = bpf.owners_unresolved,
                    .listeners_dropped = bpf.listeners_dropped};
    if (writer_)
        lost.not_stored = writer_->stats().lost();
    return lost;
}

// Lost events, everywhere they are shown: metrics, tables and (when they
// grow, at most every 10 s) the log.
void AgentRun::publish_losses()
{
    const LossCounts lost = losses();
    metrics_.set_lost(lost);
    tables_.set_lost(lost);
    const auto now = std::chrono::steady_clock::now();
    if (lost == logged_losses_ || now - last_loss_log_ < std::chrono::seconds(10))
        return;
    spdlog::warn("lost events so far: ring buffer full {} (raise --ring-buffer-kb), undecodable or unreportable {}, "
                 "not stored {}; resets whose owner no longer held their socket's credentials {}; "
                 "listeners not recorded (table full) {}",
                 lost.ring_buffer_full, lost.decode_errors, lost.not_stored.value_or(0), lost.owners_unresolved,
                 lost.listeners_dropped);
    logged_losses_ = lost;
    last_loss_log_ = now;
}

// Stop answering, detach and take what the ring still holds, hand over
// what is held back, flush the store.
void AgentRun::shut_down()
{
    using clock = std::chrono::steady_clock;
    const auto began = clock::now();
    auto ms_since = [](clock::time_point t) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - t).count();
    };
    stopping_ = true;
    main_thread_.close();
    control_.reset();
    metrics_server_.reset();
    const BpfSession::Drained drained = session_->stop_and_drain();
    left_unread_ = drained.left_unread;
    pipeline_->release_all();
    if (recording_)
        recording_->flush();
    const auto store_began = clock::now();
    if (writer_)
        writer_->stop();
    spdlog::debug("stopping: {} records drained, {} left unread, store closed in {} ms, {} ms in all",
                  drained.handed_over, drained.left_unread, ms_since(store_began), ms_since(began));
    publish_losses();
    pipeline_->complete_tables();
    reporter_.tables(tables_);
    reporter_.stop();
}

void AgentRun::log_summary() const
{
    const BpfCounters counters = session_->counters();
    if (counters.ring_buffer_full)
        spdlog::warn("{} records lost: the ring buffer was full (raise --ring-buffer-kb)", counters.ring_buffer_full);
    if (left_unread_)
        spdlog::warn("{} records were still in the ring buffer at exit and were not read (the stop reads for at most "
                     "{} ms)",
                     left_unread_, BpfSession::kStopDrainNs / 1'000'000);
    if (counters.owners_unresolved)
        spdlog::warn("{} resets were on sockets whose credentials no process held any more: owner unknown",
                     counters.owners_unresolved);
    if (counters.listeners_dropped)
        spdlog::warn("{} listeners were not recorded: their BPF table was full", counters.listeners_dropped);
    if (writer_) {
        StoreWriterStats s = writer_->stats();
        spdlog::info("store {}: {} records written{}; queue peak {} of {} KiB, longest write {} ms", writer_->path(),
                     s.written, s.lost() ? ", " + std::to_string(s.lost()) + " not written" : std::string(),
                     s.queue_peak_bytes >> 10, writer_->options().queue_capacity_bytes >> 10,
                     s.longest_write.count() / 1000);
        if (s.waits_for_room)
            spdlog::info("store: the ring buffer held events while the store's queue was full: {} waits, {} ms in all",
                         s.waits_for_room, s.waited_for_room.count() / 1000);
    }
    spdlog::info("detached after {} records (ring buffer peak fill {:.1f}%); {} owners looked up by the agent, {} "
                 "unresolved",
                 counters.records_emitted, ring_fill_.peak() * 100, counters.owner_lookups,
                 counters.owners_unresolved);
}

}  // namespace

// `rstwatch run --check [--json]`: what this kernel gives, on stdout.
int print_kernel_check(const KernelFeatures &kernel, const std::vector<std::string> &missing, bool json)
{
    const std::string release = uname_release();
    const KernelSupport support = probe_kernel_support(kernel);
    std::string out;
    if (json) {
        nlohmann::json j = {{"kernel", release}, {"can_run", missing.empty()}, {"missing", missing}};
        if (kernel.has_vmlinux_btf())
            for (const SupportRow &row : support_rows(support))
                j["facilities"].push_back({{"facility", row.facility}, {"since", row.since}, {"present", row.present},
                                           {"without_it", row.present ? "" : row.without_it}});
        j["sent_resets_without_socket"] = kernel.has_vmlinux_btf() && support.sent_resets_without_socket;
        out = j.dump() + "\n";
    } else {
        out = "kernel " + release + "\n";
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
    if (settings.check)
        return print_kernel_check(kernel, missing_prerequisites(kernel), settings.json);
    // main() has refused a kernel or privileges that cannot run the agent
    // (app/preflight.h, check_before_start).
    return AgentRun(settings, kernel).run();
}

}  // namespace rstwatch
