// The agent's stdout (event lines, tables), written from a thread of its own.
//
// stdout is a view. The records also go to the tables, the store and the
// control socket, all fed by the ring-buffer consumer, so a reader that
// stops reading (`rstwatch run | less`, paused; a stuck terminal; a full
// journal socket) must not stall that consumer: with blocking writes on the
// consumer's thread it did, `dump` timed out, the ring buffer filled, and
// SIGTERM hung in the last write. So lines wait in a bounded queue, past
// which they are dropped and counted, and the writer never sleeps in
// write(): it waits for room with poll(), in steps it can give up between,
// and stop() gives what is queued a bounded time to go out.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

namespace rstwatch {

struct OutputStats {
    uint64_t lines_written = 0;
    // Queue full (the reader is slower than the records), the reader gone
    // (EPIPE), or still queued when stop() gave up.
    uint64_t lines_dropped = 0;
    // errno of the write that ended output for good (EPIPE, EIO, ...), or 0.
    int broken_errno = 0;
};

class OutputWriter {
public:
    struct Options {
        // About 6000 JSON lines; a bound in bytes, like the store's queue.
        size_t queue_capacity_bytes = 4u << 20;
        // How long stop() waits for what is queued to be written.
        std::chrono::milliseconds drain_timeout{2000};
    };

    // Does not own `fd`. A regular file is written with plain write()s; a
    // pipe or terminal through a non-blocking file description of its own
    // (opened on /proc/self/fd/N, so the shell's stays as it was); anything
    // else (a socket) in writes of at most PIPE_BUF after poll() says there
    // is room, which then cannot block.
    OutputWriter(int fd, Options options);
    ~OutputWriter();  // stop()
    OutputWriter(const OutputWriter &) = delete;
    OutputWriter &operator=(const OutputWriter &) = delete;

    // `text`: whole lines, each ending in '\n'. Never blocks; false (and the
    // lines counted as dropped) when the queue has no room or output ended.
    bool push(std::string text);
    // Writes what is queued, up to drain_timeout; the rest is dropped and
    // counted. Then ends the thread. Idempotent.
    void stop();
    OutputStats stats() const;

private:
    enum class Mode { Blocking, NonBlocking, PollFirst };

    void loop();
    // Writes all of `chunk` unless output ends or stop()'s deadline passes;
    // returns the bytes written.
    size_t write_chunk(const std::string &chunk);
    bool past_deadline() const;

    int fd_ = -1;
    int own_fd_ = -1;  // the non-blocking reopen, closed by the destructor
    Mode mode_ = Mode::Blocking;
    Options options_;

    mutable std::mutex mu_;
    std::condition_variable wake_;
    std::deque<std::string> queue_;
    size_t queued_bytes_ = 0;  // queue_ plus the chunk being written
    bool stopping_ = false;
    std::chrono::steady_clock::time_point deadline_{};
    OutputStats stats_;
    std::atomic<bool> give_up_{false};
    std::thread thread_;
};

}  // namespace rstwatch
