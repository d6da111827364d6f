// The control socket and `rstwatch dump`'s rendering: requests answered,
// bad ones refused without harm, strangers refused, one agent per socket,
// slow and idle clients holding up nobody; and the control protocol.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "control/control.h"
#include "control/control_protocol.h"
#include "outputs/store.h"
#include "tables/dump.h"
#include "common/errors.h"

using namespace rstwatch;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

class ControlTest : public ::testing::Test {
protected:
    void SetUp() override
    {
        char tmpl[] = "/tmp/rstwatch-control-test.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        path_ = (dir_ / "rstwatch.sock").string();
    }
    void TearDown() override { fs::remove_all(dir_); }

    static json echo(const json &request)
    {
        if (request["cmd"] == "dump")
            return {{"tables", {{"type", "tables"}}}, {"echo", request}};
        return {{"error", "unknown command"}};
    }

    // Sends raw bytes, returns the raw answer.
    std::string raw(const std::string &bytes)
    {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, path_.c_str());
        EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)), 0);
        if (!bytes.empty()) {
            EXPECT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
        }
        shutdown(fd, SHUT_WR);
        std::string out;
        char buf[4096];
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0)
            out.append(buf, n);
        close(fd);
        return out;
    }

    fs::path dir_;
    std::string path_;
};

json sample_response()
{
    json tables = {{"type", "tables"},
                   {"by_worker_upstream",
                    {{{"pid", 1234}, {"comm", "nginx"}, {"upstream", "10.0.3.21:8081"}, {"received", 3}, {"sent", 0},
                      {"last_seen", "2026-11-24T02:30:00.000000Z"}, {"idle_ms_median", 5003.1}, {"idle_ms_max", nullptr}}}},
                   {"by_upstream", json::array()},
                   {"by_upstream_cause",
                    {{{"upstream", "10.0.3.21:8081"}, {"cause", "keepalive_race"}, {"resets", 3},
                      {"high_confidence", 2}, {"last_seen", "2026-11-24T02:30:00.000000Z"},
                      {"hint", "lower keepalive_timeout, \"60s\""}}}},
                   {"lost", {{"ring_buffer_full", 1}, {"decode_errors", 0}, {"not_stored", 2}}}};
    return {{"tables", tables}, {"text", "the agent's text\n"}, {"source", "live"}};
}

}  // namespace

TEST_F(ControlTest, AnswersARequestAndIsOwnerOnly)
{
    ControlServer server(path_, echo, geteuid());
    struct stat st{};
    ASSERT_EQ(stat(path_.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    json response = control_request(path_, {{"cmd", "dump"}, {"since_s", 600}});
    EXPECT_EQ(response["echo"]["since_s"], 600);
}

TEST_F(ControlTest, BadRequestsGetAnErrorAndTheServerGoesOn)
{
    ControlServer server(path_, echo, geteuid());
    EXPECT_TRUE(control_request(path_, {{"cmd", "reboot"}}).contains("error"));
    for (const std::string &bad : std::vector<std::string>{"not json\n", "[1,2]\n", "{\"cmd\": 7}\n", "", std::string(70000, 'x')}) {
        json answer = json::parse(raw(bad), nullptr, false);
        ASSERT_TRUE(answer.is_object()) << bad.substr(0, 20);
        EXPECT_NE(answer.value("error", "").find("malformed"), std::string::npos) << answer.dump();
    }
    EXPECT_FALSE(control_request(path_, {{"cmd", "dump"}}).contains("error"));
}

TEST_F(ControlTest, RefusesOtherUsers)
{
    // SO_PEERCRED says we are not the allowed uid.
    ControlServer server(path_, echo, geteuid() + 1);
    json answer = control_request(path_, {{"cmd", "dump"}});
    EXPECT_NE(answer.value("error", "").find("permission denied"), std::string::npos) << answer.dump();
    EXPECT_EQ(server.requests_refused(), 1u);
}

TEST_F(ControlTest, OneServerPerSocketAndStaleSocketsAreReplaced)
{
    {
        ControlServer first(path_, echo, geteuid());
        try {
            ControlServer second(path_, echo, geteuid());
            FAIL() << "two agents on one socket";
        } catch (const FatalError &e) {
            EXPECT_NE(std::string(e.what()).find("another rstwatch agent"), std::string::npos) << e.what();
        }
        // The refused one did not take the first one's socket away.
        EXPECT_FALSE(control_request(path_, {{"cmd", "dump"}}).contains("error"));
    }
    EXPECT_FALSE(fs::exists(path_)) << "the socket is removed on exit";

    // A socket file left by a killed agent: nobody listens, it is replaced.
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path_.c_str());
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)), 0);
    close(fd);
    ControlServer again(path_, echo, geteuid());
    EXPECT_FALSE(control_request(path_, {{"cmd", "dump"}}).contains("error"));
}

TEST_F(ControlTest, NotASocketIsLeftAlone)
{
    { std::ofstream(path_) << "data"; }
    EXPECT_THROW(ControlServer(path_, echo, geteuid()), FatalError);
    EXPECT_TRUE(fs::is_regular_file(path_));
}

TEST_F(ControlTest, NoAgentIsAClearError)
{
    try {
        control_request(path_, {{"cmd", "dump"}});
        FAIL();
    } catch (const FatalError &e) {
        EXPECT_NE(std::string(e.what()).find("no rstwatch agent is running"), std::string::npos) << e.what();
    }
}

namespace {

using Clock = std::chrono::steady_clock;

// A client connected to path, that has sent nothing (yet).
int connect_to(const std::string &path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path.c_str());
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)), 0) << std::strerror(errno);
    return fd;
}

// Everything the server sends until it closes (or 10 s pass).
std::string read_to_end(int fd)
{
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        out.append(buf, n);
    return out;
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

}  // namespace

TEST_F(ControlTest, IdleAndTricklingClientsHoldUpNobody)
{
    ControlServer server(path_, echo, geteuid());
    std::vector<int> idle;
    for (int i = 0; i < 20; ++i)
        idle.push_back(connect_to(path_));
    // One byte a second of a valid request: it would take 15 s to finish.
    std::atomic<bool> stop{false};
    int trickler = connect_to(path_);
    std::thread trickle([&] {
        const std::string request = "{\"cmd\": \"dump\"}\n";
        for (size_t i = 0; i < request.size() && !stop; ++i) {
            if (send(trickler, &request[i], 1, MSG_NOSIGNAL) != 1)
                break;  // the server gave up on it
            for (int t = 0; t < 10 && !stop; ++t)
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    });
    // Dumps while the idle clients wait and the trickler trickles, past its
    // deadline and past theirs.
    for (int i = 0; i < 6; ++i) {
        auto start = Clock::now();
        try {
            json response = control_request(path_, {{"cmd", "dump"}}, std::chrono::seconds(5));
            EXPECT_FALSE(response.contains("error")) << response.dump();
        } catch (const FatalError &e) {
            ADD_FAILURE() << "dump " << i << ": " << e.what();
        }
        EXPECT_LT(seconds_since(start), 1.0) << "dump " << i << " was held up";
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    stop = true;
    trickle.join();
    close(trickler);
    for (int fd : idle)
        close(fd);
}

TEST_F(ControlTest, AnUnfinishedRequestIsCutOffAtTheDeadline)
{
    ControlServer server(path_, echo, geteuid());
    int fd = connect_to(path_);
    ASSERT_EQ(send(fd, "{\"cmd\":", 7, MSG_NOSIGNAL), 7);
    auto start = Clock::now();
    json answer = json::parse(read_to_end(fd), nullptr, false);  // then the server closes
    double waited = seconds_since(start);
    close(fd);
    ASSERT_TRUE(answer.is_object());
    EXPECT_NE(answer.value("error", "").find("within 2 s"), std::string::npos) << answer.dump();
    const double deadline = std::chrono::duration<double>(ControlServer::kRequestDeadline).count();
    EXPECT_GT(waited, deadline - 0.2);
    EXPECT_LT(waited, deadline + 1.0);
}

TEST_F(ControlTest, PastTheClientCapANewClientIsToldAtOnce)
{
    ControlServer server(path_, echo, geteuid());
    std::vector<int> idle;
    for (size_t i = 0; i < ControlServer::kMaxClients; ++i)
        idle.push_back(connect_to(path_));
    // Accepted in the order they came: this one after all of them.
    auto start = Clock::now();
    json answer = control_request(path_, {{"cmd", "dump"}}, std::chrono::seconds(5));
    EXPECT_NE(answer.value("error", "").find("busy"), std::string::npos) << answer.dump();
    EXPECT_LT(seconds_since(start), 1.0);
    for (int fd : idle)
        close(fd);
    // They leave (the server sees them close, each on its thread), and
    // there is room again.
    json again;
    for (auto until = Clock::now() + std::chrono::seconds(2); Clock::now() < until;) {
        again = control_request(path_, {{"cmd", "dump"}});
        if (!again.contains("error"))
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_FALSE(again.contains("error")) << again.dump();
}

TEST_F(ControlTest, StopsWithoutWaitingForIdleClients)
{
    std::vector<int> idle;
    Clock::time_point start;
    {
        ControlServer server(path_, echo, geteuid());
        for (int i = 0; i < 5; ++i)
            idle.push_back(connect_to(path_));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        start = Clock::now();
    }
    EXPECT_LT(seconds_since(start), 0.5);
    for (int fd : idle)
        close(fd);
}

namespace {

// An agent for the protocol to answer for: a run loop on a thread of its
// own, and a store only when given one.
class ProtocolTest : public ControlTest {
protected:
    void TearDown() override
    {
        stop_ = true;
        if (loop_.joinable())
            loop_.join();
        ControlTest::TearDown();
    }

    ControlServer::Handler protocol(const std::string &store_path)
    {
        loop_ = std::thread([this] {
            while (!stop_) {
                main_thread_.run_pending([](const json &) { return json{{"source", "live"}}; });
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
        });
        return control_protocol({&main_thread_, store_path, [this] { ++flushes_; },
                                 [](AttributionTables &t) { t.set_lost({7, 0}); }});
    }

    MainThreadCalls main_thread_;
    std::thread loop_;
    std::atomic<bool> stop_{false};
    std::atomic<int> flushes_{0};
};

ResetEvent a_reset(int64_t time_ns)
{
    ResetEvent e;
    e.time_ns = time_ns;
    e.role = Role::Upstream;
    e.owner_known = true;
    e.pid = 1234;
    e.comm = "nginx";
    e.local = "127.0.0.1:40000";
    e.remote = "10.0.3.21:8081";
    return e;
}

}  // namespace

TEST_F(ProtocolTest, PingLiveDumpAndMistakes)
{
    auto answer = protocol("");
    EXPECT_EQ(answer({{"cmd", "ping"}}), (json{{"ok", true}, {"pid", getpid()}}));
    EXPECT_EQ(answer({{"cmd", "dump"}})["source"], "live") << "answered by the run loop";
    EXPECT_NE(answer({{"cmd", "reboot"}}).value("error", "").find("unknown command"), std::string::npos);
    for (json since : {json(-1), json(0), json("10m"), json(nullptr)})
        EXPECT_NE(answer({{"cmd", "dump"}, {"since_s", since}}).value("error", "").find("since_s"), std::string::npos)
            << since;
    EXPECT_NE(answer({{"cmd", "dump"}, {"since_s", 60}}).value("error", "").find("--store none"), std::string::npos);
    EXPECT_EQ(flushes_, 0);
}

// `rstwatch explain --socket`: the agent writes out what it holds and says
// where its store is.
TEST_F(ProtocolTest, FlushAnswersWithTheStore)
{
    {
        auto answer = protocol("");
        EXPECT_NE(answer({{"cmd", "flush"}}).value("error", "").find("--store none"), std::string::npos);
        EXPECT_EQ(flushes_, 0);
    }
    stop_ = true;
    loop_.join();
    stop_ = false;
    auto answer = protocol("relative.db");
    json flushed = answer({{"cmd", "flush"}});
    EXPECT_EQ(flushes_, 1);
    EXPECT_EQ(flushed["ok"], true);
    EXPECT_EQ(flushed["store"], (std::filesystem::current_path() / "relative.db").string())
        << "absolute: the client runs elsewhere";
}

TEST_F(ProtocolTest, SinceReadsTheStoreAfterFlushingIt)
{
    const std::string store_path = (dir_ / "rstwatch.db").string();
    const int64_t now = realtime_ns_ago(0);
    {
        auto store = Store::open_for_writing(store_path);
        ASSERT_EQ(store->append(std::vector<Event>{a_reset(now - 3'600'000'000'000), a_reset(now - 1'000'000'000)}), "");
    }
    auto answer = protocol(store_path);
    json recent = answer({{"cmd", "dump"}, {"since_s", 600}});
    ASSERT_FALSE(recent.contains("error")) << recent.dump();
    EXPECT_EQ(flushes_, 1) << "what the agent reported is in the store before it is read";
    EXPECT_EQ(recent["source"], "store");
    EXPECT_EQ(recent["since_s"], 600);
    ASSERT_EQ(recent["tables"]["by_worker_upstream"].size(), 1u) << recent.dump();
    EXPECT_EQ(recent["tables"]["by_worker_upstream"][0]["received"], 1) << "only the last 10 minutes";
    EXPECT_EQ(recent["tables"]["lost"]["ring_buffer_full"], 7) << "the agent's lost counts are filled in";
    // Further back than the epoch is everything, not an overflow.
    json all = answer({{"cmd", "dump"}, {"since_s", 1e300}});
    EXPECT_EQ(all["tables"]["by_worker_upstream"][0]["received"], 2) << all.dump();
}

TEST(MainThreadCalls, RunsOnTheOwningThreadAndTimesOut)
{
    MainThreadCalls calls;
    std::thread owner([&] {
        for (int i = 0; i < 50; ++i) {
            calls.run_pending([](const json &r) { return json{{"got", r["n"]}}; });
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    });
    EXPECT_EQ(calls.call({{"n", 7}}, std::chrono::seconds(2))["got"], 7);
    owner.join();
    EXPECT_TRUE(calls.call({{"n", 8}}, std::chrono::milliseconds(50)).contains("error"));
    calls.close();
    EXPECT_TRUE(calls.call({{"n", 9}}, std::chrono::seconds(5)).contains("error"));
}

TEST(Dump, TableCsvAndJsonOfOneTable)
{
    json r = sample_response();
    EXPECT_EQ(render_dump(r, DumpBy::All, DumpFormat::Table), "the agent's text\n");
    EXPECT_EQ(json::parse(render_dump(r, DumpBy::All, DumpFormat::Json))["type"], "tables");

    std::string table = render_dump(r, DumpBy::Worker, DumpFormat::Table);
    EXPECT_NE(table.find("PID"), std::string::npos) << table;
    EXPECT_NE(table.find("1234  nginx  10.0.3.21:8081"), std::string::npos) << table;
    EXPECT_NE(table.find("Lost events: ring buffer full 1, undecodable 0, not stored 2"), std::string::npos) << table;

    std::string csv = render_dump(r, DumpBy::Cause, DumpFormat::Csv);
    EXPECT_EQ(csv,
              "upstream,cause,resets,high_confidence,last_seen,hint\n"
              "10.0.3.21:8081,keepalive_race,3,2,2026-11-24T02:30:00.000000Z,\"lower keepalive_timeout, \"\"60s\"\"\"\n");
    EXPECT_EQ(json::parse(render_dump(r, DumpBy::Worker, DumpFormat::Json)).size(), 1u);
    EXPECT_NE(render_dump(r, DumpBy::Upstream, DumpFormat::Table).find("(none)"), std::string::npos);
}
