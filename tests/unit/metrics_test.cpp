// Prometheus metrics: the exposition text parses, counts what was reported,
// keeps label cardinality bounded; and the always-on command-line options.
#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <sstream>

#include <httplib.h>

#include "app/cli.h"
#include "outputs/metrics.h"
#include "outputs/metrics_server.h"

using namespace rstwatch;

namespace {

ResetEvent upstream_reset(const std::string &remote, double idle_ms, Cause cause = Cause::BackendCrash)
{
    ResetEvent e;
    e.role = Role::Upstream;
    e.owner_known = true;
    e.pid = 1234;
    e.comm = "nginx";
    e.remote = remote;
    e.idle_ms = idle_ms;
    e.diagnosis = Diagnosis{cause, Confidence::High, {}, {}};
    return e;
}

// name{labels} -> value; fails the test on a line that is not the text format.
std::map<std::string, double> parse_exposition(const std::string &text)
{
    std::map<std::string, double> out;
    static const std::regex sample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})?) (-?[0-9.e+Inf]+|NaN)$)");
    static const std::regex meta(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$)");
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        std::smatch m;
        if (std::regex_match(line, m, sample))
            out[m[1]] = std::stod(m[3]);
        else
            EXPECT_TRUE(std::regex_match(line, meta)) << "not exposition format: " << line;
    }
    return out;
}

CliOutcome parse(std::vector<const char *> args)
{
    args.insert(args.begin(), "rstwatch");
    return parse_command_line(static_cast<int>(args.size()), args.data(), [](uint32_t) { return true; });
}

}  // namespace

TEST(Metrics, CountsResetsByLabelsAndIdleHistogram)
{
    Metrics m;
    m.add(upstream_reset("10.0.0.1:80", 4000));
    m.add(upstream_reset("10.0.0.1:80", 0.5));
    ResetEvent client = upstream_reset("203.0.113.9:51234", 1, Cause::ClientSide);
    client.role = Role::Downstream;
    m.add(client);
    m.add(OomEvent{});
    m.set_lost({.ring_buffer_full = 1, .decode_errors = 2, .not_stored = 3, .owners_unresolved = 4, .listeners_dropped = 5});
    m.set_ring_buffer_fill(0.25);
    auto s = parse_exposition(m.render(4096));
    EXPECT_EQ(s[R"(rstwatch_resets_total{direction="received",role="upstream",upstream="10.0.0.1:80",cause="backend_crash"})"], 2);
    // A client's address never becomes a label.
    EXPECT_EQ(s[R"(rstwatch_resets_total{direction="received",role="downstream",upstream="",cause="client_side"})"], 1);
    EXPECT_EQ(s["rstwatch_oom_kills_total"], 1);
    EXPECT_EQ(s[R"(rstwatch_lost_events_total{where="ring_buffer"})"], 1);
    EXPECT_EQ(s[R"(rstwatch_lost_events_total{where="consumer"})"], 2);
    EXPECT_EQ(s[R"(rstwatch_lost_events_total{where="store"})"], 3);
    EXPECT_EQ(s["rstwatch_unresolved_owners_total"], 4);
    EXPECT_EQ(s["rstwatch_unrecorded_endpoints_total"], 5);
    EXPECT_EQ(s["rstwatch_ring_buffer_fill_ratio"], 0.25);
    EXPECT_EQ(s["rstwatch_agent_rss_bytes"], 4096);
    EXPECT_EQ(s[R"(rstwatch_reset_idle_seconds_bucket{le="0.001"})"], 1);
    EXPECT_EQ(s[R"(rstwatch_reset_idle_seconds_bucket{le="2"})"], 1);
    EXPECT_EQ(s[R"(rstwatch_reset_idle_seconds_bucket{le="5"})"], 2);
    EXPECT_EQ(s[R"(rstwatch_reset_idle_seconds_bucket{le="+Inf"})"], 2);
    EXPECT_EQ(s["rstwatch_reset_idle_seconds_count"], 2);
    EXPECT_DOUBLE_EQ(s["rstwatch_reset_idle_seconds_sum"], 4.0005);
}

TEST(Metrics, UpstreamLabelsAreCapped)
{
    Metrics m;
    for (size_t i = 0; i < Metrics::kMaxUpstreams + 50; ++i)
        m.add(upstream_reset("10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256) + ":80", 1));
    auto s = parse_exposition(m.render(0));
    size_t series = 0;
    for (const auto &[name, v] : s)
        series += name.rfind("rstwatch_resets_total{", 0) == 0;
    EXPECT_EQ(series, Metrics::kMaxUpstreams + 1);
    EXPECT_EQ(s[R"(rstwatch_resets_total{direction="received",role="upstream",upstream="other",cause="backend_crash"})"], 50);
}

TEST(Metrics, ServedOverHttp)
{
    Metrics m;
    m.add(upstream_reset("10.0.0.1:80", 1));
    MetricsServer server({"127.0.0.1", 0}, m);
    httplib::Client client("127.0.0.1", server.port());
    auto res = client.Get("/metrics");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_NE(res->get_header_value("Content-Type").find("version=0.0.4"), std::string::npos);
    auto s = parse_exposition(res->body);
    EXPECT_GT(s["rstwatch_agent_rss_bytes"], 0);
}

TEST(Metrics, ListenAddresses)
{
    std::string error;
    auto a = parse_listen_address("9477", &error);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->host, "127.0.0.1");
    EXPECT_EQ(a->port, 9477);
    a = parse_listen_address("[::1]:9100", &error);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->host, "::1");
    a = parse_listen_address("0.0.0.0:9477", &error);
    ASSERT_TRUE(a);
    EXPECT_FALSE(is_loopback_host(a->host));
    EXPECT_TRUE(is_loopback_host("127.0.0.1"));
    EXPECT_FALSE(parse_listen_address("example.com:80", &error));
    EXPECT_FALSE(parse_listen_address("127.0.0.1:99999", &error));
}

TEST(CliAlwaysOn, RunDefaultsAndNone)
{
    auto out = parse({"run"});
    ASSERT_EQ(out.action, CliOutcome::Action::Run);
    EXPECT_EQ(out.run.socket_path, "/run/rstwatch.sock");
    EXPECT_EQ(out.run.store_path, "/var/lib/rstwatch/rstwatch.db");
    EXPECT_TRUE(out.run.metrics_host.empty()) << "metrics are off by default";
    out = parse({"run", "--store", "none", "--socket", "none", "--metrics", "9477", "--retain-days", "7",
                 "--max-db-mb", "64"});
    ASSERT_EQ(out.action, CliOutcome::Action::Run) << out.message;
    EXPECT_EQ(out.run.store_path, "");
    EXPECT_EQ(out.run.socket_path, "");
    EXPECT_EQ(out.run.metrics_host, "127.0.0.1");
    EXPECT_EQ(out.run.metrics_port, 9477);
    EXPECT_EQ(out.run.retain_days, 7);
    EXPECT_EQ(out.run.max_db_mb, 64u);
    out = parse({"run", "--metrics", "nonsense:x"});
    EXPECT_EQ(out.exit_code, 2);
    EXPECT_NE(out.message.find("--metrics"), std::string::npos);
}

TEST(CliAlwaysOn, Dump)
{
    auto out = parse({"dump"});
    ASSERT_EQ(out.action, CliOutcome::Action::Dump);
    EXPECT_EQ(out.dump.socket_path, "/run/rstwatch.sock");
    EXPECT_EQ(out.dump.by, "all");
    out = parse({"dump", "--by", "cause", "--since", "10m", "--format", "csv", "--store", "/tmp/x.db"});
    ASSERT_EQ(out.action, CliOutcome::Action::Dump) << out.message;
    EXPECT_EQ(out.dump.since_s, 600);
    EXPECT_EQ(out.dump.store_path, "/tmp/x.db");
    EXPECT_EQ(parse({"dump", "--format", "csv"}).dump.by, "worker") << "csv needs one table";
    EXPECT_NE(parse({"dump", "--since", "soon"}).exit_code, 0);
    EXPECT_NE(parse({"dump", "--by", "pid"}).exit_code, 0);
}

TEST(CliAlwaysOn, Durations)
{
    EXPECT_EQ(parse_duration("90"), 90);
    EXPECT_EQ(parse_duration("30s"), 30);
    EXPECT_EQ(parse_duration("10m"), 600);
    EXPECT_EQ(parse_duration("2h"), 7200);
    EXPECT_EQ(parse_duration("1d"), 86400);
    EXPECT_EQ(parse_duration("1.5h"), 5400);
    EXPECT_FALSE(parse_duration("0"));
    EXPECT_FALSE(parse_duration("-5m"));
    EXPECT_FALSE(parse_duration("5w"));
    EXPECT_FALSE(parse_duration(""));
}
