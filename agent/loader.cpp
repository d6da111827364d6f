#include "loader.h"

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

#include "errors.h"
#include "kernel_features.h"
#include "rstwatch.skel.h"
#include "unique_fd.h"

extern "C" {
#include "rstwatch_abi.h"
}

namespace rstwatch {

namespace {

bool g_libbpf_verbose = false;

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

// Comm names go to BPF as two little-endian words, matching how
// the BPF side reads task->comm's 16 bytes.
void comm_words(const std::string &comm, volatile __u64 (&words)[2])
{
    char buf[RW_COMM_LEN] = {};
    std::memcpy(buf, comm.data(), std::min(comm.size(), sizeof(buf) - 1));
    __u64 w[2];
    std::memcpy(w, buf, sizeof(w));
    words[0] = w[0];
    words[1] = w[1];
}

enum class Hook { BtfTracepoint, ClassicTracepoint, Cgroup };

struct ProgramNeed {
    bpf_program *prog;
    bpf_link **link;  // the skeleton's slot: it destroys the link with the object
    Hook hook;
    const char *name;      // the tracepoint, or the cgroup hook ("post_bind4")
    const char *category;  // classic tracepoints' category
    bool required;
    const char *without_it;
};

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

}  // namespace

void route_libbpf_logging(bool verbose)
{
    g_libbpf_verbose = verbose;
    libbpf_set_print(libbpf_to_spdlog);
}

BpfSession::BpfSession(const LoaderOptions &options, const KernelFeatures &kernel, RecordHandler handler)
    : skel_(nullptr, rstwatch_bpf__destroy), ring_(nullptr, ring_buffer__free), handler_(std::move(handler))
{
    const auto &filter = options.filter;
    if (filter.comms.size() > RW_MAX_COMMS || filter.pids.size() > RW_MAX_PIDS)
        throw FatalError("too many --comm or --pid values",
                         "at most " + std::to_string(RW_MAX_COMMS) + " of each");
    if (options.ring_buffer_bytes < 4096 || (options.ring_buffer_bytes & (options.ring_buffer_bytes - 1)))
        throw FatalError("ring buffer size must be a power of two of at least 4096 bytes");

    skel_.reset(rstwatch_bpf__open());
    if (!skel_)
        throw FatalError("cannot open the embedded BPF object: " + errno_text(errno));

    auto *ro = skel_->rodata;
    ro->track_all_tasks = filter.all;
    ro->emit_peer_resets = options.emit_peer_resets;
    ro->ttl_evidence = options.ttl_evidence;
    ro->tracked_pid_count = filter.pids.size();
    for (size_t i = 0; i < filter.pids.size(); i++)
        ro->tracked_pids[i] = filter.pids[i];
    ro->tracked_comm_count = filter.comms.size();
    for (size_t i = 0; i < filter.comms.size(); i++)
        comm_words(filter.comms[i], ro->tracked_comms[i]);

    ro->ring_wakeup_bytes = options.ring_buffer_bytes / 8;
    if (int err = bpf_map__set_max_entries(skel_->maps.records, options.ring_buffer_bytes))
        throw FatalError("cannot size the ring buffer: " + errno_text(err));
    // Probe before load and switch off what the kernel cannot attach,
    // rather than failing: only the reset hooks are indispensable.
    auto *p = &skel_->progs;
    auto *l = &skel_->links;
    const ProgramNeed needs[] = {
        {p->on_tcp_receive_reset, &l->on_tcp_receive_reset, Hook::BtfTracepoint, "tcp_receive_reset", nullptr,
         true, ""},
        {p->on_tcp_send_reset, &l->on_tcp_send_reset, Hook::BtfTracepoint, "tcp_send_reset", nullptr, true, ""},
        {p->on_post_bind4, &l->on_post_bind4, Hook::Cgroup, "post_bind4", nullptr, true, ""},
        {p->on_post_bind6, &l->on_post_bind6, Hook::Cgroup, "post_bind6", nullptr, true, ""},
        {p->on_tcp_probe, &l->on_tcp_probe, Hook::BtfTracepoint, "tcp_probe", nullptr, false,
         "the TTL of resets is unknown: middlebox resets cannot be told apart"},
        {p->on_mark_victim, &l->on_mark_victim, Hook::ClassicTracepoint, "mark_victim", "oom", false,
         "OOM kills are not reported"},
    };
    // A per-segment hook: only when asked for (see LoaderOptions::ttl_evidence).
    if (!options.ttl_evidence)
        bpf_program__set_autoload(p->on_tcp_probe, false);
    for (const auto &need : needs) {
        if (!bpf_program__autoload(need.prog) || need.hook == Hook::Cgroup)
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
    const UniqueFd cgroup_root(open_cgroup_root(kernel));  // each link holds its own reference

    if (int err = rstwatch_bpf__load(skel_.get())) {
        std::string hint = "run with -v to see the verifier log";
        // The verifier's rejections are EACCES too: blame privileges only without them.
        if ((err == -EPERM || err == -EACCES) && !kernel.is_root())
            hint = "run as root, or with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN";
        throw FatalError("cannot load the BPF programs: " + errno_text(err), hint);
    }
    if (skel_->kconfig && skel_->kconfig->CONFIG_HZ == 0)
        spdlog::warn("kernel config not readable (/proc/config.gz, /boot/config-*): "
                     "idle times from kernel timestamps are unknown");

    // Before the reset hooks, so that their first resets find the owners.
    skel_->links.learn_cred_holders = bpf_program__attach_iter(skel_->progs.learn_cred_holders, nullptr);
    if (!skel_->links.learn_cred_holders)
        spdlog::warn("cannot attach the task iterator ({}): each process's owner is found by a task-list walk "
                     "at its first reset",
                     errno_text(-errno));
    learn_cred_holders();

    for (const auto &need : needs) {
        if (!bpf_program__autoload(need.prog))
            continue;
        const bool cgroup = need.hook == Hook::Cgroup;
        const std::string hook = cgroup ? std::string("cgroup/") + need.name : std::string(need.name);
        bpf_link *link = cgroup ? bpf_program__attach_cgroup(need.prog, cgroup_root.get()) : bpf_program__attach(need.prog);
        if (!link) {
            int err = -errno;
            throw FatalError("cannot attach to " + std::string(cgroup ? "the cgroup hook " : "the tracepoint ") + hook +
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

    ring_.reset(ring_buffer__new(bpf_map__fd(skel_->maps.records), on_record, this, nullptr));
    if (!ring_)
        throw FatalError("cannot set up the ring buffer consumer: " + errno_text(errno));
}

BpfSession::~BpfSession() = default;

int BpfSession::on_record(void *ctx, void *data, size_t size)
{
    auto *self = static_cast<BpfSession *>(ctx);
    try {
        self->handler_(std::span<const uint8_t>(static_cast<const uint8_t *>(data), size));
    } catch (...) {
        self->handler_failure_ = std::current_exception();
        return -ECANCELED;  // libbpf stops consuming and returns this
    }
    return 0;
}

void BpfSession::rethrow_handler_failure()
{
    if (handler_failure_)
        std::rethrow_exception(std::exchange(handler_failure_, nullptr));
}

int BpfSession::poll(int timeout_ms)
{
    int woken = ring_buffer__poll(ring_.get(), timeout_ms);
    rethrow_handler_failure();
    if (woken < 0)
        return woken;
    // The BPF side wakes us only when the ring fills up (see wakeup_flags()),
    // so after every wait take what was written quietly too.
    int quiet = ring_buffer__consume(ring_.get());
    rethrow_handler_failure();
    return quiet < 0 ? quiet : woken + quiet;
}

int BpfSession::drain()
{
    int n = ring_buffer__consume(ring_.get());
    rethrow_handler_failure();
    return n;
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
        total.records_lost += c.records_lost;
        total.owner_scans += c.owner_scans;
        total.owners_unresolved += c.owners_unresolved;
        total.endpoints_dropped += c.endpoints_dropped;
    }
    return total;
}

int BpfSession::listeners_map_fd() const { return bpf_map__fd(skel_->maps.listeners); }

__u64 *BpfSession::listened_ports() const { return skel_->bss->listened_ports; }

int BpfSession::records_map_fd() const { return bpf_map__fd(skel_->maps.records); }

}  // namespace rstwatch
