// The libbpf lifecycle, in libbpf-bootstrap's order: open the embedded
// skeleton, write its read-only configuration, load, attach, then poll the
// ring buffer. Errors here are fatal and carry a hint.
#pragma once

#include <linux/types.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kernel/kernel_support.h"
#include "kernel/tracking_filter.h"

extern "C" {
#include "rstwatch_abi.h"
}

struct rstwatch_bpf;
struct ring_buffer;

namespace rstwatch {

class KernelFeatures;
struct ProgramNeed;  // loader.cpp: a program, its hook and whether it is required

struct LoaderOptions {
    TrackingFilter filter;
    // Sent resets of untracked sockets that a tracked socket receives: the
    // backend's side, when it runs on this host.
    bool emit_peer_resets = true;
    // TTL of the peer's data and of resets (tcp:tcp_probe): tells a middlebox's
    // reset from the backend's, at one program run per received segment.
    // Without it, where fentry can attach (KernelSupport::ttls_by_fentry),
    // the TTLs come from the reset itself and the backend's SYN-ACK, at one
    // program run per reset and per connection.
    bool ttl_evidence = false;
    uint32_t ring_buffer_bytes = 4u << 20;  // power of two, at least a page
};

// The BPF side's counters, summed over CPUs; the losses are named as in
// LossCounts (events/loss.h).
struct BpfCounters {
    uint64_t records_emitted = 0;
    uint64_t ring_buffer_full = 0;   // records not reserved: the ring buffer was full
    uint64_t owner_lookups = 0;      // credentials not met before: the agent looked them up
    uint64_t owners_unresolved = 0;  // ... held by no process any more
    uint64_t listeners_dropped = 0;  // listeners not recorded: table full
};

class BpfSession {
public:
    using RecordHandler = std::function<void(std::span<const uint8_t>)>;

    // Opens, configures, loads and attaches; throws FatalError.
    BpfSession(const LoaderOptions &options, const KernelFeatures &kernel, RecordHandler handler);
    ~BpfSession();
    BpfSession(const BpfSession &) = delete;
    BpfSession &operator=(const BpfSession &) = delete;

    // Waits up to timeout_ms (less if the ring fills up) and hands records
    // to the handler: one pass, bounded (kPassRecords, kPassTime) so that
    // the caller gets control back however fast records arrive. Returns the
    // number consumed, or -errno (-EINTR on a signal); backlog() then says
    // whether the pass stopped at its bound with records still waiting.
    int poll(int timeout_ms);
    bool backlog() const { return pass_full_; }
    // At shutdown: detaches the programs that produce records (the task
    // iterator stays, for pending owners), then hands over what is left in
    // the ring, which can no longer grow, for at most kStopDrainNs: after a
    // storm it can hold a whole ring. What is left after that is counted,
    // not handed over.
    struct Drained {
        int handed_over = 0;
        uint64_t left_unread = 0;
    };
    Drained stop_and_drain();
    static constexpr uint64_t kStopDrainNs = 200'000'000;

    // One pass's bounds. 16384 records is 3 MiB of resets, about 80 ms of
    // the pipeline at full speed on this project's 2-core test machine.
    static constexpr size_t kPassRecords = 16384;
    static constexpr uint64_t kPassNs = 50'000'000;

    // Records the current credentials of every tracked process, and the
    // holders of credentials a reset met first (see learn_cred_holder() in
    // bpf/owner.bpf.h). The agent repeats it now and then for processes
    // started since, and at once for a record whose owner is pending.
    void learn_cred_holders();

    BpfCounters counters() const;
    // The listeners map, which seeding fills and the sweep prunes.
    int listeners_map_fd() const;
    // Its ports, one byte each (RW_PORTS), which the reset
    // programs check before it: the BPF object's .bss, mapped here.
    __u8 *listened_ports() const;
    // The ring buffer map (for its fill level, ring_fill.h).
    int records_map_fd() const;
    const std::vector<std::string> &attached_programs() const { return attached_; }
    const std::vector<std::string> &disabled_programs() const { return disabled_; }
    // What the kernel gave, and so which programs were loaded.
    const KernelSupport &kernel_support() const { return support_; }

private:
    void check_options(const LoaderOptions &options);
    void open_and_load(const LoaderOptions &options, const KernelFeatures &kernel);
    void lose_fentry_program(const ProgramNeed &need);
    void open_object();
    void configure(const LoaderOptions &options, const KernelFeatures &kernel);
    void choose_programs(const std::vector<ProgramNeed> &needs, const LoaderOptions &options,
                         const KernelFeatures &kernel);
    void load(const KernelFeatures &kernel);
    void start_task_iterator();
    void attach_programs(const std::vector<ProgramNeed> &needs, const KernelFeatures &kernel);
    static int on_record(void *ctx, void *data, size_t size);
    bool pass_is_over();
    int consume_pass(int timeout_ms);
    static bool owner_pending(std::span<const uint8_t> record);
    void attach_oom_raw();
    bool complete_owner(rw_reset_record &rec);
    std::optional<rw_cred_holder> known_holder(uint64_t cred) const;
    void rethrow_handler_failure();

    std::unique_ptr<struct ::rstwatch_bpf, void (*)(struct ::rstwatch_bpf *)> skel_;
    std::unique_ptr<struct ::ring_buffer, void (*)(struct ::ring_buffer *)> ring_;
    RecordHandler handler_;
    // An exception must not unwind through libbpf's C frames: on_record keeps
    // it here, stops the consumer, and poll()/drain() rethrow it.
    std::exception_ptr handler_failure_;
    // The current pass: records it may still take, when it must end, and
    // whether it ended at a bound.
    size_t pass_left_ = 0;
    uint64_t pass_end_ns_ = 0;
    bool pass_full_ = false;
    bool counting_only_ = false;  // past the stop's drain: count records, hand none over
    uint64_t counted_ = 0;
    int pass_taken_ = 0;
    std::vector<std::string> attached_;
    std::vector<std::string> disabled_;
    KernelSupport support_;
    bool filter_all_ = false;
    uint64_t last_learnt_ns_ = 0;     // CLOCK_MONOTONIC of the task iterator's last run
    uint64_t owners_unresolved_ = 0;  // pending owners nobody held
};

// Routes libbpf's own messages into spdlog (debug unless -v raises them).
void route_libbpf_logging(bool verbose);

}  // namespace rstwatch
