#include "kernel/loader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <string>
#include <utility>

#include "common/errors.h"
#include "kernel/kernel_features.h"
#include "kernel/kernel_support.h"
#include "rstwatch.skel.h"
#include "kernel/unique_fd.h"

extern "C" {
#include "rstwatch_abi.h"
}

namespace rstwatch {

enum class Hook { BtfTracepoint, ClassicTracepoint, Cgroup, Fentry };

struct ProgramNeed {
    bpf_program *prog;
    bpf_link **link;  // the skeleton's slot: it destroys the link with the object
    Hook hook;
    const char *name;      // the tracepoint, or the cgroup hook ("post_bind4")
    const char *category;  // classic tracepoints' category
    bool required;
    const char *without_it;
};

namespace {

bool g_libbpf_verbose = false;
// libbpf's own account of a failure (its warnings while a load runs), for
// the error message: without -v the user would see only "Invalid argument".
std::vector<std::string> *g_libbpf_warnings = nullptr;

// The last line of the verifier's log inside a libbpf message: the verifier
// ends with what it refused.
std::string verifier_verdict(const std::string &message)
{
    const size_t end = message.find("-- END PROG LOAD LOG --");
    if (end == std::string::npos)
        return {};
    // The verdict is the last line before the verifier's statistics.
    std::string verdict;
    size_t pos = 0;
    const std::string log = message.substr(0, end);
    while (pos < log.size()) {
        size_t nl = log.find('\n', pos);
        std::string line = log.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        pos = nl == std::string::npos ? log.size() : nl + 1;
        if (line.rfind("processed ", 0) == 0)
            break;
        if (!line.empty() && line.front() != ';')
            verdict = line;
    }
    return verdict;
}

// What libbpf said went wrong: the failing program's lines and the
// verifier's verdict, without the kilobytes of log in between.
std::string libbpf_failure_reason(const std::vector<std::string> &warnings)
{
    std::string reason;
    for (const std::string &w : warnings) {
        std::string line = verifier_verdict(w);
        if (line.empty() && w.find("prog '") == std::string::npos && w.find("map '") == std::string::npos)
            continue;
        if (line.empty())
            line = w.substr(0, w.find('\n'));
        if (line.rfind("libbpf: ", 0) == 0)
            line = line.substr(8);
        reason += (reason.empty() ? "" : "; ") + line;
    }
    return reason;
}

int libbpf_to_spdlog(enum libbpf_print_level level, const char *format, va_list args)
{
    // Verifier logs arrive as one message of many kilobytes: size it first.
    va_list copy;
    va_copy(copy, args);
    int n = vsnprintf(nullptr, 0, format, copy);
    va_end(copy);
    if (n < 0)
        return n;
    std::string buf(static_cast<size_t>(n) + 1, '\0');
    vsnprintf(buf.data(), buf.size(), format, args);
    buf.resize(static_cast<size_t>(n));
    while (!buf.empty() && buf.back() == '\n')
        buf.pop_back();
    if (level == LIBBPF_WARN && g_libbpf_warnings && g_libbpf_warnings->size() < 64)
        g_libbpf_warnings->push_back(buf);
    // libbpf is chatty at debug and its warnings are often benign probes:
    // keep everything but errors out of sight unless the user asked (-v).
    if (level == LIBBPF_WARN && g_libbpf_verbose)
        spdlog::warn("libbpf: {}", buf);
    else if (level == LIBBPF_INFO && g_libbpf_verbose)
        spdlog::info("libbpf: {}", buf);
    else
        spdlog::debug("libbpf: {}", buf);
    return n;
}

std::string errno_text(int err) { return std::strerror(err < 0 ? -err : err); }

// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns().
uint64_t monotonic_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + ts.tv_nsec;
}

// Comm names go to BPF as two little-endian words, matching how the BPF
// side reads task->comm's 16 bytes, with a mask of the name's bytes and its
// NUL: what follows the NUL in task->comm is not always zero.
void comm_words(const std::string &comm, volatile __u64 (&words)[2], volatile __u64 (&mask)[2])
{
    char buf[RW_COMM_LEN] = {};
    unsigned char ones[RW_COMM_LEN] = {};
    const size_t len = std::min(comm.size(), sizeof(buf) - 1);
    std::memcpy(buf, comm.data(), len);
    std::memset(ones, 0xff, len + 1);
    __u64 w[2], m[2];
    std::memcpy(w, buf, sizeof(w));
    std::memcpy(m, ones, sizeof(m));
    for (int i = 0; i < 2; i++) {
        words[i] = w[i];
        mask[i] = m[i];
    }
}

// The root of the cgroup v2 hierarchy, where the socket hooks see every
// process on the host.
int open_cgroup_root(const KernelFeatures &kernel)
{
    std::string root = kernel.cgroup2_mount();
    if (root.empty())
        throw FatalError("no cgroup v2 hierarchy is mounted",
                         "rstwatch attaches its bind() hooks to the cgroup v2 root; mount it, "
                         "e.g. mount -t cgroup2 none /sys/fs/cgroup/unified");
    int fd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        throw FatalError("cannot open the cgroup v2 root " + root + ": " + errno_text(errno));
    return fd;
}

constexpr const char *kTtlsLost =
    "TTLs are recorded only with --ttl-evidence: a middlebox's reset cannot be told from the backend's";
constexpr const char *kSocketlessLost =
    "resets sent without a socket (a backend on this host that restarted or had closed the connection) are not seen";

// What each program attaches to, whether the agent can do without it, and
// what is lost then.
std::vector<ProgramNeed> program_needs(rstwatch_bpf *skel)
{
    auto *p = &skel->progs;
    auto *l = &skel->links;
    return {
        {p->on_tcp_receive_reset, &l->on_tcp_receive_reset, Hook::BtfTracepoint, "tcp_receive_reset", nullptr,
         true, ""},
        {p->on_tcp_send_reset, &l->on_tcp_send_reset, Hook::BtfTracepoint, "tcp_send_reset", nullptr, true, ""},
        {p->on_post_bind4, &l->on_post_bind4, Hook::Cgroup, "post_bind4", nullptr, true, ""},
        {p->on_post_bind6, &l->on_post_bind6, Hook::Cgroup, "post_bind6", nullptr, true, ""},
        {p->on_tcp_probe, &l->on_tcp_probe, Hook::BtfTracepoint, "tcp_probe", nullptr, false,
         "the TTL of resets is unknown: middlebox resets cannot be told apart"},
        {p->on_mark_victim, &l->on_mark_victim, Hook::ClassicTracepoint, "mark_victim", "oom", false,
         "OOM kills are not reported"},
        {p->on_tcp_reset, &l->on_tcp_reset, Hook::Fentry, "tcp_reset", nullptr, false, kTtlsLost},
        {p->on_tcp_finish_connect, &l->on_tcp_finish_connect, Hook::Fentry, "tcp_finish_connect", nullptr, false,
         kTtlsLost},
        {p->on_tcp_v4_send_reset, &l->on_tcp_v4_send_reset, Hook::Fentry, "tcp_v4_send_reset", nullptr, false,
         kSocketlessLost},
        {p->on_tcp_v6_send_reset, &l->on_tcp_v6_send_reset, Hook::Fentry, "tcp_v6_send_reset", nullptr, false,
         kSocketlessLost},
    };
}

}  // namespace

void route_libbpf_logging(bool verbose)
{
    g_libbpf_verbose = verbose;
    libbpf_set_print(libbpf_to_spdlog);
}

BpfSession::BpfSession(const LoaderOptions &options, const KernelFeatures &kernel, RecordHandler handler)
    : skel_(nullptr, rstwatch_bpf__destroy),
      ring_(nullptr, ring_buffer__free),
      handler_(std::move(handler)),
      support_(probe_kernel_support(kernel)),
      filter_all_(options.filter.all)
{
    check_options(options);
    open_and_load(options, kernel);
    start_task_iterator();  // before the reset hooks, so that their first resets find the owners
    attach_programs(program_needs(skel_.get()), kernel);
    ring_.reset(ring_buffer__new(bpf_map__fd(skel_->maps.records), on_record, this, nullptr));
    if (!ring_)
        throw FatalError("cannot set up the ring buffer consumer: " + errno_text(errno));
}


void BpfSession::check_options(const LoaderOptions &options)
{
    const auto &filter = options.filter;
    if (filter.comms.size() > RW_MAX_COMMS || filter.pids.size() > RW_MAX_PIDS)
        throw FatalError("too many --comm or --pid values",
                         "at most " + std::to_string(RW_MAX_COMMS) + " of each");
    if (options.ring_buffer_bytes < 4096 || (options.ring_buffer_bytes & (options.ring_buffer_bytes - 1)))
        throw FatalError("ring buffer size must be a power of two of at least 4096 bytes");
}

// The fentry programs are the optional ones a kernel may refuse at load
// although ftrace lists their functions (no BPF trampoline on this
// architecture, a lockdown; this project's 6.18 host refuses every fentry
// program with EPERM): then the object is opened again without them, since
// libbpf loads an object only once, and what they would have given is
// named missing.
void BpfSession::open_and_load(const LoaderOptions &options, const KernelFeatures &kernel)
{
    open_object();
    configure(options, kernel);
    choose_programs(program_needs(skel_.get()), options, kernel);
    if (!support_.ttls_by_fentry && !support_.socketless_resets_by_fentry) {
        load(kernel);
        return;
    }
    try {
        load(kernel);
        return;
    } catch (const FatalError &e) {
        spdlog::warn("{}; loading again without the fentry programs", e.what());
    }
    for (const auto &need : program_needs(skel_.get()))
        if (need.hook == Hook::Fentry && bpf_program__autoload(need.prog))
            lose_fentry_program(need);
    skel_.reset();
    open_object();
    configure(options, kernel);
    choose_programs(program_needs(skel_.get()), options, kernel);
    load(kernel);
}

// An fentry program that could not be loaded or attached: the agent runs
// without it, says what is missing, and the support flags say it too (the
// start-up line of gaps, and the diagnosis, read them).
void BpfSession::lose_fentry_program(const ProgramNeed &need)
{
    auto *p = &skel_->progs;
    disabled_.push_back(bpf_program__name(need.prog));
    spdlog::warn("fentry/{} not available: {}", need.name, need.without_it);
    if (need.prog == p->on_tcp_reset || need.prog == p->on_tcp_finish_connect)
        support_.ttls_by_fentry = false;
    if (need.prog == p->on_tcp_v4_send_reset || need.prog == p->on_tcp_v6_send_reset) {
        support_.socketless_resets_by_fentry = false;
        support_.sent_resets_without_socket = support_.sent_resets_by_tracepoint;
    }
}

void BpfSession::open_object()
{
    // Where vmlinux lacks a type the programs probe for (enum sk_rst_reason,
    // before 6.10), CO-RE would search the modules' BTF, which needs
    // CAP_SYS_ADMIN: the load failed under the systemd unit on 6.1. Naming
    // the kernel's own BTF as a custom one keeps the search to vmlinux.
    // Only there: libbpf then holds a second parsed copy of it while it
    // loads, 6 MiB more peak RSS (bench, run 45).
    LIBBPF_OPTS(bpf_object_open_opts, open_opts,
                .btf_custom_path = support_.sent_resets_by_tracepoint ? nullptr : "/sys/kernel/btf/vmlinux");
    skel_.reset(rstwatch_bpf__open_opts(&open_opts));
    if (!skel_)
        throw FatalError("cannot open the embedded BPF object: " + errno_text(errno));

}

// The read-only settings the programs are verified with.
void BpfSession::configure(const LoaderOptions &options, const KernelFeatures &kernel)
{
    const auto &filter = options.filter;
    auto *ro = skel_->rodata;
    ro->track_all_tasks = filter.all;
    ro->emit_peer_resets = options.emit_peer_resets;
    ro->tracked_pid_count = filter.pids.size();
    for (size_t i = 0; i < filter.pids.size(); i++)
        ro->tracked_pids[i] = filter.pids[i];
    ro->tracked_comm_count = filter.comms.size();
    for (size_t i = 0; i < filter.comms.size(); i++)
        comm_words(filter.comms[i], ro->tracked_comms[i], ro->tracked_comm_masks[i]);

    ro->ring_wakeup_bytes = options.ring_buffer_bytes / 8;
    ro->have_socket_cookie = support_.tracing_socket_cookie;
    ro->kernel_hz = kernel.jiffies_hz();
    if (ro->kernel_hz == 0)
        spdlog::warn("the kernel's tick rate (CONFIG_HZ) is unknown: neither /boot/config-$(uname -r) nor "
                     "/proc/timer_list was readable; idle times from kernel timestamps are unknown");
    if (int err = bpf_map__set_max_entries(skel_->maps.records, options.ring_buffer_bytes))
        throw FatalError("cannot size the ring buffer: " + errno_text(err));
}

// Probe before load and switch off what the kernel cannot attach, rather
// than failing: only the reset hooks are indispensable.
void BpfSession::choose_programs(const std::vector<ProgramNeed> &needs, const LoaderOptions &options,
                                 const KernelFeatures &kernel)
{
    auto *p = &skel_->progs;
    // A per-segment hook: only when asked for (see LoaderOptions::ttl_evidence).
    if (!options.ttl_evidence)
        bpf_program__set_autoload(p->on_tcp_probe, false);
    // TTLs by default where fentry gives them at the reset and the
    // handshake. tcp_reset's also with --ttl-evidence: it sees resets in
    // every state, tcp_probe only in ESTABLISHED; the SYN-ACK's TTL not,
    // the data's replaces it.
    bpf_program__set_autoload(p->on_tcp_reset, support_.ttls_by_fentry);
    bpf_program__set_autoload(p->on_tcp_finish_connect, support_.ttls_by_fentry && !options.ttl_evidence);
    // Only where the tracepoint misses socketless resets and ftrace can attach.
    bpf_program__set_autoload(p->on_tcp_v4_send_reset, support_.socketless_resets_by_fentry);
    bpf_program__set_autoload(p->on_tcp_v6_send_reset, support_.socketless_resets_by_fentry);
    for (const auto &need : needs) {
        if (!bpf_program__autoload(need.prog) || need.hook == Hook::Cgroup || need.hook == Hook::Fentry)
            continue;  // the cgroup hooks are as old as BTF itself: the load tells
        bool present = need.hook == Hook::ClassicTracepoint ? kernel.has_classic_tracepoint(need.category, need.name)
                                                             : kernel.has_btf_tracepoint(need.name);
        if (present)
            continue;
        if (need.required)
            throw FatalError(std::string("the kernel lacks the tracepoint ") + need.name,
                             "rstwatch needs tcp:tcp_receive_reset and tcp:tcp_send_reset with BTF "
                             "(Linux 4.16+, CONFIG_DEBUG_INFO_BTF=y)");
        bpf_program__set_autoload(need.prog, false);
        disabled_.push_back(bpf_program__name(need.prog));
        spdlog::warn("tracepoint {} not available: {}", need.name, need.without_it);
    }
    // oom:mark_victim's raw twin, for where perf events are refused (see
    // attach_oom_raw()); loaded with it, attached only instead of it.
    bpf_program__set_autoload(p->on_mark_victim_raw, bpf_program__autoload(p->on_mark_victim));
    skel_->rodata->mark_victim_passes_task = kernel.tracepoint_first_arg_is_pointer("mark_victim");
    skel_->rodata->record_ttls = bpf_program__autoload(p->on_tcp_probe) || support_.ttls_by_fentry;
}

void BpfSession::load(const KernelFeatures &kernel)
{
    std::vector<std::string> warnings;
    g_libbpf_warnings = &warnings;
    libbpf_set_print(libbpf_to_spdlog);  // also where route_libbpf_logging() was not called (tests)
    const int err = rstwatch_bpf__load(skel_.get());
    g_libbpf_warnings = nullptr;
    if (err) {
        // The verifier's rejections are EACCES too: blame privileges only without them.
        std::string hint = (err == -EPERM || err == -EACCES) && !kernel.is_root()
                               ? "run as root, or with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"
                               : "run with -v for the verifier's whole log; `rstwatch run --check` lists what "
                                 "this kernel has";
        std::string reason = libbpf_failure_reason(warnings);
        throw FatalError("cannot load the BPF programs: " + errno_text(err) + (reason.empty() ? "" : " (" + reason + ")"),
                         hint);
    }

}

void BpfSession::start_task_iterator()
{
    skel_->links.learn_cred_holders = bpf_program__attach_iter(skel_->progs.learn_cred_holders, nullptr);
    if (!skel_->links.learn_cred_holders)
        throw FatalError("cannot attach the task iterator: " + errno_text(errno),
                         "rstwatch learns who owns a socket with it (Linux 5.8+)");
    learn_cred_holders();
}

void BpfSession::attach_programs(const std::vector<ProgramNeed> &needs, const KernelFeatures &kernel)
{
    auto *p = &skel_->progs;
    const UniqueFd cgroup_root(open_cgroup_root(kernel));  // each link holds its own reference
    for (const auto &need : needs) {
        if (!bpf_program__autoload(need.prog))
            continue;
        // The SYN-ACK's TTL is worth nothing without the reset's (attached first).
        if (need.prog == p->on_tcp_finish_connect && !support_.ttls_by_fentry)
            continue;
        const bool cgroup = need.hook == Hook::Cgroup;
        const std::string hook = cgroup                        ? std::string("cgroup/") + need.name
                                 : need.hook == Hook::Fentry ? std::string("fentry/") + need.name
                                                             : std::string(need.name);
        bpf_link *link = cgroup ? bpf_program__attach_cgroup(need.prog, cgroup_root.get()) : bpf_program__attach(need.prog);
        if (!link && need.prog == p->on_mark_victim && (errno == EPERM || errno == EACCES)) {
            attach_oom_raw();
            continue;
        }
        if (!link && need.hook == Hook::Fentry && !need.required) {
            spdlog::warn("cannot attach to {}: {}", hook, errno_text(-errno));
            lose_fentry_program(need);
            continue;
        }
        if (!link) {
            int err = -errno;
            throw FatalError("cannot attach to " + std::string(cgroup ? "the cgroup hook " : "") + hook +
                                 ": " + errno_text(err),
                             err == -EPERM ? "run as root, or with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN" : "");
        }
        *need.link = link;
        attached_.push_back(hook);
        bpf_prog_info info{};
        __u32 info_len = sizeof(info);
        if (bpf_obj_get_info_by_fd(bpf_program__fd(need.prog), &info, &info_len) == 0)
            spdlog::debug("attached {} to {} as prog id {}", bpf_program__name(need.prog), hook, info.id);
    }

}

// A classic tracepoint is a perf event, and Debian's kernels refuse those
// without CAP_SYS_ADMIN at their default perf_event_paranoid (3): the
// systemd unit does not grant it. The raw tracepoint is a BPF link instead.
void BpfSession::attach_oom_raw()
{
    skel_->links.on_mark_victim_raw = bpf_program__attach(skel_->progs.on_mark_victim_raw);
    if (!skel_->links.on_mark_victim_raw) {
        disabled_.push_back("on_mark_victim");
        spdlog::warn("cannot attach to oom:mark_victim ({}): OOM kills are not reported", errno_text(-errno));
        return;
    }
    attached_.push_back("raw_tp/mark_victim");
    spdlog::info("oom:mark_victim attached as a raw tracepoint (perf events refused here): OOM victims are "
                 "reported without their RSS");
}

BpfSession::~BpfSession() = default;

int BpfSession::on_record(void *ctx, void *data, size_t size)
{
    auto *self = static_cast<BpfSession *>(ctx);
    if (self->counting_only_) {
        ++self->counted_;
        return 0;
    }
    try {
        std::span<const uint8_t> record(static_cast<const uint8_t *>(data), size);
        rw_reset_record completed;
        if (owner_pending(record)) {
            // The ring's pages are read-only: the owner goes into a copy.
            std::memcpy(&completed, data, sizeof(completed));
            if (!self->complete_owner(completed))
                return 0;
            record = {reinterpret_cast<const uint8_t *>(&completed), sizeof(completed)};
        }
        self->handler_(record);
        if (self->pass_is_over())
            return -EAGAIN;  // libbpf stops here; poll() returns the count
    } catch (...) {
        self->handler_failure_ = std::current_exception();
        return -ECANCELED;  // libbpf stops consuming and returns this
    }
    return 0;
}

bool BpfSession::owner_pending(std::span<const uint8_t> record)
{
    if (record.size() != sizeof(rw_reset_record))
        return false;
    rw_reset_record rec;
    std::memcpy(&rec, record.data(), sizeof(rec));
    return rec.hdr.type == RW_REC_RESET && (rec.flags & RW_RST_OWNER_PENDING);
}

std::optional<rw_cred_holder> BpfSession::known_holder(uint64_t cred) const
{
    rw_cred_holder holder{};
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.cred_holders), &cred, &holder) != 0 ||
        holder.state != RW_HOLDER_KNOWN)
        return std::nullopt;
    return holder;
}

// The reset programs met credentials nobody had learnt (owner.bpf.h): learn
// them now, in this process's context, unless the iterator ran after the
// reset already. Returns false for a record to drop: a reset of a process
// that is not tracked, on a connection no tracked listener accepted.
bool BpfSession::complete_owner(rw_reset_record &rec)
{
    std::optional<rw_cred_holder> holder = known_holder(rec.owner_cred);
    if (!holder && last_learnt_ns_ < rec.hdr.ts_ns) {
        learn_cred_holders();
        holder = known_holder(rec.owner_cred);
    }
    if (!holder) {
        // Nobody holds them (a process that changed its credentials after
        // opening the socket): the programs stop asking for a while.
        rw_cred_holder nobody{};
        nobody.state = RW_HOLDER_NOBODY;
        nobody.looked_ns = monotonic_ns();
        bpf_map_update_elem(bpf_map__fd(skel_->maps.cred_holders), &rec.owner_cred, &nobody, BPF_ANY);
        owners_unresolved_++;
    }
    const bool listener_owner = rec.flags & RW_RST_OWNER_LISTENER;
    if (holder && (holder->tracked || filter_all_)) {
        rec.flags = (rec.flags | RW_RST_OWNER_KNOWN) & ~RW_RST_OWNER_LISTENER;
        rec.owner_tgid = holder->tgid;
        std::memcpy(rec.owner_comm, holder->comm, sizeof(rec.owner_comm));
    } else if (!listener_owner) {
        // Another process's reset. A sent one could have been the far end
        // of a tracked connection, but only one from a socket its process
        // was not holding (close() holds it, and then the program knows
        // the owner): a first reset of a process never seen, from a timer
        // or in answer to a segment. Rare enough to drop with the rest.
        if (!filter_all_)
            return false;
        rec.flags &= ~(RW_RST_OWNER_KNOWN | RW_RST_IN_REQUEST | RW_RST_REUSED);
        rec.role = RW_ROLE_OTHER;
    }
    rec.flags &= ~RW_RST_OWNER_PENDING;
    return true;
}

void BpfSession::rethrow_handler_failure()
{
    if (handler_failure_)
        std::rethrow_exception(std::exchange(handler_failure_, nullptr));
}

// Checked after each record, the clock too: a record can take long (the
// store's wait for room, up to 100 ms), and a vDSO clock read is a few ns.
bool BpfSession::pass_is_over()
{
    ++pass_taken_;
    if (--pass_left_ == 0 || monotonic_ns() >= pass_end_ns_)
        pass_full_ = true;
    return pass_full_;
}

int BpfSession::consume_pass(int timeout_ms)
{
    pass_taken_ = 0;
    pass_full_ = false;
    // A negative return from on_record ends libbpf's loop after that record
    // (its consumer position includes it): the pass's bound.
    int woken = timeout_ms >= 0 ? ring_buffer__poll(ring_.get(), timeout_ms) : 0;
    rethrow_handler_failure();
    if (pass_full_)
        return pass_taken_;
    if (woken < 0)
        return woken;
    // The BPF side wakes us only when the ring fills up (see wakeup_flags()),
    // so after every wait take what was written quietly too.
    int quiet = ring_buffer__consume(ring_.get());
    rethrow_handler_failure();
    return quiet < 0 && !pass_full_ ? quiet : pass_taken_;
}

int BpfSession::poll(int timeout_ms)
{
    pass_left_ = kPassRecords;
    pass_end_ns_ = monotonic_ns() + static_cast<uint64_t>(std::max(timeout_ms, 0)) * 1'000'000 + kPassNs;
    return consume_pass(timeout_ms);
}

BpfSession::Drained BpfSession::stop_and_drain()
{
    bpf_link *iterator = std::exchange(skel_->links.learn_cred_holders, nullptr);
    rstwatch_bpf__detach(skel_.get());
    skel_->links.learn_cred_holders = iterator;
    pass_left_ = SIZE_MAX;
    pass_end_ns_ = monotonic_ns() + kStopDrainNs;
    Drained drained;
    drained.handed_over = consume_pass(-1);
    if (pass_full_) {
        counting_only_ = true;
        ring_buffer__consume(ring_.get());
        drained.left_unread = counted_;
    }
    return drained;
}

void BpfSession::learn_cred_holders()
{
    if (!skel_->links.learn_cred_holders)
        return;
    // The program writes no output: reading to the end runs it over every task.
    const UniqueFd iter(bpf_iter_create(bpf_link__fd(skel_->links.learn_cred_holders)));
    if (!iter.valid()) {
        spdlog::debug("task iterator: {}", errno_text(-errno));
        return;
    }
    char buf[64];
    ssize_t n;
    last_learnt_ns_ = monotonic_ns();  // holders pending before now are learnt below
    while ((n = read(iter.get(), buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
    }
    if (n < 0)
        spdlog::debug("task iterator: {}", errno_text(-errno));
}

BpfCounters BpfSession::counters() const
{
    BpfCounters total;
    int ncpus = libbpf_num_possible_cpus();
    if (ncpus <= 0)
        return total;
    std::vector<rw_counters> per_cpu(ncpus);
    __u32 key = 0;
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.counters), &key, per_cpu.data()) != 0)
        return total;
    for (const auto &c : per_cpu) {
        total.records_emitted += c.records_emitted;
        total.ring_buffer_full += c.ring_buffer_full;
        total.owner_lookups += c.owner_lookups;
        total.owners_unresolved += c.owners_unresolved;
        total.listeners_dropped += c.listeners_dropped;
    }
    // Pending owners the agent's own lookup found nobody for: once, not per CPU.
    total.owners_unresolved += owners_unresolved_;
    return total;
}

int BpfSession::listeners_map_fd() const { return bpf_map__fd(skel_->maps.listeners); }

__u8 *BpfSession::listened_ports() const { return skel_->bss->listened_ports; }

int BpfSession::records_map_fd() const { return bpf_map__fd(skel_->maps.records); }

}  // namespace rstwatch
