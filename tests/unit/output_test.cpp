// NonBlockingOutput: stdout as a view that never holds up the agent. Real
// pipes, sockets and files; a reader that reads gets every line in order,
// one that stops reading or leaves costs lines (counted), not a blocked
// writer or a SIGPIPE.
#include "output.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <thread>

using rstwatch::OutputStats;
using rstwatch::NonBlockingOutput;

namespace {

std::string line(int i)
{
    // About the size of a JSON event line.
    return "{\"n\":" + std::to_string(i) + ",\"pad\":\"" + std::string(600, 'x') + "\"}\n";
}

std::string lines(int from, int to)
{
    std::string all;
    for (int i = from; i < to; ++i)
        all += line(i);
    return all;
}

// Everything `fd` gives until end of file.
std::string read_all(int fd)
{
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0)
            out.append(buf, static_cast<size_t>(n));
        else if (n == 0 || errno != EINTR)
            return out;
    }
}

// What a non-blocking read finds there now.
std::string read_available(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    std::string out;
    char buf[65536];
    for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;)
        out.append(buf, static_cast<size_t>(n));
    return out;
}

// Pushes lines 0..n-1 to a writer on fd, which a reader thread drains.
void expect_every_line_in_order(int write_fd, int read_fd, int n)
{
    std::string got;
    std::thread reader([&] { got = read_all(read_fd); });
    OutputStats stats;
    {
        NonBlockingOutput out(write_fd, {});
        // Fewer bytes than the buffer holds: none may be dropped, however
        // far behind the reader is; stop() waits for it.
        for (int i = 0; i < n; ++i)
            EXPECT_TRUE(out.push(line(i))) << "line " << i << " dropped with a reader that reads";
        out.stop();
        stats = out.stats();
    }
    close(write_fd);  // the writer's own reopened description is closed too: EOF
    reader.join();
    EXPECT_EQ(stats.lines_written, static_cast<uint64_t>(n));
    EXPECT_EQ(stats.lines_dropped, 0u);
    EXPECT_EQ(stats.broken_errno, 0);
    EXPECT_TRUE(got == lines(0, n)) << "got " << got.size() << " bytes, wanted " << lines(0, n).size();
}

}  // namespace

TEST(NonBlockingOutput, APipeThatIsReadGetsEveryLineInOrder)
{
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    expect_every_line_in_order(p[1], p[0], 3000);
    close(p[0]);
}

TEST(NonBlockingOutput, ASocketThatIsReadGetsEveryLineInOrder)
{
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    expect_every_line_in_order(sv[0], sv[1], 3000);
    close(sv[1]);
}

TEST(NonBlockingOutput, AFileGetsEveryLineInOrder)
{
    FILE *f = std::tmpfile();
    ASSERT_NE(f, nullptr);
    {
        NonBlockingOutput out(fileno(f), {});
        for (int i = 0; i < 3000; ++i)
            ASSERT_TRUE(out.push(line(i)));
        out.stop();
        EXPECT_EQ(out.stats().lines_written, 3000u);
    }
    std::rewind(f);
    EXPECT_TRUE(read_all(fileno(f)) == lines(0, 3000));
    std::fclose(f);
}

// `rstwatch run | less`, paused: the pipe fills, then the buffer, and then
// lines are dropped without blocking push(); stop() gives up after its
// drain time. What did reach the pipe is whole lines, in order (and
// perhaps the start of one more).
TEST(NonBlockingOutput, APipeNobodyReadsCostsLinesNotAStall)
{
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    NonBlockingOutput::Options options;
    options.buffer_bytes = 256 << 10;
    options.drain_timeout = std::chrono::milliseconds(200);
    OutputStats stats;
    {
        NonBlockingOutput out(p[1], options);
        int refused = 0;
        for (int i = 0; i < 2000; ++i)
            refused += !out.push(line(i));
        EXPECT_GT(refused, 0) << "a pipe of 64 KiB and a buffer of 256 KiB took 1.2 MB";
        out.stop();
        stats = out.stats();
    }
    EXPECT_EQ(stats.lines_written + stats.lines_dropped, 2000u);
    EXPECT_GT(stats.lines_written, 0u);
    EXPECT_EQ(stats.broken_errno, 0);
    std::string got = read_available(p[0]);
    const size_t whole = got.rfind('\n') + 1;
    EXPECT_TRUE(got.substr(0, whole) == lines(0, static_cast<int>(stats.lines_written)));
    EXPECT_LT(got.size() - whole, line(0).size());
    close(p[0]);
    close(p[1]);
}

TEST(NonBlockingOutput, ASocketNobodyReadsCostsLinesNotAStall)
{
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    NonBlockingOutput::Options options;
    options.buffer_bytes = 256 << 10;
    options.drain_timeout = std::chrono::milliseconds(200);
    OutputStats stats;
    {
        NonBlockingOutput out(sv[0], options);
        for (int i = 0; i < 2000; ++i)
            out.push(line(i));
        out.stop();
        stats = out.stats();
    }
    EXPECT_EQ(stats.lines_written + stats.lines_dropped, 2000u);
    EXPECT_GT(stats.lines_dropped, 0u);
    close(sv[0]);
    close(sv[1]);
}

// `rstwatch run | head`: the reader leaves. No SIGPIPE (which would end
// the agent, the store and the tables with it); output ends, counted.
TEST(NonBlockingOutput, AReaderThatLeftEndsOutputWithoutSigpipe)
{
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    close(p[0]);
    OutputStats stats;
    {
        NonBlockingOutput out(p[1], {});
        for (int i = 0; i < 100; ++i)
            out.push(line(i));
        out.stop();
        stats = out.stats();
    }
    EXPECT_EQ(stats.broken_errno, EPIPE);
    EXPECT_EQ(stats.lines_written, 0u);
    EXPECT_EQ(stats.lines_dropped, 100u);
    close(p[1]);
}
