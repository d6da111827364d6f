#include "output.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace rstwatch {

namespace {

// How often a writer waiting for room looks at stop()'s deadline.
constexpr int kPollStepMs = 100;
// Larger writes than stdio's 64 KiB buffer made, fewer of them in a storm.
constexpr size_t kChunkBytes = 256u << 10;

uint64_t count_lines(const char *data, size_t size) { return std::count(data, data + size, '\n'); }

}  // namespace

OutputWriter::OutputWriter(int fd, Options options) : fd_(fd), options_(options)
{
    struct stat st{};
    if (fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
        mode_ = Mode::Blocking;  // no reader to wait for
    } else {
        // O_NONBLOCK on fd itself would change the file description the
        // shell (or whoever shares the pipe or terminal) writes through.
        // Sockets cannot be opened this way (ENXIO).
        std::string self = "/proc/self/fd/" + std::to_string(fd);
        own_fd_ = open(self.c_str(), O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (own_fd_ >= 0) {
            fd_ = own_fd_;
            mode_ = Mode::NonBlocking;
        } else {
            mode_ = Mode::PollFirst;
        }
    }
    thread_ = std::thread([this] {
        // A reader that left makes write() fail with EPIPE here, instead of
        // SIGPIPE ending the agent and the store with it.
        sigset_t pipe_only;
        sigemptyset(&pipe_only);
        sigaddset(&pipe_only, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_only, nullptr);
        loop();
    });
}

OutputWriter::~OutputWriter()
{
    stop();
    if (own_fd_ >= 0)
        close(own_fd_);
}

bool OutputWriter::push(std::string text)
{
    std::lock_guard lock(mu_);
    if (stopping_ || stats_.broken_errno || queued_bytes_ + text.size() > options_.queue_capacity_bytes) {
        stats_.lines_dropped += count_lines(text.data(), text.size());
        return false;
    }
    queued_bytes_ += text.size();
    queue_.push_back(std::move(text));
    if (queue_.size() == 1)
        wake_.notify_one();
    return true;
}

void OutputWriter::stop()
{
    {
        std::lock_guard lock(mu_);
        if (!stopping_) {
            stopping_ = true;
            deadline_ = std::chrono::steady_clock::now() + options_.drain_timeout;
        }
    }
    wake_.notify_one();
    if (thread_.joinable())
        thread_.join();
}

OutputStats OutputWriter::stats() const
{
    std::lock_guard lock(mu_);
    return stats_;
}

bool OutputWriter::past_deadline() const
{
    std::lock_guard lock(mu_);
    return stopping_ && std::chrono::steady_clock::now() >= deadline_;
}

void OutputWriter::loop()
{
    std::string chunk;
    for (;;) {
        {
            std::unique_lock lock(mu_);
            wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (queue_.empty() || give_up_)
                break;
            // What is queued, in one write where the file takes it; at
            // most kChunkBytes, which is all the memory the chunk keeps.
            chunk.clear();
            while (!queue_.empty() && (chunk.empty() || chunk.size() + queue_.front().size() <= kChunkBytes)) {
                chunk += queue_.front();
                queue_.pop_front();
            }
        }
        size_t written = write_chunk(chunk);
        std::lock_guard lock(mu_);
        queued_bytes_ -= chunk.size();
        stats_.lines_written += count_lines(chunk.data(), written);
        // A line cut short by a failed write counts as dropped.
        stats_.lines_dropped += count_lines(chunk.data() + written, chunk.size() - written);
        if (give_up_)
            break;
    }
    // Stopped, past the deadline, or output ended: what is left is dropped.
    std::lock_guard lock(mu_);
    for (const auto &text : queue_)
        stats_.lines_dropped += count_lines(text.data(), text.size());
    queue_.clear();
    queued_bytes_ = 0;
}

size_t OutputWriter::write_chunk(const std::string &chunk)
{
    size_t off = 0;
    while (off < chunk.size()) {
        size_t want = chunk.size() - off;
        if (mode_ == Mode::PollFirst) {
            pollfd p{fd_, POLLOUT, 0};
            int ready = poll(&p, 1, kPollStepMs);
            if (ready == 0 || (ready < 0 && errno == EINTR)) {
                if (past_deadline()) {
                    give_up_ = true;
                    return off;
                }
                continue;
            }
            // POLLOUT promises room for PIPE_BUF bytes (a pipe slot, a
            // quarter of a socket's buffer): no more, so that the write
            // cannot block.
            want = std::min<size_t>(want, PIPE_BUF);
        }
        ssize_t n = write(fd_, chunk.data() + off, want);
        if (n > 0) {
            off += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN && mode_ == Mode::NonBlocking) {
            if (past_deadline()) {
                give_up_ = true;
                return off;
            }
            pollfd p{fd_, POLLOUT, 0};
            poll(&p, 1, kPollStepMs);
            continue;
        }
        int err = n < 0 ? errno : EIO;
        {
            std::lock_guard lock(mu_);
            stats_.broken_errno = err;
        }
        spdlog::warn("stdout: {}; events are no longer printed (the store, the tables and dump go on)",
                     std::strerror(err));
        give_up_ = true;
        return off;
    }
    return off;
}

}  // namespace rstwatch
