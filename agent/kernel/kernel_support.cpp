#include "kernel/kernel_support.h"

#include <cstdlib>
#include <cstring>

#include "kernel/kernel_features.h"
#include "common/text_table.h"

namespace rstwatch {

KernelSupport probe_kernel_support(const KernelFeatures &kernel)
{
    const char *force = std::getenv("RSTWATCH_FORCE_FALLBACKS");
    return probe_kernel_support(kernel, force && std::strcmp(force, "1") == 0);
}

KernelSupport probe_kernel_support(const KernelFeatures &kernel, bool force_fallbacks)
{
    KernelSupport s;
    // The helper's tracing flavour has a function of its own in BTF.
    s.tracing_socket_cookie = kernel.has_kernel_function("bpf_get_socket_ptr_cookie") && !force_fallbacks;
    // The reason enum and the tracepoint's coverage of socketless resets
    // came in one series ("rstreason", Linux 6.10); the BPF side reads the
    // reason on the same test (core_fixes.bpf.h).
    const bool by_tracepoint = kernel.has_btf_enum("sk_rst_reason");
    s.sent_resets_by_tracepoint = by_tracepoint;
    s.socketless_resets_by_fentry = !by_tracepoint && !force_fallbacks &&
                                    kernel.can_trace_function("tcp_v4_send_reset") &&
                                    kernel.can_trace_function("tcp_v6_send_reset");
    s.sent_resets_without_socket = by_tracepoint || s.socketless_resets_by_fentry;
    s.oom_kills = kernel.has_classic_tracepoint("oom", "mark_victim");
    s.oom_victim_details = s.oom_kills && kernel.has_struct_member("trace_event_raw_mark_victim", "anon_rss");
    s.segment_ttl = kernel.has_btf_tracepoint("tcp_probe");
    // tcp_reset() gained the reset's skb in Linux 5.11 ("tcp: parse mptcp
    // options contained in reset packets"); tcp_finish_connect() has had the
    // SYN-ACK's for ever.
    s.ttls_by_fentry = !force_fallbacks && kernel.function_has_param("tcp_reset", "skb") &&
                       kernel.function_has_param("tcp_finish_connect", "skb") &&
                       kernel.can_trace_function("tcp_reset") && kernel.can_trace_function("tcp_finish_connect");
    return s;
}

std::vector<SupportRow> support_rows(const KernelSupport &s)
{
    return {
        {s.socketless_resets_by_fentry ? "resets sent without a socket (fentry on tcp_v4/v6_send_reset)"
                                       : "tcp:tcp_send_reset for resets sent without a socket",
         "6.10", s.sent_resets_without_socket,
         "a backend on this host that restarted (stale_reuse) or had closed the connection (keepalive_race) "
         "leaves no record of its side: those resets are unknown unless the idle times tell",
         true},
        {"oom:mark_victim", "4.8", s.oom_kills,
         "OOM kills are not seen: a backend killed with SIGKILL is unknown (backend_oom or backend_crash)", true},
        {"oom:mark_victim with comm and RSS", "6.8", s.oom_victim_details,
         "the OOM victim's name and memory are not shown (its pid still is)", false},
        {"TTLs by default (fentry on tcp_reset, tcp_finish_connect)", "5.11", s.ttls_by_fentry,
         "TTLs only with --ttl-evidence, a BPF program per received segment (the default needs fentry programs to "
         "attach, and tcp_reset() given the reset's skb, 5.11+): a middlebox's reset (middlebox_idle) cannot be told "
         "from the backend's",
         true, SupportRow::TtlPath::AtResets},
        {"tcp:tcp_probe (--ttl-evidence)", "4.16", s.segment_ttl,
         "TTLs unknown: a middlebox's reset (middlebox_idle) cannot be told from the backend's", true,
         SupportRow::TtlPath::PerSegment},
        {"bpf_get_socket_cookie in tracing programs", "5.12", s.tracing_socket_cookie,
         "nothing lost: the cookie is read from the socket, 0 when nothing asked for it yet", false},
    };
}

std::string evidence_gaps_line(const KernelSupport &support, bool ttl_evidence_requested)
{
    std::string line;
    for (const SupportRow &row : support_rows(support)) {
        if (row.present || !row.evidence)
            continue;
        const auto unused = ttl_evidence_requested ? SupportRow::TtlPath::AtResets : SupportRow::TtlPath::PerSegment;
        if (row.ttl_path == unused)
            continue;
        line += (line.empty() ? "" : "; ") + ("no " + row.facility + " (Linux " + row.since + "+): " + row.without_it);
    }
    return line;
}

std::string support_table(const KernelSupport &support)
{
    TextTable table({{"facility"}, {"since"}, {"here"}, {"without it"}});
    for (const SupportRow &row : support_rows(support))
        table.add_row({row.facility, row.since, row.present ? "yes" : "no", row.present ? "" : row.without_it});
    return table.render();
}

}  // namespace rstwatch
