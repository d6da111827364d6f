#include "control/log_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>

#include "common/errors.h"

namespace rstwatch {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 256 * 1024;
// The first and the last bytes read, to tell a file rewritten after
// copytruncate: nginx's lines begin with their time, so a rewritten file
// begins otherwise.
constexpr size_t kFingerprint = 64;

class FdSource : public ByteSource {
public:
    explicit FdSource(int fd) : fd_(fd) {}
    ssize_t read(char *buffer, size_t size) override
    {
        ssize_t n;
        do
            n = ::read(fd_, buffer, size);
        while (n < 0 && errno == EINTR);
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n > 0) {
            if (offset < kFingerprint && head.size() == offset)
                head.append(buffer, std::min(static_cast<size_t>(n), kFingerprint - head.size()));
            offset += static_cast<uint64_t>(n);
            tail.append(buffer, static_cast<size_t>(n));
            if (tail.size() > kFingerprint)
                tail.erase(0, tail.size() - kFingerprint);
            last_growth = Clock::now();
        }
        return n;
    }

    uint64_t offset = 0;   // bytes read: the file's read position
    std::string head;      // the first kFingerprint of the file
    std::string tail;      // the last kFingerprint read
    Clock::time_point last_growth = Clock::now();

private:
    int fd_;
};

class GzipSource : public ByteSource {
public:
    // Takes a descriptor of its own: gzclose() closes it.
    explicit GzipSource(int fd) : gz_(gzdopen(dup(fd), "rb")) {}
    ~GzipSource() override
    {
        if (gz_)
            gzclose(gz_);
    }
    ssize_t read(char *buffer, size_t size) override
    {
        if (!gz_)
            return -1;
        int n = gzread(gz_, buffer, static_cast<unsigned>(size));
        return n < 0 ? -1 : n;
    }
    // "" when the stream ended cleanly.
    std::string error() const
    {
        if (!gz_)
            return "cannot read it as gzip";
        int code = Z_OK;
        std::string message = gzerror(gz_, &code);
        if (code == Z_OK || code == Z_STREAM_END)
            return "";
        // zlib names the stream "<fd:N>: "; the caller names the file.
        if (message.rfind("<fd:", 0) == 0 && message.find(": ") != std::string::npos)
            message.erase(0, message.find(": ") + 2);
        return message;
    }

private:
    gzFile gz_;
};

// `size` bytes at `offset`; fewer where the file ends.
std::string read_at(int fd, uint64_t offset, size_t size)
{
    std::string bytes(size, '\0');
    const ssize_t n = pread(fd, bytes.data(), size, static_cast<off_t>(offset));
    bytes.resize(static_cast<size_t>(std::max<ssize_t>(n, 0)));
    return bytes;
}

bool starts_with_gzip_magic(int fd)
{
    unsigned char magic[2] = {};
    return pread(fd, magic, sizeof(magic), 0) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
}

// Throws the error a person can act on, naming the file.
int open_log(const std::string &path)
{
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        const int err = errno;
        if (err == ENOENT)
            throw FatalError(path + ": no such file", "give the path of nginx's error log (its error_log directive)");
        if (err == EACCES)
            throw FatalError(path + ": permission denied", "run as a user that may read it (root, or group adm)");
        throw FatalError(path + ": cannot open: " + std::strerror(err));
    }
    struct stat st{};
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        throw FatalError(path + ": is a directory", "give the error log's file, such as " + path + "/error.log");
    }
    return fd;
}

}  // namespace

// ---- LineSplitter ---------------------------------------------------------------

std::optional<std::string_view> LineSplitter::take_line()
{
    for (;;) {
        const size_t newline = buffer_.find('\n', start_ + scanned_);
        if (newline == std::string::npos) {
            scanned_ = buffer_.size() - start_;
            if (scanned_ < kMaxLine)
                return std::nullopt;
            // Too long for a line of nginx's: keep its start, skip the rest.
            std::string_view cut(buffer_.data() + start_, skipping_ ? 0 : kMaxLine);
            const bool was_skipping = skipping_;
            skipping_ = true;
            start_ = buffer_.size();
            scanned_ = 0;
            if (was_skipping)
                return std::nullopt;
            return cut;
        }
        std::string_view line(buffer_.data() + start_, std::min(newline - start_, kMaxLine));
        start_ = newline + 1;
        scanned_ = 0;
        if (!skipping_)
            return line;
        skipping_ = false;  // that was the end of a cut line
    }
}

std::optional<std::string_view> LineSplitter::next(ByteSource &source, bool final)
{
    for (;;) {
        if (auto line = take_line())
            return line;
        buffer_.erase(0, start_);
        start_ = 0;
        const size_t had = buffer_.size();
        buffer_.resize(had + kReadChunk);
        const ssize_t n = source.read(buffer_.data() + had, kReadChunk);
        buffer_.resize(had + static_cast<size_t>(std::max<ssize_t>(n, 0)));
        if (n > 0)
            continue;
        if (!final || buffer_.empty())
            return std::nullopt;
        // The end, without a newline after the last line.
        const bool was_skipping = skipping_;
        buffer_.resize(was_skipping ? 0 : std::min(buffer_.size(), kMaxLine));
        start_ = buffer_.size();
        scanned_ = 0;
        skipping_ = false;
        if (was_skipping)
            return std::nullopt;
        return std::string_view(buffer_);
    }
}

void LineSplitter::clear()
{
    buffer_.clear();
    start_ = scanned_ = 0;
    skipping_ = false;
}

// ---- LogReader --------------------------------------------------------------

struct LogReader::OpenFile {
    int fd = -1;
    dev_t dev = 0;
    ino_t ino = 0;
    FdSource *plain = nullptr;  // the source, when it is a plain file
    std::unique_ptr<ByteSource> source;
    LineSplitter lines;
    bool failed = false;

    ~OpenFile()
    {
        source.reset();
        if (fd >= 0)
            close(fd);
    }
};

LogReader::LogReader(const std::string &path, bool follow, bool from_end) : path_(path), follow_(follow)
{
    if (path_ == "-") {
        // Standard input is read to its end: there is nothing to reopen.
        follow_ = false;
        current_ = std::make_unique<OpenFile>();
        current_->fd = dup(STDIN_FILENO);
        auto source = std::make_unique<FdSource>(current_->fd);
        current_->plain = source.get();
        current_->source = std::move(source);
        return;
    }
    current_ = std::make_unique<OpenFile>();
    current_->fd = open_log(path_);
    open_current(from_end);
}

LogReader::~LogReader() = default;

void LogReader::open_current(bool from_end)
{
    struct stat st{};
    fstat(current_->fd, &st);
    current_->dev = st.st_dev;
    current_->ino = st.st_ino;
    if (S_ISREG(st.st_mode) && starts_with_gzip_magic(current_->fd)) {
        follow_ = false;  // a rotated file: it does not grow
        current_->source = std::make_unique<GzipSource>(current_->fd);
        return;
    }
    auto source = std::make_unique<FdSource>(current_->fd);
    if (follow_ && from_end && S_ISREG(st.st_mode)) {
        source->offset = static_cast<uint64_t>(lseek(current_->fd, 0, SEEK_END));
        const size_t n = static_cast<size_t>(std::min<uint64_t>(source->offset, kFingerprint));
        source->head = read_at(current_->fd, 0, n);
        source->tail = read_at(current_->fd, source->offset - n, n);
    }
    current_->plain = source.get();
    current_->source = std::move(source);
}

std::optional<std::string_view> LogReader::next()
{
    if (auto line = next_from_retired())
        return line;
    if (!current_ || current_->failed)
        return std::nullopt;
    auto line = current_->lines.next(*current_->source, !follow_);
    if (!line && !follow_ && !current_->plain) {
        // A gzip stream that ends in an error (cut short, corrupt): say so, go on.
        if (const std::string error = static_cast<GzipSource &>(*current_->source).error(); !error.empty())
            spdlog::warn("{}: {}; the rest of it is skipped", path_, error);
        current_->failed = true;
    }
    return line;
}

std::optional<std::string_view> LogReader::next_from_retired()
{
    if (!retired_)
        return std::nullopt;
    if (auto line = retired_->lines.next(*retired_->source, false))
        return line;
    if (Clock::now() - retired_->plain->last_growth < kRetiredQuietFor)
        return std::nullopt;
    // Quiet long enough: nginx writes to the new file. Its unfinished last line, if any, ends here.
    auto last = retired_->lines.next(*retired_->source, true);
    if (last) {
        last_retired_line_.assign(*last);
        retired_.reset();
        return std::string_view(last_retired_line_);
    }
    retired_.reset();
    return std::nullopt;
}

bool LogReader::rewritten(const OpenFile &file) const
{
    const FdSource &read = *file.plain;
    struct stat st{};
    if (fstat(file.fd, &st) != 0)
        return false;
    if (static_cast<uint64_t>(st.st_size) < read.offset)
        return true;
    // As long again already: truncated and written past the point read
    // before this look.
    return read_at(file.fd, 0, read.head.size()) != read.head ||
           read_at(file.fd, read.offset - read.tail.size(), read.tail.size()) != read.tail;
}

void LogReader::check_rotation()
{
    if (!follow_)
        return;
    struct stat st{};
    const bool exists = stat(path_.c_str(), &st) == 0;
    if (current_ && exists && (st.st_dev != current_->dev || st.st_ino != current_->ino)) {
        // Renamed away, and a new file is at the path: nginx writes to the
        // old one until it reopens its logs, so read both for a while.
        retired_ = std::move(current_);
    } else if (current_ && rewritten(*current_)) {
        spdlog::debug("{} was truncated: reading it again from its start", path_);
        lseek(current_->fd, 0, SEEK_SET);
        current_->plain->offset = 0;
        current_->plain->head.clear();
        current_->plain->tail.clear();
        current_->lines.clear();
    }
    if (!current_ && exists) {
        auto file = std::make_unique<OpenFile>();
        file->fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
        if (file->fd >= 0) {
            current_ = std::move(file);
            open_current(false);
        }
    }
}

}  // namespace rstwatch
