// What the diagnosis engine (agent/diagnosis) concludes about one reset, as
// codes with parameters: the cause, the facts it rests on and what to
// change. No words here: agent/outputs (evidence_text.h) renders them, so
// the engine and its tests deal in codes and numbers, and a kernel that
// names things differently cannot change a conclusion.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "events/reset_reasons.h"
#include "events/tcp_state.h"

namespace rstwatch {

enum class Cause {
    BackendCrash,
    BackendOom,
    KeepaliveRace,
    MiddleboxIdle,
    StaleReuse,
    MtuBlackhole,
    BackendShutdown,  // stopped on purpose (SIGTERM, SIGINT, SIGQUIT, exit) with nginx's request open
    ClientSide,
    Unknown,
};
enum class Confidence { High, Medium, Low };

const char *to_string(Cause c);       // "backend_crash", ...
const char *to_string(Confidence c);  // "high" | "medium" | "low"
std::optional<Cause> cause_from_string(const std::string &name);
// Causes that are failures of the upstream side (everything but client_side and unknown).
bool is_upstream_failure(Cause c);

// One fact a person can check. Each code lists the parameters it uses.
enum class EvidenceCode : uint8_t {
    ClientConnection,      // comm, address: a connection nginx accepted, and its client
    NginxAbandoned,        // comm, reason: nginx reset its upstream connection itself
    RoleUnknown,           // neither the connect() nor the accept() was seen
    NoRequestWaiting,      // comm: the backend had sent last
    ResetAfterRequest,     // ms, comm, reused: reset that long after the request, before any response
    ResetDuringRequest,    // reused: the same, time since the request unknown
    PoolReuse,             // ms: the connection sat that long in the pool before its reuse
    BackendSentReset,      // reason: the backend's side is on this host and sent the reset
    BackendExiting,        // pid, comm, signal: the backend's task was exiting on a signal
    OomKillsUntraced,      // a SIGKILL, and this kernel does not trace OOM kills
    BackendOomKilled,      // pid, comm, ms (kill before the reset), rss_kb, cgroup
    BackendHadNoSocket,    // comm, listener: the backend's kernel had no socket for the connection
    BackendClosedOnData,   // the backend had closed it: data after its close got the reset
    BackendClosedState,    // state: the backend had closed it: its socket's state
    BackendSegmentsStalled,  // segments, mss, timeouts: the backend gave up retransmitting
    BackendResetItself,    // pid, comm: the backend's socket reset, nobody exiting
    BackendElsewhere,      // no reset from a backend side on this host
    SocketlessResetsUntraced,  // none traced, and this kernel cannot trace them (before 6.10)
    RstTtlDiffers,         // rst_ttl, data_ttl: the reset came from another hop
    NginxSegmentsStalled,  // comm, segments, mss, timeouts: nginx's segments were not acknowledged
    RstTtlMatches,         // rst_ttl: the backend's host sent it
    RstTtlUnknown,         // a middlebox cannot be ruled out
    BackendFinBeforeReset, // the backend's FIN reached nginx before the reset (CLOSE_WAIT)
    RequestAcknowledged,   // the backend acknowledged part of the request: its socket was alive
    CandidatesOnReuse,     // keepalive_race, stale_reuse, middlebox_idle, or the process ended
    CandidatesOnFirstRequest,  // backend_crash, backend_oom, backend_shutdown or stale_reuse
    CandidatesMidRequest,  // backend_crash, backend_oom, backend_shutdown: its process ended or reset
    CandidatesLateReset,   // ms: the same, or mtu_blackhole: a reset long after the request
    CandidatesStalled,     // mtu_blackhole, or the backend host was down and came back
    ConnectRefused,        // address: nginx's SYN was answered with a reset (nginx logs 111, not 104)
    Recorded,              // text: read back from the store, which keeps the words
};

// Built with designated initializers naming the parameters the code uses;
// the `{}` on class members lets the others be left out (GCC's
// -Wmissing-field-initializers).
struct Evidence {
    EvidenceCode code = EvidenceCode::Recorded;
    double ms = 0;
    uint32_t pid = 0;
    std::string comm{};     // a process: nginx's worker or the backend's task
    std::string address{};  // "addr:port"
    int signal = 0;
    // A sent reset's reason; raw code for one this build cannot name.
    std::optional<ResetReason> reason{};
    std::optional<uint32_t> reason_code{};
    TcpState state = TcpState::Unknown;
    uint32_t segments = 0;  // unacknowledged, of up to `mss` bytes each
    uint32_t mss = 0;
    uint32_t timeouts = 0;  // retransmission timeouts in a row
    uint8_t rst_ttl = 0;
    uint8_t data_ttl = 0;
    std::optional<uint64_t> rss_kb{};
    std::string cgroup{};
    bool reused = false;    // the request was on a reused connection
    bool listener = false;  // only the backend's listener answered
    std::string text{};
};

// What to change. Each code lists the parameters it uses.
enum class HintCode : uint8_t {
    None,
    ClientsGoAway,          // a client reset its connection to nginx
    NginxGaveUp,            // nginx abandoned an upstream request
    BackendKilled,          // comm: SIGKILL, OOM killer or kill -9 (untraced)
    BackendOutOfMemory,     // comm, cgroup
    BackendDied,            // comm, signal
    BackendStopped,         // comm, signal (0: it called exit): drain before stopping
    BackendsRestarted,      // drain nginx before restarting backends
    BackendSegmentsLost,    // mss, address (the backend): path MTU
    NginxSegmentsLost,      // mss, address (the backend): path MTU, or the backend host was down
    BackendEndedMidRequest, // the backend's socket was alive: its process ended or reset (from afar)
    BackendGaveUpLate,      // idle_ms (since the request): the same, or its response did not get through
    CheckBackendRestarts,   // unknown cause on a first request
    KeepaliveBelowPoolIdle, // idle_ms, keepalive_ms: unknown cause on reuse
    KeepaliveBelowPoolIdleRemote, // idle_ms, keepalive_ms: the same, the backend on another host;
                                  // keepalive_ms 0: too short an idle time to blame a timeout
    // From the pool idle times of an upstream's resets (idle_ms: the reset's,
    // or the smallest in its cluster; cluster_resets, cluster_median_ms):
    BackendIdleTimeout,     // idle, keepalive_ms: the backend closes idle connections
    MiddleboxIdleTimeout,   // idle, keepalive_ms, address: a middlebox forgets idle flows
    RestartedUnderPool,     // idle: backends restarted under pooled connections
    BackendNotListening,    // address: nothing listens there
    Recorded,               // text: read back from the store
};

struct Hint {
    HintCode code = HintCode::None;
    std::string comm{};
    std::string cgroup{};
    std::string address{};
    int signal = 0;
    uint32_t mss = 0;
    double idle_ms = 0;
    double keepalive_ms = 0;     // the keepalive_timeout to set in nginx's upstream block
    size_t cluster_resets = 0;   // 0: a single reset, no cluster
    double cluster_median_ms = 0;
    std::string text{};

    bool empty() const { return code == HintCode::None; }
};

// "client_connection", ...: for logs and test messages, not shown to users.
const char *to_string(EvidenceCode code);
const char *to_string(HintCode code);

struct Diagnosis {
    Cause cause = Cause::Unknown;
    Confidence confidence = Confidence::Low;
    std::vector<Evidence> evidence;
    Hint hint;
};

}  // namespace rstwatch
