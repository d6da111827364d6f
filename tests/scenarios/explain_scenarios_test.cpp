// `rstwatch explain`, the binary, as an operator runs it: on the error log of
// a real nginx whose agent kept a store (each local cause scenario, and a
// worker with two resets on one upstream within a second), and on synthetic
// logs with stores written through the Store API (no root needed): two
// resets in one second, --follow across logrotate's rename and
// copytruncate, a log in another time zone, lines from before the store's
// first record, malformed and truncated lines, gzip-rotated files and
// standard input.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <thread>

#include "agent_binary.h"
#include "causes.h"
#include "outputs/store.h"

namespace rstwatch::scenarios {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;
const std::string kReset104 = "recv() failed (104: Connection reset by peer)";

class TempDir {
public:
    TempDir()
    {
        char tmpl[] = "/tmp/rstwatch-explain.XXXXXX";
        if (!mkdtemp(tmpl))
            throw std::runtime_error("mkdtemp");
        path_ = tmpl;
    }
    ~TempDir() { fs::remove_all(path_); }
    std::string at(const std::string &name) const { return (path_ / name).string(); }

private:
    fs::path path_;
};

// A reset as the agent would have stored it.
struct Reset {
    int64_t time_ns = 0;
    uint32_t pid = 0;
    std::string remote;
    std::string cause = "backend_crash";
};

Event reset_event(const Reset &r)
{
    ResetEvent e;
    e.time_ns = r.time_ns;
    e.direction = Direction::Received;
    e.role = Role::Upstream;
    e.ipv6 = r.remote[0] == '[';
    e.local = e.ipv6 ? "[2001:db8::1]:40000" : "10.0.0.1:40000";
    e.remote = r.remote;
    e.state = TcpState::Established;
    e.owner_known = true;
    e.pid = r.pid;
    e.comm = "nginx";
    Diagnosis d;
    d.cause = cause_from_string(r.cause).value_or(Cause::Unknown);
    d.confidence = Confidence::High;
    d.evidence = {Evidence{.code = EvidenceCode::Recorded, .text = "reset 0 ms after nginx sent a request"},
                  Evidence{.code = EvidenceCode::Recorded, .text = "what proves " + r.cause}};
    d.hint = Hint{.code = HintCode::Recorded, .text = "what to change for " + r.cause};
    e.diagnosis = d;
    return e;
}

void write_store(const std::string &path, const std::vector<Reset> &resets)
{
    auto store = Store::open_for_writing(path);
    std::vector<Event> events;
    for (const Reset &r : resets)
        events.push_back(reset_event(r));
    const std::string error = store->append(events);
    if (!error.empty())
        throw std::runtime_error("store: " + error);
}

// What nginx writes for a failure at a UTC second, in its local time zone.
std::string nginx_line(int64_t utc_second, uint32_t pid, const std::string &upstream_url,
                       const std::string &error = kReset104, const char *zone = "UTC")
{
    const char *old = std::getenv("TZ");
    const std::string saved = old ? old : "";
    setenv("TZ", zone, 1);
    tzset();
    std::time_t t = static_cast<std::time_t>(utc_second);
    std::tm tm{};
    localtime_r(&t, &tm);
    old ? setenv("TZ", saved.c_str(), 1) : unsetenv("TZ");
    tzset();
    char stamp[32];
    std::strftime(stamp, sizeof(stamp), "%Y/%m/%d %H:%M:%S", &tm);
    return std::string(stamp) + " [error] " + std::to_string(pid) + "#" + std::to_string(pid) + ": *12 " + error +
           " while reading response header from upstream, client: 127.0.0.1, server: , request: \"POST /orders "
           "HTTP/1.1\", upstream: \"" + upstream_url + "\", host: \"127.0.0.1\"";
}

void append(const std::string &path, const std::string &text)
{
    std::ofstream(path, std::ios::app) << text;
}

struct Explained {
    rwtest::BinaryRun run;
    std::vector<json> lines;  // --json's objects
};

Explained explain(std::vector<std::string> args)
{
    args.insert(args.begin(), "explain");
    Explained e;
    e.run = rwtest::run_agent_binary(args, false, std::chrono::seconds(60));
    e.lines = json_lines(e.run.out);
    return e;
}

// A second well in the past (no waiting for records still on their way),
// well within --since 1h.
int64_t recent_second() { return std::time(nullptr) - 600; }

TEST(ExplainSynthetic, TwoResetsOfOneWorkerOnOneUpstreamWithinASecond)
{
    TempDir dir;
    const int64_t s = recent_second();
    write_store(dir.at("store.db"), {{s * kSecond + 200 * kMs, 4242, "10.0.3.21:8081", "keepalive_race"},
                                     {s * kSecond + 700 * kMs, 4242, "10.0.3.21:8081", "stale_reuse"},
                                     {s * kSecond + 400 * kMs, 4242, "10.0.3.22:8081", "backend_oom"}});
    append(dir.at("error.log"), nginx_line(s, 4242, "http://10.0.3.21:8081/a") + "\n" +
                                    nginx_line(s, 4242, "http://10.0.3.21:8081/b") + "\n" +
                                    nginx_line(s, 4242, "http://10.0.3.22:8081/c") + "\n");
    Explained e = explain({"--json", "--store", dir.at("store.db"), dir.at("error.log")});
    ASSERT_EQ(e.run.exit_code, 0) << e.run.err;
    ASSERT_EQ(e.lines.size(), 3u) << e.run.out;
    // In order: the first line takes the earlier reset; both are ambiguous.
    EXPECT_EQ(e.lines[0]["cause"], "keepalive_race") << e.lines[0];
    EXPECT_EQ(e.lines[1]["cause"], "stale_reuse") << e.lines[1];
    EXPECT_EQ(e.lines[0]["ambiguous"], true);
    EXPECT_EQ(e.lines[1]["ambiguous"], true);
    EXPECT_LT(e.lines[0]["record_time"].get<std::string>(), e.lines[1]["record_time"].get<std::string>());
    // The other upstream's line has its own reset, alone.
    EXPECT_EQ(e.lines[2]["cause"], "backend_oom");
    EXPECT_EQ(e.lines[2]["ambiguous"], false);
}

TEST(ExplainSynthetic, ALogWrittenInAnotherTimeZone)
{
    TempDir dir;
    const int64_t s = recent_second();
    write_store(dir.at("store.db"), {{s * kSecond + 500 * kMs, 77, "[2001:db8::2]:8080"}});
    append(dir.at("error.log"), nginx_line(s, 77, "http://[2001:db8::2]:8080/x", kReset104, "America/New_York") + "\n");
    Explained right = explain({"--json", "--tz", "America/New_York", "--store", dir.at("store.db"), dir.at("error.log")});
    ASSERT_EQ(right.run.exit_code, 0) << right.run.err;
    ASSERT_EQ(right.lines.size(), 1u) << right.run.out;
    EXPECT_EQ(right.lines[0]["matched"], true) << right.lines[0];
    EXPECT_EQ(right.lines[0]["upstream"], "[2001:db8::2]:8080");
    // Read as UTC, the same line is hours away from its reset.
    Explained wrong = explain({"--json", "--tz", "UTC", "--store", dir.at("store.db"), dir.at("error.log")});
    ASSERT_EQ(wrong.lines.size(), 1u) << wrong.run.out;
    EXPECT_EQ(wrong.lines[0]["matched"], false) << wrong.lines[0];
}

TEST(ExplainSynthetic, LinesFromBeforeTheStoresFirstRecord)
{
    TempDir dir;
    const int64_t s = recent_second();
    write_store(dir.at("store.db"), {{s * kSecond, 5, "10.0.3.21:8081"}});
    append(dir.at("error.log"), nginx_line(s - 3600, 5, "http://10.0.3.21:8081/") + "\n" +
                                    nginx_line(s, 5, "http://10.0.3.21:8081/") + "\n");
    Explained e = explain({"--store", dir.at("store.db"), dir.at("error.log")});
    ASSERT_EQ(e.run.exit_code, 0) << e.run.err;
    EXPECT_NE(e.run.out.find("    unmatched: no agent was running then: the store's first record is from"),
              std::string::npos)
        << e.run.out;
    EXPECT_NE(e.run.out.find("    cause: backend_crash (high)"), std::string::npos) << e.run.out;
    EXPECT_NE(e.run.out.find("2 about a failed upstream connection: 1 matched with a reset, 1 not."),
              std::string::npos)
        << e.run.out;
}

// A store and log from a host whose clock is ahead of this one's (or this
// clock was set back): nothing is waited for, everything is matched.
TEST(ExplainSynthetic, ALogFromAheadOfThisClock)
{
    TempDir dir;
    const int64_t s = std::time(nullptr) + 86400;
    write_store(dir.at("store.db"), {{s * kSecond + 900 * kMs, 6, "10.0.3.21:8081"}});
    append(dir.at("error.log"), nginx_line(s, 6, "http://10.0.3.21:8081/") + "\n");
    const auto start = std::chrono::steady_clock::now();
    Explained e = explain({"--json", "--store", dir.at("store.db"), dir.at("error.log")});
    EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
    ASSERT_EQ(e.lines.size(), 1u) << e.run.out << e.run.err;
    EXPECT_EQ(e.lines[0]["matched"], true) << e.lines[0];
}

TEST(ExplainSynthetic, MalformedAndTruncatedLines)
{
    TempDir dir;
    const int64_t s = recent_second();
    write_store(dir.at("store.db"), {{s * kSecond + 100 * kMs, 31, "10.0.3.21:8081"}});
    const std::string full = nginx_line(s, 31, "http://10.0.3.21:8081/orders");
    std::string log;
    log += full.substr(0, full.find(", upstream:")) + "\n";                    // cut before its upstream
    log += "garbage " + kReset104 + " while reading upstream, upstream: \"http://10.0.3.21:8081/\"\n";
    log += full.substr(0, full.find("(104") + 3) + "\n";                        // cut inside the error
    log += std::string(100000, 'x') + "\n";                                    // far too long
    log += std::string("\x01\xff\xfe binary ", 12) + kReset104 + " while reading upstream\n";
    log += nginx_line(s, 31, "http://unix:/run/app.sock:/orders") + "\n";
    log += full.substr(0, 40);                                                  // no newline at the end
    append(dir.at("error.log"), log);
    Explained e = explain({"--json", "--store", dir.at("store.db"), dir.at("error.log")});
    ASSERT_EQ(e.run.exit_code, 0) << e.run.err;
    ASSERT_EQ(e.lines.size(), 4u) << e.run.out;
    EXPECT_EQ(e.lines[0]["matched"], true) << e.lines[0];  // by worker and time
    EXPECT_TRUE(e.lines[0]["upstream"].is_null());
    EXPECT_EQ(e.lines[1]["matched"], false);
    EXPECT_EQ(e.lines[1]["why_unmatched"].get<std::string>().rfind("line not readable:", 0), 0u) << e.lines[1];
    EXPECT_TRUE(e.lines[1]["time"].is_null());
    EXPECT_EQ(e.lines[2]["why_unmatched"].get<std::string>().rfind("line not readable:", 0), 0u) << e.lines[2];
    EXPECT_EQ(e.lines[3]["why_unmatched"].get<std::string>().rfind("unix-socket upstream:", 0), 0u) << e.lines[3];
}

TEST(ExplainSynthetic, GzipRotatedFilesAndStandardInput)
{
    TempDir dir;
    const int64_t s = recent_second();
    write_store(dir.at("store.db"), {{(s - 60) * kSecond, 8, "10.0.3.21:8081"}, {s * kSecond, 8, "10.0.3.21:8081"}});
    gzFile gz = gzopen(dir.at("error.log.2.gz").c_str(), "wb");
    ASSERT_NE(gz, nullptr);
    const std::string old_line = nginx_line(s - 60, 8, "http://10.0.3.21:8081/") + "\n";
    gzwrite(gz, old_line.data(), static_cast<unsigned>(old_line.size()));
    gzclose(gz);
    append(dir.at("error.log"), nginx_line(s, 8, "http://10.0.3.21:8081/") + "\n");
    Explained files = explain({"--json", "--store", dir.at("store.db"), dir.at("error.log.2.gz"), dir.at("error.log")});
    ASSERT_EQ(files.run.exit_code, 0) << files.run.err;
    ASSERT_EQ(files.lines.size(), 2u) << files.run.out;
    EXPECT_EQ(files.lines[0]["matched"], true);
    EXPECT_EQ(files.lines[1]["matched"], true);

    // Standard input: the shell's `rstwatch explain - < error.log`.
    const std::string command = std::string(agent_bin()) + " explain --json --store " + dir.at("store.db") + " - < " +
                                dir.at("error.log") + " > " + dir.at("out");
    ASSERT_EQ(std::system(command.c_str()), 0);
    auto lines = json_lines(testlab::read_file(dir.at("out")));
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0]["matched"], true);
}

// `rstwatch explain --follow` in the background, stopped with SIGINT.
class Follower {
public:
    explicit Follower(std::vector<std::string> args)
    {
        args.insert(args.begin(), {agent_bin(), "explain", "--follow"});
        child_ = std::make_unique<testlab::ChildProcess>(args);
        if (!child_->wait_for_output("following", 20s, testlab::ChildProcess::Stream::Stderr))
            throw std::runtime_error("explain --follow did not start:\n" + child_->stderr_text());
    }
    // Waits until `count` JSON lines are out.
    std::vector<json> wait_for(size_t count, std::chrono::seconds timeout = 15s)
    {
        const auto give_up = std::chrono::steady_clock::now() + timeout;
        std::vector<json> lines;
        while ((lines = json_lines(child_->stdout_text())).size() < count && std::chrono::steady_clock::now() < give_up)
            std::this_thread::sleep_for(50ms);
        return lines;
    }
    // SIGINT: the follow ends, exit 0.
    int stop()
    {
        child_->signal(SIGINT);
        auto status = child_->wait(10s);
        child_->wait_output_closed(2s);
        return status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
    }
    std::string output() const { return child_->stdout_text() + child_->stderr_text(); }

private:
    std::unique_ptr<testlab::ChildProcess> child_;
};

TEST(ExplainSynthetic, FollowsAcrossRenameAndCopytruncate)
{
    TempDir dir;
    const std::string log = dir.at("error.log");
    const int64_t s = recent_second();
    std::vector<Reset> resets;
    for (int i = 0; i < 6; ++i)
        resets.push_back({(s + i) * kSecond + 500 * kMs, static_cast<uint32_t>(100 + i), "10.0.3.21:8081"});
    write_store(dir.at("store.db"), resets);
    auto line = [&](int i) { return nginx_line(s + i, 100 + i, "http://10.0.3.21:8081/") + "\n"; };
    append(log, line(0));
    Follower follower({"--json", "--since", "1h", "--store", dir.at("store.db"), log});
    ASSERT_EQ(follower.wait_for(1).size(), 1u) << follower.output();

    // logrotate's `create`: renamed away, a new file; nginx writes to the
    // old one until it reopens its logs.
    fs::rename(log, dir.at("error.log.1"));
    append(log, line(1));
    append(dir.at("error.log.1"), line(2));
    ASSERT_EQ(follower.wait_for(3).size(), 3u) << follower.output();
    append(log, line(3));
    ASSERT_EQ(follower.wait_for(4).size(), 4u) << follower.output();

    // copytruncate: copied, emptied, written from the start again; once
    // with time to notice the shorter file, once rewritten past where it
    // was read before anyone looked.
    fs::copy_file(log, dir.at("error.log.2"));
    fs::resize_file(log, 0);
    std::this_thread::sleep_for(1s);
    append(log, line(4));
    ASSERT_EQ(follower.wait_for(5).size(), 5u) << follower.output();
    fs::resize_file(log, 0);
    append(log, line(5) + std::string(200, ' ') + "\n");  // longer than what was there
    std::vector<json> lines = follower.wait_for(6);
    EXPECT_EQ(follower.stop(), 0);
    ASSERT_EQ(lines.size(), 6u) << follower.output();
    // Each line once, matched; the renamed file's late line may come first.
    std::set<int> pids;
    for (const json &l : lines) {
        pids.insert(l["pid"].get<int>());
        EXPECT_EQ(l["matched"], true) << l;
    }
    EXPECT_EQ(pids, (std::set<int>{100, 101, 102, 103, 104, 105}));
}

// ---- real runs: a real nginx, the agent with a store, its error log ------------

// A backend that resets each connection as the request arrives
// (SO_LINGER 0): one worker's two requests, sent back to back, make two
// 104 lines on one upstream within a second.
class TwoResetsInASecond : public Scenario {
public:
    std::string name() const override { return "two_resets"; }
    std::string expected_cause() const override { return "unknown"; }
    void setup(NetnsLab &) override
    {
        backend_ = std::make_unique<testlab::ChildProcess>(
            std::vector<std::string>{backend_bin(), "--listen", "127.0.0.1:0", "--mode", "reset", "--quiet"});
        if (!backend_->wait_for_output("\n", 5s, testlab::ChildProcess::Stream::Stdout))
            throw std::runtime_error("backend did not start: " + backend_->stderr_text());
        const std::string out = backend_->stdout_text();
        const std::string tag = "listening ";
        upstream = out.substr(out.find(tag) + tag.size(), out.find('\n', out.find(tag)) - out.find(tag) - tag.size());
    }
    std::string upstream_extra() const override { return ""; }  // no pool: a fresh connection each
    void trigger(const Front &f) override
    {
        for (int i = 0; i < 2; ++i)
            trigger_statuses.push_back(f.request("GET", "/r" + std::to_string(i)));
    }
    size_t expected_104() const override { return 2; }

private:
    std::unique_ptr<testlab::ChildProcess> backend_;
};

struct RealRun {
    TempDir dir;
    std::vector<std::unique_ptr<Scenario>> owned;
    RunResult result;
    Explained explained;
};

// The scenarios under one nginx and one agent with a store, then
// `rstwatch explain --json --store STORE ERROR_LOG`, as a user would.
std::unique_ptr<RealRun> run_and_explain(std::vector<std::unique_ptr<Scenario>> scenarios)
{
    auto run = std::make_unique<RealRun>();
    run->owned = std::move(scenarios);
    std::vector<Scenario *> raw;
    for (auto &s : run->owned)
        raw.push_back(s.get());
    RunOptions options;
    options.store_path = run->dir.at("rstwatch.db");
    run->result = run_scenarios(raw, options);
    std::ofstream(run->dir.at("error.log")) << run->result.error_log;
    run->explained = explain({"--json", "--store", options.store_path, run->dir.at("error.log")});
    // What an operator reads, for the test log.
    std::cout << explain({"--store", options.store_path, run->dir.at("error.log")}).run.out;
    return run;
}

// RSTWATCH_EXPLAIN_SAMPLE=DIR keeps a real run's nginx lines and agent
// records for these scenarios in DIR: the README's explain sample is what
// `rstwatch explain` prints for them (tests/unit/explain_command_test.cpp).
void save_sample(const RealRun &run, const std::vector<std::string> &scenario_names)
{
    const char *dir = std::getenv("RSTWATCH_EXPLAIN_SAMPLE");
    if (!dir || !*dir)
        return;
    std::ofstream log(fs::path(dir) / "error.log"), records(fs::path(dir) / "records.jsonl");
    for (const auto &s : run.owned) {
        if (std::find(scenario_names.begin(), scenario_names.end(), s->name()) == scenario_names.end())
            continue;
        for (const UpstreamResetLine &l : run.result.resets_for(s->upstream)) {
            log << l.line << "\n";
            if (const json *record = run.result.match(l))
                records << record->dump() << "\n";
        }
    }
}

// explain's object for nginx's line, or nullptr.
const json *explained_line(const RealRun &run, const std::string &line)
{
    for (const json &j : run.explained.lines)
        if (j.value("line", "") == line)
            return &j;
    return nullptr;
}

// Every local cause, once: each 104 line has its reset, with the cause the
// cause test expects (cause_scenarios_test.cpp) and the agent recorded.
TEST(ExplainCauses, EveryLocalCauseLineGetsItsCause)
{
    REQUIRE_ROOT();
    std::vector<std::unique_ptr<Scenario>> scenarios;
    scenarios.push_back(make_backend_crash(false));
    scenarios.push_back(make_backend_shutdown(false));
    scenarios.push_back(make_backend_oom(false));
    scenarios.push_back(make_keepalive_race(true));  // IPv6 upstreams too
    scenarios.push_back(make_middlebox_idle(false));
    scenarios.push_back(make_stale_reuse(false));
    scenarios.push_back(make_mtu_blackhole(false));
    auto run = run_and_explain(std::move(scenarios));
    const RunResult &r = run->result;
    SCOPED_TRACE(r.dump() + "\n--- explain:\n" + run->explained.run.out + run->explained.run.err);
    ASSERT_EQ(run->explained.run.exit_code, 0);
    for (const auto &s : run->owned) {
        ASSERT_EQ(reproduction_problems(*s, r, false), "") << "not reproduced";
        for (const UpstreamResetLine &l : r.resets_for(s->upstream)) {
            const json *e = explained_line(*run, l.line);
            ASSERT_NE(e, nullptr) << s->name() << ": explain did not print " << l.line;
            ASSERT_EQ((*e)["matched"], true) << s->name() << ": " << *e;
            EXPECT_EQ((*e)["cause"], s->expected_cause()) << s->name() << ": " << *e;
            const json *record = r.match(l);
            ASSERT_NE(record, nullptr) << s->name();
            EXPECT_EQ((*e)["record_time"], (*record)["time"]) << s->name() << ": not the agent's record of it";
        }
    }
    EXPECT_EQ(run->explained.lines.size(), r.resets.size()) << "lines explain found, against nginx's 104 lines";
    save_sample(*run, {"backend_crash", "keepalive_race", "stale_reuse"});
}

// Two resets of one worker on one upstream within a second: each line gets
// its own, in order, and both say the match is ambiguous.
TEST(ExplainCauses, TwoResetsOfOneWorkerWithinASecond)
{
    REQUIRE_ROOT();
    std::vector<std::unique_ptr<Scenario>> scenarios;
    scenarios.push_back(std::make_unique<TwoResetsInASecond>());
    auto run = run_and_explain(std::move(scenarios));
    const RunResult &r = run->result;
    SCOPED_TRACE(r.dump() + "\n--- explain:\n" + run->explained.run.out + run->explained.run.err);
    ASSERT_EQ(reproduction_problems(*run->owned[0], r, true), "");
    ASSERT_EQ(r.resets.size(), 2u);
    ASSERT_EQ(r.resets[0].pid, r.resets[1].pid);
    std::vector<std::string> agent_times;  // the agent's two records, oldest first
    for (const json *rec : r.rsts())
        if (str(*rec, "direction") == "received" && str(*rec, "role") == "upstream")
            agent_times.push_back(str(*rec, "time"));
    ASSERT_EQ(agent_times.size(), 2u);
    std::sort(agent_times.begin(), agent_times.end());
    for (size_t i = 0; i < 2; ++i) {
        const json *e = explained_line(*run, r.resets[i].line);
        ASSERT_NE(e, nullptr);
        ASSERT_EQ((*e)["matched"], true) << *e;
        EXPECT_EQ((*e)["record_time"], agent_times[i]) << *e;
        EXPECT_EQ((*e)["ambiguous"], true) << *e;
    }
}

}  // namespace
}  // namespace rstwatch::scenarios
