// NonBlockingOutput: stdout as a view that never holds up the agent. Real
// pipes, sockets and files; a reader that reads gets every line in order,
// one that stops reading or leaves costs lines (counted), not a blocked
// writer or a SIGPIPE.
#include "outputs/output.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <chrono>
#include <memory>
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

// The agent's log on stderr: a slow reader loses nothing, a stuck one
// costs the logging thread one short wait, then lines (counted, and said
// once it reads again).
namespace {

std::shared_ptr<spdlog::logger> log_to(int fd)
{
    auto logger = std::make_shared<spdlog::logger>("test", std::make_shared<rstwatch::NonBlockingLogSink>(fd));
    logger->set_pattern("%v");
    return logger;
}

std::string log_line(int i) { return "log line " + std::to_string(i) + " " + std::string(300, 'y'); }

}  // namespace

TEST(NonBlockingLogSink, ASlowReaderGetsEveryLine)
{
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    std::string got;
    std::thread reader([&] {
        char buf[4096];
        ssize_t n;
        while ((n = read(p[0], buf, sizeof buf)) > 0) {
            got.append(buf, static_cast<size_t>(n));
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    });
    {
        auto logger = log_to(p[1]);
        for (int i = 0; i < 600; ++i)  // ~190 KB: past the pipe and the sink's buffer together
            logger->info(log_line(i));
    }
    close(p[1]);
    reader.join();
    close(p[0]);
    std::string expected;
    for (int i = 0; i < 600; ++i)
        expected += log_line(i) + "\n";
    EXPECT_EQ(got, expected);
}

TEST(NonBlockingLogSink, AStuckReaderCostsOneWaitThenLinesAndIsToldHowMany)
{
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    auto logger = log_to(p[1]);
    const int logged = 1000;  // ~310 KB, never read while logged
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < logged; ++i)
        logger->info(log_line(i));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1000))
        << "one 100 ms wait for a stuck reader, not one per line";

    // The reader comes back: it gets what fitted, then how many did not.
    ASSERT_EQ(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
    std::string got;
    char buf[65536];
    auto read_available = [&] {
        ssize_t n;
        while ((n = read(p[0], buf, sizeof buf)) > 0)
            got.append(buf, static_cast<size_t>(n));
    };
    read_available();
    logger->info("after");
    read_available();
    logger.reset();
    close(p[1]);
    read_available();
    close(p[0]);

    const size_t note = got.find(" log lines not written: stderr was not being read\n");
    ASSERT_NE(note, std::string::npos) << got.substr(0, 200);
    const size_t note_start = got.rfind("rstwatch: [warning] ", note);
    ASSERT_NE(note_start, std::string::npos);
    const int dropped = std::stoi(got.substr(note_start + 20, note - note_start - 20));
    EXPECT_GT(dropped, 0);
    int seen = 0;
    for (int i = 0; i < logged; ++i)
        seen += got.find(log_line(i) + "\n") != std::string::npos;
    EXPECT_EQ(seen + dropped, logged);
    EXPECT_NE(got.find("after\n"), std::string::npos);
    EXPECT_EQ(got.find(log_line(0) + "\n"), 0u) << "the first lines went out, in order";
}

