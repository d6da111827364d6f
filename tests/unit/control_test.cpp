// The control socket and `rstwatch dump`'s rendering: requests answered,
// bad ones refused without harm, strangers refused, one agent per socket.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "control/control.h"
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
