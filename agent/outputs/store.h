// The durable store: every record the agent reports, in SQLite (WAL), so
// that the tables survive a restart and users can query them with sqlite3.
// The schema is documented in docs/STORE.md; bump kSchemaVersion when it
// changes.
//
// Store is one connection, used by one thread. StoreWriter owns the writing
// connection on its own thread behind a bounded queue. When the queue is
// full the consumer waits only as Options::wait_for_room allows (the agent:
// while the ring buffer is less than half full), then drops and counts the
// record; a batch is committed every commit_interval, which bounds what a
// SIGKILL can lose. Checkpoints (WAL into the
// database file, with its fsyncs) run on a third thread, so that a slow
// disk does not stall the writer while the queue fills.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "events/records.h"

struct sqlite3;

namespace rstwatch {

struct StoreLimits {
    double retain_days = 30;     // records older than this are deleted
    uint64_t max_db_mb = 512;    // the oldest records go first past this size
};

struct RetentionResult {
    uint64_t deleted_by_age = 0;
    uint64_t deleted_by_size = 0;
};

// One record as the store writes it: the indexed columns and the JSON text.
// The agent serialises each event once (for its --json output and for the
// store alike), and a queued row holds no more than it will write.
struct StoreRow {
    int64_t time_ns = 0;
    bool is_reset = true;  // else an OOM kill
    std::optional<uint32_t> pid;
    std::string comm, remote;
    // Names from to_string(): static strings, nullptr where the column is NULL.
    const char *role = nullptr, *direction = nullptr, *cause = nullptr, *confidence = nullptr;
    std::optional<double> idle_ms, pool_idle_ms;
    std::string json;

    // Heap bytes it holds, for the writer's queue bound.
    size_t footprint() const;
};

// `json` must be to_json_line(event).
StoreRow make_store_row(const Event &event, std::string json);
StoreRow make_store_row(const Event &event);

class Store {
public:
    static constexpr int kSchemaVersion = 1;

    // For the agent: creates the file (and its directory) if missing, refuses
    // a file that is not an rstwatch store (leaving it untouched), and takes an
    // exclusive lock so that a second agent on the same file is refused.
    // Throws FatalError with a hint.
    static std::unique_ptr<Store> open_for_writing(const std::string &path);
    // What open_for_writing would refuse (a file that is not a store, in
    // use, not writable; a folder that cannot be made), found without
    // creating or changing anything. Throws FatalError.
    static void check_can_write(const std::string &path);
    // For dump: no lock, no writes; the file must exist and be a store.
    static std::unique_ptr<Store> open_read_only(const std::string &path);
    ~Store();
    Store(const Store &) = delete;
    Store &operator=(const Store &) = delete;

    const std::string &path() const { return path_; }

    // All in one transaction. Returns "" or SQLite's error (disk full, ...);
    // on error nothing of the batch is stored.
    std::string append(const std::vector<StoreRow> &rows);
    std::string append(const std::vector<Event> &events);
    // Records at or after since_ns (CLOCK_REALTIME), oldest first. Rows whose
    // JSON cannot be read back are skipped and counted in *skipped.
    void for_each(int64_t since_ns, const std::function<void(Event &&)> &fn, uint64_t *skipped = nullptr) const;
    uint64_t count() const;

    // What `rstwatch explain` matches nginx's lines with: received resets on
    // upstream connections with a known owner, from_ns <= time_ns < to_ns,
    // oldest first, at most `limit` (records_time serves the range).
    struct StoredReset {
        int64_t id = 0;
        int64_t time_ns = 0;
        std::string json;
    };
    std::vector<StoredReset> upstream_resets(int64_t from_ns, int64_t to_ns, size_t limit) const;
    // The oldest record's time; nullopt when there is none.
    std::optional<int64_t> first_time_ns() const;
    // Whether any record of process `pid` lies in [from_ns, to_ns).
    bool has_records_of(uint32_t pid, int64_t from_ns, int64_t to_ns) const;

    // Deletes by age, then the oldest rows until the live data fits
    // max_db_mb, and gives freed pages back to the file system.
    RetentionResult apply_retention(const StoreLimits &limits, int64_t now_ns);
    // Bytes of the database file in use (pages minus free pages).
    uint64_t used_bytes() const;

    // Pages in the write-ahead log after this connection's last commit.
    // A writing Store never checkpoints on commit (see StoreWriter).
    int wal_pages() const { return wal_pages_; }
    // Copies what the WAL holds into the database file, on a connection of
    // its own, without blocking the writer (SQLite's PASSIVE mode). The file
    // must exist and be a store. Returns "" or SQLite's error.
    static std::string checkpoint(const std::string &path);
    // On the writing connection, between transactions: copies the rest of
    // the WAL and makes the next commit start it over (RESTART).
    std::string checkpoint_and_restart_wal();
    // SQLite reuses its WAL file rather than shrinking it, so one storm
    // would leave it at its high-water mark (up to wal_limit_pages, 32 MiB)
    // for as long as the agent runs. With this limit the first commit after
    // the WAL starts over truncates the file to `pages` pages (SQLite's
    // journal_size_limit).
    void limit_wal_file(int pages);

private:
    Store(std::string path, sqlite3 *db, int lock_fd);
    static int on_wal_commit(void *self, sqlite3 *, const char *, int pages);

    std::string path_;
    sqlite3 *db_ = nullptr;
    int lock_fd_ = -1;
    int wal_pages_ = 0;
};

struct StoreWriterStats {
    uint64_t written = 0;
    uint64_t dropped_queue_full = 0;  // the writer could not keep up
    uint64_t failed = 0;              // batches SQLite refused (disk full, ...)
    uint64_t pending = 0;
    uint64_t deleted_by_retention = 0;
    // The storm margin: the most the queue held (of queue_capacity_bytes)
    // and the longest time one batch took to write; a queue that peaks near
    // its capacity drops the next time the writer waits a little longer.
    uint64_t queue_peak_bytes = 0;
    std::chrono::microseconds longest_write{0};
    // Pushes that found the queue full and waited for room (see push()),
    // and for how long in all.
    uint64_t waits_for_room = 0;
    std::chrono::microseconds waited_for_room{0};

    uint64_t lost() const { return dropped_queue_full + failed; }
};

class StoreWriter {
public:
    struct Options {
        // A queued row is about 1 KiB (mostly its JSON text). The bound is in
        // bytes, so that a storm's backlog costs at most this much memory;
        // past it, push() waits or drops (counted). 2 MiB (about 2000 rows,
        // 45 ms of a 44k resets/s storm) fills in the benchmark's storms,
        // but the agent's pushes wait for room while its ring buffer holds
        // what arrives meanwhile: there about 14 waits of 10 ms in a 5 s
        // storm, nothing dropped, and 2 MiB less at the peak than 4 MiB
        // without waits, which dropped now and then (docs/BENCHMARKS.md).
        size_t queue_capacity_bytes = 2u << 20;
        std::chrono::milliseconds commit_interval{250};  // well inside the one-second promise
        // Commit before the interval is up when this many rows, or this
        // many bytes (a quarter of the queue), wait.
        size_t batch_size = 4096;
        size_t batch_bytes = 512u << 10;
        std::chrono::seconds retention_interval{60};
        // A checkpoint on the checkpoint thread after a commit that leaves
        // this many pages in the WAL (SQLite's own auto-checkpoint
        // threshold, about 4 MiB) ...
        int checkpoint_pages = 1000;
        // ... and one by the writer itself past this many (32 MiB): see
        // checkpoint_loop().
        int wal_limit_pages = 8192;
        StoreLimits limits;
        // How long a push that finds the queue full may wait for the
        // writer; asked on the pushing thread, and only then. Empty: never.
        std::function<std::chrono::milliseconds()> wait_for_room;
    };
    using Opener = std::function<std::unique_ptr<Store>()>;

    // `opener` is called once here (its FatalError propagates: the agent
    // does not start with an unusable store) and again on reopen().
    StoreWriter(Opener opener, Options options);
    ~StoreWriter();  // stop()
    StoreWriter(const StoreWriter &) = delete;
    StoreWriter &operator=(const StoreWriter &) = delete;

    // Never blocks on SQLite. When the queue is full, waits at most what
    // Options::wait_for_room says for the writer to take it, unless a wait
    // has already run out since the writer last took a batch: a stuck disk
    // costs the caller one wait, not one per row. False (and counted) when
    // it stays full.
    bool push(StoreRow row);
    bool push(const Event &event) { return push(make_store_row(event)); }
    // Commits what is queued now; returns once it is written (or failed).
    void flush();
    // Closes and reopens the file on the writer's thread (SIGHUP, logrotate).
    void reopen();
    // Flushes, then ends the thread. Idempotent.
    void stop();
    StoreWriterStats stats() const;
    const std::string &path() const { return path_; }
    const Options &options() const { return options_; }

private:
    void loop();
    void write_batch(std::vector<StoreRow> &batch);
    // Under mu_: enough waits to commit before the interval is up.
    bool batch_ready() const
    {
        return queue_.size() >= options_.batch_size || queued_bytes_ >= options_.batch_bytes;
    }
    void retention(bool log_always);
    void checkpoint_loop();

    Opener opener_;
    Options options_;
    std::string path_;
    std::unique_ptr<Store> store_;  // the writer thread's, after construction

    mutable std::mutex mu_;
    std::condition_variable wake_;
    std::condition_variable flushed_;
    std::condition_variable room_;   // the writer took the queue
    bool wait_ran_out_ = false;      // since it last did
    std::deque<StoreRow> queue_;
    size_t queued_bytes_ = 0;
    bool stopping_ = false;
    bool reopen_requested_ = false;
    uint64_t flush_requested_ = 0;
    uint64_t flush_done_ = 0;
    StoreWriterStats stats_;
    // Unset until the first error: steady_clock counts from boot, so a zero
    // time point would silence errors in a host's first minute.
    std::optional<std::chrono::steady_clock::time_point> last_error_log_;
    bool checkpoint_wanted_ = false;
    std::condition_variable checkpoint_wake_;
    std::thread thread_;
    std::mutex checkpointing_;  // one checkpoint at a time: the passive one, or the writer's restart
    std::thread checkpoint_thread_;
};

}  // namespace rstwatch
