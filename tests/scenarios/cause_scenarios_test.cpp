// One reproduction per cause of
//   recv() failed (104: Connection reset by peer) while reading response header from upstream
// against a real nginx, with the agent watching it.
//
// Each cause has two tests, so that a reader of the results sees which part
// fails:
//   <Cause>.Reproduces        nginx logged the 104 line (and the statuses and
//                             side effects are those of the cause); the agent
//                             has the matching received reset (pid, remote).
//   <Cause>.AgentNamesCause   the same run again, and the agent's record carries
//                             the expected `cause`.
// The negative controls (healthy traffic, client aborts) check that nothing is
// blamed on the upstream.

#include <gtest/gtest.h>
#include <unistd.h>

#include <iostream>
#include <sstream>

#include "causes.h"

namespace rstwatch::scenarios {
namespace {

void expect_reproduced(const Scenario &s, const RunResult &r) {
    print_records(s, r);
    SCOPED_TRACE(r.dump());
    EXPECT_EQ(reproduction_problems(s, r, true), "");
    for (const auto &l : r.resets_for(s.upstream))
        EXPECT_NE(r.match(l), nullptr) << "no received upstream rst from " << l.upstream << " on pid " << l.pid;
}

void expect_cause(const Scenario &s, const RunResult &r) {
    print_records(s, r);
    SCOPED_TRACE(r.dump());
    // The reproduction must hold, or the cause check means nothing.
    ASSERT_EQ(reproduction_problems(s, r, true), "") << "not reproduced; see <Cause>.Reproduces";
    auto lines = r.resets_for(s.upstream);
    ASSERT_FALSE(lines.empty());
    for (const auto &l : lines) {
        const json *rec = r.match(l);
        ASSERT_NE(rec, nullptr) << "no received upstream rst from " << l.upstream << " on pid " << l.pid;
        EXPECT_EQ(str(*rec, "cause"), s.expected_cause()) << describe_record(*rec);
        EXPECT_TRUE(rec->contains("confidence") && rec->contains("evidence") && rec->contains("hint"))
            << describe_record(*rec);
        // Every reproduction puts the backend's side (or the middlebox's
        // TTL) in view: the diagnosis must be certain and say why.
        EXPECT_EQ(str(*rec, "confidence"), "high") << describe_record(*rec);
        const std::string evidence = rec->contains("evidence") ? (*rec)["evidence"].dump() : "";
        for (const auto &expected : s.expected_evidence())
            EXPECT_NE(evidence.find(expected), std::string::npos)
                << "evidence lacks \"" << expected << "\": " << evidence;
    }
}

std::unique_ptr<Scenario> run(std::unique_ptr<Scenario> s, RunResult &r) {
    r = run_scenarios({s.get()});
    return s;
}

#define CAUSE_TESTS(Suite, make)                       \
    TEST(Suite, Reproduces) {                          \
        REQUIRE_ROOT();                                \
        RunResult r;                                   \
        auto s = run(make, r);                         \
        expect_reproduced(*s, r);                      \
    }                                                  \
    TEST(Suite, AgentNamesCause) {                     \
        REQUIRE_ROOT();                                \
        RunResult r;                                   \
        auto s = run(make, r);                         \
        expect_cause(*s, r);                           \
    }

CAUSE_TESTS(BackendCrash, make_backend_crash(false))
CAUSE_TESTS(BackendCrashIPv6, make_backend_crash(true))
CAUSE_TESTS(BackendOom, make_backend_oom(false))
CAUSE_TESTS(KeepaliveRace, make_keepalive_race(false))
CAUSE_TESTS(KeepaliveRaceIPv6, make_keepalive_race(true))
CAUSE_TESTS(MiddleboxIdle, make_middlebox_idle(false))
CAUSE_TESTS(MiddleboxIdleIPv6, make_middlebox_idle(true))
CAUSE_TESTS(StaleReuse, make_stale_reuse(false))
CAUSE_TESTS(StaleReuseIPv6, make_stale_reuse(true))
CAUSE_TESTS(MtuBlackhole, make_mtu_blackhole(false))

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

// Client aborts: nginx logs the client's doing (info level), no upstream 104.
TEST(ClientAbort, Reproduces) {
    REQUIRE_ROOT();
    RunResult r;
    auto s = run(make_client_abort(), r);
    print_records(*s, r);
    SCOPED_TRACE(r.dump());
    EXPECT_EQ(reproduction_problems(*s, r, true), "");
    const bool client_logged = r.error_log.find("while sending to client") != std::string::npos ||
                               r.error_log.find("client prematurely closed connection") != std::string::npos;
    EXPECT_TRUE(client_logged) << "nginx did not log the client's abort";
    // The agent saw the clients' resets on nginx's side.
    int downstream = 0;
    for (const json *rec : r.rsts())
        if (str(*rec, "direction") == "received" && str(*rec, "role") == "downstream") ++downstream;
    EXPECT_GE(downstream, 1) << "no received downstream reset";
}

// ... and every reset the agent reports for it is the client's.
TEST(ClientAbort, AgentBlamesClient) {
    REQUIRE_ROOT();
    RunResult r;
    auto s = run(make_client_abort(), r);
    print_records(*s, r);
    SCOPED_TRACE(r.dump());
    ASSERT_EQ(reproduction_problems(*s, r, true), "");
    ASSERT_FALSE(r.rsts().empty()) << "the agent reported no reset at all";
    for (const json *rec : r.rsts()) EXPECT_EQ(str(*rec, "cause"), "client_side") << describe_record(*rec);
}

}  // namespace
}  // namespace rstwatch::scenarios
