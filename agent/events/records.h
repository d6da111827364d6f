// Decoded records: what the agent, its tables and its outputs work with.
// Pure C++: nothing here knows libbpf. Decoding from the ring buffer's bytes
// lives in decode.h; the wire layout in bpf/rstwatch_abi.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "events/evidence.h"
#include "events/reset_reasons.h"
#include "events/tcp_state.h"

namespace rstwatch {

enum class Direction { Received, Sent };
enum class Role { Upstream, Downstream, Other };

const char *to_string(Direction d);  // "received" | "sent"
const char *to_string(Role r);       // "upstream" | "downstream" | "other"

struct ResetEvent {
    int64_t time_ns = 0;      // CLOCK_REALTIME, nanoseconds since the epoch
    uint64_t mono_ns = 0;     // CLOCK_MONOTONIC as stamped by BPF
    Direction direction = Direction::Received;
    Role role = Role::Other;
    bool ipv6 = false;
    std::string local;        // "addr:port" or "[addr]:port"
    std::string remote;
    TcpState state = TcpState::Unknown;
    // Sent resets on Linux 6.10+: the kernel's reason, through the running
    // kernel's numbering (reset_reasons.h), and its number as the record
    // had it (which the store does not keep).
    std::optional<ResetReason> reason;
    std::optional<uint32_t> reason_code;

    bool owner_known = false; // false: no tracked owner (peer evidence or --all)
    // How the owner was found. Usually from the credentials of the socket's
    // file. owner_holder: it held the socket at the reset (its close() sent
    // it, say), so it was the task on the CPU. owner_listener: a client
    // connection its worker had closed already, so pid/comm is the process
    // listening (nginx's master).
    bool owner_listener = false;
    bool owner_holder = false;
    uint32_t pid = 0;         // the socket's owner (nginx worker), not the CPU's task
    std::string comm;

    uint32_t on_cpu_pid = 0;  // the task that happened to be on the CPU
    std::string on_cpu_comm;
    bool on_cpu_exiting = false;
    int on_cpu_exit_signal = 0;

    bool no_socket = false;   // sent reset that had no full socket
    bool orphan = false;      // sent from a socket its application had closed
    uint64_t sock_cookie = 0;

    std::optional<double> idle_ms;
    std::optional<double> pool_idle_ms;
    // Since the socket last sent data: on nginx's upstream connections, its
    // request (or that request's retransmission).
    std::optional<double> since_request_ms;
    std::optional<uint64_t> bytes_sent;
    std::optional<uint64_t> bytes_received;
    // From the kernel's stamps of the last data each way (jiffies, see
    // fill_turn() in bpf/rstwatch.bpf.c): the client side had spoken last.
    bool in_request = false;  // a request waited for its first response byte
    bool reused = false;      // ... on a connection that had answered before
    bool request_acked = false;  // ... and the backend had acknowledged part of it: its socket was alive
    uint8_t data_ttl = 0;     // TTL / hop limit of the peer's data segments, 0 unknown
    uint8_t rst_ttl = 0;      // TTL / hop limit of the reset itself, 0 unknown
    uint8_t stalled_retransmits = 0;  // retransmission timeouts in a row without progress

    std::optional<Diagnosis> diagnosis;  // for resets on tracked connections
    uint32_t retransmits = 0;  // over the connection's life, SYN retransmissions included
    uint32_t packets_out = 0;
    uint32_t mss = 0;
};

struct OomEvent {
    int64_t time_ns = 0;      // CLOCK_REALTIME
    uint64_t mono_ns = 0;
    uint32_t pid = 0;
    std::string comm;
    std::optional<uint64_t> rss_kb;  // anon + file + shmem, where the kernel gives them
    std::optional<uint64_t> total_vm_kb;
    std::string cgroup;       // the victim's cgroup path, "" where not readable
};

using Event = std::variant<ResetEvent, OomEvent>;

}  // namespace rstwatch
