// What the running kernel lets rstwatch see, decided once at start from its
// BTF (never from its version number): which build of the BPF programs the
// loader picks, and which evidence is missing, with the causes that then
// cannot be named. `rstwatch run --check` prints it; `rstwatch run` logs the
// gaps in one line.
#pragma once

#include <string>
#include <vector>

namespace rstwatch {

class KernelFeatures;

struct KernelSupport {
    // bpf_get_socket_cookie() in tracing programs (5.12); without it the
    // cookie is read from the socket, where it may not be set yet.
    bool tracing_socket_cookie = true;
    // Resets sent without a connection socket (none, a TIME_WAIT socket)
    // are traced: by tcp:tcp_send_reset itself, which also gives the
    // reason (6.10), or else by fentry on tcp_v4/v6_send_reset where ftrace
    // can attach.
    bool sent_resets_without_socket = true;
    bool sent_resets_by_tracepoint = true;  // the enum sk_rst_reason exists
    bool socketless_resets_by_fentry = false;
    bool oom_kills = true;           // oom:mark_victim
    bool oom_victim_details = true;  // its comm and RSS fields (6.8)
    bool segment_ttl = true;         // tcp:tcp_probe, for --ttl-evidence
    // TTLs by default, at no cost per segment: fentry on tcp_reset(), which
    // takes the reset's skb since 5.11, and on tcp_finish_connect() (the
    // backend's SYN-ACK), where ftrace can attach. Cleared by the loader
    // when those programs fail to load or attach.
    bool ttls_by_fentry = false;
};

// Asks the kernel. RSTWATCH_FORCE_FALLBACKS=1 in the environment makes the
// loader take every fallback this kernel could avoid, as the oldest kernels
// would (no cookie helper, no fentry): for tests and benchmarks of those
// paths on a recent kernel.
KernelSupport probe_kernel_support(const KernelFeatures &kernel);
KernelSupport probe_kernel_support(const KernelFeatures &kernel, bool force_fallbacks);

// One row of --check: a kernel facility, whether this kernel has it, and
// what its absence costs.
struct SupportRow {
    std::string facility;
    std::string since;  // the kernel that brought it, for the reader
    bool present = false;
    std::string without_it;  // evidence lost and causes affected; or the path taken
    bool evidence = false;   // absence loses evidence (not just speed)
    // The two ways to TTLs: a run uses one, and only its absence is a gap.
    enum class TtlPath { None, PerSegment, AtResets } ttl_path = TtlPath::None;
};

std::vector<SupportRow> support_rows(const KernelSupport &support);

// The evidence this kernel cannot give, in one line for the start-up log;
// empty when nothing is missing. TTLs are a gap by the path the run takes:
// tcp:tcp_probe with --ttl-evidence, fentry without.
std::string evidence_gaps_line(const KernelSupport &support, bool ttl_evidence_requested);

// The --check table.
std::string support_table(const KernelSupport &support);

}  // namespace rstwatch
