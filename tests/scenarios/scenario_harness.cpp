#include "agent_binary.h"
#include "scenario_harness.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace rstwatch::scenarios {

using testlab::ChildProcess;
using testlab::NginxLab;
using testlab::NginxLabOptions;
using Clock = std::chrono::steady_clock;

bool in_ci() {
    const char *ci = std::getenv("CI");
    return ci && std::string(ci) == "true";
}

const char *agent_bin() { return RSTWATCH_BIN; }

const char *backend_bin() { return RSTWATCH_TEST_BACKEND_BIN; }
std::string build_dir() { return RSTWATCH_BUILD_DIR; }

int Front::request(const std::string &method, const std::string &path, const std::string &body,
                   std::chrono::milliseconds timeout) const {
    return testlab::http_request(port, method, prefix + path, body, timeout);
}

std::string str(const json &j, const char *key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string describe_record(const json &r) {
    std::ostringstream o;
    auto field = [&](const char *k) {
        auto it = r.find(k);
        o << k << "=" << (it == r.end() ? std::string("(absent)") : it->dump()) << " ";
    };
    for (const char *k : {"cause", "confidence", "direction", "role", "pid", "comm", "local", "remote", "state",
                          "reason", "in_request", "reused", "pool_idle_ms", "since_request_ms", "idle_ms", "owner_via",
                          "bytes_sent", "bytes_received", "retransmits", "packets_out", "mss", "on_cpu",
                          "evidence", "hint"})
        field(k);
    for (auto it = r.begin(); it != r.end(); ++it) {
        static const std::vector<std::string> known = {
            "cause", "confidence", "direction", "role", "pid", "comm", "local", "remote", "state", "reason",
            "in_request", "reused", "pool_idle_ms", "since_request_ms", "idle_ms", "owner_via", "bytes_sent",
            "bytes_received", "retransmits", "packets_out", "mss", "on_cpu", "evidence", "hint", "type", "time"};
        if (std::find(known.begin(), known.end(), it.key()) == known.end())
            o << it.key() << "=" << it.value().dump() << " ";
    }
    return o.str();
}

std::vector<const json *> RunResult::rsts() const {
    std::vector<const json *> out;
    for (const auto &r : records)
        if (str(r, "type") == "rst") out.push_back(&r);
    return out;
}

const json *RunResult::match(const UpstreamResetLine &line) const {
    for (const json *r : rsts()) {
        if (str(*r, "direction") != "received" || str(*r, "role") != "upstream" || str(*r, "remote") != line.upstream)
            continue;
        auto pid = r->find("pid");
        if (pid != r->end() && pid->is_number_integer() && pid->get<pid_t>() == line.pid) return r;
    }
    return nullptr;
}

std::vector<UpstreamResetLine> RunResult::resets_for(const std::string &upstream) const {
    std::vector<UpstreamResetLine> out;
    for (const auto &l : resets)
        if (l.upstream == upstream) out.push_back(l);
    return out;
}

std::string RunResult::dump() const {
    std::ostringstream o;
    o << "agent: " << agent_args << "\n--- nginx error.log:\n"
      << error_log << "--- nginx access.log:\n"
      << access_log << "--- agent rst/oom records:\n";
    for (const auto &r : records)
        if (str(r, "type") != "tables") o << r.dump() << "\n";
    o << "--- agent stderr:\n" << agent_stderr;
    return o.str();
}

std::string reproduction_problems(const Scenario &s, const RunResult &r, bool alone) {
    std::ostringstream p;
    for (int st : s.warm_statuses)
        if (st != 200) p << s.name() << ": warm-up request got " << st << ", want 200\n";
    if (s.expected_trigger_status())
        for (int st : s.trigger_statuses)
            if (st != s.expected_trigger_status())
                p << s.name() << ": request got " << st << ", want " << s.expected_trigger_status() << "\n";
    auto lines = r.resets_for(s.upstream);
    if (lines.size() != s.expected_104())
        p << s.name() << ": nginx logged " << lines.size() << " 104 line(s) for " << s.upstream << ", want "
          << s.expected_104() << "\n";
    if (alone && r.resets.size() != lines.size()) p << "nginx logged 104 lines for other upstreams\n";
    for (const auto &l : lines)
        if (l.context != "while reading response header from upstream") p << s.name() << ": context: " << l.line << "\n";
    auto it = r.scenario_problems.find(s.name());
    if (it != r.scenario_problems.end() && !it->second.empty()) p << s.name() << ": " << it->second << "\n";
    return p.str();
}

void print_records(const Scenario &s, const RunResult &r) {
    std::cout << "[" << s.name() << "] upstream " << s.upstream << ", agent " << r.agent_args << "\n";
    for (const auto &l : r.resets) std::cout << "  nginx: " << l.line << "\n";
    for (const json *rec : r.rsts()) std::cout << "  agent: " << describe_record(*rec) << "\n";
    for (const auto &rec : r.records)
        if (str(rec, "type") == "oom") std::cout << "  agent: " << rec.dump() << "\n";
}

std::vector<json> json_lines(const std::string &text) {
    std::vector<json> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] != '{') continue;
        auto j = json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (!j.is_discarded()) out.push_back(std::move(j));
    }
    return out;
}

namespace {

std::vector<std::string> split_words(const std::string &s) {
    std::istringstream in(s);
    std::vector<std::string> out;
    std::string w;
    while (in >> w) out.push_back(w);
    return out;
}

// The agent, started against the front nginx; "attached" on stderr means ready.
std::unique_ptr<ChildProcess> start_agent(std::vector<std::string> args, const std::string &store = "") {
    // No control socket, and no store unless asked: two agents run at once (mixed run).
    std::vector<std::string> argv = {agent_bin(), "run", "--store", store.empty() ? "none" : store, "--socket", "none"};
    argv.insert(argv.end(), args.begin(), args.end());
    // A bound, in case the test dies between here and SIGINT.
    argv.insert(argv.end(), {"--duration", "240"});
    auto agent = std::make_unique<ChildProcess>(argv);
    if (!agent->wait_for_output("attached", 60s, ChildProcess::Stream::Stderr))
        throw std::runtime_error("agent did not attach (" + std::string(agent->running() ? "still running" : "exited") +
                                 ")\nstderr:\n" + agent->stderr_text());
    return agent;
}

std::string stop_agent(ChildProcess &agent) {
    if (!agent.signal(SIGINT)) return "agent exited before SIGINT";
    auto status = agent.wait(15s);
    if (!status) return "agent ignored SIGINT for 15 s";
    agent.wait_output_closed(2s);
    if (!WIFEXITED(*status)) return "agent ended with " + ChildProcess::describe_status(*status);
    return "";
}

}  // namespace

RunResult run_scenarios(const std::vector<Scenario *> &scenarios, const RunOptions &options) {
    NetnsLab net;
    // Declared after net: runs first, while the namespaces still exist.
    struct Teardown {
        const std::vector<Scenario *> &s;
        ~Teardown() {
            for (Scenario *x : s) x->teardown();
        }
    } teardown{scenarios};
    for (Scenario *s : scenarios) s->setup(net);

    // One upstream block and one location per scenario; the location strips
    // its prefix (proxy_pass with a URI), so backends see "/x" for "/name/x".
    std::ostringstream http, server;
    for (Scenario *s : scenarios) {
        http << "upstream up_" << s->name() << " { server " << s->upstream << "; " << s->upstream_extra() << " }\n    ";
        server << "location /" << s->name() << "/ { proxy_pass http://up_" << s->name()
               << "/; proxy_http_version 1.1; proxy_set_header Connection \"\"; " << s->location_extra() << " }\n        ";
    }
    NginxLabOptions o;
    // One worker: the request after the idle period must meet the connection
    // the warm-up left in the pool (pools are per worker).
    o.worker_processes = 1;
    o.error_log_level = "info";
    o.http_extra = http.str();
    o.server_extra = server.str();
    NginxLab front(o);

    RunResult result;
    result.master = front.master_pid();
    result.front_port = front.listen_port();
    result.front_listen = "127.0.0.1:" + std::to_string(front.listen_port());

    std::vector<std::string> agent_args = {"--json"};
    const char *override_args = std::getenv("RSTWATCH_SCENARIO_AGENT_ARGS");
    if (override_args && *override_args) {
        for (auto &w : split_words(override_args)) agent_args.push_back(w);
    } else {
        agent_args.insert(agent_args.end(), {"--pid", std::to_string(front.master_pid())});
    }
    std::vector<std::string> flags;
    for (const Scenario *s : scenarios)
        for (const auto &flag : s->agent_flags())
            if (std::find(flags.begin(), flags.end(), flag) == flags.end())
                flags.push_back(flag);
    agent_args.insert(agent_args.end(), flags.begin(), flags.end());
    for (const auto &a : agent_args) result.agent_args += a + " ";
    auto agent = start_agent(agent_args, options.store_path);
    std::unique_ptr<ChildProcess> text_agent;
    if (options.text_tables_agent) {
        std::vector<std::string> args = {"--pid", std::to_string(front.master_pid()), "--format", "table"};
        args.insert(args.end(), flags.begin(), flags.end());
        text_agent = start_agent(args);
    }

    // Warm-up, one idle period for all, then the failing requests.
    std::chrono::milliseconds idle = 0ms;
    for (Scenario *s : scenarios) {
        s->warm(Front{front.listen_port(), "/" + s->name()});
        idle = std::max(idle, s->idle());
    }
    if (idle > 0ms) std::this_thread::sleep_for(idle);
    for (Scenario *s : scenarios) s->before_trigger(net);
    size_t expected = 0;
    for (Scenario *s : scenarios) {
        s->trigger(Front{front.listen_port(), "/" + s->name()});
        expected += s->expected_104();
    }

    // nginx's lines, then the agent's records for them (ring-buffer polling).
    result.resets = front.wait_for_error_log_resets(expected, expected ? 10s : 500ms);
    auto deadline = Clock::now() + 5s;
    while (Clock::now() < deadline) {
        result.records = json_lines(agent->stdout_text());
        bool all = std::all_of(result.resets.begin(), result.resets.end(),
                               [&](const UpstreamResetLine &l) { return result.match(l) != nullptr; });
        if (all && Clock::now() + 4s > deadline) break;  // at least 1 s for stragglers (sent resets, oom)
        std::this_thread::sleep_for(100ms);
    }

    for (Scenario *s : scenarios) result.scenario_problems[s->name()] = s->check_reproduction();
    std::string agent_problem = stop_agent(*agent);
    result.agent_stdout = agent->stdout_text();
    result.agent_stderr = agent->stderr_text() + (agent_problem.empty() ? "" : "\n[harness] " + agent_problem);
    result.records = json_lines(result.agent_stdout);
    if (text_agent) {
        std::string p = stop_agent(*text_agent);
        result.text_agent_stdout = text_agent->stdout_text() + (p.empty() ? "" : "\n[harness] " + p);
    }
    result.error_log = front.error_log();
    result.access_log = front.access_log();
    result.resets = front.error_log_resets();
    return result;
}

}  // namespace rstwatch::scenarios
