// All causes interleaved under ONE front nginx (an upstream block and a
// location per scenario) and ONE agent in its default mode: warm-ups for
// all, one idle period, then every failing request. The backends run on this
// host and, unless RSTWATCH_REMOTE_BACKENDS=no (the kernel matrix's guests),
// on another (remote_causes.h). Prints per scenario the agent's verdicts on
// its resets (right: the cause that happened / unknown / wrong) as the
// README's table (RSTWATCH_UPDATE_README=1 writes it there) and saves the
// agent's own text tables of the run to <build>/mixed-run-tables.txt. Fails
// on a wrong cause, an unknown that does not say what is missing, a 104 line
// without a record, or a scenario not reproduced.

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include "causes.h"
#include "remote_causes.h"

namespace rstwatch::scenarios {
namespace {

struct Mixed {
    std::unique_ptr<RemoteBackends> remote;  // the backend host of the remote scenarios
    std::vector<std::unique_ptr<Scenario>> owned;
    std::vector<Scenario *> scenarios;
    RunResult result;
};

// The agent in its default mode (no --ttl-evidence): what a user runs.
std::unique_ptr<Mixed> run_mixed() {
    auto m = std::make_unique<Mixed>();
    m->owned.push_back(make_backend_crash(false));
    m->owned.push_back(make_backend_shutdown(false));
    m->owned.push_back(make_backend_oom(false));
    m->owned.push_back(make_keepalive_race(false));
    m->owned.push_back(make_middlebox_idle(false, /*ttl_evidence=*/false));
    m->owned.push_back(make_stale_reuse(true));  // IPv6 in the mix
    m->owned.push_back(make_mtu_blackhole(false));
    m->owned.push_back(make_client_abort());
    m->owned.push_back(make_healthy());
    if (remote_backends_enabled()) {
        m->remote = std::make_unique<RemoteBackends>();
        for (auto &s : m->remote->scenarios(/*ttl_evidence=*/false)) m->owned.push_back(std::move(s));
    }
    for (auto &s : m->owned) m->scenarios.push_back(s.get());
    RunOptions o;
    o.text_tables_agent = true;
    m->result = run_scenarios(m->scenarios, o);
    return m;
}

// The scenario a reset record belongs to: the one whose upstream it names,
// or the client abort for nginx's listening side; nullptr for records of no
// scenario (possible with RSTWATCH_SCENARIO_AGENT_ARGS=--all).
const Scenario *scenario_of(const Mixed &m, const json &rec) {
    for (Scenario *s : m.scenarios)
        if (str(rec, "remote") == s->upstream) return s;
    if (str(rec, "local") == m.result.front_listen)
        for (Scenario *s : m.scenarios)
            if (s->name() == "client_abort") return s;
    return nullptr;
}

// `unknown` is acceptable only when the evidence says what was missing.
bool unknown_is_explained(const json &rec) {
    auto ev = rec.find("evidence");
    if (ev == rec.end() || !ev->is_array()) return false;
    for (const auto &e : *ev) {
        if (!e.is_string()) continue;
        const std::string t = e.get<std::string>();
        for (const char *w : {"no ", "not ", "missing", "without", "unavailable", "cannot", "candidates"})
            if (t.find(w) != std::string::npos) return true;
    }
    return false;
}

// Per scenario: nginx's 104 lines, and the agent's records by verdict:
// right (the cause that happened), unknown, wrong; lines without a record.
struct Row {
    std::string where, happened;
    int lines = 0, records = 0, right = 0, wrong = 0, unknown = 0, missing = 0;
};

std::string happened(const Scenario &s) {
    return s.actual_cause().empty() ? "(no reset expected)" : s.actual_cause();
}

std::map<std::string, Row> score(const Mixed &m, std::vector<std::string> &failures) {
    std::map<std::string, Row> rows;
    for (Scenario *s : m.scenarios) {
        auto &row = rows[s->name()];
        row.where = s->name().rfind("remote_", 0) == 0 ? "another host" : "this host";
        row.happened = happened(*s);
        for (const auto &l : m.result.resets_for(s->upstream)) {
            ++row.lines;
            if (!m.result.match(l)) {
                ++row.missing;
                failures.push_back("no agent record for nginx line: " + l.line);
            }
        }
    }
    for (const json *rec : m.result.rsts()) {
        const Scenario *s = scenario_of(m, *rec);
        if (!s) continue;
        auto &row = rows[s->name()];
        ++row.records;
        const std::string got = str(*rec, "cause");
        if (got == s->actual_cause()) {
            ++row.right;
        } else if (got == "unknown") {
            ++row.unknown;
            if (!unknown_is_explained(*rec))
                failures.push_back("unknown without saying what is missing: " + describe_record(*rec));
        } else {
            ++row.wrong;
            failures.push_back("[" + s->name() + "] " + happened(*s) + " happened, the agent said " +
                               (got.empty() ? "(no cause)" : got) + ": " + describe_record(*rec));
        }
    }
    return rows;
}

// A Markdown table: the README's (between its accuracy markers) and the log's.
std::string accuracy_table(const std::map<std::string, Row> &rows) {
    std::ostringstream t;
    t << "| scenario | backend on | what happened | 104 lines | right | unknown | wrong |\n"
      << "|---|---|---|---:|---:|---:|---:|\n";
    for (const auto &[name, r] : rows)
        t << "| " << name << " | " << r.where << " | " << r.happened << " | " << r.lines << " | " << r.right
          << " | " << r.unknown << " | " << r.wrong << " |\n";
    return t.str();
}

// RSTWATCH_UPDATE_README=1: the table replaces the README's, between
// <!-- accuracy:begin --> and <!-- accuracy:end -->.
void update_readme(const std::string &table) {
    const char *update = std::getenv("RSTWATCH_UPDATE_README");
    if (!update || std::string(update) != "1") return;
    const std::string path = std::string(RSTWATCH_SOURCE_DIR) + "/README.md";
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    std::string readme = text.str();
    const std::string begin = "<!-- accuracy:begin -->\n", end = "<!-- accuracy:end -->";
    const size_t a = readme.find(begin), b = readme.find(end);
    ASSERT_TRUE(a != std::string::npos && b != std::string::npos && a < b) << "no accuracy markers in " << path;
    readme.replace(a + begin.size(), b - a - begin.size(), table);
    std::ofstream(path) << readme;
    std::cout << "README.md's accuracy table updated\n";
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
    const std::string table = accuracy_table(score(*m, failures));
    std::cout << "per-scenario verdicts, one agent (default mode) over all scenarios:\n" << table;
    if (failures.empty()) update_readme(table);

    // The agent's own tables, in text, for whoever reads the run.
    const std::string path = build_dir() + "/mixed-run-tables.txt";
    std::ofstream out(path);
    out << "# rstwatch run --pid <front nginx master> --format table, over the mixed scenario run\n"
        << "# (tests/scenarios/mixed_run_test.cpp); per-scenario verdicts of the JSON agent:\n";
    std::istringstream tl(table);
    for (std::string line; std::getline(tl, line);) out << "#   " << line << "\n";
    out << r.text_agent_stdout;
    EXPECT_TRUE(static_cast<bool>(out)) << "cannot write " << path;
    std::cout << "agent tables saved to " << path << "\n";

    for (const auto &f : failures) ADD_FAILURE() << f;
}

}  // namespace
}  // namespace rstwatch::scenarios
