#include "outputs/store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/errors.h"
#include "outputs/event_json.h"
#include "outputs/file_checks.h"
#include "outputs/format.h"

namespace rstwatch {

namespace {

// The schema, version 1 (docs/STORE.md). auto_vacuum must precede the first
// table for incremental vacuum to work.
constexpr const char *kCreateSchema = R"sql(
CREATE TABLE rstwatch_schema (
    version INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE records (
    id           INTEGER PRIMARY KEY,
    time_ns      INTEGER NOT NULL,
    time         TEXT NOT NULL,
    type         TEXT NOT NULL,
    pid          INTEGER,
    comm         TEXT,
    role         TEXT,
    direction    TEXT,
    remote       TEXT,
    cause        TEXT,
    confidence   TEXT,
    idle_ms      REAL,
    pool_idle_ms REAL,
    json         TEXT NOT NULL
);
CREATE INDEX records_time ON records (time_ns);
CREATE INDEX records_cause ON records (cause, time_ns);
)sql";

// Stores made before it was dropped have an index on (remote, time_ns).
// Remotes of client-side resets are client ports: every insert landed on a
// random leaf, and in a reset storm that index was two thirds of the
// writer's time per row (18.8 against 6.3 us; docs/BENCHMARKS.md). Queries
// are by time first, and records_time serves "this upstream, since then".
// The tables are unchanged, so the schema version is too.
constexpr const char *kDropRetiredIndexes = "DROP INDEX IF EXISTS records_remote";

const char kSqliteMagic[16] = {'S', 'Q', 'L', 'i', 't', 'e', ' ', 'f', 'o', 'r', 'm', 'a', 't', ' ', '3', '\0'};

// A prepared statement, finalized on scope exit.
class Statement {
public:
    Statement(sqlite3 *db, const char *sql)
    {
        if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK)
            error_ = sqlite3_errmsg(db);
    }
    ~Statement() { sqlite3_finalize(stmt_); }
    Statement(const Statement &) = delete;
    Statement &operator=(const Statement &) = delete;

    bool ok() const { return stmt_ != nullptr; }
    const std::string &error() const { return error_; }
    sqlite3_stmt *get() const { return stmt_; }

    void bind_text(int i, const std::string &s) { sqlite3_bind_text(stmt_, i, s.c_str(), s.size(), SQLITE_TRANSIENT); }
    void bind_text_or_null(int i, const std::string &s)
    {
        if (s.empty())
            sqlite3_bind_null(stmt_, i);
        else
            bind_text(i, s);
    }
    // A string that outlives the statement (a name from to_string()); nullptr binds NULL.
    void bind_static_or_null(int i, const char *s)
    {
        if (s)
            sqlite3_bind_text(stmt_, i, s, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(stmt_, i);
    }
    void bind_int(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
    void bind_real_or_null(int i, std::optional<double> v)
    {
        if (v)
            sqlite3_bind_double(stmt_, i, *v);
        else
            sqlite3_bind_null(stmt_, i);
    }

private:
    sqlite3_stmt *stmt_ = nullptr;
    std::string error_;
};

std::string exec(sqlite3 *db, const char *sql)
{
    char *msg = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &msg) == SQLITE_OK)
        return {};
    std::string out = msg ? msg : sqlite3_errmsg(db);
    sqlite3_free(msg);
    return out;
}

int64_t query_int(sqlite3 *db, const char *sql, int64_t fallback = 0)
{
    Statement st(db, sql);
    if (!st.ok() || sqlite3_step(st.get()) != SQLITE_ROW)
        return fallback;
    return sqlite3_column_int64(st.get(), 0);
}

// The file is either absent, empty, or begins with SQLite's magic; anything
// else is refused before SQLite sees it, so it stays untouched.
void check_header(const std::string &path)
{
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
        return;
    if (!std::filesystem::is_regular_file(path, ec))
        throw FatalError("store " + path + " is not a regular file", "give --store a file path, or --store none");
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw FatalError("cannot read store " + path + ": " + std::strerror(errno));
    char head[16] = {};
    in.read(head, sizeof(head));
    if (in.gcount() == 0)
        return;
    if (in.gcount() < static_cast<std::streamsize>(sizeof(head)) || std::memcmp(head, kSqliteMagic, sizeof(head)) != 0)
        throw FatalError("store " + path + " is not an SQLite database; left untouched",
                         "point --store at an rstwatch store or a new file");
}

// The store's file, open for writing and locked (flock, not SQLite's own
// POSIX locks: it is held for the agent's life and says "another agent",
// which SQLite's busy errors would not). Throws FatalError.
int open_locked(const std::string &path, int create)
{
    int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | create, 0600);
    if (fd < 0)
        throw FatalError("cannot open store " + path + ": " + std::strerror(errno),
                         "give --store a writable path, or --store none");
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        throw FatalError("store " + path + " is in use by another rstwatch agent",
                         "stop the other agent, or give this one its own --store (and --socket)");
    }
    return fd;
}

// Fails unless the database is empty (new) or an rstwatch store of a
// version we read. Returns true when it is new.
bool check_schema(sqlite3 *db, const std::string &path)
{
    Statement tables(db, "SELECT name FROM sqlite_master WHERE type = 'table'");
    if (!tables.ok())
        throw FatalError("store " + path + " is not readable as SQLite (" + tables.error() + "); left untouched",
                         "the file may be corrupt: move it away, or point --store at a new file");
    bool ours = false, any = false;
    int rc;
    while ((rc = sqlite3_step(tables.get())) == SQLITE_ROW) {
        any = true;
        const char *name = reinterpret_cast<const char *>(sqlite3_column_text(tables.get(), 0));
        if (name && std::strcmp(name, "rstwatch_schema") == 0)
            ours = true;
    }
    if (rc != SQLITE_DONE)
        throw FatalError("store " + path + " is corrupt (" + sqlite3_errmsg(db) + "); left untouched",
                         "move it away, or point --store at a new file");
    if (!any)
        return true;
    if (!ours)
        throw FatalError("store " + path + " is an SQLite database but not an rstwatch store; left untouched",
                         "point --store at an rstwatch store or a new file");
    int64_t version = query_int(db, "SELECT max(version) FROM rstwatch_schema", -1);
    if (version != Store::kSchemaVersion)
        throw FatalError("store " + path + " has schema version " + std::to_string(version) + ", this rstwatch reads " +
                             std::to_string(Store::kSchemaVersion),
                         "use the rstwatch that wrote it, or point --store at a new file");
    return false;
}

sqlite3 *open_db(const std::string &path, int flags)
{
    sqlite3 *db = nullptr;
    int rc = sqlite3_open_v2(path.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
        std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
        sqlite3_close(db);
        throw FatalError("cannot open store " + path + ": " + msg);
    }
    sqlite3_busy_timeout(db, 2000);
    return db;
}

int64_t realtime_now_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

}  // namespace

// ---- Store ------------------------------------------------------------------

Store::Store(std::string path, sqlite3 *db, int lock_fd) : path_(std::move(path)), db_(db), lock_fd_(lock_fd) {}

Store::~Store()
{
    sqlite3_close(db_);
    if (lock_fd_ >= 0)
        close(lock_fd_);  // releases the flock
}

void Store::check_can_write(const std::string &path)
{
    check_header(path);
    struct stat st{};
    if (stat(path.c_str(), &st) == 0)
        close(open_locked(path, 0));  // the lock goes with the descriptor
    else
        check_can_create_in(folder_of(path), /*create_missing=*/true);
}

std::unique_ptr<Store> Store::open_for_writing(const std::string &path)
{
    check_header(path);
    std::filesystem::path parent = std::filesystem::path(path).parent_path();
    std::error_code ec;
    if (!parent.empty() && !std::filesystem::exists(parent, ec)) {
        std::filesystem::create_directories(parent, ec);
        if (ec)
            throw FatalError("cannot create " + parent.string() + " for the store: " + ec.message(),
                             "give --store a writable path, or --store none");
        chmod(parent.c_str(), 0700);
    }
    int fd = open_locked(path, O_CREAT);
    sqlite3 *db = nullptr;
    try {
        db = open_db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        bool fresh = check_schema(db, path);
        if (fresh) {
            std::string err = exec(db, "PRAGMA auto_vacuum = INCREMENTAL");
            if (err.empty())
                err = exec(db, "PRAGMA journal_mode = WAL");
            if (err.empty())
                err = exec(db, "BEGIN");
            if (err.empty())
                err = exec(db, kCreateSchema);
            if (err.empty()) {
                Statement st(db, "INSERT INTO rstwatch_schema (version, created) VALUES (?, ?)");
                st.bind_int(1, kSchemaVersion);
                st.bind_text(2, format_rfc3339_us(realtime_now_ns()));
                if (sqlite3_step(st.get()) != SQLITE_DONE)
                    err = sqlite3_errmsg(db);
            }
            if (err.empty())
                err = exec(db, "COMMIT");
            if (!err.empty())
                throw FatalError("cannot create the store schema in " + path + ": " + err);
        } else if (std::string err = exec(db, "PRAGMA journal_mode = WAL"); !err.empty()) {
            throw FatalError("cannot use store " + path + ": " + err);
        } else if (std::string err = exec(db, kDropRetiredIndexes); !err.empty()) {
            throw FatalError("cannot use store " + path + ": " + err);
        }
        // WAL + NORMAL: a commit survives a crash of the agent (SIGKILL);
        // only a power cut may lose the last commits.
        exec(db, "PRAGMA synchronous = NORMAL");
        // Inserts at the end of the table and its indexes need few pages
        // cached; SQLite's default of 2 MiB is most of the store's memory.
        exec(db, "PRAGMA cache_size = -512");
    } catch (...) {
        sqlite3_close(db);
        close(fd);
        throw;
    }
    auto store = std::unique_ptr<Store>(new Store(path, db, fd));
    // Replaces SQLite's auto-checkpoint, which ran on the committing thread.
    sqlite3_wal_hook(db, &Store::on_wal_commit, store.get());
    return store;
}

int Store::on_wal_commit(void *self, sqlite3 *, const char *, int pages)
{
    static_cast<Store *>(self)->wal_pages_ = pages;
    return SQLITE_OK;
}

std::string Store::checkpoint(const std::string &path)
{
    // No SQLITE_OPEN_CREATE: after a rename (logrotate) and before the
    // writer reopens, there is nothing to checkpoint at `path`.
    sqlite3 *db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
        std::string err = db ? sqlite3_errmsg(db) : "cannot open";
        sqlite3_close(db);
        return err;
    }
    sqlite3_busy_timeout(db, 2000);
    // A new connection learns that the file is in WAL mode only when it
    // first reads it; until then a checkpoint does nothing, successfully.
    std::string err = exec(db, "PRAGMA journal_mode = WAL");
    if (err.empty() && sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr) != SQLITE_OK)
        err = sqlite3_errmsg(db);
    // While the writer's connection is open, closing this one neither
    // checkpoints again nor removes the WAL; during a reopen it may be the
    // last, and then closing it checkpoints the rest, as the writer's would.
    sqlite3_close(db);
    return err;
}

std::string Store::checkpoint_and_restart_wal()
{
    if (sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_RESTART, nullptr, nullptr) != SQLITE_OK)
        return sqlite3_errmsg(db_);
    return {};
}

void Store::limit_wal_file(int pages)
{
    int64_t bytes = int64_t{pages} * query_int(db_, "PRAGMA page_size", 4096);
    exec(db_, ("PRAGMA journal_size_limit = " + std::to_string(bytes)).c_str());
}

std::unique_ptr<Store> Store::open_read_only(const std::string &path)
{
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
        throw FatalError("no store at " + path, "give the --store path the agent was run with");
    check_header(path);
    sqlite3 *db = open_db(path, SQLITE_OPEN_READONLY);
    try {
        if (check_schema(db, path))
            throw FatalError("store " + path + " is empty: no agent has written to it");
    } catch (...) {
        sqlite3_close(db);
        throw;
    }
    return std::unique_ptr<Store>(new Store(path, db, -1));
}

size_t StoreRow::footprint() const
{
    // Strings past the small-string buffer live on the heap; count them all.
    return sizeof(StoreRow) + comm.size() + remote.size() + json.size();
}

StoreRow make_store_row(const Event &event, std::string json)
{
    StoreRow row;
    if (const auto *r = std::get_if<ResetEvent>(&event)) {
        row.time_ns = r->time_ns;
        if (r->owner_known) {
            row.pid = r->pid;
            row.comm = r->comm;
        }
        row.role = to_string(r->role);
        row.direction = to_string(r->direction);
        row.remote = r->remote;
        if (r->diagnosis) {
            row.cause = to_string(r->diagnosis->cause);
            row.confidence = to_string(r->diagnosis->confidence);
        }
        row.idle_ms = r->idle_ms;
        row.pool_idle_ms = r->pool_idle_ms;
    } else {
        const auto &o = std::get<OomEvent>(event);
        row.is_reset = false;
        row.time_ns = o.time_ns;
        row.pid = o.pid;
        row.comm = o.comm;
    }
    row.json = std::move(json);
    return row;
}

StoreRow make_store_row(const Event &event) { return make_store_row(event, to_json_line(event)); }

std::string Store::append(const std::vector<Event> &events)
{
    std::vector<StoreRow> rows;
    rows.reserve(events.size());
    for (const Event &event : events)
        rows.push_back(make_store_row(event));
    return append(rows);
}

std::string Store::append(const std::vector<StoreRow> &rows)
{
    if (rows.empty())
        return {};
    if (std::string err = exec(db_, "BEGIN"); !err.empty())
        return err;
    Statement st(db_,
                 "INSERT INTO records (time_ns, time, type, pid, comm, role, direction, remote, cause, "
                 "confidence, idle_ms, pool_idle_ms, json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)");
    std::string err = st.ok() ? std::string() : st.error();
    for (const StoreRow &row : rows) {
        if (!err.empty())
            break;
        sqlite3_reset(st.get());
        sqlite3_clear_bindings(st.get());
        st.bind_int(1, row.time_ns);
        st.bind_text(2, format_rfc3339_us(row.time_ns));  // as in the JSON
        st.bind_static_or_null(3, row.is_reset ? "rst" : "oom");
        if (row.pid) {
            st.bind_int(4, *row.pid);
            st.bind_text(5, row.comm);
        }
        if (row.is_reset) {
            st.bind_static_or_null(6, row.role);
            st.bind_static_or_null(7, row.direction);
            st.bind_text_or_null(8, row.remote);
            st.bind_static_or_null(9, row.cause);
            st.bind_static_or_null(10, row.confidence);
            st.bind_real_or_null(11, row.idle_ms);
            st.bind_real_or_null(12, row.pool_idle_ms);
        }
        st.bind_text(13, row.json);
        if (sqlite3_step(st.get()) != SQLITE_DONE)
            err = sqlite3_errmsg(db_);
    }
    if (err.empty())
        err = exec(db_, "COMMIT");
    if (!err.empty())
        exec(db_, "ROLLBACK");
    return err;
}

void Store::for_each(int64_t since_ns, const std::function<void(Event &&)> &fn, uint64_t *skipped) const
{
    Statement st(db_, "SELECT json FROM records WHERE time_ns >= ? ORDER BY id");
    if (!st.ok())
        throw FatalError("cannot read store " + path_ + ": " + st.error());
    st.bind_int(1, since_ns);
    int rc;
    while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
        const char *text = reinterpret_cast<const char *>(sqlite3_column_text(st.get(), 0));
        auto j = nlohmann::json::parse(text ? text : "", nullptr, /*allow_exceptions=*/false);
        auto event = event_from_json(j);
        if (!event) {
            if (skipped)
                ++*skipped;
            continue;
        }
        fn(std::move(*event));
    }
    if (rc != SQLITE_DONE)
        throw FatalError("cannot read store " + path_ + ": " + sqlite3_errmsg(db_));
}

uint64_t Store::count() const { return query_int(db_, "SELECT count(*) FROM records"); }

std::vector<Store::StoredReset> Store::upstream_resets(int64_t from_ns, int64_t to_ns, size_t limit) const
{
    Statement st(db_,
                 "SELECT id, time_ns, json FROM records WHERE time_ns >= ? AND time_ns < ? AND type = 'rst' "
                 "AND role = 'upstream' AND direction = 'received' AND pid IS NOT NULL ORDER BY time_ns, id LIMIT ?");
    if (!st.ok())
        throw FatalError("cannot read store " + path_ + ": " + st.error());
    st.bind_int(1, from_ns);
    st.bind_int(2, to_ns);
    st.bind_int(3, static_cast<int64_t>(limit));
    std::vector<StoredReset> out;
    int rc;
    while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
        const char *text = reinterpret_cast<const char *>(sqlite3_column_text(st.get(), 2));
        out.push_back({sqlite3_column_int64(st.get(), 0), sqlite3_column_int64(st.get(), 1), text ? text : ""});
    }
    if (rc != SQLITE_DONE)
        throw FatalError("cannot read store " + path_ + ": " + sqlite3_errmsg(db_));
    return out;
}

std::optional<int64_t> Store::first_time_ns() const
{
    Statement st(db_, "SELECT min(time_ns) FROM records");
    if (!st.ok() || sqlite3_step(st.get()) != SQLITE_ROW || sqlite3_column_type(st.get(), 0) == SQLITE_NULL)
        return std::nullopt;
    return sqlite3_column_int64(st.get(), 0);
}

bool Store::has_records_of(uint32_t pid, int64_t from_ns, int64_t to_ns) const
{
    Statement st(db_, "SELECT 1 FROM records WHERE time_ns >= ? AND time_ns < ? AND pid = ? LIMIT 1");
    st.bind_int(1, from_ns);
    st.bind_int(2, to_ns);
    st.bind_int(3, pid);
    return st.ok() && sqlite3_step(st.get()) == SQLITE_ROW;
}

uint64_t Store::used_bytes() const
{
    int64_t page = query_int(db_, "PRAGMA page_size");
    int64_t pages = query_int(db_, "PRAGMA page_count");
    int64_t free_pages = query_int(db_, "PRAGMA freelist_count");
    return static_cast<uint64_t>(std::max<int64_t>(0, (pages - free_pages) * page));
}

RetentionResult Store::apply_retention(const StoreLimits &limits, int64_t now_ns)
{
    RetentionResult out;
    if (limits.retain_days > 0) {
        Statement st(db_, "DELETE FROM records WHERE time_ns < ?");
        st.bind_int(1, now_ns - static_cast<int64_t>(limits.retain_days * 86400.0 * 1e9));
        if (sqlite3_step(st.get()) == SQLITE_DONE)
            out.deleted_by_age = sqlite3_changes(db_);
    }
    const uint64_t max_bytes = limits.max_db_mb * 1024 * 1024;
    for (int round = 0; limits.max_db_mb > 0 && round < 64; ++round) {
        uint64_t used = used_bytes();
        uint64_t rows = count();
        if (used <= max_bytes || rows == 0)
            break;
        // Delete the oldest rows down to 90% of the limit, so that retention
        // does not run on every batch at the limit. (A tenth of the rows on
        // top of the share over, as before, deleted every row once the store
        // was ten times over: a limit lowered across restarts.)
        const double target = 0.9 * static_cast<double>(max_bytes);
        const double share = (static_cast<double>(used) - target) / static_cast<double>(used);
        int64_t n = std::max<int64_t>(1, static_cast<int64_t>(rows * share));
        Statement st(db_, "DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT ?)");
        st.bind_int(1, n);
        if (sqlite3_step(st.get()) != SQLITE_DONE)
            break;
        out.deleted_by_size += sqlite3_changes(db_);
    }
    if (out.deleted_by_age || out.deleted_by_size) {
        exec(db_, "PRAGMA incremental_vacuum");
        exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)");
    }
    return out;
}

// ---- StoreWriter -------------------------------------------------------------

StoreWriter::StoreWriter(Opener opener, Options options)
    : opener_(std::move(opener)), options_(options), store_(opener_())
{
    path_ = store_->path();
    store_->limit_wal_file(options_.checkpoint_pages);
    retention(/*log_always=*/false);
    thread_ = std::thread([this] { loop(); });
    checkpoint_thread_ = std::thread([this] { checkpoint_loop(); });
}

StoreWriter::~StoreWriter() { stop(); }

bool StoreWriter::push(StoreRow row)
{
    const size_t bytes = row.footprint();
    std::unique_lock lock(mu_);
    auto fits = [&] { return queued_bytes_ + bytes <= options_.queue_capacity_bytes; };
    const auto wait_for_room = !fits() && !wait_ran_out_ && !stopping_ && options_.wait_for_room
                                   ? options_.wait_for_room()
                                   : std::chrono::milliseconds(0);
    if (wait_for_room.count() > 0) {
        const auto start = std::chrono::steady_clock::now();
        bool room = room_.wait_for(lock, wait_for_room, [&] { return fits() || stopping_; }) && fits();
        ++stats_.waits_for_room;
        stats_.waited_for_room +=
            std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
        wait_ran_out_ = !room;
    }
    if (!fits()) {
        ++stats_.dropped_queue_full;
        return false;
    }
    queued_bytes_ += bytes;
    stats_.queue_peak_bytes = std::max<uint64_t>(stats_.queue_peak_bytes, queued_bytes_);
    queue_.push_back(std::move(row));
    if (batch_ready())
        wake_.notify_one();
    return true;
}

void StoreWriter::flush()
{
    std::unique_lock lock(mu_);
    if (stopping_)
        return;  // stop() flushes
    uint64_t ticket = ++flush_requested_;
    wake_.notify_one();
    flushed_.wait(lock, [&] { return flush_done_ >= ticket; });
}

void StoreWriter::reopen()
{
    std::lock_guard lock(mu_);
    reopen_requested_ = true;
    wake_.notify_one();
}

void StoreWriter::stop()
{
    {
        std::lock_guard lock(mu_);
        if (!thread_.joinable())
            return;
        stopping_ = true;
        wake_.notify_one();
        room_.notify_all();
        checkpoint_wake_.notify_one();
    }
    thread_.join();
    checkpoint_thread_.join();
}

StoreWriterStats StoreWriter::stats() const
{
    std::lock_guard lock(mu_);
    StoreWriterStats s = stats_;
    s.pending = queue_.size();
    return s;
}

void StoreWriter::loop()
{
    using clock = std::chrono::steady_clock;
    auto next_retention = clock::now() + options_.retention_interval;
    std::vector<StoreRow> batch;
    for (;;) {
        bool stopping, reopen;
        uint64_t flush_ticket;
        {
            std::unique_lock lock(mu_);
            wake_.wait_for(lock, options_.commit_interval, [&] {
                return stopping_ || reopen_requested_ || flush_requested_ > flush_done_ ||
                       batch_ready();
            });
            stopping = stopping_;
            reopen = reopen_requested_;
            reopen_requested_ = false;
            flush_ticket = flush_requested_;
            batch.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
            queue_.clear();
            queued_bytes_ = 0;
            wait_ran_out_ = false;
        }
        room_.notify_all();
        write_batch(batch);
        if (store_ && store_->wal_pages() >= options_.wal_limit_pages) {
            // SQLite refuses a checkpoint at once (no busy wait) while
            // another runs: under load the passive one was often running,
            // and the WAL grew past 10 MB. So wait for it first.
            std::lock_guard checkpointing(checkpointing_);
            if (std::string err = store_->checkpoint_and_restart_wal(); !err.empty())
                spdlog::debug("store {}: checkpoint by the writer: {}", path_, err);
        } else if (store_ && store_->wal_pages() >= options_.checkpoint_pages) {
            std::lock_guard lock(mu_);
            checkpoint_wanted_ = true;
            checkpoint_wake_.notify_one();
        }
        if (reopen) {
            // Close first: the lock is ours, and the new open takes it again.
            store_.reset();
            try {
                store_ = opener_();
                store_->limit_wal_file(options_.checkpoint_pages);
                spdlog::info("store {} reopened", path_);
            } catch (const FatalError &e) {
                spdlog::error("cannot reopen the store: {} (records are counted as lost until the next SIGHUP)",
                              e.what());
            }
        }
        if (clock::now() >= next_retention) {
            retention(false);
            next_retention = clock::now() + options_.retention_interval;
        }
        {
            std::lock_guard lock(mu_);
            flush_done_ = std::max(flush_done_, flush_ticket);
        }
        flushed_.notify_all();
        if (stopping)
            break;
    }
    // Nothing more can be flushed; wake anyone still waiting.
    std::lock_guard lock(mu_);
    flush_done_ = flush_requested_;
    flushed_.notify_all();
}

// A checkpoint is asked for after a commit that left the WAL past
// checkpoint_pages; until it is done, the writer goes on appending. With
// SQLite's default (auto-checkpoint on the committing thread) the writer
// sat in fsync for 5-45 ms now and then, and a storm filled the queue
// meanwhile (docs/BENCHMARKS.md). A PASSIVE checkpoint never waits for the
// writer, and the WAL starts over only when a commit finds all of it
// copied: a writer that never pauses would grow it without end. So past
// wal_limit_pages the writer checkpoints itself, in RESTART mode, between
// two transactions: what is left to copy is what the last passive
// checkpoint missed.
void StoreWriter::checkpoint_loop()
{
    std::chrono::steady_clock::time_point last_error_log{};
    for (;;) {
        {
            std::unique_lock lock(mu_);
            checkpoint_wake_.wait(lock, [&] { return stopping_ || checkpoint_wanted_; });
            if (stopping_)
                return;  // the writer's connection checkpoints as it closes
            checkpoint_wanted_ = false;
        }
        std::string err;
        {
            std::lock_guard checkpointing(checkpointing_);
            err = Store::checkpoint(path_);
        }
        auto now = std::chrono::steady_clock::now();
        if (!err.empty() && now - last_error_log >= std::chrono::seconds(60)) {
            last_error_log = now;
            spdlog::warn("store {}: checkpoint failed: {} (the WAL grows until one succeeds)", path_, err);
        }
    }
}

void StoreWriter::write_batch(std::vector<StoreRow> &batch)
{
    if (batch.empty())
        return;
    const auto start = std::chrono::steady_clock::now();
    std::string err = store_ ? store_->append(batch) : std::string("the store is not open");
    const auto took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
    std::lock_guard lock(mu_);
    stats_.longest_write = std::max(stats_.longest_write, took);
    if (err.empty()) {
        stats_.written += batch.size();
    } else {
        stats_.failed += batch.size();
        // A full disk fails every batch: say so once a minute, not per batch.
        auto now = std::chrono::steady_clock::now();
        if (!last_error_log_ || now - *last_error_log_ >= std::chrono::seconds(60)) {
            last_error_log_ = now;
            spdlog::error("store {}: {}; {} records not written so far (tracing goes on)", path_, err, stats_.failed);
        }
    }
    batch.clear();
}

void StoreWriter::retention(bool log_always)
{
    if (!store_)
        return;
    RetentionResult r = store_->apply_retention(options_.limits, realtime_now_ns());
    if (r.deleted_by_age || r.deleted_by_size || log_always)
        spdlog::info("store retention: {} records older than {} days and {} more to stay under {} MB deleted",
                     r.deleted_by_age, options_.limits.retain_days, r.deleted_by_size, options_.limits.max_db_mb);
    std::lock_guard lock(mu_);
    stats_.deleted_by_retention += r.deleted_by_age + r.deleted_by_size;
}

}  // namespace rstwatch
