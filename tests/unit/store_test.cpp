// The durable store: records go in and come back as the same events, a
// foreign or corrupt file is refused and left as it was, a second writer is
// refused, retention deletes by age and by size, and the writer thread
// counts what it could not write.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/errors.h"
#include "outputs/event_json.h"
#include "outputs/format.h"
#include "outputs/store.h"

using namespace rstwatch;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kT0 = 1'795'487'400'000'000'000;  // 2026-11-24T02:30:00Z
constexpr int64_t kDayNs = 86'400'000'000'000;

ResetEvent reset(uint32_t pid, const std::string &upstream, int64_t time_ns = kT0)
{
    ResetEvent e;
    e.time_ns = time_ns;
    e.direction = Direction::Received;
    e.role = Role::Upstream;
    e.owner_known = true;
    e.pid = pid;
    e.comm = "nginx";
    e.local = "127.0.0.1:40000";
    e.remote = upstream;
    e.state = TcpState::Established;
    e.idle_ms = 5003.25;
    e.pool_idle_ms = 5002.5;
    e.reused = true;
    e.bytes_sent = 1200;
    Diagnosis d;
    d.cause = Cause::KeepaliveRace;
    d.confidence = Confidence::High;
    d.evidence = {Evidence{.code = EvidenceCode::PoolReuse, .ms = 5002.5}};
    d.hint = Hint{.code = HintCode::BackendIdleTimeout, .idle_ms = 5002.5, .keepalive_ms = 4000};
    e.diagnosis = d;
    return e;
}

OomEvent oom(int64_t time_ns = kT0)
{
    OomEvent o;
    o.time_ns = time_ns;
    o.pid = 77;
    o.comm = "backend";
    o.rss_kb = 123456;
    o.cgroup = "/svc";
    return o;
}

std::string slurp(const fs::path &p)
{
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

class StoreTest : public ::testing::Test {
protected:
    void SetUp() override
    {
        char tmpl[] = "/tmp/rstwatch-store-test.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        path_ = (dir_ / "rstwatch.db").string();
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::vector<Event> read_all(int64_t since = 0)
    {
        std::vector<Event> out;
        Store::open_read_only(path_)->for_each(since, [&](Event &&e) { out.push_back(std::move(e)); });
        return out;
    }

    fs::path dir_;
    std::string path_;
};

}  // namespace

TEST(EventJson, ResetComesBackAsTheSameJson)
{
    ResetEvent e = reset(1234, "127.0.0.1:8081");
    e.reason = ResetReason::TcpAbortOnData;
    e.on_cpu_pid = 99;
    e.on_cpu_comm = "backend";
    e.on_cpu_exiting = true;
    e.on_cpu_exit_signal = 6;
    // Every field the JSON carries, none at its default, so that one the
    // reader forgets cannot come back equal by chance.
    e.in_request = true;
    e.data_ttl = 63;
    e.rst_ttl = 64;
    e.no_socket = true;
    e.retransmits = 4;
    e.stalled_retransmits = 3;
    e.packets_out = 12;
    e.mss = 1448;
    e.sock_cookie = 77;
    e.owner_listener = true;
    e.since_request_ms = 0.4;
    e.bytes_received = 119;
    auto back = event_from_json(to_json(Event(e)));
    ASSERT_TRUE(back);
    EXPECT_EQ(to_json(*back), to_json(Event(e)));
    // The enums come back from their names; the words as recorded.
    const auto &r = std::get<ResetEvent>(*back);
    EXPECT_EQ(r.reason, ResetReason::TcpAbortOnData);
    EXPECT_EQ(r.state, TcpState::Established);
    ASSERT_TRUE(r.diagnosis);
    ASSERT_EQ(r.diagnosis->evidence.size(), 1u);
    EXPECT_EQ(r.diagnosis->evidence[0].code, EvidenceCode::Recorded);
    EXPECT_EQ(r.diagnosis->hint.code, HintCode::Recorded);
}

TEST(EventJson, ReasonsAndStatesComeBackAsEnums)
{
    ResetEvent e = reset(1234, "127.0.0.1:8081");
    e.direction = Direction::Sent;
    e.state = TcpState::TimeWait;
    e.reason = ResetReason::Unknown;
    e.reason_code = 27;
    auto back = event_from_json(to_json(Event(e)));
    ASSERT_TRUE(back);
    const auto &r = std::get<ResetEvent>(*back);
    EXPECT_EQ(r.state, TcpState::TimeWait);
    EXPECT_EQ(r.reason, ResetReason::Unknown);
    EXPECT_EQ(r.reason_code, 27u) << "shown as REASON_27, the number comes back";

    nlohmann::json j = to_json(Event(e));
    j["reason"] = "TCP_TIMEWAIT_SOCKET";
    j["state"] = "STATE_13";
    back = event_from_json(j);
    ASSERT_TRUE(back);
    EXPECT_EQ(std::get<ResetEvent>(*back).reason, ResetReason::TcpTimewaitSocket);
    EXPECT_FALSE(std::get<ResetEvent>(*back).reason_code) << "a name keeps no number";
    EXPECT_EQ(std::get<ResetEvent>(*back).state, TcpState::BoundInactive);

    j["reason"] = nullptr;
    back = event_from_json(j);
    ASSERT_TRUE(back);
    EXPECT_FALSE(std::get<ResetEvent>(*back).reason);
}

TEST(EventJson, ListenerOwnedClientResetComesBack)
{
    ResetEvent e = reset(1234, "127.0.0.1:8081");
    e.role = Role::Downstream;
    e.owner_listener = true;
    nlohmann::json j = to_json(Event(e));
    EXPECT_EQ(j["owner_via"], "listener");
    auto back = event_from_json(j);
    ASSERT_TRUE(back);
    EXPECT_TRUE(std::get<ResetEvent>(*back).owner_listener);
    EXPECT_FALSE(std::get<ResetEvent>(*back).owner_holder);
    EXPECT_EQ(to_json(Event(reset(1234, "127.0.0.1:8081")))["owner_via"], "file")
        << "the usual way: the credentials of the socket's file";
}

TEST(EventJson, RecordsStoredBeforeReusedWasAFlagKeepTheirMeaning)
{
    // Stores written by 0.1 counted request turns; more than one meant a reused connection.
    nlohmann::json j = to_json(Event(reset(1234, "127.0.0.1:8081")));
    j.erase("reused");
    j["requests"] = 3;
    auto back = event_from_json(j);
    ASSERT_TRUE(back);
    EXPECT_TRUE(std::get<ResetEvent>(*back).reused);
    j["requests"] = 1;
    back = event_from_json(j);
    ASSERT_TRUE(back);
    EXPECT_FALSE(std::get<ResetEvent>(*back).reused);
}

TEST(EventJson, UnownedResetAndOomComeBack)
{
    ResetEvent e = reset(0, "127.0.0.1:8081");
    e.owner_known = false;
    e.diagnosis.reset();
    auto back = event_from_json(to_json(Event(e)));
    ASSERT_TRUE(back);
    EXPECT_FALSE(std::get<ResetEvent>(*back).owner_known);
    EXPECT_EQ(to_json(*back), to_json(Event(e)));
    auto o = event_from_json(to_json(Event(oom())));
    ASSERT_TRUE(o);
    EXPECT_EQ(to_json(*o), to_json(Event(oom())));
}

TEST(EventJson, RejectsWhatIsNotARecord)
{
    std::string error;
    EXPECT_FALSE(event_from_json(nlohmann::json::array(), &error));
    EXPECT_FALSE(event_from_json({{"type", "tables"}, {"time", "2026-11-24T02:30:00.000000Z"}}, &error));
    EXPECT_NE(error.find("tables"), std::string::npos);
    EXPECT_FALSE(event_from_json({{"type", "rst"}, {"time", "yesterday"}}, &error));
    EXPECT_EQ(parse_rfc3339_us("2026-11-24T02:30:00.000001Z"), kT0 + 1000);
}

TEST_F(StoreTest, RecordsSurviveClosingAndAreQueryableWithSql)
{
    {
        auto store = Store::open_for_writing(path_);
        EXPECT_EQ(store->append({reset(1, "10.0.0.1:80"), oom(), reset(2, "10.0.0.2:80", kT0 + 1)}), "");
    }
    auto events = read_all();
    ASSERT_EQ(events.size(), 3u);
    EXPECT_EQ(std::get<ResetEvent>(events[0]).remote, "10.0.0.1:80");
    EXPECT_EQ(std::get<OomEvent>(events[1]).comm, "backend");
    EXPECT_EQ(std::get<ResetEvent>(events[2]).diagnosis->cause, Cause::KeepaliveRace);

    // The documented columns (docs/STORE.md), as a user's sqlite3 sees them.
    sqlite3 *db = nullptr;
    ASSERT_EQ(sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt *st = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db,
                                 "SELECT pid, comm, role, direction, remote, cause, confidence, idle_ms, pool_idle_ms, "
                                 "json_extract(json, '$.reused'), (SELECT version FROM rstwatch_schema) "
                                 "FROM records WHERE type = 'rst' ORDER BY time_ns LIMIT 1",
                                 -1, &st, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    EXPECT_EQ(sqlite3_column_int(st, 0), 1);
    EXPECT_STREQ(reinterpret_cast<const char *>(sqlite3_column_text(st, 1)), "nginx");
    EXPECT_STREQ(reinterpret_cast<const char *>(sqlite3_column_text(st, 2)), "upstream");
    EXPECT_STREQ(reinterpret_cast<const char *>(sqlite3_column_text(st, 3)), "received");
    EXPECT_STREQ(reinterpret_cast<const char *>(sqlite3_column_text(st, 4)), "10.0.0.1:80");
    EXPECT_STREQ(reinterpret_cast<const char *>(sqlite3_column_text(st, 5)), "keepalive_race");
    EXPECT_STREQ(reinterpret_cast<const char *>(sqlite3_column_text(st, 6)), "high");
    EXPECT_DOUBLE_EQ(sqlite3_column_double(st, 7), 5003.25);
    EXPECT_DOUBLE_EQ(sqlite3_column_double(st, 8), 5002.5);
    EXPECT_EQ(sqlite3_column_int(st, 9), 1);
    EXPECT_EQ(sqlite3_column_int(st, 10), Store::kSchemaVersion);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

namespace {

std::vector<std::string> index_names(const std::string &path)
{
    sqlite3 *db = nullptr;
    std::vector<std::string> names;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
        sqlite3_stmt *st = nullptr;
        sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'records_%' ORDER BY name",
                           -1, &st, nullptr);
        while (st && sqlite3_step(st) == SQLITE_ROW)
            names.emplace_back(reinterpret_cast<const char *>(sqlite3_column_text(st, 0)));
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return names;
}

}  // namespace

// The index on (remote, time_ns) made every insert of a client-side reset
// land on a random page; stores made with it lose it when an agent opens
// them, and keep their records.
TEST_F(StoreTest, TheRetiredRemoteIndexIsDroppedFromAnOlderStore)
{
    Store::open_for_writing(path_)->append({reset(1, "10.0.0.1:80")});
    EXPECT_EQ(index_names(path_), (std::vector<std::string>{"records_cause", "records_time"}));
    sqlite3 *db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "CREATE INDEX records_remote ON records (remote, time_ns)", nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
    ASSERT_EQ(index_names(path_).size(), 3u);

    Store::open_for_writing(path_)->append({reset(2, "10.0.0.2:80")});
    EXPECT_EQ(index_names(path_), (std::vector<std::string>{"records_cause", "records_time"}));
    EXPECT_EQ(read_all().size(), 2u);
}

// What `rstwatch explain` matches nginx's lines with: received resets on
// upstream connections with an owner, by time, oldest first.
TEST_F(StoreTest, UpstreamResetsAreThoseNginxLogs)
{
    ResetEvent sent = reset(1, "10.0.0.9:80", kT0 + 1);
    sent.direction = Direction::Sent;
    ResetEvent client = reset(1, "10.0.0.7:51000", kT0 + 2);
    client.role = Role::Downstream;
    ResetEvent unowned = reset(0, "10.0.0.9:80", kT0 + 3);
    unowned.owner_known = false;
    {
        auto store = Store::open_for_writing(path_);
        EXPECT_FALSE(store->first_time_ns());
        EXPECT_EQ(store->append({reset(2, "10.0.0.2:80", kT0 + 20), sent, client, unowned, oom(kT0 + 4),
                                 reset(1, "10.0.0.1:80", kT0 + 10), reset(3, "10.0.0.3:80", kT0 + 30)}),
                  "");
    }
    auto store = Store::open_read_only(path_);
    auto rows = store->upstream_resets(kT0, kT0 + 30, 10);
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_EQ(rows[0].time_ns, kT0 + 10) << "oldest first";
    EXPECT_NE(rows[0].json.find("10.0.0.1:80"), std::string::npos);
    EXPECT_EQ(rows[1].time_ns, kT0 + 20);
    EXPECT_EQ(store->upstream_resets(kT0, kT0 + 31, 1).size(), 1u);
    EXPECT_EQ(store->first_time_ns(), kT0 + 1);
    EXPECT_TRUE(store->has_records_of(77, kT0, kT0 + 5)) << "any record of the process";
    EXPECT_FALSE(store->has_records_of(3, kT0, kT0 + 30)) << "[from, to)";
}

TEST_F(StoreTest, SinceSelectsRecentRecords)
{
    Store::open_for_writing(path_)->append({reset(1, "a:1", kT0), reset(2, "b:1", kT0 + 10 * kDayNs)});
    EXPECT_EQ(read_all(kT0 + 1).size(), 1u);
    EXPECT_EQ(read_all(0).size(), 2u);
}

TEST_F(StoreTest, ForeignFileIsRefusedAndLeftUntouched)
{
    { std::ofstream(path_) << "these are somebody's notes, not a database\n"; }
    const std::string before = slurp(path_);
    try {
        Store::open_for_writing(path_);
        FAIL() << "opened a text file as a store";
    } catch (const FatalError &e) {
        EXPECT_NE(std::string(e.what()).find("not an SQLite database"), std::string::npos) << e.what();
    }
    EXPECT_THROW(Store::open_read_only(path_), FatalError);
    EXPECT_EQ(slurp(path_), before);
    EXPECT_FALSE(fs::exists(path_ + "-wal"));
}

TEST_F(StoreTest, OtherSqliteDatabaseIsRefusedAndLeftUntouched)
{
    sqlite3 *db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE invoices (id INTEGER); INSERT INTO invoices VALUES (1);", nullptr,
                           nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
    const std::string before = slurp(path_);
    try {
        Store::open_for_writing(path_);
        FAIL() << "took over another application's database";
    } catch (const FatalError &e) {
        EXPECT_NE(std::string(e.what()).find("not an rstwatch store"), std::string::npos) << e.what();
    }
    EXPECT_EQ(slurp(path_), before);
}

TEST_F(StoreTest, CorruptDatabaseIsRefusedAndLeftUntouched)
{
    Store::open_for_writing(path_)->append({reset(1, "a:1")});
    // Keep SQLite's magic, wreck the rest of the header and the first pages.
    std::string bytes = slurp(path_);
    for (size_t i = 16; i < bytes.size() && i < 8192; ++i)
        bytes[i] = static_cast<char>(0xA5);
    { std::ofstream(path_, std::ios::binary | std::ios::trunc) << bytes; }
    fs::remove(path_ + "-wal");
    fs::remove(path_ + "-shm");
    EXPECT_THROW(Store::open_for_writing(path_), FatalError);
    EXPECT_EQ(slurp(path_), bytes);
}

TEST_F(StoreTest, SecondWriterIsRefused)
{
    auto first = Store::open_for_writing(path_);
    try {
        Store::open_for_writing(path_);
        FAIL() << "two writers on one store";
    } catch (const FatalError &e) {
        EXPECT_NE(std::string(e.what()).find("in use by another rstwatch"), std::string::npos) << e.what();
    }
    first.reset();
    EXPECT_NO_THROW(Store::open_for_writing(path_));
}

TEST_F(StoreTest, RetentionDeletesByAge)
{
    auto store = Store::open_for_writing(path_);
    store->append({reset(1, "old:1", kT0 - 40 * kDayNs), reset(2, "new:1", kT0 - kDayNs)});
    RetentionResult r = store->apply_retention({30, 512}, kT0);
    EXPECT_EQ(r.deleted_by_age, 1u);
    ASSERT_EQ(store->count(), 1u);
    store.reset();
    EXPECT_EQ(std::get<ResetEvent>(read_all()[0]).remote, "new:1");
}

TEST_F(StoreTest, RetentionDeletesOldestPastTheSizeLimit)
{
    auto store = Store::open_for_writing(path_);
    std::vector<Event> batch;
    for (int i = 0; i < 8000; ++i)
        batch.push_back(reset(i, "10.0.0." + std::to_string(i % 200) + ":80", kT0 + i));
    ASSERT_EQ(store->append(batch), "");
    ASSERT_GT(store->used_bytes(), 2u << 20) << "the test needs more than the limit";
    RetentionResult r = store->apply_retention({3650, 1}, kT0 + 8000);
    EXPECT_GT(r.deleted_by_size, 0u);
    EXPECT_LE(store->used_bytes(), 1u << 20);
    EXPECT_EQ(store->count(), 8000 - r.deleted_by_size);
    // The newest were kept.
    store.reset();
    auto left = read_all();
    ASSERT_FALSE(left.empty());
    EXPECT_EQ(std::get<ResetEvent>(left.back()).pid, 7999u);
    EXPECT_LE(fs::file_size(path_), 2u << 20) << "freed pages are given back";
}

TEST_F(StoreTest, WriterCommitsWithinASecondWithoutFlush)
{
    StoreWriter writer([&] { return Store::open_for_writing(path_); }, {});
    for (int i = 0; i < 100; ++i)
        ASSERT_TRUE(writer.push(reset(i, "a:1")));
    // No flush: the writer commits on its own, well inside a second.
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    EXPECT_EQ(Store::open_read_only(path_)->count(), 100u);
    EXPECT_EQ(writer.stats().written, 100u);
}

TEST_F(StoreTest, WriterCountsWhatItCannotWriteAndGoesOn)
{
    StoreWriter::Options options;
    // Room for ten rows (the queue is bounded in bytes).
    const size_t row_bytes = make_store_row(reset(0, "a:1")).footprint();
    options.queue_capacity_bytes = 10 * row_bytes + row_bytes / 2;
    // Nothing commits until flush(): the writer must not empty the queue
    // while the rows are pushed (it did, now and then, at a quarter full).
    options.commit_interval = std::chrono::milliseconds(60000);
    options.batch_size = 1000;
    options.batch_bytes = options.queue_capacity_bytes + 1;
    StoreWriter writer([&] { return Store::open_for_writing(path_); }, options);
    for (int i = 0; i < 15; ++i)
        writer.push(reset(i, "a:1"));
    EXPECT_EQ(writer.stats().dropped_queue_full, 5u);
    // The margin left, as the agent logs it: the queue was as good as full.
    EXPECT_GE(writer.stats().queue_peak_bytes, 9 * row_bytes);
    EXPECT_LE(writer.stats().queue_peak_bytes, options.queue_capacity_bytes);
    writer.flush();
    EXPECT_EQ(writer.stats().written, 10u);
    EXPECT_GT(writer.stats().longest_write.count(), 0);

    // A failing write (here: the table is gone, as good as a full disk for
    // the writer) is counted, and the writer carries on.
    sqlite3 *db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 2000);
    ASSERT_EQ(sqlite3_exec(db, "ALTER TABLE records RENAME TO gone", nullptr, nullptr, nullptr), SQLITE_OK);
    writer.push(reset(100, "a:1"));
    writer.flush();
    EXPECT_EQ(writer.stats().failed, 1u);
    ASSERT_EQ(sqlite3_exec(db, "ALTER TABLE gone RENAME TO records", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
    writer.push(reset(101, "a:1"));
    writer.flush();
    EXPECT_EQ(writer.stats().written, 11u);
    EXPECT_EQ(writer.stats().lost(), 6u);
}

// A full queue can wait for the writer instead of dropping (the agent does,
// while its ring buffer has room). A writer that does not come within the
// wait costs one wait, not one per row, until it takes a batch again.
TEST_F(StoreTest, WriterLetsAPushWaitForRoomOnce)
{
    StoreWriter::Options options;
    const size_t row_bytes = make_store_row(reset(0, "a:1")).footprint();
    options.queue_capacity_bytes = 10 * row_bytes + row_bytes / 2;
    options.commit_interval = std::chrono::milliseconds(60000);  // only flush() takes the queue
    options.batch_size = 1000;
    options.batch_bytes = options.queue_capacity_bytes + 1;
    using namespace std::chrono;
    milliseconds wait{0};
    int asked = 0;
    options.wait_for_room = [&] {
        ++asked;
        return wait;
    };
    StoreWriter writer([&] { return Store::open_for_writing(path_); }, options);
    for (int i = 0; i < 10; ++i)
        ASSERT_TRUE(writer.push(reset(i, "a:1")));
    EXPECT_EQ(asked, 0) << "asked only when the queue is full";

    auto t0 = steady_clock::now();
    wait = milliseconds(200);
    EXPECT_FALSE(writer.push(reset(10, "a:1")));
    EXPECT_GE(steady_clock::now() - t0, milliseconds(190));
    t0 = steady_clock::now();
    wait = milliseconds(5000);
    EXPECT_FALSE(writer.push(reset(11, "a:1"))) << "the writer has not moved: no second wait";
    EXPECT_LT(steady_clock::now() - t0, milliseconds(1000));
    EXPECT_EQ(writer.stats().waits_for_room, 1u);
    EXPECT_EQ(asked, 1) << "a wait ran out: not even asked again until the writer moves";
    EXPECT_EQ(writer.stats().dropped_queue_full, 2u);

    // Once the writer takes the queue, pushes may wait again; one that it
    // empties meanwhile gets in.
    writer.flush();
    for (int i = 12; i < 22; ++i)
        ASSERT_TRUE(writer.push(reset(i, "a:1")));
    std::thread flusher([&] {
        std::this_thread::sleep_for(milliseconds(300));
        writer.flush();
    });
    t0 = steady_clock::now();
    wait = milliseconds(10000);
    EXPECT_TRUE(writer.push(reset(22, "a:1")));
    EXPECT_GE(steady_clock::now() - t0, milliseconds(250));
    flusher.join();
    writer.flush();
    EXPECT_EQ(writer.stats().waits_for_room, 2u);
    EXPECT_EQ(asked, 2);
    EXPECT_EQ(writer.stats().written, 21u);
    EXPECT_EQ(writer.stats().dropped_queue_full, 2u);
}

// Checkpoints run on a thread of their own, and the WAL does not grow with
// what is written: without them it would hold all 30000 records (~30 MB).
TEST_F(StoreTest, WriterKeepsTheWalBoundedWhileItWrites)
{
    StoreWriter::Options options;
    options.checkpoint_pages = 20;
    options.wal_limit_pages = 100;
    StoreWriter writer([&] { return Store::open_for_writing(path_); }, options);
    const fs::path wal = path_ + "-wal";
    uintmax_t largest_wal = 0;
    for (int batch = 0; batch < 300; ++batch) {
        for (int i = 0; i < 100; ++i)
            ASSERT_TRUE(writer.push(reset(i, "10.0.0." + std::to_string(i) + ":80")));
        writer.flush();
        std::error_code ec;
        largest_wal = std::max(largest_wal, fs::file_size(wal, ec));
    }
    EXPECT_EQ(writer.stats().written, 30000u);
    EXPECT_LT(largest_wal, 4u << 20) << "the WAL grew with the data: checkpoints did not keep up";
    EXPECT_GT(fs::file_size(path_), 20u << 20) << "the records reached the database file while the writer ran";
    writer.stop();
    EXPECT_EQ(Store::open_read_only(path_)->count(), 30000u);
}

// One burst grows the WAL past the checkpoint threshold; once it has been
// copied and starts over, the file shrinks back instead of staying at its
// high-water mark for the agent's lifetime.
TEST_F(StoreTest, WriterShrinksTheWalFileAfterABurst)
{
    StoreWriter::Options options;
    options.checkpoint_pages = 20;
    options.wal_limit_pages = 100;
    // Nothing committed before the flush, so the burst is one transaction.
    options.batch_size = 100000;
    options.batch_bytes = options.queue_capacity_bytes = 64u << 20;
    options.commit_interval = std::chrono::minutes(10);
    StoreWriter writer([&] { return Store::open_for_writing(path_); }, options);
    const fs::path wal = path_ + "-wal";
    for (int i = 0; i < 2000; ++i)
        ASSERT_TRUE(writer.push(reset(i, "10.0.0.1:80")));
    writer.flush();  // one transaction: the WAL holds all of it
    std::error_code ec;
    const uintmax_t after_burst = fs::file_size(wal, ec);
    ASSERT_GT(after_burst, 1u << 19) << "the burst did not grow the WAL; the test proves nothing";
    const uintmax_t limit = 20 * 4096;
    uintmax_t now = after_burst;
    int quiet = 0;
    // A few quiet commits: a checkpoint, the WAL restarting, a truncation.
    while (quiet < 50 && now > limit) {
        writer.push(reset(5000 + quiet++, "10.0.0.2:80"));
        writer.flush();
        now = fs::file_size(wal, ec);
    }
    EXPECT_LE(now, limit) << "the WAL file stayed at " << after_burst << " bytes after the burst";
    writer.stop();
    EXPECT_EQ(Store::open_read_only(path_)->count(), 2000u + quiet);
}

// SIGHUP after the store was moved aside (logrotate, an operator): the
// writer opens the path again, so records after it go to a new store there.
TEST_F(StoreTest, WriterReopens)
{
    int opened = 0;
    StoreWriter writer(
        [&] {
            ++opened;
            return Store::open_for_writing(path_);
        },
        {});
    writer.push(reset(1, "a:1"));
    writer.flush();
    const std::string moved = path_ + ".1";
    fs::rename(path_, moved);
    writer.reopen();
    writer.flush();  // rows queued before the reopen may go to the old file
    writer.push(reset(2, "a:1"));
    writer.flush();
    writer.stop();
    EXPECT_EQ(opened, 2);
    ASSERT_TRUE(fs::exists(path_)) << "reopen() did not open the path again";
    std::vector<Event> after = read_all();
    ASSERT_EQ(after.size(), 1u);
    EXPECT_EQ(std::get<ResetEvent>(after[0]).pid, 2u);
}
