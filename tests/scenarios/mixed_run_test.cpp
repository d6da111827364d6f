// All causes interleaved under ONE front nginx (an upstream block and a
// location per cause) and ONE agent: warm-ups for all, one idle period, then
// every failing request. Prints a per-cause accuracy table (expected cause x
// the agent's records: correct / wrong / unknown / missing) and saves the
// agent's own text tables of the run to <build>/mixed-run-tables.txt.
//
// Reproduction and diagnosis are separate tests here too: MixedRun.Reproduces
// checks nginx logged each cause's 104 line and the agent has a record for it;
// MixedRun.NoWrongCause checks the causes.

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include "causes.h"

namespace rstwatch::scenarios {
namespace {

struct Mixed {
    std::vector<std::unique_ptr<Scenario>> owned;
    std::vector<Scenario *> scenarios;
    RunResult result;
};

std::unique_ptr<Mixed> run_mixed() {
    auto m = std::make_unique<Mixed>();
    m->owned.push_back(make_backend_crash(false));
    m->owned.push_back(make_backend_shutdown(false));
    m->owned.push_back(make_backend_oom(false));
    m->owned.push_back(make_keepalive_race(false));
    m->owned.push_back(make_middlebox_idle(false));
    m->owned.push_back(make_stale_reuse(true));  // IPv6 in the mix
    m->owned.push_back(make_mtu_blackhole(false));
    m->owned.push_back(make_client_abort());
    m->owned.push_back(make_healthy());
    for (auto &s : m->owned) m->scenarios.push_back(s.get());
    RunOptions o;
    o.text_tables_agent = true;
    m->result = run_scenarios(m->scenarios, o);
    return m;
}

// The cause a reset record should carry, from where it was seen: the scenario
// whose upstream it names, or nginx's listening side (the client aborts).
// "" for records of no scenario (possible with RSTWATCH_SCENARIO_AGENT_ARGS=--all).
std::string expected_for(const Mixed &m, const json &rec, std::string *scenario) {
    for (Scenario *s : m.scenarios) {
        if (str(rec, "remote") == s->upstream) {
            *scenario = s->name();
            return s->expected_cause().empty() ? "(none expected)" : s->expected_cause();
        }
    }
    if (str(rec, "local") == m.result.front_listen) {
        *scenario = "client_abort";
        return "client_side";
    }
    return "";
}

// `unknown` is acceptable only when the evidence says what was missing.
bool unknown_is_explained(const json &rec) {
    auto ev = rec.find("evidence");
    if (ev == rec.end() || !ev->is_array()) return false;
    for (const auto &e : *ev) {
        if (!e.is_string()) continue;
        const std::string t = e.get<std::string>();
        for (const char *w : {"no ", "not ", "missing", "without", "unavailable", "cannot"})
            if (t.find(w) != std::string::npos) return true;
    }
    return false;
}

struct Row {
    int lines = 0, records = 0, correct = 0, wrong = 0, unknown = 0, missing = 0;
};

std::string accuracy_table(const Mixed &m, std::vector<std::string> &failures) {
    std::map<std::string, Row> rows;
    for (Scenario *s : m.scenarios) {
        const std::string cause = s->expected_cause().empty() ? "(none expected)" : s->expected_cause();
        auto &row = rows[cause];
        for (const auto &l : m.result.resets_for(s->upstream)) {
            ++row.lines;
            if (!m.result.match(l)) {
                ++row.missing;
                failures.push_back("no agent record for nginx line: " + l.line);
            }
        }
    }
    for (const json *rec : m.result.rsts()) {
        std::string scenario;
        const std::string want = expected_for(m, *rec, &scenario);
        if (want.empty()) continue;
        auto &row = rows[want];
        ++row.records;
        const std::string got = str(*rec, "cause");
        if (got == want) {
            ++row.correct;
        } else if (got == "unknown") {
            ++row.unknown;
            if (!unknown_is_explained(*rec))
                failures.push_back("unknown without saying what is missing: " + describe_record(*rec));
        } else {
            ++row.wrong;
            failures.push_back("[" + scenario + "] want " + want + ", got " + (got.empty() ? "(no cause)" : got) +
                               ": " + describe_record(*rec));
        }
    }
    std::ostringstream t;
    t << std::left << std::setw(18) << "expected cause" << std::right << std::setw(10) << "104 lines" << std::setw(9)
      << "records" << std::setw(9) << "correct" << std::setw(7) << "wrong" << std::setw(9) << "unknown"
      << std::setw(9) << "missing"
      << "\n";
    for (const auto &[cause, r] : rows) {
        t << std::left << std::setw(18) << cause << std::right << std::setw(10) << r.lines << std::setw(9)
          << r.records << std::setw(9) << r.correct << std::setw(7) << r.wrong << std::setw(9) << r.unknown
          << std::setw(9) << r.missing << "\n";
    }
    return t.str();
}

// One run of every scenario at once (ctest runs each TEST in a process of
// its own, so this is one TEST): every 104 line is reproduced and matched
// by a record, and no record carries a wrong cause.
TEST(MixedRun, ReproducesWithNoWrongCause) {
    REQUIRE_ROOT();
    const std::unique_ptr<Mixed> m = run_mixed();
    const RunResult &r = m->result;
    SCOPED_TRACE(r.dump());
    std::string problems;
    for (Scenario *s : m->scenarios) {
        print_records(*s, r);
        problems += reproduction_problems(*s, r, false);
    }
    for (const auto &l : r.resets)
        EXPECT_NE(r.match(l), nullptr) << "no agent record for nginx line: " << l.line;
    ASSERT_EQ(problems, "") << "not reproduced";

    std::vector<std::string> failures;
    const std::string table = accuracy_table(*m, failures);
    std::cout << "per-cause accuracy, one agent over all scenarios:\n" << table;

    // The agent's own tables, in text, for whoever reads the run.
    const std::string path = build_dir() + "/mixed-run-tables.txt";
    std::ofstream out(path);
    out << "# rstwatch run --pid <front nginx master> --format table, over the mixed scenario run\n"
        << "# (tests/scenarios/mixed_run_test.cpp); per-cause accuracy of the JSON agent:\n";
    std::istringstream tl(table);
    for (std::string line; std::getline(tl, line);) out << "#   " << line << "\n";
    out << r.text_agent_stdout;
    EXPECT_TRUE(static_cast<bool>(out)) << "cannot write " << path;
    std::cout << "agent tables saved to " << path << "\n";

    for (const auto &f : failures) ADD_FAILURE() << f;
}

}  // namespace
}  // namespace rstwatch::scenarios
