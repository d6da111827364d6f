// rstwatch-bench-explain-gen: an nginx error log of a given size and the
// store of an agent that watched it, for scripts/bench-explain.
//
//   rstwatch-bench-explain-gen --log FILE --store FILE --bytes N [--failure-every K]
//
// The log: 40 lines a second, of a busy nginx's kinds (a file not found, an
// upstream timeout, a client's abort, keep-alive chatter), every K-th one an
// upstream 104 (default 50) from one of 4 workers and 8 upstreams; the store
// has a reset for nine in ten of those (the tenth is "lost"). Times end an
// hour ago, so that explain waits for nothing.
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "outputs/store.h"

namespace {

using namespace rstwatch;

constexpr int64_t kSecond = 1'000'000'000;
constexpr int kLinesPerSecond = 40;
constexpr uint32_t kWorkers[] = {31001, 31002, 31003, 31004};

struct Options {
    std::string log, store;
    uint64_t bytes = 0;
    int failure_every = 50;
};

std::string upstream(int i) { return "10.20.0." + std::to_string(10 + i % 8) + ":8080"; }

std::string stamp(int64_t second)
{
    std::time_t t = static_cast<std::time_t>(second);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char text[32];
    std::strftime(text, sizeof(text), "%Y/%m/%d %H:%M:%S", &tm);
    return text;
}

// The lines nginx writes most, other than upstream failures.
std::string other_line(const std::string &time, uint32_t pid, uint64_t n)
{
    const std::string head = time + " [error] " + std::to_string(pid) + "#" + std::to_string(pid) + ": *" +
                             std::to_string(n) + " ";
    switch (n % 4) {
    case 0:
        return head + "open() \"/usr/share/nginx/html/favicon.ico\" failed (2: No such file or directory), client: "
                      "203.0.113.7, server: shop.example, request: \"GET /favicon.ico HTTP/1.1\", host: \"shop.example\"";
    case 1:
        return head + "upstream timed out (110: Connection timed out) while reading response header from upstream, "
                      "client: 203.0.113.8, server: shop.example, request: \"GET /api/search?q=shoes HTTP/1.1\", "
                      "upstream: \"http://" + upstream(static_cast<int>(n)) + "/api/search?q=shoes\", host: \"shop.example\"";
    case 2:
        return head + "recv() failed (104: Connection reset by peer) while reading client request body, client: "
                      "203.0.113.9, server: shop.example, request: \"POST /upload HTTP/1.1\", host: \"shop.example\"";
    default:
        return head + "client 203.0.113.10 closed keepalive connection (104: Connection reset by peer)";
    }
}

std::string failure_line(const std::string &time, uint32_t pid, uint64_t n, const std::string &up)
{
    return time + " [error] " + std::to_string(pid) + "#" + std::to_string(pid) + ": *" + std::to_string(n) +
           " recv() failed (104: Connection reset by peer) while reading response header from upstream, client: "
           "203.0.113.11, server: shop.example, request: \"POST /orders HTTP/1.1\", upstream: \"http://" +
           up + "/orders\", host: \"shop.example\"";
}

ResetEvent reset_of(int64_t time_ns, uint32_t pid, const std::string &up)
{
    ResetEvent e;
    e.time_ns = time_ns;
    e.direction = Direction::Received;
    e.role = Role::Upstream;
    e.local = "10.20.0.2:40000";
    e.remote = up;
    e.state = TcpState::Established;
    e.owner_known = true;
    e.pid = pid;
    e.comm = "nginx";
    Diagnosis d;
    d.cause = Cause::KeepaliveRace;
    d.confidence = Confidence::High;
    d.evidence = {Evidence{.code = EvidenceCode::Recorded, .text = "reset 0 ms after nginx sent a request on a reused "
                                                                    "connection, before any response byte"},
                  Evidence{.code = EvidenceCode::Recorded, .text = "pooled connection reused after 5.1 s idle"},
                  Evidence{.code = EvidenceCode::Recorded, .text = "the backend had already closed this connection: "
                                                                    "data arriving after its close was answered with a reset"}};
    d.hint = Hint{.code = HintCode::Recorded,
                  .text = "reset on reuse after 5.1 s idle: the backend closes idle connections after at most 5.1 s; "
                          "keep keepalive_timeout in the upstream block below the backend's"};
    e.diagnosis = d;
    return e;
}

int generate(const Options &o)
{
    std::remove(o.store.c_str());
    auto store = Store::open_for_writing(o.store);
    std::ofstream log(o.log, std::ios::binary | std::ios::trunc);
    std::vector<char> buffer(1 << 20);
    log.rdbuf()->pubsetbuf(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const uint64_t lines_estimate = o.bytes / 180 + 1;  // shorter than any line: the log ends before now - 1 h
    const int64_t first = std::time(nullptr) - 3600 - static_cast<int64_t>(lines_estimate / kLinesPerSecond);
    std::vector<Event> batch;
    uint64_t written = 0, n = 0, failures = 0, records = 0;
    for (; written < o.bytes; ++n) {
        const int64_t second = first + static_cast<int64_t>(n / kLinesPerSecond);
        const uint32_t pid = kWorkers[n % 4];
        std::string line;
        if (n % o.failure_every == 0) {
            const std::string up = upstream(static_cast<int>(n / o.failure_every));
            line = failure_line(stamp(second), pid, n, up);
            if (++failures % 10 != 0) {
                batch.push_back(reset_of(second * kSecond + static_cast<int64_t>(n % kLinesPerSecond) * 20'000'000, pid, up));
                ++records;
            }
        } else {
            line = other_line(stamp(second), pid, n);
        }
        log << line << '\n';
        written += line.size() + 1;
        if (batch.size() >= 10000) {
            if (std::string error = store->append(batch); !error.empty())
                throw std::runtime_error(error);
            batch.clear();
        }
    }
    if (std::string error = store->append(batch); !error.empty())
        throw std::runtime_error(error);
    std::cout << n << " lines (" << written << " bytes), " << failures << " upstream 104 lines, " << records
              << " records\n";
    return 0;
}

}  // namespace

int main(int argc, char **argv)
{
    Options o;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string flag = argv[i];
        if (flag == "--log")
            o.log = argv[i + 1];
        else if (flag == "--store")
            o.store = argv[i + 1];
        else if (flag == "--bytes")
            o.bytes = std::strtoull(argv[i + 1], nullptr, 10);
        else if (flag == "--failure-every")
            o.failure_every = std::atoi(argv[i + 1]);
    }
    if (o.log.empty() || o.store.empty() || o.bytes == 0 || o.failure_every < 1) {
        std::cerr << "usage: rstwatch-bench-explain-gen --log FILE --store FILE --bytes N [--failure-every K]\n";
        return 2;
    }
    try {
        return generate(o);
    } catch (const std::exception &e) {
        std::cerr << "rstwatch-bench-explain-gen: " << e.what() << "\n";
        return 1;
    }
}
