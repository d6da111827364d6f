// Scenario harness: one reproduction per cause of nginx's
//   recv() failed (104: Connection reset by peer) while reading response header from upstream
// run against a real nginx with the real agent watching it.
//
// A Scenario builds its backend (and network namespaces), warms nginx's
// upstream keep-alive pool, waits, and sends the request that fails. The
// harness runs one or several scenarios under ONE front nginx (a location and
// an upstream block per scenario) and ONE agent, and returns what a person
// would look at: nginx's error-log lines and the agent's JSON records. Tests
// check the reproduction (nginx logged the 104 line) separately from the
// diagnosis (the agent's `cause`).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nginx_lab.h"
#include "netns_lab.h"

namespace rstwatch::scenarios {

using namespace std::chrono_literals;
using json = nlohmann::json;
using testlab::NetnsLab;
using testlab::UpstreamResetLine;

bool in_ci();

// Privileged tests may skip only outside CI.
#define REQUIRE_ROOT()                                                                  \
    do {                                                                                \
        if (geteuid() != 0) {                                                           \
            if (::rstwatch::scenarios::in_ci())                                         \
                FAIL() << "needs root (CI=true: a skip would hide this test)";          \
            GTEST_SKIP() << "needs root (nginx workers, BPF, namespaces); run with sudo"; \
        }                                                                               \
    } while (0)

// The front nginx as a scenario sees it: requests go to /<scenario>/...
struct Front {
    uint16_t port = 0;
    std::string prefix;  // "/keepalive_race"
    int request(const std::string &method, const std::string &path, const std::string &body = {},
                std::chrono::milliseconds timeout = 10s) const;
};

class Scenario {
public:
    virtual ~Scenario() = default;
    // Location name and label: "keepalive_race", "healthy", ...
    virtual std::string name() const = 0;
    // The cause the agent must give the reset; "" when no upstream reset is
    // expected (negative controls).
    virtual std::string expected_cause() const = 0;
    // What really happened, where the agent cannot be expected to tell (a
    // backend on another host): its cause must be this one or `unknown`.
    virtual std::string actual_cause() const { return expected_cause(); }
    // Text the record's evidence must contain: what proves the cause.
    virtual std::vector<std::string> expected_evidence() const { return {}; }
    // Flags the agent needs to see this cause (a run of several scenarios passes all of them).
    virtual std::vector<std::string> agent_flags() const { return {}; }

    // Builds the topology, starts the backend, sets `upstream`.
    virtual void setup(NetnsLab &net) = 0;
    // Directives for this scenario's upstream block and location.
    virtual std::string upstream_extra() const { return "keepalive 16;"; }
    virtual std::string location_extra() const { return ""; }
    // Requests before the idle period (they pool the connection the failing
    // request will reuse). Recorded in warm_statuses.
    virtual void warm(const Front &) {}
    // How long the pooled connection must stay idle before trigger().
    virtual std::chrono::milliseconds idle() const { return 0ms; }
    // After the idle period, before the failing request (stale reuse: replace
    // the backend's namespace).
    virtual void before_trigger(NetnsLab &) {}
    // The failing request(s); recorded in trigger_statuses.
    virtual void trigger(const Front &) = 0;
    // 104 lines nginx should log for this scenario (0 for the controls).
    virtual size_t expected_104() const { return 1; }
    // HTTP status the failing request should get (0: do not check).
    virtual int expected_trigger_status() const { return 502; }
    // Checks specific to the scenario after the run ("the backend was OOM
    // killed"); returns "" when fine, else what went wrong.
    virtual std::string check_reproduction() const { return ""; }
    // Ends what the scenario started inside the lab's namespaces (called
    // before they are deleted, also when the run fails).
    virtual void teardown() {}

    std::string upstream;  // "198.18.1.18:8080", "[2001:db8:2:1::2]:8080", "127.0.0.1:4242"
    std::vector<int> warm_statuses;
    std::vector<int> trigger_statuses;
};

struct RunOptions {
    // Extra agent arguments; RSTWATCH_SCENARIO_AGENT_ARGS (e.g. "--all")
    // replaces "--pid <master>" when set, to look at the backend side too.
    bool text_tables_agent = false;  // also run `rstwatch run --format table` (mixed run)
    // The agent's --store ("": none). It stays after the run, for
    // `rstwatch explain --store` (explain_scenarios_test).
    std::string store_path;
};

struct RunResult {
    std::vector<UpstreamResetLine> resets;  // nginx's 104 lines
    std::string error_log;
    std::string access_log;
    std::vector<json> records;  // every JSON line of the agent
    std::string agent_stdout;
    std::string agent_stderr;
    std::string text_agent_stdout;  // the --format table agent, when asked for
    pid_t master = -1;
    uint16_t front_port = 0;
    std::string front_listen;  // "127.0.0.1:PORT": the `local` of client-side records
    std::string agent_args;
    // Scenario::check_reproduction() per scenario name, taken while the
    // scenario's namespaces still existed.
    std::map<std::string, std::string> scenario_problems;

    // Records of type rst.
    std::vector<const json *> rsts() const;
    // The received upstream reset matching nginx's line (remote and pid).
    const json *match(const UpstreamResetLine &line) const;
    // The 104 lines naming this upstream.
    std::vector<UpstreamResetLine> resets_for(const std::string &upstream) const;
    // Everything, for failure messages.
    std::string dump() const;
};

// Runs the scenarios under one front nginx (1 worker, so that the request after
// the idle period meets the pooled connection) and one agent. Throws on
// harness failures (nginx or the agent did not start).
RunResult run_scenarios(const std::vector<Scenario *> &scenarios, const RunOptions &options = {});

// "" when the run reproduced what the scenario is about (statuses, nginx's
// 104 lines for its upstream with the header context, its own checks), else
// what went wrong. alone: no other scenario shared the run, so no other
// upstream may have a 104 line either.
std::string reproduction_problems(const Scenario &s, const RunResult &r, bool alone);

// Prints nginx's lines and the agent's records (the evidence the diagnosis
// engine works from) to stdout, for the test log.
void print_records(const Scenario &s, const RunResult &r);

// Field helpers.
std::string str(const json &j, const char *key);
// The JSON objects among the agent's output lines.
std::vector<json> json_lines(const std::string &text);
std::string describe_record(const json &r);  // one line: cause, evidence, timings

// Where the binaries are (compile definitions).
const char *agent_bin();
const char *backend_bin();
std::string build_dir();

}  // namespace rstwatch::scenarios
