#include "output.h"

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

bool NonBlockingOutput::push(std::string_view text) { return append(text, ""); }

bool NonBlockingOutput::push_line(std::string_view line) { return append(line, "\n"); }

bool NonBlockingOutput::append(std::string_view text, std::string_view end)
{
    if (stopped_ || stats_.broken_errno || buffer_.size() - written_ + text.size() + end.size() > options_.buffer_bytes) {
        stats_.lines_dropped += count_lines(text) + count_lines(end);
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
            stats_.lines_written += count_lines({data, static_cast<size_t>(n)});
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
        stats_.lines_dropped += count_lines({data, size});
        buffer_.clear();
        written_ = 0;
        spdlog::warn("stdout: {}; events are no longer printed (the tables, the store and dump go on)",
                     std::strerror(stats_.broken_errno));
        return false;
    }
    buffer_.clear();
    written_ = 0;
    write_at_ = kWriteAtBytes;
    return true;
}

void NonBlockingOutput::stop()
{
    if (stopped_)
        return;
    stopped_ = true;
    const auto deadline = std::chrono::steady_clock::now() + options_.drain_timeout;
    while (write_some() && !buffer_.empty() && std::chrono::steady_clock::now() < deadline) {
        pollfd p{fd_, POLLOUT, 0};
        poll(&p, 1, kDrainPollMs);
    }
    // A line the reader took part of is counted as dropped.
    stats_.lines_dropped += count_lines(std::string_view(buffer_).substr(written_));
    buffer_.clear();
    written_ = 0;
}

}  // namespace rstwatch
