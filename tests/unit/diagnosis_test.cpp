// The diagnosis engine on hand-made event sequences: the evidence each cause
// leaves, in the order the ring buffer delivers it. Evidence and hints are
// asserted as codes and numbers; their words are format_test's.
#include <gtest/gtest.h>
#include <signal.h>

#include "diagnosis/diagnosis.h"

using namespace rstwatch;

namespace {

constexpr uint64_t kMs = 1'000'000;
const std::string kNginx = "198.18.0.1:40312";
const std::string kBackend = "198.18.1.2:8081";

const Evidence *find(const Diagnosis &d, EvidenceCode code)
{
    for (const auto &e : d.evidence)
        if (e.code == code)
            return &e;
    return nullptr;
}

bool has(const Diagnosis &d, EvidenceCode code) { return find(d, code) != nullptr; }

// For failure messages: the codes found, and the hint's.
std::string all_evidence(const Diagnosis &d)
{
    std::string s;
    for (const auto &e : d.evidence)
        s += std::string("\n  ") + to_string(e.code);
    return s + "\n  hint: " + to_string(d.hint.code);
}

// nginx's worker receives a reset on its upstream connection.
ResetEvent nginx_received(uint64_t at_ms)
{
    ResetEvent r;
    r.mono_ns = at_ms * kMs;
    r.direction = Direction::Received;
    r.role = Role::Upstream;
    r.local = kNginx;
    r.remote = kBackend;
    r.state = TcpState::Established;
    r.owner_known = true;
    r.pid = 4121;
    r.comm = "nginx";
    r.in_request = true;
    r.since_request_ms = 0.4;
    r.data_ttl = 64;
    r.rst_ttl = 64;
    return r;
}

ResetEvent reused(ResetEvent r, double pool_idle_ms)
{
    r.reused = true;
    r.pool_idle_ms = pool_idle_ms;
    return r;
}

// The backend's socket on this host sends the reset (no tracked owner).
ResetEvent backend_sent(uint64_t at_ms, std::optional<ResetReason> reason,
                        TcpState state = TcpState::Established)
{
    ResetEvent p;
    p.mono_ns = at_ms * kMs;
    p.direction = Direction::Sent;
    p.local = kBackend;
    p.remote = kNginx;
    p.state = state;
    p.reason = reason;
    p.on_cpu_pid = 777;
    p.on_cpu_comm = "backend";
    return p;
}

// The backend's reset when it gave up sending: `timeouts` retransmission
// timeouts in a row, `segments` full-size segments still unacknowledged.
ResetEvent backend_gave_up(uint64_t at_ms, ResetReason reason, uint8_t timeouts, uint32_t segments)
{
    ResetEvent p = backend_sent(at_ms, reason);
    p.stalled_retransmits = timeouts;
    p.packets_out = segments;
    p.mss = 1448;
    return p;
}

ResetEvent exiting(ResetEvent p, int sig)
{
    p.on_cpu_exiting = true;
    p.on_cpu_exit_signal = sig;
    return p;
}

// Feeds events in ring-buffer order and returns the diagnosis of `reset`.
Diagnosis diagnose_with(Diagnoser &d, std::vector<Event> before, const ResetEvent &reset,
                        std::vector<Event> after = {})
{
    for (auto &e : before)
        d.add(e);
    d.add(reset);
    for (auto &e : after)
        d.add(e);
    std::optional<Diagnosis> found;
    for (const Event &e : d.take_all()) {
        const auto *r = std::get_if<ResetEvent>(&e);
        if (!r || !r->owner_known) {
            EXPECT_TRUE(!r || !r->diagnosis) << "evidence events get no diagnosis of their own";
            continue;
        }
        if (r->mono_ns == reset.mono_ns && r->local == reset.local)
            found = r->diagnosis;
    }
    EXPECT_TRUE(found);
    return found.value_or(Diagnosis{});
}

Diagnosis diagnose_after(Diagnoser &d, std::vector<Event> before, const ResetEvent &reset)
{
    return diagnose_with(d, std::move(before), reset);
}

std::optional<Diagnosis> diagnose_alone(Diagnoser &d, const ResetEvent &reset)
{
    d.add(reset);
    auto events = d.take_all();
    return std::get<ResetEvent>(events.back()).diagnosis;
}

}  // namespace

TEST(Diagnosis, BackendExitingOnSignalIsACrash)
{
    Diagnoser d;
    auto result = diagnose_after(d, {exiting(backend_sent(100, ResetReason::TcpAbortOnClose), SIGABRT)},
                                 nginx_received(100));
    EXPECT_EQ(result.cause, Cause::BackendCrash);
    EXPECT_EQ(result.confidence, Confidence::High);
    const Evidence *exit = find(result, EvidenceCode::BackendExiting);
    ASSERT_TRUE(exit) << all_evidence(result);
    EXPECT_EQ(exit->pid, 777u);
    EXPECT_EQ(exit->comm, "backend");
    EXPECT_EQ(exit->signal, SIGABRT);
    const Evidence *request = find(result, EvidenceCode::ResetAfterRequest);
    ASSERT_TRUE(request) << all_evidence(result);
    EXPECT_DOUBLE_EQ(request->ms, 0.4);
    EXPECT_FALSE(request->reused);
    const Evidence *sent = find(result, EvidenceCode::BackendSentReset);
    ASSERT_TRUE(sent) << all_evidence(result);
    EXPECT_EQ(sent->reason, ResetReason::TcpAbortOnClose);
    EXPECT_EQ(result.hint.code, HintCode::BackendDied);
    EXPECT_EQ(result.hint.comm, "backend");
    EXPECT_EQ(result.hint.signal, SIGABRT);
}

// A deploy, a scale-down, a restart without drain: the backend was stopped
// on purpose with nginx's request open. Told from a crash by the signal.
TEST(Diagnosis, BackendStoppedOnPurposeIsAShutdownNotACrash)
{
    for (int sig : {SIGTERM, SIGINT, SIGQUIT, 0}) {
        Diagnoser d;
        auto result = diagnose_after(d, {exiting(backend_sent(100, ResetReason::TcpAbortOnClose), sig)},
                                     nginx_received(100));
        EXPECT_EQ(result.cause, Cause::BackendShutdown) << "signal " << sig;
        EXPECT_EQ(result.confidence, Confidence::High);
        const Evidence *exit = find(result, EvidenceCode::BackendExiting);
        ASSERT_TRUE(exit) << all_evidence(result);
        EXPECT_EQ(exit->signal, sig);
        EXPECT_EQ(result.hint.code, HintCode::BackendStopped);
        EXPECT_EQ(result.hint.signal, sig);
    }
    for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGILL, SIGFPE}) {
        Diagnoser d;
        auto result = diagnose_after(d, {exiting(backend_sent(100, ResetReason::TcpAbortOnClose), sig)},
                                     nginx_received(100));
        EXPECT_EQ(result.cause, Cause::BackendCrash) << "signal " << sig;
        EXPECT_EQ(result.hint.code, HintCode::BackendDied);
    }
}

TEST(Diagnosis, BackendKilledByOomKillerIsOom)
{
    Diagnoser d;
    OomEvent oom;
    oom.mono_ns = 97 * kMs;
    oom.pid = 777;
    oom.comm = "backend";
    oom.rss_kb = 65536;
    oom.cgroup = "/rstwatch-test";
    auto result = diagnose_after(d, {oom, exiting(backend_sent(100, ResetReason::TcpAbortOnClose), SIGKILL)},
                                 nginx_received(100));
    EXPECT_EQ(result.cause, Cause::BackendOom);
    EXPECT_EQ(result.confidence, Confidence::High);
    const Evidence *kill = find(result, EvidenceCode::BackendOomKilled);
    ASSERT_TRUE(kill) << all_evidence(result);
    EXPECT_EQ(kill->pid, 777u);
    EXPECT_DOUBLE_EQ(kill->ms, 3) << "the kill came 3 ms before the reset";
    EXPECT_EQ(kill->rss_kb, 65536u);
    EXPECT_EQ(kill->cgroup, "/rstwatch-test");
    EXPECT_FALSE(has(result, EvidenceCode::BackendExiting)) << "the kill says it";
    EXPECT_EQ(result.hint.code, HintCode::BackendOutOfMemory);
    EXPECT_EQ(result.hint.cgroup, "/rstwatch-test");
}

TEST(Diagnosis, OomKillOfAnotherProcessDoesNotMakeACrashAnOom)
{
    Diagnoser d;
    OomEvent oom;
    oom.mono_ns = 97 * kMs;
    oom.pid = 778;
    auto result = diagnose_after(d, {oom, exiting(backend_sent(100, ResetReason::TcpAbortOnClose), SIGKILL)},
                                 nginx_received(100));
    EXPECT_EQ(result.cause, Cause::BackendCrash);
    EXPECT_EQ(result.hint.signal, SIGKILL);
}

TEST(Diagnosis, BackendThatClosedTheIdleConnectionIsAKeepaliveRace)
{
    Diagnoser d;
    auto first = diagnose_after(d, {backend_sent(2000, ResetReason::TcpAbortOnData, TcpState::FinWait1)},
                                reused(nginx_received(2000), 2000));
    EXPECT_EQ(first.cause, Cause::KeepaliveRace);
    EXPECT_EQ(first.confidence, Confidence::High);
    EXPECT_TRUE(has(first, EvidenceCode::BackendClosedOnData)) << all_evidence(first);
    const Evidence *reuse = find(first, EvidenceCode::PoolReuse);
    ASSERT_TRUE(reuse) << all_evidence(first);
    EXPECT_DOUBLE_EQ(reuse->ms, 2000);
    // One reset bounds the backend's timeout from above.
    EXPECT_EQ(first.hint.code, HintCode::BackendIdleTimeout);
    EXPECT_EQ(first.hint.cluster_resets, 0u);
    EXPECT_DOUBLE_EQ(first.hint.idle_ms, 2000);
    EXPECT_DOUBLE_EQ(first.hint.keepalive_ms, 1600);

    auto second = diagnose_after(d, {backend_sent(6000, ResetReason::TcpTimewaitSocket, TcpState::TimeWait)},
                                 reused(nginx_received(6000), 2100));
    EXPECT_EQ(second.cause, Cause::KeepaliveRace);
    const Evidence *closed = find(second, EvidenceCode::BackendClosedState);
    ASSERT_TRUE(closed) << all_evidence(second);
    EXPECT_EQ(closed->state, TcpState::TimeWait);
    // Two resets make a cluster, which sits at the timeout itself.
    EXPECT_EQ(second.hint.code, HintCode::BackendIdleTimeout);
    EXPECT_EQ(second.hint.cluster_resets, 2u);
    EXPECT_DOUBLE_EQ(second.hint.cluster_median_ms, 2100);
    EXPECT_DOUBLE_EQ(second.hint.idle_ms, 2000);
    EXPECT_DOUBLE_EQ(second.hint.keepalive_ms, 1600);

    auto clusters = d.idle_clusters();
    ASSERT_EQ(clusters.size(), 1u);
    EXPECT_EQ(clusters[0].upstream, kBackend);
    EXPECT_EQ(clusters[0].count, 2u);
    EXPECT_EQ(clusters[0].cause, Cause::KeepaliveRace);
    EXPECT_DOUBLE_EQ(clusters[0].min_ms, 2000);
    EXPECT_EQ(clusters[0].hint.code, HintCode::BackendIdleTimeout);
    EXPECT_DOUBLE_EQ(clusters[0].hint.keepalive_ms, 1600);
}

// The reason decides where a name once did: a reset from a TIME_WAIT socket
// comes with no full socket (and TCP_CLOSE), yet the backend had closed
// the connection, not restarted. Without tracefs the name was REASON_9 and
// this read as a restart; the enum comes from BTF.
TEST(Diagnosis, ATimewaitReasonIsAKeepaliveRaceWhateverTheState)
{
    Diagnoser d;
    ResetEvent peer = backend_sent(100, ResetReason::TcpTimewaitSocket, TcpState::Close);
    peer.no_socket = true;
    auto result = diagnose_after(d, {peer}, reused(nginx_received(100), 4000));
    EXPECT_EQ(result.cause, Cause::KeepaliveRace) << all_evidence(result);

    Diagnoser unnamed;
    peer.reason = ResetReason::Unknown;
    EXPECT_EQ(diagnose_after(unnamed, {peer}, reused(nginx_received(100), 4000)).cause, Cause::StaleReuse)
        << "a reason this build cannot name says nothing";
}

TEST(Diagnosis, BackendWithNoSocketIsStaleReuse)
{
    Diagnoser d;
    ResetEvent peer = backend_sent(100, ResetReason::NoSocket, TcpState::Close);
    peer.no_socket = true;
    auto result = diagnose_after(d, {peer}, reused(nginx_received(100), 4000));
    EXPECT_EQ(result.cause, Cause::StaleReuse);
    EXPECT_EQ(result.confidence, Confidence::High);
    const Evidence *none = find(result, EvidenceCode::BackendHadNoSocket);
    ASSERT_TRUE(none) << all_evidence(result);
    EXPECT_FALSE(none->listener);
    EXPECT_EQ(none->comm, "nginx");
    EXPECT_EQ(result.hint.code, HintCode::RestartedUnderPool);
    EXPECT_DOUBLE_EQ(result.hint.idle_ms, 4000);
}

TEST(Diagnosis, ResetWithAnotherTtlIsAMiddlebox)
{
    Diagnoser d;
    ResetEvent r = reused(nginx_received(100), 5000);
    r.data_ttl = 63;
    r.rst_ttl = 64;
    auto result = diagnose_after(d, {}, r);
    EXPECT_EQ(result.cause, Cause::MiddleboxIdle);
    EXPECT_EQ(result.confidence, Confidence::High);
    const Evidence *ttl = find(result, EvidenceCode::RstTtlDiffers);
    ASSERT_TRUE(ttl) << all_evidence(result);
    EXPECT_EQ(ttl->rst_ttl, 64);
    EXPECT_EQ(ttl->data_ttl, 63);
    EXPECT_EQ(result.hint.code, HintCode::MiddleboxIdleTimeout);
    EXPECT_EQ(result.hint.address, kBackend);
    EXPECT_EQ(result.hint.cluster_resets, 0u);
    EXPECT_DOUBLE_EQ(result.hint.idle_ms, 5000);
    EXPECT_DOUBLE_EQ(result.hint.keepalive_ms, 4000);
}

TEST(Diagnosis, BackendGivingUpOnStalledFullSizeSegmentsIsAnMtuBlackHole)
{
    Diagnoser d;
    ResetEvent peer = backend_gave_up(3000, ResetReason::TcpAbortOnLinger, 6, 10);
    peer.retransmits = 6;
    ResetEvent r = nginx_received(3000);
    r.since_request_ms = 2000;
    auto result = diagnose_after(d, {peer}, r);
    EXPECT_EQ(result.cause, Cause::MtuBlackhole);
    const Evidence *stalled = find(result, EvidenceCode::BackendSegmentsStalled);
    ASSERT_TRUE(stalled) << all_evidence(result);
    EXPECT_EQ(stalled->segments, 10u);
    EXPECT_EQ(stalled->mss, 1448u);
    EXPECT_EQ(stalled->timeouts, 6u);
    EXPECT_EQ(result.hint.code, HintCode::BackendSegmentsLost);
    EXPECT_EQ(result.hint.mss, 1448u);
    EXPECT_EQ(result.hint.address, kBackend);
}

// nginx's own segments stalled, then a reset: a path that drops large
// segments and a backend host that was down and came back look alike.
TEST(Diagnosis, NginxsOwnStalledSegmentsWithNoBackendSideAreUnknownMtuOrHostDown)
{
    Diagnoser d;
    ResetEvent r = nginx_received(3000);
    r.stalled_retransmits = 5;
    r.packets_out = 8;
    r.mss = 1448;
    auto result = diagnose_after(d, {}, r);
    EXPECT_EQ(result.cause, Cause::Unknown);
    const Evidence *stalled = find(result, EvidenceCode::NginxSegmentsStalled);
    ASSERT_TRUE(stalled) << all_evidence(result);
    EXPECT_EQ(stalled->comm, "nginx");
    EXPECT_EQ(stalled->segments, 8u);
    EXPECT_EQ(stalled->timeouts, 5u);
    EXPECT_TRUE(has(result, EvidenceCode::CandidatesStalled)) << all_evidence(result);
    EXPECT_EQ(result.hint.code, HintCode::NginxSegmentsLost);
    EXPECT_EQ(result.hint.mss, 1448u);
}

TEST(Diagnosis, ListenerEchoAfterTheBackendGaveUpDoesNotHideTheBlackHole)
{
    // The backend gives up and resets; its socket is gone, so nginx's next
    // segment on the flow is answered by the listener, and that is the
    // reset nginx gets (seen in the mixed scenario run).
    Diagnoser d;
    ResetEvent gave_up = backend_gave_up(3000, ResetReason::TcpState, 3, 12);
    ResetEvent echo = backend_sent(3002, ResetReason::TcpFlags, TcpState::Listen);
    echo.no_socket = true;
    ResetEvent r = reused(nginx_received(3002), 5000);
    r.since_request_ms = 1800;
    auto result = diagnose_with(d, {gave_up, echo}, r);
    EXPECT_EQ(result.cause, Cause::MtuBlackhole) << all_evidence(result);

    // The order seen in the MTU scenario under load: the backend's close()
    // unhashes the socket, the listener answers a segment that arrives in
    // between, nginx gets that reset, and only then is the socket's own
    // reset traced: microseconds apart, all within the backend's close().
    Diagnoser later;
    ResetEvent echo_first = echo;
    echo_first.mono_ns = 3'000'000'000;
    ResetEvent r_between = r;
    r_between.mono_ns = echo_first.mono_ns + 14'000;
    ResetEvent gave_up_after = gave_up;
    gave_up_after.mono_ns = r_between.mono_ns + 22'000;
    auto result_after = diagnose_with(later, {echo_first}, r_between, {gave_up_after});
    EXPECT_EQ(result_after.cause, Cause::MtuBlackhole) << all_evidence(result_after);

    // A listener's reset with no socket reset around it is still a restart.
    Diagnoser fresh;
    auto restart = diagnose_with(fresh, {echo}, r);
    EXPECT_EQ(restart.cause, Cause::StaleReuse) << all_evidence(restart);
}

TEST(Diagnosis, ClientSideResetsAreNeverUpstreamFailures)
{
    Diagnoser d;
    ResetEvent downstream = nginx_received(100);
    downstream.role = Role::Downstream;
    auto a = diagnose_alone(d, downstream);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->cause, Cause::ClientSide);
    const Evidence *client = find(*a, EvidenceCode::ClientConnection);
    ASSERT_TRUE(client) << all_evidence(*a);
    EXPECT_EQ(client->comm, "nginx");
    EXPECT_EQ(client->address, kBackend) << "the record's remote end: the client";
    EXPECT_EQ(a->hint.code, HintCode::ClientsGoAway);

    ResetEvent nginx_aborted = nginx_received(200);
    nginx_aborted.direction = Direction::Sent;
    nginx_aborted.reason = ResetReason::TcpAbortOnClose;
    nginx_aborted.reason_code = 11;
    auto b = diagnose_alone(d, nginx_aborted);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->cause, Cause::ClientSide);
    const Evidence *abandoned = find(*b, EvidenceCode::NginxAbandoned);
    ASSERT_TRUE(abandoned) << all_evidence(*b);
    EXPECT_EQ(abandoned->reason, ResetReason::TcpAbortOnClose);
    EXPECT_EQ(abandoned->reason_code, 11u);
    EXPECT_EQ(b->hint.code, HintCode::NginxGaveUp);
    EXPECT_FALSE(is_upstream_failure(Cause::ClientSide));
    EXPECT_FALSE(is_upstream_failure(Cause::Unknown));
    EXPECT_TRUE(is_upstream_failure(Cause::StaleReuse));
}

TEST(Diagnosis, AResetOnAConnectionOfUnknownRoleSaysSo)
{
    Diagnoser d;
    ResetEvent r = nginx_received(100);
    r.role = Role::Other;
    auto result = diagnose_alone(d, r);
    ASSERT_TRUE(result);
    EXPECT_EQ(result->cause, Cause::Unknown);
    EXPECT_TRUE(has(*result, EvidenceCode::RoleUnknown)) << all_evidence(*result);
    EXPECT_TRUE(result->hint.empty());
}

TEST(Diagnosis, RequestEvidenceSaysWhetherAndSinceWhenARequestWaited)
{
    Diagnoser d;
    ResetEvent idle = nginx_received(100);
    idle.in_request = false;
    auto a = diagnose_alone(d, idle);
    ASSERT_TRUE(a);
    const Evidence *none = find(*a, EvidenceCode::NoRequestWaiting);
    ASSERT_TRUE(none) << all_evidence(*a);
    EXPECT_EQ(none->comm, "nginx");

    ResetEvent untimed = reused(nginx_received(200), 300);
    untimed.since_request_ms.reset();
    auto b = diagnose_alone(d, untimed);
    ASSERT_TRUE(b);
    const Evidence *waiting = find(*b, EvidenceCode::ResetDuringRequest);
    ASSERT_TRUE(waiting) << all_evidence(*b);
    EXPECT_TRUE(waiting->reused);
}

TEST(Diagnosis, BackendSideOutsideTheWindowOrOfAnotherFlowIsNotUsed)
{
    Diagnoser d;
    ResetEvent other_flow = exiting(backend_sent(100, ResetReason::TcpAbortOnClose), SIGABRT);
    other_flow.remote = "198.18.0.1:40999";
    ResetEvent too_old = exiting(backend_sent(100, ResetReason::TcpAbortOnClose), SIGABRT);
    ResetEvent r = nginx_received(100 + 5000);
    r.rst_ttl = r.data_ttl = 0;  // no TTL either
    auto result = diagnose_after(d, {other_flow, too_old}, r);
    EXPECT_EQ(result.cause, Cause::Unknown);
    EXPECT_TRUE(has(result, EvidenceCode::BackendElsewhere)) << all_evidence(result);
    EXPECT_TRUE(has(result, EvidenceCode::RstTtlUnknown)) << all_evidence(result);
    EXPECT_FALSE(has(result, EvidenceCode::BackendSentReset)) << all_evidence(result);
}

// Issue 22: a remote backend's crash, OOM kill and stop look the same from
// nginx's side, and a late reset may be the backend giving up on a response
// the path dropped (nginx's retry in the MTU case was called backend_crash).
TEST(Diagnosis, RemoteBackendResettingAnOpenRequestIsUnknownAmongTheWaysItsProcessEnds)
{
    Diagnoser d;
    auto result = diagnose_after(d, {}, nginx_received(100));
    EXPECT_EQ(result.cause, Cause::Unknown);
    const Evidence *ttl = find(result, EvidenceCode::RstTtlMatches);
    ASSERT_TRUE(ttl) << all_evidence(result);
    EXPECT_EQ(ttl->rst_ttl, 64);
    EXPECT_TRUE(has(result, EvidenceCode::CandidatesMidRequest)) << all_evidence(result);
    EXPECT_EQ(result.hint.code, HintCode::BackendEndedMidRequest);

    ResetEvent late = nginx_received(3000);
    late.since_request_ms = 2000;
    late.request_acked = true;
    auto gave_up = diagnose_after(d, {}, late);
    EXPECT_EQ(gave_up.cause, Cause::Unknown);
    EXPECT_TRUE(has(gave_up, EvidenceCode::RequestAcknowledged)) << all_evidence(gave_up);
    const Evidence *candidates = find(gave_up, EvidenceCode::CandidatesLateReset);
    ASSERT_TRUE(candidates) << all_evidence(gave_up);
    EXPECT_DOUBLE_EQ(candidates->ms, 2000);
    EXPECT_EQ(gave_up.hint.code, HintCode::BackendGaveUpLate);
}

// A forgotten flow, a restarted host and a closed connection answer the
// request's first segment: an acknowledged request rules them out, and
// what is left are the ways the backend's process ends.
TEST(Diagnosis, APooledResetAfterTheBackendAcknowledgedTheRequestIsNoIdleCause)
{
    Diagnoser d;
    ResetEvent r = reused(nginx_received(100), 120);
    r.request_acked = true;
    r.since_request_ms = 16;
    auto result = diagnose_after(d, {}, r);
    EXPECT_EQ(result.cause, Cause::Unknown);
    EXPECT_TRUE(has(result, EvidenceCode::RequestAcknowledged)) << all_evidence(result);
    EXPECT_TRUE(has(result, EvidenceCode::CandidatesMidRequest)) << all_evidence(result);
    EXPECT_FALSE(has(result, EvidenceCode::CandidatesOnReuse)) << all_evidence(result);
    EXPECT_EQ(result.hint.code, HintCode::BackendEndedMidRequest);
}

// A reset seconds after a request on a pooled connection, nothing stalled:
// no idle close, restarted host or forgotten flow (they answer at once),
// so the candidates are those of a late reset, not those of reuse.
TEST(Diagnosis, ALateResetOnReuseFromAfarHasTheCandidatesOfALateReset)
{
    Diagnoser d;
    ResetEvent r = reused(nginx_received(3000), 4000);
    r.since_request_ms = 2000;
    auto result = diagnose_after(d, {}, r);
    EXPECT_EQ(result.cause, Cause::Unknown);
    EXPECT_TRUE(has(result, EvidenceCode::CandidatesLateReset)) << all_evidence(result);
    EXPECT_FALSE(has(result, EvidenceCode::CandidatesOnReuse)) << all_evidence(result);
    EXPECT_EQ(result.hint.code, HintCode::BackendGaveUpLate);
}

// The backend's FIN arrived before its reset: it closed the connection as
// nginx reused it, which no middlebox or restarted host does.
TEST(Diagnosis, AResetAfterTheBackendsFinOnReuseIsTheKeepaliveRaceFromAfar)
{
    Diagnoser d;
    ResetEvent r = reused(nginx_received(100), 4000);
    r.state = TcpState::CloseWait;
    r.rst_ttl = r.data_ttl = 0;
    auto result = diagnose_after(d, {}, r);
    EXPECT_EQ(result.cause, Cause::KeepaliveRace);
    EXPECT_EQ(result.confidence, Confidence::Medium);
    EXPECT_TRUE(has(result, EvidenceCode::BackendFinBeforeReset)) << all_evidence(result);
    EXPECT_EQ(result.hint.code, HintCode::BackendIdleTimeout);
}

// A refused connect (the reset answers nginx's SYN) was stale_reuse(medium)
// when the backend's host was this one: no connection existed to go stale.
TEST(Diagnosis, ARefusedConnectIsNoneOfTheCausesButSaysWhatHappened)
{
    Diagnoser d;
    ResetEvent r = nginx_received(100);
    r.state = TcpState::SynSent;
    r.in_request = false;
    ResetEvent listener_answer = backend_sent(100, std::nullopt);
    listener_answer.no_socket = true;
    auto result = diagnose_after(d, {listener_answer}, r);
    EXPECT_EQ(result.cause, Cause::Unknown);
    const Evidence *refused = find(result, EvidenceCode::ConnectRefused);
    ASSERT_TRUE(refused) << all_evidence(result);
    EXPECT_EQ(refused->address, kBackend);
    EXPECT_EQ(result.hint.code, HintCode::BackendNotListening);
}

// From afar, resets on reuse after one idle time again and again point at an
// idle timeout (the backend's or a middlebox's): still unknown which, but
// the hint gives the time.
TEST(Diagnosis, UnknownResetsOnReuseThatClusterGiveTheIdleTimeInTheHint)
{
    Diagnoser d;
    auto first = diagnose_alone(d, reused(nginx_received(100), 4600));
    ASSERT_TRUE(first);
    EXPECT_EQ(first->hint.cluster_resets, 0u);
    ResetEvent again = reused(nginx_received(9000), 4700);
    again.local = "198.18.0.1:40313";
    auto second = diagnose_alone(d, again);
    ASSERT_TRUE(second);
    EXPECT_EQ(second->cause, Cause::Unknown);
    EXPECT_EQ(second->hint.code, HintCode::KeepaliveBelowPoolIdleRemote);
    EXPECT_EQ(second->hint.cluster_resets, 2u);
    EXPECT_DOUBLE_EQ(second->hint.idle_ms, 4600);
    EXPECT_DOUBLE_EQ(second->hint.keepalive_ms, 3600);
}

// Issue 22: a 16 ms pool idle time got "keep keepalive_timeout below the
// backend's (100ms)": no timeout below 16 ms is worth suggesting.
TEST(Diagnosis, APoolIdleTooShortForATimeoutSuggestsNone)
{
    Diagnoser d;
    auto result = diagnose_after(d, {}, reused(nginx_received(100), 16));
    EXPECT_EQ(result.cause, Cause::Unknown);
    EXPECT_EQ(result.hint.code, HintCode::KeepaliveBelowPoolIdleRemote);
    EXPECT_EQ(result.hint.keepalive_ms, 0);
}

// Issue 22 found keepalive_race said here for a firewall that forgot the
// flow, a backend host that rebooted and a pooled crash: none of them is
// ruled out from nginx's side alone, so none is named.
TEST(Diagnosis, APromptResetOnReuseFromAfarIsUnknownWithAHintTrueForEveryCandidate)
{
    Diagnoser d;
    auto result = diagnose_after(d, {}, reused(nginx_received(100), 3000));
    EXPECT_EQ(result.cause, Cause::Unknown);
    EXPECT_TRUE(has(result, EvidenceCode::CandidatesOnReuse)) << all_evidence(result);
    EXPECT_TRUE(has(result, EvidenceCode::BackendElsewhere)) << all_evidence(result);
    EXPECT_EQ(result.hint.code, HintCode::KeepaliveBelowPoolIdleRemote);
    EXPECT_DOUBLE_EQ(result.hint.idle_ms, 3000);
    EXPECT_LT(result.hint.keepalive_ms, 3000);
}

// Before Linux 6.10 a backend on this host that restarted, or whose socket
// was in TIME_WAIT, sends its reset untraced: the missing backend side does
// not mean "elsewhere", and a reset on reuse has three candidates.
TEST(Diagnosis, AKernelWithoutSocketlessResetsLeavesAReuseResetUnknown)
{
    Diagnoser d(KernelEvidence{.socketless_sent_resets = false, .oom_kills = true});
    auto result = diagnose_alone(d, reused(nginx_received(5000), 5000));
    ASSERT_TRUE(result);
    EXPECT_EQ(result->cause, Cause::Unknown);
    EXPECT_TRUE(has(*result, EvidenceCode::SocketlessResetsUntraced)) << all_evidence(*result);
    EXPECT_TRUE(has(*result, EvidenceCode::CandidatesOnReuse)) << all_evidence(*result);
    EXPECT_EQ(result->hint.code, HintCode::KeepaliveBelowPoolIdle);
    EXPECT_DOUBLE_EQ(result->hint.idle_ms, 5000);
    EXPECT_DOUBLE_EQ(result->hint.keepalive_ms, 4000) << "below the 5 s it sat";

    auto first = diagnose_alone(d, nginx_received(6000));
    ASSERT_TRUE(first);
    EXPECT_EQ(first->cause, Cause::Unknown);
    EXPECT_TRUE(has(*first, EvidenceCode::CandidatesOnFirstRequest)) << all_evidence(*first);
    EXPECT_EQ(first->hint.code, HintCode::CheckBackendRestarts);

    // A 6.10+ kernel, for contrast: the backend is known to be elsewhere,
    // and the cause is just as open.
    Diagnoser full;
    auto remote = diagnose_alone(full, reused(nginx_received(5000), 5000));
    ASSERT_TRUE(remote);
    EXPECT_EQ(remote->cause, Cause::Unknown);
    EXPECT_TRUE(has(*remote, EvidenceCode::BackendElsewhere)) << all_evidence(*remote);
    EXPECT_EQ(remote->hint.code, HintCode::KeepaliveBelowPoolIdleRemote);
}

TEST(Diagnosis, AKernelWithoutSocketlessResetsStillNamesWhatItSees)
{
    Diagnoser d(KernelEvidence{.socketless_sent_resets = false, .oom_kills = true});
    auto result = diagnose_after(d, {exiting(backend_sent(100, std::nullopt), SIGSEGV)}, nginx_received(100));
    EXPECT_EQ(result.cause, Cause::BackendCrash) << "a backend's own socket is traced on every kernel";
}

TEST(Diagnosis, ASigkillWithoutOomTracingIsUnknown)
{
    Diagnoser d(KernelEvidence{.socketless_sent_resets = true, .oom_kills = false});
    auto result = diagnose_after(d, {exiting(backend_sent(100, std::nullopt), SIGKILL)}, nginx_received(100));
    EXPECT_EQ(result.cause, Cause::Unknown);
    EXPECT_TRUE(has(result, EvidenceCode::OomKillsUntraced)) << all_evidence(result);
    const Evidence *exit = find(result, EvidenceCode::BackendExiting);
    ASSERT_TRUE(exit) << all_evidence(result);
    EXPECT_EQ(exit->signal, SIGKILL);
    EXPECT_EQ(result.hint.code, HintCode::BackendKilled);
    EXPECT_EQ(result.hint.comm, "backend");
}

// Before Linux 6.10 a sent reset has no reason: that the backend's
// application had closed the socket shows as an orphaned socket.
TEST(Diagnosis, AnOrphanedBackendSocketWithoutAReasonIsAKeepaliveRace)
{
    Diagnoser d;
    ResetEvent peer = backend_sent(2000, std::nullopt, TcpState::Close);
    peer.orphan = true;
    auto result = diagnose_after(d, {peer}, reused(nginx_received(2000), 2000));
    EXPECT_EQ(result.cause, Cause::KeepaliveRace);
    EXPECT_TRUE(has(result, EvidenceCode::BackendClosedOnData)) << all_evidence(result);

    ResetEvent live = backend_sent(5000, std::nullopt, TcpState::Close);
    auto other = diagnose_after(d, {live}, reused(nginx_received(5000), 2000));
    EXPECT_EQ(other.cause, Cause::Unknown) << "a live socket's own reset says nothing of a close";
    const Evidence *itself = find(other, EvidenceCode::BackendResetItself);
    ASSERT_TRUE(itself) << all_evidence(other);
    EXPECT_EQ(itself->pid, 777u);
    EXPECT_EQ(itself->comm, "backend");
}

TEST(Diagnosis, CauseNamesRoundTrip)
{
    for (Cause c : {Cause::BackendCrash, Cause::BackendOom, Cause::KeepaliveRace, Cause::MiddleboxIdle,
                    Cause::StaleReuse, Cause::MtuBlackhole, Cause::BackendShutdown, Cause::ClientSide,
                    Cause::Unknown})
        EXPECT_EQ(cause_from_string(to_string(c)), c);
    EXPECT_FALSE(cause_from_string("gremlins"));
}

TEST(Diagnosis, BackendResetArrivingJustAfterNginxsIsStillMatched)
{
    // Over loopback the peer receives the reset inside the backend's
    // transmit, before the backend's send_reset tracepoint fires.
    Diagnoser d;
    auto result = diagnose_with(d, {}, nginx_received(100),
                                {exiting(backend_sent(100, ResetReason::TcpAbortOnClose), SIGABRT)});
    EXPECT_EQ(result.cause, Cause::BackendCrash);
    EXPECT_EQ(result.confidence, Confidence::High);
}

TEST(Diagnosis, EventsAreHeldBackUntilLaterEvidenceCanArrive)
{
    Diagnoser d;
    d.add(nginx_received(100));
    EXPECT_TRUE(d.take_ready(100 * kMs + Diagnoser::kHoldBackNs - 1).empty());
    d.add(exiting(backend_sent(101, ResetReason::TcpAbortOnClose), SIGABRT));
    auto ready = d.take_ready(100 * kMs + Diagnoser::kHoldBackNs);
    ASSERT_EQ(ready.size(), 1u) << "only the event whose hold-back has passed";
    const auto &r = std::get<ResetEvent>(ready[0]);
    ASSERT_TRUE(r.diagnosis);
    EXPECT_EQ(r.diagnosis->cause, Cause::BackendCrash);
    EXPECT_EQ(d.take_all().size(), 1u);
}

TEST(Diagnosis, ListenerAnsweringTheFlowIsStaleReuse)
{
    // The new backend's kernel has only a listener on that port: it answers
    // nginx's segment on the forgotten connection with a reset.
    Diagnoser d;
    ResetEvent peer = backend_sent(100, ResetReason::TcpFlags, TcpState::Listen);
    peer.no_socket = true;
    ResetEvent r = reused(nginx_received(100), 3000);
    auto result = diagnose_with(d, {}, r, {peer});
    EXPECT_EQ(result.cause, Cause::StaleReuse);
    EXPECT_EQ(result.confidence, Confidence::High);
    const Evidence *none = find(result, EvidenceCode::BackendHadNoSocket);
    ASSERT_TRUE(none) << all_evidence(result);
    EXPECT_TRUE(none->listener);
    const Evidence *request = find(result, EvidenceCode::ResetAfterRequest);
    ASSERT_TRUE(request) << all_evidence(result);
    EXPECT_TRUE(request->reused);
    EXPECT_EQ(request->comm, "nginx");
}

TEST(Diagnosis, SynRetransmissionsAloneAreNoBlackHole)
{
    // retransmits counts a lost SYN; only timeouts in a row on stalled data count.
    Diagnoser d;
    ResetEvent peer = backend_sent(100, ResetReason::NoSocket, TcpState::Close);
    peer.no_socket = true;
    ResetEvent r = reused(nginx_received(100), 3000);
    r.retransmits = 1;
    r.packets_out = 1;
    auto result = diagnose_with(d, {}, r, {peer});
    EXPECT_EQ(result.cause, Cause::StaleReuse);
}

// The backend's side is found by flow among the last kMaxRecentPeers sent
// resets; the oldest beyond that bound are forgotten, index and all.
TEST(Diagnosis, BackendSideIsFoundAmongManyAndTheOldestAreForgotten)
{
    Diagnoser d;
    const size_t n = Diagnoser::kMaxRecentPeers + 10;
    auto peer_on_port = [](size_t port) {
        ResetEvent p = backend_sent(100, ResetReason::TcpAbortOnClose);
        p.remote = "198.18.0.1:" + std::to_string(port);
        return p;
    };
    for (size_t i = 0; i < n; i++)
        d.add(peer_on_port(10000 + i));
    ResetEvent newest = nginx_received(100), oldest = nginx_received(100);
    newest.local = "198.18.0.1:" + std::to_string(10000 + n - 1);
    oldest.local = "198.18.0.1:10000";
    d.add(newest);
    d.add(oldest);
    size_t with_backend_side = 0, without = 0;
    for (const Event &e : d.take_all()) {
        const auto *r = std::get_if<ResetEvent>(&e);
        if (!r || !r->owner_known)
            continue;
        (r->local == newest.local ? with_backend_side : without) += has(*r->diagnosis, EvidenceCode::BackendSentReset);
    }
    EXPECT_EQ(with_backend_side, 1u) << "the newest sent reset of the flow is found";
    EXPECT_EQ(without, 0u) << "the oldest was forgotten past the bound";
}
