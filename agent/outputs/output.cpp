#include "outputs/output.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace rstwatch {

namespace {

// push() writes once this much is buffered, as stdio's buffer did; the
// agent flush()es after every batch of events as well.
constexpr size_t kWriteAtBytes = 64u << 10;
// While stop() waits for a reader, how often it looks at the clock.
constexpr int kDrainPollMs = 100;

uint64_t count_lines(std::string_view text) { return std::count(text.begin(), text.end(), '\n'); }

}  // namespace

NonBlockingOutput::NonBlockingOutput(int fd, Options options) : fd_(fd), options_(options)
{
    signal(SIGPIPE, SIG_IGN);
    struct stat st{};
    if (fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
        mode_ = Mode::Blocking;
    } else if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) {
        mode_ = Mode::Socket;
    } else {
        std::string self = "/proc/self/fd/" + std::to_string(fd);
        own_fd_ = open(self.c_str(), O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (own_fd_ >= 0) {
            fd_ = own_fd_;
            mode_ = Mode::NonBlocking;
        } else {
            // A FIFO without a reader (ENXIO) or fd not open: the first
            // write says which, and output ends there. Without /proc,
            // writes block as stdio's did.
            mode_ = Mode::Blocking;
        }
    }
    buffer_.reserve(kWriteAtBytes * 2);
    write_at_ = kWriteAtBytes;
}

NonBlockingOutput::~NonBlockingOutput()
{
    stop();
    if (own_fd_ >= 0)
        close(own_fd_);
}

bool NonBlockingOutput::push(std::string_view text) { return append(text, "", count_lines(text)); }

bool NonBlockingOutput::push_line(std::string_view line) { return append(line, "\n", 1); }

bool NonBlockingOutput::append(std::string_view text, std::string_view end, uint64_t lines)
{
    if (stopped_ || stats_.broken_errno || buffer_.size() - written_ + text.size() + end.size() > options_.buffer_bytes) {
        stats_.lines_dropped += lines;
        return false;
    }
    // Written bytes leave the front only now, when a line is added: one
    // move per batch, not per partial write.
    if (written_) {
        buffer_.erase(0, written_);
        write_at_ -= std::min(write_at_, written_);
        written_ = 0;
    }
    buffer_.append(text);
    buffer_.append(end);
    unwritten_lines_ += lines;
    if (buffer_.size() >= write_at_)
        write_some();
    return true;
}

void NonBlockingOutput::flush()
{
    if (!buffer_.empty())
        write_some();
}

bool NonBlockingOutput::write_some()
{
    while (written_ < buffer_.size()) {
        const char *data = buffer_.data() + written_;
        const size_t size = buffer_.size() - written_;
        ssize_t n = mode_ == Mode::Socket ? send(fd_, data, size, MSG_DONTWAIT | MSG_NOSIGNAL) : write(fd_, data, size);
        if (n > 0) {
            // Only a write the reader took part of is scanned for the lines it finished.
            const uint64_t done = static_cast<size_t>(n) == size ? unwritten_lines_
                                                                  : count_lines({data, static_cast<size_t>(n)});
            stats_.lines_written += done;
            unwritten_lines_ -= done;
            written_ += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            write_at_ = size + written_ + kWriteAtBytes;  // no write per line while it is stuck
            return true;  // the reader has not taken the rest yet
        }
        stats_.broken_errno = n < 0 ? errno : EIO;
        stats_.lines_dropped += unwritten_lines_;
        unwritten_lines_ = 0;
        buffer_.clear();
        written_ = 0;
        if (options_.log_when_broken)
            spdlog::warn("stdout: {}; events are no longer printed (the tables, the store and dump go on)",
                         std::strerror(stats_.broken_errno));
        return false;
    }
    buffer_.clear();
    written_ = 0;
    write_at_ = kWriteAtBytes;
    return true;
}

bool NonBlockingOutput::drain(std::chrono::milliseconds timeout)
{
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (write_some() && !buffer_.empty()) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            return false;
        pollfd p{fd_, POLLOUT, 0};
        poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), kDrainPollMs)));
    }
    return buffer_.empty();
}

void NonBlockingOutput::stop()
{
    if (stopped_)
        return;
    stopped_ = true;
    drain(options_.drain_timeout);
    // A line the reader took part of is counted as dropped.
    stats_.lines_dropped += unwritten_lines_;
    unwritten_lines_ = 0;
    buffer_.clear();
    written_ = 0;
}

namespace {

NonBlockingOutput::Options log_output_options()
{
    NonBlockingOutput::Options o;
    o.buffer_bytes = 64u << 10;
    o.drain_timeout = std::chrono::milliseconds(1000);
    o.log_when_broken = false;  // it is the log
    return o;
}

// How long a line waits for a reader that is behind before it counts as
// stuck.
constexpr std::chrono::milliseconds kLogLineWait{100};

}  // namespace

NonBlockingLogSink::NonBlockingLogSink(int fd) : out_(fd, log_output_options()) {}

void NonBlockingLogSink::sink_it_(const spdlog::details::log_msg &msg)
{
    spdlog::memory_buf_t text;
    formatter_->format(msg, text);
    out_.push({text.data(), text.size()});
    if (stuck_) {
        out_.flush();
        stuck_ = out_.pending();
    } else {
        stuck_ = !out_.drain(kLogLineWait);
    }
    if (!stuck_ && out_.stats().lines_dropped > dropped_reported_) {
        // The reader has taken everything again: say what it missed.
        const uint64_t dropped = out_.stats().lines_dropped;
        out_.push("rstwatch: [warning] " + std::to_string(dropped - dropped_reported_) +
                  " log lines not written: stderr was not being read\n");
        out_.flush();
        dropped_reported_ = dropped;
    }
}

void NonBlockingLogSink::flush_() { out_.flush(); }

}  // namespace rstwatch
