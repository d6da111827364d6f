// AttributionTables: what the summary at exit says about resets and OOM kills.
#include <gtest/gtest.h>

#include <sstream>

#include "outputs/format.h"
#include "tables/tables.h"

using namespace rstwatch;
using nlohmann::json;

namespace {

constexpr int64_t kT0 = 1'795'487'400'000'000'000;  // 2026-11-24T02:30:00Z

ResetEvent reset(uint32_t pid, const std::string &upstream, std::optional<double> idle_ms,
                 int64_t time_ns = kT0, Direction dir = Direction::Received)
{
    ResetEvent e;
    e.time_ns = time_ns;
    e.direction = dir;
    e.role = Role::Upstream;
    e.owner_known = true;
    e.pid = pid;
    e.comm = "nginx";
    e.local = "127.0.0.1:40000";
    e.remote = upstream;
    e.state = TcpState::Established;
    e.idle_ms = idle_ms;
    return e;
}

// The tables take a hint's words from the outputs (hint_text); here its
// code, so that a test sees which hint a row kept.
std::string code_words(const Hint &h) { return std::string("<") + to_string(h.code) + ">"; }

std::vector<std::string> lines_of(const std::string &text)
{
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        out.push_back(line);
    return out;
}

// The lines of the section titled `title`, up to the blank line after it.
std::vector<std::string> section(const std::string &text, const std::string &title)
{
    std::vector<std::string> all = lines_of(text), out;
    bool in = false;
    for (const std::string &line : all) {
        if (line == title) {
            in = true;
            continue;
        }
        if (in && line.empty())
            break;
        if (in)
            out.push_back(line);
    }
    return out;
}

}  // namespace

TEST(IdleSummary, ExactMedianAndMax)
{
    IdleSummary s;
    EXPECT_FALSE(s.median().has_value());
    EXPECT_FALSE(s.max().has_value());
    for (double v : {30.0, 10.0, 1000.0})
        s.add(v);
    EXPECT_DOUBLE_EQ(*s.median(), 30.0);
    s.add(20.0);
    EXPECT_DOUBLE_EQ(*s.median(), 25.0);  // even count: mean of the middle two
    EXPECT_DOUBLE_EQ(*s.max(), 1000.0);
    EXPECT_TRUE(s.exact());
}

TEST(IdleSummary, BoundedSampleStaysNearTheMedianAndKeepsExactMax)
{
    IdleSummary s;
    // 0..9999 in ascending order, so a sample that favoured early or late
    // values would put the median far off.
    for (int i = 0; i < 10000; ++i)
        s.add(static_cast<double>(i));
    EXPECT_EQ(s.count(), 10000u);
    EXPECT_FALSE(s.exact());
    EXPECT_DOUBLE_EQ(*s.max(), 9999.0);
    // True median 4999.5. A 256-sample median has a standard error of about
    // 3% of the range (300 here); 800 is over 2.5 of those, and the seed is
    // fixed, so this checks the sampling is uniform without being flaky.
    EXPECT_NEAR(*s.median(), 4999.5, 800.0);
}

TEST(AttributionTables, CountsPerWorkerAndUpstream)
{
    AttributionTables t(code_words);
    t.add(reset(100, "10.0.0.1:8080", 10.0, kT0 + 1'000'000));
    t.add(reset(100, "10.0.0.1:8080", 30.0, kT0 + 3'000'000));
    t.add(reset(100, "10.0.0.1:8080", 20.0, kT0 + 2'000'000, Direction::Sent));
    t.add(reset(101, "10.0.0.1:8080", 5000.0, kT0));
    json j = t.to_json();
    EXPECT_EQ(j["type"], "tables");

    ASSERT_EQ(j["by_worker_upstream"].size(), 2u);
    const json &w = j["by_worker_upstream"][0];
    EXPECT_EQ(w["pid"], 100);
    EXPECT_EQ(w["comm"], "nginx");
    EXPECT_EQ(w["upstream"], "10.0.0.1:8080");
    EXPECT_EQ(w["received"], 2);
    EXPECT_EQ(w["sent"], 1);
    EXPECT_EQ(w["last_seen"], "2026-11-24T02:30:00.003000Z");  // latest, not last added
    EXPECT_DOUBLE_EQ(w["idle_ms_median"].get<double>(), 20.0);
    EXPECT_DOUBLE_EQ(w["idle_ms_max"].get<double>(), 30.0);

    ASSERT_EQ(j["by_upstream"].size(), 1u);
    const json &u = j["by_upstream"][0];
    EXPECT_EQ(u["upstream"], "10.0.0.1:8080");
    EXPECT_EQ(u["received"], 3);
    EXPECT_EQ(u["sent"], 1);
    EXPECT_EQ(u["workers"], 2);
    EXPECT_DOUBLE_EQ(u["idle_ms_median"].get<double>(), 25.0);
    EXPECT_DOUBLE_EQ(u["idle_ms_max"].get<double>(), 5000.0);

    EXPECT_EQ(j["client_side_resets"], 0);
    EXPECT_EQ(j["unowned_resets"], 0);
    EXPECT_EQ(j["folded_rows"], 0);
}

TEST(AttributionTables, JsonTopLevelFields)
{
    AttributionTables t(code_words);
    json j = t.to_json();
    for (const char *field : {"type", "by_worker_upstream", "by_upstream", "idle_histogram",
                              "oom_kills", "lost", "client_side_resets", "unowned_resets",
                              "folded_rows"})
        EXPECT_TRUE(j.contains(field)) << field;
    EXPECT_TRUE(j["by_worker_upstream"].is_array());
    EXPECT_TRUE(j["by_worker_upstream"].empty());
}

TEST(AttributionTables, MissingIdleIsNullNotZero)
{
    AttributionTables t(code_words);
    t.add(reset(100, "10.0.0.1:8080", std::nullopt));
    json j = t.to_json();
    EXPECT_TRUE(j["by_worker_upstream"][0]["idle_ms_median"].is_null());
    EXPECT_TRUE(j["by_worker_upstream"][0]["idle_ms_max"].is_null());
    EXPECT_TRUE(j["idle_histogram"].empty());
    EXPECT_NE(t.render_text().find("       -         -"), std::string::npos) << t.render_text();
}

TEST(AttributionTables, RowsSortedByTotalResetsDescending)
{
    AttributionTables t(code_words);
    t.add(reset(100, "10.0.0.1:8080", 1.0));
    for (int i = 0; i < 3; ++i)
        t.add(reset(102, "10.0.0.3:8080", 1.0));
    for (int i = 0; i < 2; ++i)
        t.add(reset(101, "10.0.0.2:8080", 1.0, kT0, Direction::Sent));
    json j = t.to_json();
    ASSERT_EQ(j["by_worker_upstream"].size(), 3u);
    EXPECT_EQ(j["by_worker_upstream"][0]["pid"], 102);
    EXPECT_EQ(j["by_worker_upstream"][1]["pid"], 101);  // sent resets count too
    EXPECT_EQ(j["by_worker_upstream"][2]["pid"], 100);
    EXPECT_EQ(j["by_upstream"][0]["upstream"], "10.0.0.3:8080");
    EXPECT_EQ(j["by_upstream"][2]["upstream"], "10.0.0.1:8080");

    // Same order in the text, in aligned columns.
    std::vector<std::string> rows = section(t.render_text(), "Resets by upstream");
    ASSERT_EQ(rows.size(), 4u);
    EXPECT_EQ(rows[0].find("UPSTREAM"), rows[1].find("10.0.0.3:8080"));
    EXPECT_NE(rows[1].find("10.0.0.3:8080"), std::string::npos);
    EXPECT_NE(rows[3].find("10.0.0.1:8080"), std::string::npos);
    // Right-aligned numbers end under the end of their header.
    size_t recv_end = rows[0].find("RECEIVED") + std::string("RECEIVED").size();
    EXPECT_EQ(rows[1].substr(recv_end - 1, 1), "3");
}

TEST(AttributionTables, FoldsKeysPastTheRowLimit)
{
    AttributionTables t(code_words, 2);
    for (int i = 1; i <= 5; ++i)
        t.add(reset(100, "10.0.0." + std::to_string(i) + ":8080", 1.0));
    t.add(reset(100, "10.0.0.5:8080", 1.0));  // a folded key seen again
    json j = t.to_json();
    ASSERT_EQ(j["by_upstream"].size(), 3u);
    const json &other = j["by_upstream"][2];
    EXPECT_EQ(other["upstream"], "(other)");
    EXPECT_EQ(other["received"], 4);  // no reset is lost by folding
    ASSERT_EQ(j["by_worker_upstream"].size(), 3u);
    EXPECT_TRUE(j["by_worker_upstream"][2]["pid"].is_null());
    EXPECT_EQ(j["by_worker_upstream"][2]["upstream"], "(other)");
    // 3 distinct keys folded in each table.
    EXPECT_EQ(j["folded_rows"], 6);
    EXPECT_EQ(t.folded_keys(), 6u);

    std::string text = t.render_text();
    EXPECT_NE(text.find("3 more upstreams folded into (other): the table keeps 2 rows"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("3 more worker x upstream keys folded into (other)"), std::string::npos);
}

TEST(AttributionTables, OtherRowComesLastEvenWhenLargest)
{
    AttributionTables t(code_words, 1);
    t.add(reset(100, "10.0.0.1:8080", 1.0));
    for (int i = 0; i < 10; ++i)
        t.add(reset(100, "10.0.0.2:8080", 1.0));
    json j = t.to_json();
    ASSERT_EQ(j["by_upstream"].size(), 2u);
    EXPECT_EQ(j["by_upstream"][0]["upstream"], "10.0.0.1:8080");
    EXPECT_EQ(j["by_upstream"][1]["upstream"], "(other)");
    EXPECT_EQ(j["by_upstream"][1]["received"], 10);
    EXPECT_EQ(j["folded_rows"], 2);
}

TEST(AttributionTables, ClientSideAndUnownedResetsStayOutOfTheTables)
{
    AttributionTables t(code_words);
    ResetEvent down = reset(100, "192.0.2.7:51000", 1.0);
    down.role = Role::Downstream;
    ResetEvent other = reset(100, "192.0.2.8:51000", 1.0);
    other.role = Role::Other;
    ResetEvent unowned = reset(0, "10.0.0.1:8080", 1.0);
    unowned.owner_known = false;
    t.add(down);
    t.add(other);
    t.add(unowned);
    EXPECT_EQ(t.client_side_resets(), 2u);
    EXPECT_EQ(t.unowned_resets(), 1u);

    json j = t.to_json();
    EXPECT_TRUE(j["by_worker_upstream"].empty());
    EXPECT_TRUE(j["by_upstream"].empty());
    EXPECT_TRUE(j["idle_histogram"].empty());
    EXPECT_EQ(j["client_side_resets"], 2);
    EXPECT_EQ(j["unowned_resets"], 1);

    std::string text = t.render_text();
    EXPECT_EQ(section(text, "Resets by nginx worker x upstream"),
              std::vector<std::string>{"  (none)"});
    EXPECT_NE(text.find("Client-side resets (downstream/other connections, not upstream failures): 2\n"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("Resets with no known owner: 1\n"), std::string::npos);
}

TEST(AttributionTables, IdleHistogramInWholeMilliseconds)
{
    AttributionTables t(code_words);
    t.add(reset(100, "10.0.0.1:8080", 0.4));     // 0 -> 1
    t.add(reset(100, "10.0.0.1:8080", 1.9));     // 0 -> 1
    t.add(reset(100, "10.0.0.1:8080", 5003.1));  // 4096 -> 8191
    t.add(reset(100, "10.0.0.1:8080", std::nullopt));
    json h = t.to_json()["idle_histogram"];
    ASSERT_EQ(h.size(), 13u);
    EXPECT_EQ(h[0]["count"], 2);
    EXPECT_EQ(h[12]["low"], 4096);
    EXPECT_EQ(h[12]["count"], 1);
    EXPECT_NE(t.render_text().find("     idle_ms             : count    distribution"),
              std::string::npos);
}

TEST(AttributionTables, OomKillsListed)
{
    AttributionTables t(code_words);
    OomEvent o;
    o.time_ns = kT0;
    o.pid = 4121;
    o.comm = "gunicorn";
    o.rss_kb = 512000;
    o.cgroup = "/system.slice/app.service";
    t.add(o);
    OomEvent bare;
    bare.time_ns = kT0;
    bare.pid = 7;
    bare.comm = "x";
    t.add(bare);

    json j = t.to_json();
    ASSERT_EQ(j["oom_kills"].size(), 2u);
    EXPECT_EQ(j["oom_kills"][0]["pid"], 4121);
    EXPECT_EQ(j["oom_kills"][0]["comm"], "gunicorn");
    EXPECT_EQ(j["oom_kills"][0]["rss_kb"], 512000);
    EXPECT_EQ(j["oom_kills"][0]["cgroup"], "/system.slice/app.service");
    EXPECT_EQ(j["oom_kills"][0]["time"], "2026-11-24T02:30:00.000000Z");
    EXPECT_TRUE(j["oom_kills"][1]["rss_kb"].is_null());
    EXPECT_TRUE(j["oom_kills"][1]["cgroup"].is_null());

    std::vector<std::string> rows = section(t.render_text(), "OOM kills");
    ASSERT_EQ(rows.size(), 3u);
    EXPECT_NE(rows[1].find("4121  gunicorn  512000kB  /system.slice/app.service"), std::string::npos)
        << rows[1];
}

TEST(AttributionTables, OomKillsAreBounded)
{
    AttributionTables t(code_words);
    for (uint32_t pid = 1; pid <= AttributionTables::kMaxOomKills + 5; ++pid) {
        OomEvent o;
        o.pid = pid;
        t.add(o);
    }
    json j = t.to_json();
    EXPECT_EQ(j["oom_kills"].size(), AttributionTables::kMaxOomKills);
    EXPECT_EQ(j["oom_kills"][0]["pid"], 6);  // the oldest were dropped
    EXPECT_EQ(j["oom_kills_dropped"], 5);
    EXPECT_NE(t.render_text().find("(5 older OOM kills not shown)"), std::string::npos);
}

TEST(AttributionTables, LostCountsShown)
{
    AttributionTables t(code_words);
    t.set_lost({.ring_buffer_full = 12, .decode_errors = 3});
    json j = t.to_json();
    EXPECT_EQ(j["lost"]["ring_buffer_full"], 12);
    EXPECT_EQ(j["lost"]["decode_errors"], 3);
    EXPECT_NE(t.render_text().find("Lost events: ring buffer full 12, undecodable 3\n"),
              std::string::npos);
}

TEST(AttributionTables, EmptySectionsSayNone)
{
    AttributionTables t(code_words);
    std::string text = t.render_text();
    for (const char *title : {"Resets by nginx worker x upstream", "Resets by upstream",
                              "Idle time before reset, upstream connections (ms)", "OOM kills"})
        EXPECT_EQ(section(text, title), std::vector<std::string>{"  (none)"}) << title;
    EXPECT_NE(text.find("Lost events: ring buffer full 0, undecodable 0\n"), std::string::npos);
}

TEST(AttributionTables, ApproximateMedianIsAnnounced)
{
    AttributionTables t(code_words);
    for (int i = 0; i < 300; ++i)
        t.add(reset(100, "10.0.0.1:8080", static_cast<double>(i)));
    EXPECT_NE(t.render_text().find("estimated from a sample of 256"), std::string::npos);

    AttributionTables small(code_words);
    small.add(reset(100, "10.0.0.1:8080", 1.0));
    EXPECT_EQ(small.render_text().find("estimated"), std::string::npos);
}

TEST(AttributionTables, ResetsByCauseWithHintsAndClusters)
{
    AttributionTables t(code_words);
    auto diagnosed = [](ResetEvent e, Cause cause, Confidence conf, HintCode hint) {
        e.diagnosis = Diagnosis{cause, conf, {Evidence{.code = EvidenceCode::PoolReuse}}, Hint{.code = hint}};
        return e;
    };
    t.add(diagnosed(reset(11, "10.0.0.1:80", 5000), Cause::KeepaliveRace, Confidence::High,
                    HintCode::BackendIdleTimeout));
    t.add(diagnosed(reset(12, "10.0.0.1:80", 5100), Cause::KeepaliveRace, Confidence::Low, HintCode::None));
    t.add(diagnosed(reset(11, "10.0.0.1:80", 1), Cause::BackendCrash, Confidence::High, HintCode::BackendDied));
    // nginx resetting its own upstream connection because the client left.
    t.add(diagnosed(reset(11, "10.0.0.1:80", 1, kT0, Direction::Sent), Cause::ClientSide, Confidence::Medium,
                    HintCode::NginxGaveUp));
    t.set_idle_clusters({IdleCluster{"10.0.0.1:80", Cause::KeepaliveRace, 2, 5000, 5000, 5100,
                                     Hint{.code = HintCode::MiddleboxIdleTimeout}}});

    EXPECT_EQ(t.client_side_resets(), 1u) << "client-side resets never count as upstream failures";
    json j = t.to_json();
    ASSERT_EQ(j["by_upstream_cause"].size(), 2u);
    EXPECT_EQ(j["by_upstream_cause"][0]["cause"], "keepalive_race");
    EXPECT_EQ(j["by_upstream_cause"][0]["resets"], 2);
    EXPECT_EQ(j["by_upstream_cause"][0]["high_confidence"], 1);
    EXPECT_EQ(j["by_upstream_cause"][0]["hint"], "<backend_idle_timeout>") << "the latest reset without one keeps it";
    EXPECT_EQ(j["by_upstream_cause"][1]["cause"], "backend_crash");
    EXPECT_EQ(j["by_upstream_cause"][1]["hint"], "<backend_died>");
    EXPECT_EQ(j["by_worker_cause"].size(), 3u);
    EXPECT_EQ(j["by_upstream"][0]["received"], 3) << "the client-side sent reset is not in the upstream table";
    ASSERT_EQ(j["idle_clusters"].size(), 1u);
    EXPECT_EQ(j["idle_clusters"][0]["pool_idle_ms_min"], 5000);
    EXPECT_EQ(j["idle_clusters"][0]["hint"], "<middlebox_idle_timeout>");

    const std::string text = t.render_text();
    EXPECT_NE(text.find("Upstream resets by cause"), std::string::npos);
    EXPECT_NE(text.find("10.0.0.1:80 keepalive_race: <backend_idle_timeout>"), std::string::npos) << text;
    EXPECT_NE(text.find("Pool idle clusters"), std::string::npos);
    EXPECT_NE(text.find("10.0.0.1:80: <middlebox_idle_timeout>"), std::string::npos) << text;
}
