// One reproduction per cause of
//   recv() failed (104: Connection reset by peer) while reading response header from upstream
// against a real nginx, with the agent watching it. Each test runs its
// scenario once and checks, in order, that nginx logged the 104 line (with
// the statuses and side effects of the cause), that the agent has the
// matching received reset (pid, upstream), and that the record names the
// cause, on every kernel of the matrix (scripts/test runs these in Debian's
// 5.10, 6.1 and 6.12 too). The negative controls
// (healthy traffic, client aborts) check that nothing is blamed on the
// upstream.

#include <gtest/gtest.h>
#include <unistd.h>

#include <iostream>
#include <sstream>

#include "causes.h"

namespace rstwatch::scenarios {
namespace {

void expect_cause(const Scenario &s, const RunResult &r) {
    print_records(s, r);
    SCOPED_TRACE(r.dump());
    // The reproduction must hold, or the cause check means nothing.
    ASSERT_EQ(reproduction_problems(s, r, true), "") << "not reproduced";
    auto lines = r.resets_for(s.upstream);
    ASSERT_FALSE(lines.empty());
    for (const auto &l : lines) {
        const json *rec = r.match(l);
        ASSERT_NE(rec, nullptr) << "no received upstream rst from " << l.upstream << " on pid " << l.pid;
        EXPECT_EQ(str(*rec, "cause"), s.expected_cause()) << describe_record(*rec);
        EXPECT_TRUE(rec->contains("confidence") && rec->contains("evidence") && rec->contains("hint"))
            << describe_record(*rec);
        const std::string evidence = rec->contains("evidence") ? (*rec)["evidence"].dump() : "";
        // Every reproduction puts the backend's side (or the middlebox's
        // TTL) in view: the diagnosis must be certain and say why.
        EXPECT_EQ(str(*rec, "confidence"), "high") << describe_record(*rec);
        for (const auto &want : s.expected_evidence())
            EXPECT_NE(evidence.find(want), std::string::npos) << "evidence lacks \"" << want << "\": " << evidence;
    }
}

std::unique_ptr<Scenario> run(std::unique_ptr<Scenario> s, RunResult &r) {
    r = run_scenarios({s.get()});
    return s;
}

#define CAUSE_TEST(Suite, make)                        \
    TEST(Suite, AgentNamesCause) {                     \
        REQUIRE_ROOT();                                \
        RunResult r;                                   \
        auto s = run(make, r);                         \
        expect_cause(*s, r);                           \
    }

CAUSE_TEST(BackendCrash, make_backend_crash(false))
CAUSE_TEST(BackendCrashIPv6, make_backend_crash(true))
CAUSE_TEST(BackendShutdown, make_backend_shutdown(false))
CAUSE_TEST(BackendOom, make_backend_oom(false))
CAUSE_TEST(KeepaliveRace, make_keepalive_race(false))
CAUSE_TEST(KeepaliveRaceIPv6, make_keepalive_race(true))
CAUSE_TEST(MiddleboxIdle, make_middlebox_idle(false))
CAUSE_TEST(MiddleboxIdleIPv6, make_middlebox_idle(true))
CAUSE_TEST(StaleReuse, make_stale_reuse(false))
CAUSE_TEST(StaleReuseIPv6, make_stale_reuse(true))
CAUSE_TEST(MtuBlackhole, make_mtu_blackhole(false))

// Healthy traffic: no 104, and the agent reports no upstream reset at all.
TEST(Healthy, NoUpstreamResets) {
    REQUIRE_ROOT();
    RunResult r;
    auto s = run(make_healthy(), r);
    print_records(*s, r);
    SCOPED_TRACE(r.dump());
    EXPECT_EQ(reproduction_problems(*s, r, true), "");
    EXPECT_EQ(s->trigger_statuses.size(), 25u);
    for (const json *rec : r.rsts()) ADD_FAILURE() << "unexpected reset: " << describe_record(*rec);
}

// Client aborts: nginx logs the client's doing (info level), no upstream
// 104; the agent saw the clients' resets on nginx's side, and every reset it
// reports is the client's.
TEST(ClientAbort, AgentBlamesClient) {
    REQUIRE_ROOT();
    RunResult r;
    auto s = run(make_client_abort(), r);
    print_records(*s, r);
    SCOPED_TRACE(r.dump());
    ASSERT_EQ(reproduction_problems(*s, r, true), "");
    const bool client_logged = r.error_log.find("while sending to client") != std::string::npos ||
                               r.error_log.find("client prematurely closed connection") != std::string::npos;
    EXPECT_TRUE(client_logged) << "nginx did not log the client's abort";
    int downstream = 0;
    for (const json *rec : r.rsts()) {
        if (str(*rec, "direction") == "received" && str(*rec, "role") == "downstream") ++downstream;
        EXPECT_EQ(str(*rec, "cause"), "client_side") << describe_record(*rec);
    }
    EXPECT_GE(downstream, 1) << "no received downstream reset";
}

}  // namespace
}  // namespace rstwatch::scenarios
