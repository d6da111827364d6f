// The agent's stdout (event lines, tables), written without ever blocking.
//
// stdout is a view. The records also go to the tables, the store and the
// control socket, all fed by the ring-buffer consumer, so a reader that
// stops reading (`rstwatch run | less`, paused; a stuck terminal; a full
// journal socket) must not stall that consumer: with blocking writes (stdio)
// it did, `dump` timed out, the ring buffer filled, and SIGTERM hung in the
// last write. So lines wait in a bounded buffer, past which they are
// dropped and counted, and writes that would block are not made: what the
// reader does not take now is tried again after the next batch of events.
//
// The consumer's own thread writes, as stdio did: a writer thread of its
// own was tried and, on two busy cores, woke too late to keep up with a
// reset storm's 27 MB/s of JSON (up to half the lines dropped with a
// 256 KiB buffer, 6 MiB more peak RSS with 2 MiB; docs/BENCHMARKS.md).
#pragma once

#include <spdlog/sinks/base_sink.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace rstwatch {

struct OutputStats {
    uint64_t lines_written = 0;
    // Buffer full (the reader is slower than the records, or stopped),
    // the reader gone (EPIPE), or still buffered when stop() gave up.
    uint64_t lines_dropped = 0;
    // errno of the write that ended output for good (EPIPE, EIO, ...), or 0.
    int broken_errno = 0;
};

class NonBlockingOutput {
public:
    struct Options {
        // Lines the reader has not taken yet: about 3000 JSON lines.
        size_t buffer_bytes = 2u << 20;
        // How long stop() waits for the reader to take what is buffered.
        std::chrono::milliseconds drain_timeout{2000};
        // Log when output ends for good; not the log's own output, which
        // cannot say that it broke.
        bool log_when_broken = true;
    };

    // Does not own `fd`. A regular file is written with plain write()s
    // (there is no reader to wait for); a pipe or terminal through a
    // non-blocking file description of its own, opened on /proc/self/fd/N
    // (O_NONBLOCK on fd itself would change the description the shell
    // shares); a socket with MSG_DONTWAIT. Makes the process ignore
    // SIGPIPE: a reader that left ends output (EPIPE), not the agent.
    NonBlockingOutput(int fd, Options options);
    ~NonBlockingOutput();  // stop()
    NonBlockingOutput(const NonBlockingOutput &) = delete;
    NonBlockingOutput &operator=(const NonBlockingOutput &) = delete;

    // `text`: whole lines, each ending in '\n'. false (and the lines counted
    // as dropped) when the buffer has no room or output has ended. Writes
    // once a batch's worth is buffered.
    bool push(std::string_view text);
    // One line, holding no '\n' (a JSON event), which this adds. The
    // event stream's path: nothing scans it for line ends.
    bool push_line(std::string_view line);
    // Writes what the reader takes now.
    void flush();
    // Writes, waiting up to `timeout` for the reader to take everything;
    // true when it did.
    bool drain(std::chrono::milliseconds timeout);
    // Something is buffered that the reader has not taken: flush() again soon.
    bool pending() const { return !buffer_.empty(); }
    // flush()es for up to drain_timeout, then drops and counts the rest.
    // Idempotent; push() drops after it.
    void stop();
    const OutputStats &stats() const { return stats_; }

private:
    enum class Mode { Blocking, NonBlocking, Socket };

    // `lines`: how many '\n' text and end hold, which the caller knows.
    bool append(std::string_view text, std::string_view end, uint64_t lines);
    // Writes from the front of buffer_ until it is empty or the next write
    // would block; false when output ended for good.
    bool write_some();

    int fd_ = -1;
    int own_fd_ = -1;  // the non-blocking reopen, closed by the destructor
    Mode mode_ = Mode::Blocking;
    Options options_;
    std::string buffer_;
    size_t written_ = 0;  // bytes at the front of buffer_ already written
    // Lines in buffer_ whose '\n' is not written yet: counted as lines are
    // added, so that a write the reader takes whole scans nothing.
    uint64_t unwritten_lines_ = 0;
    // push() writes when this much is unwritten: after a write the reader
    // did not take, not again until a batch more is buffered.
    size_t write_at_ = 0;
    bool stopped_ = false;
    OutputStats stats_;
};

// The agent's log on stderr (spdlog's sink), written as stdout is. With
// `rstwatch run 2>&1 | less`, paused, the log goes into the same stuck pipe
// as the events, and the first warning (lines not printed) stopped the
// ring-buffer consumer in write() all the same.
//
// A reader that reads, however slowly (a terminal taking a burst of
// libbpf's debug output), loses nothing: each line waits for it up to
// 100 ms. One that does not take a line within that is stuck: from then on
// lines wait in a 64 KiB buffer without anyone waiting for the reader, past
// it they are dropped, and once it has taken everything again a line says
// how many were lost.
class NonBlockingLogSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    explicit NonBlockingLogSink(int fd);

protected:
    void sink_it_(const spdlog::details::log_msg &msg) override;
    void flush_() override;

private:
    NonBlockingOutput out_;
    bool stuck_ = false;
    uint64_t dropped_reported_ = 0;
};

}  // namespace rstwatch
