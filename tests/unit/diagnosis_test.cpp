// The diagnosis engine on hand-made event sequences: the evidence each cause
// leaves, in the order the ring buffer delivers it.
#include <gtest/gtest.h>
#include <signal.h>

#include "diagnosis/diagnosis.h"

using namespace rstwatch;

namespace {

constexpr uint64_t kMs = 1'000'000;
const std::string kNginx = "198.18.0.1:40312";
const std::string kBackend = "198.18.1.2:8081";

bool mentions(const Diagnosis &d, const std::string &text)
{
    for (const auto &e : d.evidence)
        if (e.find(text) != std::string::npos)
            return true;
    return false;
}

std::string all_evidence(const Diagnosis &d)
{
    std::string s;
    for (const auto &e : d.evidence)
        s += "\n  " + e;
    return s;
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
    r.state = 1;  // ESTABLISHED
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
ResetEvent backend_sent(uint64_t at_ms, const std::string &reason, int state = 1)
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
ResetEvent backend_gave_up(uint64_t at_ms, const std::string &reason, uint32_t timeouts, uint32_t segments)
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
    auto result = diagnose_after(d, {exiting(backend_sent(100, "TCP_ABORT_ON_CLOSE"), SIGABRT)}, nginx_received(100));
    EXPECT_EQ(result.cause, Cause::BackendCrash);
    EXPECT_EQ(result.confidence, Confidence::High);
    EXPECT_TRUE(mentions(result, "pid 777 (backend) was exiting on SIGABRT")) << all_evidence(result);
    EXPECT_TRUE(mentions(result, "before any response byte")) << all_evidence(result);
    EXPECT_NE(result.hint.find("proxy_next_upstream"), std::string::npos);
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
    auto result = diagnose_after(d, {oom, exiting(backend_sent(100, "TCP_ABORT_ON_CLOSE"), SIGKILL)},
                                 nginx_received(100));
    EXPECT_EQ(result.cause, Cause::BackendOom);
    EXPECT_EQ(result.confidence, Confidence::High);
    EXPECT_TRUE(mentions(result, "pid 777 (backend) killed by the OOM killer 3 ms before")) << all_evidence(result);
    EXPECT_TRUE(mentions(result, "cgroup /rstwatch-test")) << all_evidence(result);
}

TEST(Diagnosis, OomKillOfAnotherProcessDoesNotMakeACrashAnOom)
{
    Diagnoser d;
    OomEvent oom;
    oom.mono_ns = 97 * kMs;
    oom.pid = 778;
    auto result = diagnose_after(d, {oom, exiting(backend_sent(100, "TCP_ABORT_ON_CLOSE"), SIGKILL)},
                                 nginx_received(100));
    EXPECT_EQ(result.cause, Cause::BackendCrash);
}

TEST(Diagnosis, BackendThatClosedTheIdleConnectionIsAKeepaliveRace)
{
    Diagnoser d;
    auto first = diagnose_after(d, {backend_sent(2000, "TCP_ABORT_ON_DATA", /*FIN_WAIT1*/ 4)},
                                reused(nginx_received(2000), 2000));
    EXPECT_EQ(first.cause, Cause::KeepaliveRace);
    EXPECT_EQ(first.confidence, Confidence::High);
    EXPECT_TRUE(mentions(first, "data arriving after its close was answered with a reset")) << all_evidence(first);
    EXPECT_NE(first.hint.find("after at most 2.0 s"), std::string::npos) << first.hint;
    EXPECT_NE(first.hint.find("(1600ms if its timeout is about 2.0 s)"), std::string::npos) << first.hint;

    auto second = diagnose_after(d, {backend_sent(6000, "TCP_TIMEWAIT_SOCKET", /*TIME_WAIT*/ 6)},
                                 reused(nginx_received(6000), 2100));
    EXPECT_EQ(second.cause, Cause::KeepaliveRace);
    EXPECT_TRUE(mentions(second, "its socket was in TIME_WAIT")) << all_evidence(second);
    EXPECT_NE(second.hint.find("cluster at"), std::string::npos) << second.hint;
    EXPECT_NE(second.hint.find("closes idle connections at about 2.0 s; set keepalive_timeout 1600ms"),
              std::string::npos)
        << second.hint;

    auto clusters = d.idle_clusters();
    ASSERT_EQ(clusters.size(), 1u);
    EXPECT_EQ(clusters[0].upstream, kBackend);
    EXPECT_EQ(clusters[0].count, 2u);
    EXPECT_EQ(clusters[0].cause, Cause::KeepaliveRace);
    EXPECT_DOUBLE_EQ(clusters[0].min_ms, 2000);
}

TEST(Diagnosis, BackendWithNoSocketIsStaleReuse)
{
    Diagnoser d;
    ResetEvent peer = backend_sent(100, "NO_SOCKET", /*CLOSE*/ 7);
    peer.no_socket = true;
    auto result = diagnose_after(d, {peer}, reused(nginx_received(100), 4000));
    EXPECT_EQ(result.cause, Cause::StaleReuse);
    EXPECT_EQ(result.confidence, Confidence::High);
    EXPECT_TRUE(mentions(result, "had no socket")) << all_evidence(result);
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
    EXPECT_TRUE(mentions(result, "RST TTL 64 vs connection TTL 63: sent by a hop closer than the backend"))
        << all_evidence(result);
    EXPECT_NE(result.hint.find("forgets flows idle for at most 5.0 s; set keepalive_timeout 4s or lower"),
              std::string::npos)
        << result.hint;
}

TEST(Diagnosis, BackendGivingUpOnStalledFullSizeSegmentsIsAnMtuBlackHole)
{
    Diagnoser d;
    ResetEvent peer = backend_gave_up(3000, "TCP_ABORT_ON_LINGER", 6, 10);
    peer.retransmits = 6;
    ResetEvent r = nginx_received(3000);
    r.since_request_ms = 2000;
    auto result = diagnose_after(d, {peer}, r);
    EXPECT_EQ(result.cause, Cause::MtuBlackhole);
    EXPECT_TRUE(mentions(result, "10 segments of up to 1448 bytes unacknowledged after 6 retransmission timeouts"))
        << all_evidence(result);
}

TEST(Diagnosis, ListenerEchoAfterTheBackendGaveUpDoesNotHideTheBlackHole)
{
    // The backend gives up and resets; its socket is gone, so nginx's next
    // segment on the flow is answered by the listener, and that is the
    // reset nginx gets (seen in the mixed scenario run).
    Diagnoser d;
    ResetEvent gave_up = backend_gave_up(3000, "TCP_STATE", 3, 12);
    ResetEvent echo = backend_sent(3002, "TCP_FLAGS", /*LISTEN*/ 10);
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

    ResetEvent nginx_aborted = nginx_received(200);
    nginx_aborted.direction = Direction::Sent;
    nginx_aborted.reason = "TCP_ABORT_ON_CLOSE";
    auto b = diagnose_alone(d, nginx_aborted);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->cause, Cause::ClientSide);
    EXPECT_FALSE(is_upstream_failure(Cause::ClientSide));
    EXPECT_FALSE(is_upstream_failure(Cause::Unknown));
    EXPECT_TRUE(is_upstream_failure(Cause::StaleReuse));
}

TEST(Diagnosis, BackendSideOutsideTheWindowOrOfAnotherFlowIsNotUsed)
{
    Diagnoser d;
    ResetEvent other_flow = exiting(backend_sent(100, "TCP_ABORT_ON_CLOSE"), SIGABRT);
    other_flow.remote = "198.18.0.1:40999";
    ResetEvent too_old = exiting(backend_sent(100, "TCP_ABORT_ON_CLOSE"), SIGABRT);
    ResetEvent r = nginx_received(100 + 5000);
    r.rst_ttl = r.data_ttl = 0;  // no TTL either
    auto result = diagnose_after(d, {other_flow, too_old}, r);
    EXPECT_EQ(result.cause, Cause::Unknown);
    EXPECT_TRUE(mentions(result, "processes cannot be seen")) << all_evidence(result);
    EXPECT_TRUE(mentions(result, "TTL of the reset unknown")) << all_evidence(result);
}

TEST(Diagnosis, RemoteBackendResettingAnOpenRequestIsALowConfidenceCrash)
{
    Diagnoser d;
    auto result = diagnose_after(d, {}, nginx_received(100));
    EXPECT_EQ(result.cause, Cause::BackendCrash);
    EXPECT_EQ(result.confidence, Confidence::Low);
    EXPECT_TRUE(mentions(result, "RST TTL 64 matches")) << all_evidence(result);
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
    EXPECT_TRUE(mentions(*result, "Linux 6.10")) << all_evidence(*result);
    EXPECT_TRUE(mentions(*result, "keepalive_race, stale_reuse, middlebox_idle")) << all_evidence(*result);
    EXPECT_NE(result->hint.find("keepalive_timeout below that"), std::string::npos) << result->hint;
    EXPECT_NE(result->hint.find("4s"), std::string::npos) << "below the 5 s it sat: " << result->hint;

    Diagnoser full;
    EXPECT_EQ(diagnose_alone(full, reused(nginx_received(5000), 5000))->cause, Cause::KeepaliveRace)
        << "what a 6.10+ kernel says of the same reset, for contrast";
}

TEST(Diagnosis, AKernelWithoutSocketlessResetsStillNamesWhatItSees)
{
    Diagnoser d(KernelEvidence{.socketless_sent_resets = false, .oom_kills = true});
    auto result = diagnose_after(d, {exiting(backend_sent(100, ""), SIGSEGV)}, nginx_received(100));
    EXPECT_EQ(result.cause, Cause::BackendCrash) << "a backend's own socket is traced on every kernel";
}

TEST(Diagnosis, ASigkillWithoutOomTracingIsUnknown)
{
    Diagnoser d(KernelEvidence{.socketless_sent_resets = true, .oom_kills = false});
    auto result = diagnose_after(d, {exiting(backend_sent(100, ""), SIGKILL)}, nginx_received(100));
    EXPECT_EQ(result.cause, Cause::Unknown);
    EXPECT_TRUE(mentions(result, "does not trace OOM kills")) << all_evidence(result);
    EXPECT_NE(result.hint.find("dmesg"), std::string::npos) << result.hint;
}

// Before Linux 6.10 a sent reset has no reason: that the backend's
// application had closed the socket shows as an orphaned socket.
TEST(Diagnosis, AnOrphanedBackendSocketWithoutAReasonIsAKeepaliveRace)
{
    Diagnoser d;
    ResetEvent peer = backend_sent(2000, "", /*CLOSE*/ 7);
    peer.orphan = true;
    auto result = diagnose_after(d, {peer}, reused(nginx_received(2000), 2000));
    EXPECT_EQ(result.cause, Cause::KeepaliveRace);
    EXPECT_TRUE(mentions(result, "data arriving after its close was answered with a reset")) << all_evidence(result);

    ResetEvent live = backend_sent(5000, "", /*CLOSE*/ 7);
    auto other = diagnose_after(d, {live}, reused(nginx_received(5000), 2000));
    EXPECT_EQ(other.cause, Cause::Unknown) << "a live socket's own reset says nothing of a close";
}

TEST(Diagnosis, CauseNamesRoundTrip)
{
    for (Cause c : {Cause::BackendCrash, Cause::BackendOom, Cause::KeepaliveRace, Cause::MiddleboxIdle,
                    Cause::StaleReuse, Cause::MtuBlackhole, Cause::ClientSide, Cause::Unknown})
        EXPECT_EQ(cause_from_string(to_string(c)), c);
    EXPECT_FALSE(cause_from_string("gremlins"));
}

TEST(Diagnosis, BackendResetArrivingJustAfterNginxsIsStillMatched)
{
    // Over loopback the peer receives the reset inside the backend's
    // transmit, before the backend's send_reset tracepoint fires.
    Diagnoser d;
    auto result = diagnose_with(d, {}, nginx_received(100), {exiting(backend_sent(100, "TCP_ABORT_ON_CLOSE"), SIGABRT)});
    EXPECT_EQ(result.cause, Cause::BackendCrash);
    EXPECT_EQ(result.confidence, Confidence::High);
}

TEST(Diagnosis, EventsAreHeldBackUntilLaterEvidenceCanArrive)
{
    Diagnoser d;
    d.add(nginx_received(100));
    EXPECT_TRUE(d.take_ready(100 * kMs + Diagnoser::kHoldBackNs - 1).empty());
    d.add(exiting(backend_sent(101, "TCP_ABORT_ON_CLOSE"), SIGABRT));
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
    ResetEvent peer = backend_sent(100, "TCP_FLAGS", /*LISTEN*/ 10);
    peer.no_socket = true;
    ResetEvent r = reused(nginx_received(100), 3000);
    auto result = diagnose_with(d, {}, r, {peer});
    EXPECT_EQ(result.cause, Cause::StaleReuse);
    EXPECT_EQ(result.confidence, Confidence::High);
    EXPECT_TRUE(mentions(result, "only its listener answered")) << all_evidence(result);
    EXPECT_TRUE(mentions(result, "after nginx sent a request on a reused connection")) << all_evidence(result);
}

TEST(Diagnosis, SynRetransmissionsAloneAreNoBlackHole)
{
    // retransmits counts a lost SYN; only timeouts in a row on stalled data count.
    Diagnoser d;
    ResetEvent peer = backend_sent(100, "NO_SOCKET", /*CLOSE*/ 7);
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
        ResetEvent p = backend_sent(100, "TCP_ABORT_ON_CLOSE");
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
        bool found = false;
        for (const auto &line : r->diagnosis->evidence)
            found |= line.find("the backend's side is on this host") != std::string::npos;
        (r->local == newest.local ? with_backend_side : without) += found;
    }
    EXPECT_EQ(with_backend_side, 1u) << "the newest sent reset of the flow is found";
    EXPECT_EQ(without, 0u) << "the oldest was forgotten past the bound";
}
