// rstwatch explain's pure logic: nginx's error-log lines parsed, matched
// with recorded resets by worker, upstream and time, and put into words.
// No store, no files, no time zones: the records and the local-time
// conversion are fakes.
#include <gtest/gtest.h>

#include <ctime>
#include <limits>

#include "explain/error_log_line.h"
#include "explain/explain_output.h"
#include "explain/matcher.h"

namespace rstwatch {
namespace {

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;

// 2026/11/24 02:30:00 UTC
constexpr int64_t kT0 = 1795487400;

std::string line_at(const std::string &time, uint32_t pid, const std::string &error, const std::string &upstream_url,
                    const std::string &context = "while reading response header from upstream")
{
    return time + " [error] " + std::to_string(pid) + "#" + std::to_string(pid) + ": *5 " + error + " " + context +
           ", client: 10.0.0.7, server: , request: \"POST /orders HTTP/1.1\", upstream: \"" + upstream_url +
           "\", host: \"shop.example\"";
}

const std::string kReset = "recv() failed (104: Connection reset by peer)";

TEST(ErrorLogLine, ReadsAResetLine)
{
    auto l = parse_upstream_failure(line_at("2026/11/24 02:30:00", 1234, kReset, "http://10.0.3.21:8081/orders"));
    ASSERT_TRUE(l);
    EXPECT_EQ(l->time, (CivilTime{2026, 11, 24, 2, 30, 0}));
    EXPECT_EQ(l->pid, 1234u);
    EXPECT_EQ(l->tid, 1234u);
    EXPECT_EQ(l->connection, 5u);
    EXPECT_EQ(l->kind, FailureKind::Reset);
    EXPECT_EQ(l->error, "recv() failed (104)");
    EXPECT_EQ(l->context, "while reading response header from upstream");
    EXPECT_EQ(l->upstream_kind, UpstreamKind::Inet);
    EXPECT_EQ(l->upstream, "10.0.3.21:8081");
}

TEST(ErrorLogLine, ReadsEveryCallAndBothErrnos)
{
    auto writev = parse_upstream_failure(line_at("2026/11/24 02:30:00", 7, "writev() failed (32: Broken pipe)",
                                                 "http://10.0.3.21:8081/", "while sending request to upstream"));
    ASSERT_TRUE(writev);
    EXPECT_EQ(writev->kind, FailureKind::BrokenPipe);
    EXPECT_EQ(writev->error, "writev() failed (32)");
    auto readv = parse_upstream_failure(line_at("2026/11/24 02:30:00", 7,
                                                "readv() failed (104: Connection reset by peer)",
                                                "http://10.0.3.21:8081/", "while reading upstream"));
    ASSERT_TRUE(readv);
    EXPECT_EQ(readv->error, "readv() failed (104)");
    auto send = parse_upstream_failure(line_at("2026/11/24 02:30:00", 7, "send() failed (104: Connection reset by peer)",
                                               "grpc://10.0.3.21:50051", "while sending request to upstream"));
    ASSERT_TRUE(send);
    EXPECT_EQ(send->upstream, "10.0.3.21:50051");
}

TEST(ErrorLogLine, ReadsIPv6UpstreamsInTheAgentsSpelling)
{
    auto l = parse_upstream_failure(line_at("2026/11/24 02:30:00", 9, kReset, "http://[2001:db8::2]:8080/x"));
    ASSERT_TRUE(l);
    EXPECT_EQ(l->upstream, "[2001:db8::2]:8080");
    auto long_form = parse_upstream_failure(line_at("2026/11/24 02:30:00", 9, kReset, "http://[2001:0db8:0:0::2]:8080"));
    ASSERT_TRUE(long_form);
    EXPECT_EQ(long_form->upstream, "[2001:db8::2]:8080");
    EXPECT_EQ(canonical_address("[::ffff:10.0.0.1]:80"), "10.0.0.1:80");
    EXPECT_EQ(canonical_address("backend.local:80"), std::nullopt);
    EXPECT_EQ(canonical_address("10.0.0.1:99999"), std::nullopt);
    EXPECT_EQ(canonical_address("10.0.0.1"), std::nullopt);
    EXPECT_EQ(canonical_address("2001:db8::2:80"), std::nullopt);  // unbracketed IPv6
}

TEST(ErrorLogLine, ReadsPrematureCloseAndUnixSockets)
{
    auto fin = parse_upstream_failure(
        line_at("2026/11/24 02:30:00", 7, "upstream prematurely closed connection", "http://10.0.3.21:8081/"));
    ASSERT_TRUE(fin);
    EXPECT_EQ(fin->kind, FailureKind::PrematureClose);
    EXPECT_EQ(fin->error, "upstream prematurely closed connection");
    auto unix_socket = parse_upstream_failure(line_at("2026/11/24 02:30:00", 7, kReset, "http://unix:/run/app.sock:/orders"));
    ASSERT_TRUE(unix_socket);
    EXPECT_EQ(unix_socket->upstream_kind, UpstreamKind::Unix);
    EXPECT_EQ(unix_socket->upstream, "unix:/run/app.sock");
}

TEST(ErrorLogLine, IgnoresLinesThatAreNotUpstreamFailures)
{
    // A client's reset, even on a line that names the upstream.
    EXPECT_FALSE(parse_upstream_failure(line_at("2026/11/24 02:30:00", 7, kReset, "http://10.0.3.21:8081/",
                                                "while reading client request body")));
    EXPECT_FALSE(parse_upstream_failure(line_at("2026/11/24 02:30:00", 7, "client prematurely closed connection",
                                                "http://10.0.3.21:8081/", "while sending to client")));
    EXPECT_FALSE(parse_upstream_failure(line_at("2026/11/24 02:30:00", 7, "upstream timed out (110: Connection timed out)",
                                                "http://10.0.3.21:8081/")));
    EXPECT_FALSE(parse_upstream_failure(line_at("2026/11/24 02:30:00", 7, "connect() failed (111: Connection refused)",
                                                "http://10.0.3.21:8081/", "while connecting to upstream")));
    EXPECT_FALSE(parse_upstream_failure("2026/11/24 02:30:00 [error] 7#7: *1 open() \"/x\" failed (2: No such file)"));
    EXPECT_FALSE(parse_upstream_failure(""));
    EXPECT_FALSE(parse_upstream_failure("() failed (104"));
}

TEST(ErrorLogLine, TruncatedLinesKeepWhatTheyHave)
{
    const std::string full = line_at("2026/11/24 02:30:00", 1234, kReset, "http://10.0.3.21:8081/orders");
    // Cut before the upstream field (nginx writes at most 2 KiB a line).
    auto no_field = parse_upstream_failure(full.substr(0, full.find(", upstream:")));
    ASSERT_TRUE(no_field);
    EXPECT_EQ(no_field->pid, 1234u);
    EXPECT_EQ(no_field->upstream_kind, UpstreamKind::Missing);
    EXPECT_EQ(no_field->upstream, "");
    // Cut inside the URL: its address may be cut too.
    auto in_url = parse_upstream_failure(full.substr(0, full.find("10.0.3.21:80") + 11));
    ASSERT_TRUE(in_url);
    EXPECT_EQ(in_url->upstream_kind, UpstreamKind::Missing);
    // Cut inside the error: nothing to go on.
    EXPECT_FALSE(parse_upstream_failure(full.substr(0, full.find("(104") + 3)));
}

TEST(ErrorLogLine, MalformedHeadersLeaveTimeOrPidEmpty)
{
    auto no_time = parse_upstream_failure(line_at("yesterday at noon", 1234, kReset, "http://10.0.3.21:8081/"));
    ASSERT_TRUE(no_time);
    EXPECT_FALSE(no_time->time);
    auto bad_month = parse_upstream_failure(line_at("2026/13/24 02:30:00", 1234, kReset, "http://10.0.3.21:8081/"));
    ASSERT_TRUE(bad_month);
    EXPECT_FALSE(bad_month->time);
    auto no_pid = parse_upstream_failure("2026/11/24 02:30:00 [error] worker: *5 " + kReset +
                                         " while reading upstream, upstream: \"http://10.0.3.21:8081/\"");
    ASSERT_TRUE(no_pid);
    EXPECT_TRUE(no_pid->time);
    EXPECT_FALSE(no_pid->pid);
    // Behind a syslog prefix, nginx's own header is still found.
    auto syslog = parse_upstream_failure("Nov 24 02:30:00 web1 nginx: " +
                                         line_at("2026/11/24 02:30:00", 42, kReset, "http://10.0.3.21:8081/"));
    ASSERT_TRUE(syslog);
    EXPECT_EQ(syslog->pid, 42u);
    EXPECT_EQ(syslog->time, (CivilTime{2026, 11, 24, 2, 30, 0}));
}

// ---- matching ---------------------------------------------------------------

class FakeRecords : public ResetRecords {
public:
    std::vector<ResetRecord> all;  // oldest first
    int64_t complete_until = std::numeric_limits<int64_t>::max();
    size_t queries = 0;

    ResetRecord &add(int64_t time_ns, uint32_t pid, const std::string &upstream, const std::string &cause = "backend_crash")
    {
        ResetRecord r;
        r.id = static_cast<int64_t>(all.size()) + 1;
        r.time_ns = time_ns;
        r.pid = pid;
        r.upstream = upstream;
        r.cause = cause;
        r.confidence = "high";
        r.evidence = {"reset 0 ms after nginx sent a request", "the backend's task crashed"};
        r.hint = "check the backend's logs";
        all.push_back(r);
        return all.back();
    }

    std::vector<ResetRecord> upstream_resets(int64_t from_ns, int64_t to_ns, size_t limit) override
    {
        ++queries;
        std::vector<ResetRecord> out;
        for (const auto &r : all)
            if (r.time_ns >= from_ns && r.time_ns < to_ns && out.size() < limit)
                out.push_back(r);
        return out;
    }
    std::optional<int64_t> first_record_ns() override
    {
        if (all.empty())
            return std::nullopt;
        return all.front().time_ns;
    }
    bool has_records_of(uint32_t pid, int64_t from_ns, int64_t to_ns) override
    {
        for (const auto &r : all)
            if (r.pid == pid && r.time_ns >= from_ns && r.time_ns < to_ns)
                return true;
        return false;
    }
    int64_t complete_until_ns(int64_t) override { return complete_until; }
};

std::vector<int64_t> utc(const CivilTime &t) { return {seconds_as_if_utc(t)}; }

UpstreamFailureLine failure(const std::string &time, uint32_t pid, const std::string &upstream_url = "http://10.0.3.21:8081/",
                            const std::string &error = kReset)
{
    return *parse_upstream_failure(line_at(time, pid, error, upstream_url));
}

TEST(Matcher, MatchesTheWorkersResetFromThatUpstreamAtThatTime)
{
    FakeRecords records;
    records.add(kT0 * kSecond + 100 * kMs, 1234, "10.0.3.22:8081");  // another upstream
    records.add(kT0 * kSecond + 200 * kMs, 999, "10.0.3.21:8081");   // another worker
    const ResetRecord want = records.add(kT0 * kSecond + 300 * kMs, 1234, "10.0.3.21:8081", "keepalive_race");
    records.add((kT0 + 5) * kSecond, 1234, "10.0.3.21:8081");        // seconds later
    Explainer explainer(records, utc);
    Explanation e = explainer.explain(failure("2026/11/24 02:30:00", 1234));
    ASSERT_TRUE(e.record) << e.why_unmatched;
    EXPECT_EQ(e.record->id, want.id);
    EXPECT_EQ(e.record->cause, "keepalive_race");
    EXPECT_FALSE(e.ambiguous);
    EXPECT_EQ(e.time_s, kT0);
}

TEST(Matcher, TwoResetsOfOneWorkerAndUpstreamInOneSecondGoInOrderAndAreAmbiguous)
{
    FakeRecords records;
    const ResetRecord first = records.add(kT0 * kSecond + 100 * kMs, 1234, "10.0.3.21:8081");
    const ResetRecord second = records.add(kT0 * kSecond + 600 * kMs, 1234, "10.0.3.21:8081");
    Explainer explainer(records, utc);
    Explanation a = explainer.explain(failure("2026/11/24 02:30:00", 1234));
    Explanation b = explainer.explain(failure("2026/11/24 02:30:00", 1234));
    ASSERT_TRUE(a.record && b.record);
    EXPECT_EQ(a.record->id, first.id);
    EXPECT_EQ(b.record->id, second.id);
    EXPECT_TRUE(a.ambiguous);
    EXPECT_TRUE(b.ambiguous);
}

TEST(Matcher, TakesTheResetInsideTheLinesSecondOverNearerOnesOutside)
{
    FakeRecords records;
    records.add(kT0 * kSecond - 800 * kMs, 1234, "10.0.3.21:8081");
    const ResetRecord inside = records.add(kT0 * kSecond + 900 * kMs, 1234, "10.0.3.21:8081");
    Explainer explainer(records, utc);
    Explanation e = explainer.explain(failure("2026/11/24 02:30:00", 1234));
    ASSERT_TRUE(e.record);
    EXPECT_EQ(e.record->id, inside.id);
    EXPECT_TRUE(e.ambiguous);
}

TEST(Matcher, WindowAllowsAnEarlierResetAndALittleClockSkew)
{
    auto matched = [](int64_t offset_ns) {
        FakeRecords records;
        records.add(kT0 * kSecond + offset_ns, 1234, "10.0.3.21:8081");
        Explainer explainer(records, utc);
        return explainer.explain(failure("2026/11/24 02:30:00", 1234)).record.has_value();
    };
    EXPECT_TRUE(matched(-Explainer::kMatchBefore));
    EXPECT_FALSE(matched(-Explainer::kMatchBefore - 1));
    EXPECT_TRUE(matched(kSecond + Explainer::kMatchAfter - 1));
    EXPECT_FALSE(matched(kSecond + Explainer::kMatchAfter));
}

TEST(Matcher, ATruncatedLineIsMatchedByWorkerAndTime)
{
    FakeRecords records;
    records.add(kT0 * kSecond + 300 * kMs, 1234, "10.0.3.21:8081");
    Explainer explainer(records, utc);
    const std::string full = line_at("2026/11/24 02:30:00", 1234, kReset, "http://10.0.3.21:8081/");
    Explanation e = explainer.explain(*parse_upstream_failure(full.substr(0, full.find(", upstream:"))));
    ASSERT_TRUE(e.record) << e.why_unmatched;
    EXPECT_FALSE(e.ambiguous);
}

TEST(Matcher, SaysWhyALineHasNoReset)
{
    FakeRecords records;
    records.add((kT0 + 60) * kSecond, 1234, "10.0.3.21:8081");
    records.add((kT0 + 120) * kSecond, 1234, "10.0.3.21:8081");
    Explainer explainer(records, utc);
    auto why = [&](const UpstreamFailureLine &l) {
        Explanation e = explainer.explain(l);
        EXPECT_FALSE(e.record);
        EXPECT_EQ(e.why_unmatched.rfind(unmatched_label(e.unmatched), 0), 0u) << e.why_unmatched;
        return e.unmatched;
    };
    EXPECT_EQ(why(failure("2026/11/24 02:30:00", 1234)), Unmatched::NoAgent);
    EXPECT_EQ(why(failure("2026/11/24 02:31:30", 777)), Unmatched::NotTracked);
    EXPECT_EQ(why(failure("2026/11/24 02:31:30", 1234)), Unmatched::NotRecorded);
    EXPECT_EQ(why(failure("2026/11/24 02:31:00", 1234, "http://unix:/run/app.sock:/")), Unmatched::UnixSocket);
    EXPECT_EQ(why(failure("2026/11/24 02:31:00", 1234, "http://10.0.3.21:8081/", "upstream prematurely closed connection")),
              Unmatched::BackendFin);
    EXPECT_EQ(why(*parse_upstream_failure(line_at("at noon", 1234, kReset, "http://10.0.3.21:8081/"))),
              Unmatched::LineUnreadable);

    FakeRecords empty;
    Explainer none(empty, utc);
    Explanation e = none.explain(failure("2026/11/24 02:30:00", 1234));
    EXPECT_EQ(e.unmatched, Unmatched::NoAgent);
    EXPECT_NE(e.why_unmatched.find("no records"), std::string::npos) << e.why_unmatched;
}

TEST(Matcher, ALocalTimeThatOccursTwiceTriesBoth)
{
    // The hour a daylight-saving change repeats: 02:30 local is either.
    FakeRecords records;
    const ResetRecord later = records.add((kT0 + 3600) * kSecond + 10 * kMs, 1234, "10.0.3.21:8081");
    Explainer explainer(records, [](const CivilTime &) { return std::vector<int64_t>{kT0, kT0 + 3600}; });
    Explanation e = explainer.explain(failure("2026/11/24 02:30:00", 1234));
    ASSERT_TRUE(e.record);
    EXPECT_EQ(e.record->id, later.id);
    EXPECT_EQ(e.time_s, kT0 + 3600);
    EXPECT_FALSE(e.ambiguous);
}

TEST(Matcher, HoldsOnlyTheResetsAroundTheCurrentLines)
{
    FakeRecords records;
    // 100 resets a second for 20 minutes, one worker and upstream.
    for (int64_t t = 0; t < 1200 * kSecond; t += 10 * kMs)
        records.add(kT0 * kSecond + t, 1234, "10.0.3.21:8081");
    Explainer explainer(records, utc);
    RecordWindow window(records);
    size_t most_held = 0;
    for (int64_t s = 0; s < 1200; s += 7) {
        window.cover((kT0 + s) * kSecond - Explainer::kMatchBefore, (kT0 + s + 1) * kSecond + Explainer::kMatchAfter);
        most_held = std::max(most_held, window.held().size());
    }
    // 10 s kept behind the line, the line's own window, one batch ahead.
    EXPECT_LE(most_held, 100 * 13 + 1024u);
    EXPECT_GT(most_held, 0u);
}

TEST(Matcher, LoadsResetsThatArriveLater)
{
    // --follow: a line's reset may reach the store after the line was read.
    FakeRecords records;
    records.complete_until = kT0 * kSecond;
    RecordWindow window(records);
    window.cover(kT0 * kSecond - kSecond, (kT0 + 2) * kSecond);
    EXPECT_TRUE(window.held().empty());
    records.add(kT0 * kSecond + 500 * kMs, 1234, "10.0.3.21:8081");
    records.complete_until = (kT0 + 10) * kSecond;
    window.cover(kT0 * kSecond - kSecond, (kT0 + 2) * kSecond);
    EXPECT_EQ(window.held().size(), 1u);
}

// ---- output -----------------------------------------------------------------

TEST(ExplainOutput, JsonCarriesTheContract)
{
    FakeRecords records;
    records.add(kT0 * kSecond + 300 * kMs, 1234, "10.0.3.21:8081");
    Explainer explainer(records, utc);
    auto matched = explanation_json(explainer.explain(failure("2026/11/24 02:30:00", 1234)));
    std::vector<std::string> keys;
    for (auto it = matched.begin(); it != matched.end(); ++it)
        keys.push_back(it.key());
    EXPECT_EQ(keys, (std::vector<std::string>{"line", "time", "pid", "upstream", "error", "matched", "cause",
                                               "confidence", "evidence", "hint", "record_time", "ambiguous"}));
    EXPECT_EQ(matched["time"], "2026-11-24T02:30:00Z");
    EXPECT_EQ(matched["record_time"], "2026-11-24T02:30:00.300000Z");
    EXPECT_EQ(matched["error"], "recv() failed (104)");
    EXPECT_EQ(matched["evidence"].size(), 2u);

    auto unmatched = explanation_json(explainer.explain(failure("2026/11/24 02:35:00", 1234)));
    keys.clear();
    for (auto it = unmatched.begin(); it != unmatched.end(); ++it)
        keys.push_back(it.key());
    EXPECT_EQ(keys, (std::vector<std::string>{"line", "time", "pid", "upstream", "error", "matched", "why_unmatched"}));
    EXPECT_EQ(unmatched["matched"], false);

    auto unreadable = explanation_json(explainer.explain(*parse_upstream_failure("garbage " + kReset + " while reading upstream")));
    EXPECT_TRUE(unreadable["time"].is_null());
    EXPECT_TRUE(unreadable["pid"].is_null());
    EXPECT_TRUE(unreadable["upstream"].is_null());
}

TEST(ExplainOutput, TextAndSummary)
{
    FakeRecords records;
    records.add(kT0 * kSecond + 300 * kMs, 1234, "10.0.3.21:8081");
    Explainer explainer(records, utc);
    ExplainSummary summary;
    Explanation matched = explainer.explain(failure("2026/11/24 02:30:00", 1234));
    Explanation fin = explainer.explain(
        failure("2026/11/24 02:30:01", 1234, "http://10.0.3.21:8081/", "upstream prematurely closed connection"));
    for (const auto *e : {&matched, &fin}) {
        summary.count_line_read();
        summary.add(*e);
    }
    const std::string text = explanation_text(matched);
    EXPECT_NE(text.find("\n    cause: backend_crash (high), the reset at 02:30:00.300000 UTC\n"), std::string::npos) << text;
    EXPECT_NE(text.find("\n    why: the backend's task crashed\n"), std::string::npos) << text;
    EXPECT_NE(text.find("\n    fix: check the backend's logs\n"), std::string::npos) << text;
    EXPECT_NE(explanation_text(fin).find("\n    unmatched: the backend's FIN, not a reset: "), std::string::npos);
    const std::string s = summary.text();
    EXPECT_NE(s.find("2 about a failed upstream connection: 1 matched with a reset, 1 not."), std::string::npos) << s;
    EXPECT_NE(s.find("backend_crash  10.0.3.21:8081      1          0"), std::string::npos) << s;
    EXPECT_NE(s.find("the backend's FIN, not a reset      1"), std::string::npos) << s;
}

}  // namespace
}  // namespace rstwatch
