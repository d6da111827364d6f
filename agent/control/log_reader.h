// nginx's error logs, line by line, in bounded memory: a plain file, a
// gzip-rotated one (error.log.2.gz, known by its magic bytes, read through
// zlib), or standard input ("-"). Followed (like `tail -F`), a plain file is
// read on as it grows and across logrotate's two ways:
//   - rename (`create`): the file at the path is new. The old one is read
//     on too, since nginx writes there until it is told to reopen (USR1),
//     and given up once it has been quiet for kRetiredQuietFor.
//   - copytruncate: the same file, shorter than what was read, or with
//     other bytes where the last ones read were: read again from its start.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rstwatch {

// Bytes from somewhere: a file descriptor or a gzip stream.
class ByteSource {
public:
    virtual ~ByteSource() = default;
    // Up to `size` bytes; 0 at the end (for now, if the file grows); -1 on error.
    virtual ssize_t read(char *buffer, size_t size) = 0;
};

// Lines from one ByteSource: a line longer than kMaxLine is cut there and
// the rest of it skipped, so that no input (a binary file, say) makes the
// buffer grow.
class LineSplitter {
public:
    static constexpr size_t kMaxLine = 64 * 1024;

    // The next whole line without its newline, valid until the next call;
    // nullopt when the source has no more for now. At its end, an
    // unfinished last line is returned only when `final`.
    std::optional<std::string_view> next(ByteSource &source, bool final);
    // Drops what is buffered (the file was truncated).
    void clear();

private:
    std::optional<std::string_view> take_line();

    std::string buffer_;
    size_t start_ = 0;     // of the first byte not yet returned
    size_t scanned_ = 0;   // bytes after start_ known to hold no newline
    bool skipping_ = false;  // the rest of a cut line
};

class LogReader {
public:
    static constexpr std::chrono::seconds kRetiredQuietFor{10};

    // Opens `path` ("-": standard input). Throws FatalError naming it when
    // it is missing, a directory or unreadable. Followed and
    // `from_end`, reading starts at the end of a plain file.
    LogReader(const std::string &path, bool follow, bool from_end);
    ~LogReader();
    LogReader(const LogReader &) = delete;
    LogReader &operator=(const LogReader &) = delete;

    // The next line; nullopt when there is none for now (or, not followed,
    // none at all).
    std::optional<std::string_view> next();
    // Followed: looks for a rotation, and whether a retired file has more.
    void check_rotation();
    // Read on after its end: a plain file that is followed.
    bool followed() const { return follow_; }
    const std::string &path() const { return path_; }

private:
    struct OpenFile;
    void open_current(bool from_end);
    std::optional<std::string_view> next_from_retired();
    bool rewritten(const OpenFile &file) const;

    std::string path_;
    bool follow_ = false;
    std::unique_ptr<OpenFile> current_;
    // Renamed away by a rotation, still read until quiet.
    std::unique_ptr<OpenFile> retired_;
    std::string last_retired_line_;  // its unfinished last line, once given up
};

}  // namespace rstwatch
