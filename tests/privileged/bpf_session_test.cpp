// The real programs in the running kernel: resets on loopback connections
// whose far end is a child process, so that the task on the CPU at the
// reset is not the connection's owner.
#include <algorithm>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <signal.h>

#include <chrono>
#include <functional>
#include <optional>
#include <thread>
#include <vector>

extern "C" {
#include "rstwatch_abi.h"
}

#include "events/decode.h"
#include "kernel/kernel_features.h"
#include "kernel/loader.h"
#include "privileged.h"
#include "kernel/reset_reason_names.h"
#include "kernel/seed.h"

using namespace rstwatch;
using namespace std::chrono_literals;

namespace {

// Loads the programs tracking this test process (and its children) and
// decodes every record it hands over.
class Collector {
public:
    // peer_resets: also the resets of untracked sockets (other processes'
    // too), which the agent uses as evidence.
    // ttl_evidence: attach tcp:tcp_probe too (rstwatch run --ttl-evidence).
    explicit Collector(uint32_t ring_buffer_bytes = 1u << 20, bool peer_resets = true, bool ttl_evidence = false)
        : session_(options(ring_buffer_bytes, peer_resets, ttl_evidence), running_kernel(),
                   [this](std::span<const uint8_t> bytes) { on_record(bytes); })
    {
    }

    static TrackingFilter self_filter()
    {
        TrackingFilter f;
        f.pids = {static_cast<uint32_t>(getpid())};
        return f;
    }

    std::optional<ResetEvent> wait_for_reset(const std::function<bool(const ResetEvent &)> &match,
                                             std::chrono::milliseconds timeout = 3s)
    {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        do {
            for (const auto &e : resets_)
                if (match(e))
                    return e;
            session_.poll(50);
        } while (std::chrono::steady_clock::now() < deadline);
        return std::nullopt;
    }

    // What was seen, for failure messages.
    std::string describe() const
    {
        std::string all;
        for (const auto &e : resets_)
            all += std::string("\n  ") + to_string(e.direction) + " " + e.local + " -> " + e.remote +
                   " pid " + std::to_string(e.pid) + " " + to_string(e.role);
        return all.empty() ? " (no resets seen)" : all;
    }

    BpfSession &session() { return session_; }

    // Takes whatever arrives for `how_long`.
    void collect_for(std::chrono::milliseconds how_long)
    {
        wait_for_reset([](const ResetEvent &) { return false; }, how_long);
    }

    size_t count(const std::function<bool(const ResetEvent &)> &match) const
    {
        return std::count_if(resets_.begin(), resets_.end(), match);
    }
    size_t decode_errors() const { return decode_errors_; }
    size_t received_count() const { return resets_.size(); }

private:
    static LoaderOptions options(uint32_t ring_buffer_bytes, bool peer_resets, bool ttl_evidence)
    {
        LoaderOptions o;
        o.emit_peer_resets = peer_resets;
        o.ttl_evidence = ttl_evidence;
        o.filter = self_filter();
        o.ring_buffer_bytes = ring_buffer_bytes;
        return o;
    }

    void on_record(std::span<const uint8_t> bytes)
    {
        DecodeResult r = decode_record(bytes, decode_ctx_);
        if (!r.event) {
            decode_errors_++;
            return;
        }
        if (auto *reset = std::get_if<ResetEvent>(&*r.event))
            resets_.push_back(*reset);
    }

    // The running kernel's reason numbering, as the agent reads it.
    DecodeContext decode_ctx_{0, load_reset_reasons(running_kernel(), nullptr)};
    BpfSession session_;
    std::vector<ResetEvent> resets_;
    size_t decode_errors_ = 0;
};

// The far end of a connection, in a child process: accepts one connection,
// answers one request, then resets the connection when told to.
class ResettingServer {
public:
    explicit ResettingServer(bool v6)
    {
        int listener = rwtest::listen_on_loopback(v6);
        EXPECT_GE(listener, 0);
        port_ = rwtest::port_of(listener);
        EXPECT_EQ(pipe2(control_, O_CLOEXEC), 0);
        pid_ = fork();
        if (pid_ == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(control_[1]);
            int conn = accept(listener, nullptr, nullptr);
            char buf[64];
            if (conn >= 0 && read(conn, buf, sizeof(buf)) > 0 && write(conn, "resp", 4) == 4) {
                char go;
                if (read(control_[0], &go, 1) == 1)
                    rwtest::close_with_reset(conn);
            }
            _exit(0);
        }
        close(listener);
        close(control_[0]);
    }

    ~ResettingServer()
    {
        close(control_[1]);
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
    }

    void reset_now() { ASSERT_EQ(write(control_[1], "x", 1), 1); }
    uint16_t port() const { return port_; }
    pid_t pid() const { return pid_; }

private:
    uint16_t port_ = 0;
    int control_[2] = {-1, -1};
    pid_t pid_ = -1;
};

// When the answer to a request arrived: after the request left and before
// read() returned (under load the process may run well after the data came).
struct Exchange {
    uint64_t sent_ns;
    uint64_t read_ns;
};

// Sends a request and reads the answer.
Exchange request_response(int fd)
{
    timeval tv{3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    Exchange x{rwtest::monotonic_ns(), 0};
    EXPECT_EQ(write(fd, "GET", 3), 3);
    char buf[8];
    EXPECT_EQ(read(fd, buf, sizeof(buf)), 4);
    x.read_ns = rwtest::monotonic_ns();
    return x;
}

// The idle time the agent reports for a reset at `reset_ns` must lie between
// the bounds the exchange gives, within the kernel clock's tick (4 ms at HZ 250).
// Two ticks: the stamps and "now" are each rounded to a jiffy, and in a TCG
// guest (the kernel matrix) the tick itself comes late by a millisecond or so.
constexpr double kTickSlackMs = 8.0;

void expect_idle_since(const std::optional<double> &idle_ms, uint64_t reset_ns, const Exchange &x)
{
    ASSERT_TRUE(idle_ms);
    const double at_least = (reset_ns - x.read_ns) / 1e6, at_most = (reset_ns - x.sent_ns) / 1e6;
    EXPECT_GE(*idle_ms, at_least - kTickSlackMs);
    EXPECT_LE(*idle_ms, at_most + kTickSlackMs);
    // In a TCG guest (the kernel matrix) a loopback exchange takes up to 20 ms.
    EXPECT_LE(at_most - at_least, 40.0) << "the exchange itself took too long to measure";
}

std::string self_comm()
{
    char comm[17] = {};
    prctl(PR_GET_NAME, comm);
    return comm;
}

void expect_idle_reset_attributed(bool v6, bool ttl_evidence)
{
    Collector collector(1u << 20, /*peer_resets=*/true, ttl_evidence);
    const auto &attached = collector.session().attached_programs();
    EXPECT_EQ(std::count(attached.begin(), attached.end(), "tcp_probe"), ttl_evidence ? 1 : 0)
        << "the per-segment hook is attached only with --ttl-evidence";
    for (const char *per_connection : {"cgroup/connect4", "cgroup/connect6", "tcp_destroy_sock"})
        EXPECT_EQ(std::count(attached.begin(), attached.end(), per_connection), 0)
            << per_connection << ": nothing runs per connection";
    ResettingServer server(v6);
    rwtest::Fd client(rwtest::connect_to(v6, server.port()));
    ASSERT_TRUE(client.valid());
    const std::string local = rwtest::endpoint_of(client.get(), false);
    const std::string remote = rwtest::endpoint_of(client.get(), true);

    const Exchange exchange = request_response(client.get());
    std::this_thread::sleep_for(300ms);
    server.reset_now();

    auto received = collector.wait_for_reset([&](const ResetEvent &e) {
        return e.direction == Direction::Received && e.local == local;
    });
    ASSERT_TRUE(received) << "no received reset for " << local << "; seen:" << collector.describe();
    EXPECT_TRUE(received->owner_known);
    EXPECT_EQ(received->pid, static_cast<uint32_t>(getpid()));
    EXPECT_EQ(received->comm, self_comm());
    EXPECT_FALSE(received->owner_holder || received->owner_listener) << "found by the socket file's credentials";
    EXPECT_EQ(received->role, Role::Upstream);
    EXPECT_EQ(received->ipv6, v6);
    EXPECT_EQ(received->remote, remote);
    EXPECT_EQ(received->state, TcpState::Established);
    // The reset was processed while the child ran: the CPU's task is not the owner.
    EXPECT_NE(received->on_cpu_pid, static_cast<uint32_t>(getpid()));

    const double measured_idle_ms = (received->mono_ns - exchange.read_ns) / 1e6;
    EXPECT_GE(measured_idle_ms, 300.0);
    expect_idle_since(received->idle_ms, received->mono_ns, exchange);
    ASSERT_TRUE(received->since_request_ms);
    EXPECT_NEAR(*received->since_request_ms, (received->mono_ns - exchange.sent_ns) / 1e6, kTickSlackMs);
    EXPECT_FALSE(received->reused);
    EXPECT_FALSE(received->pool_idle_ms) << "a connection idle after its response has no open request";
    EXPECT_EQ(received->bytes_sent, 3u);
    EXPECT_EQ(received->bytes_received, 4u);
    EXPECT_FALSE(received->in_request) << "the response had arrived";
    // Loopback: data (or the SYN-ACK, by default where fentry gives TTLs)
    // and reset both come straight from this host (TTL / hop limit 64).
    const bool ttls = ttl_evidence || collector.session().kernel_support().ttls_by_fentry;
    EXPECT_EQ(received->data_ttl, ttls ? 64 : 0);
    EXPECT_EQ(received->rst_ttl, ttls ? 64 : 0);

    // The child's side: a sent reset on the socket it accepted from its
    // parent's listener, owned by the child, which reset it from close(),
    // in its own context, holding the socket.
    auto sent = collector.wait_for_reset([&](const ResetEvent &e) {
        return e.direction == Direction::Sent && e.remote == local;
    });
    ASSERT_TRUE(sent) << "no sent reset towards " << local << "; seen:" << collector.describe();
    EXPECT_EQ(sent->pid, static_cast<uint32_t>(server.pid()));
    EXPECT_EQ(sent->role, Role::Downstream);
    EXPECT_FALSE(sent->owner_listener);
    EXPECT_TRUE(sent->owner_holder);
    EXPECT_EQ(sent->local, remote);
    // The tracepoint has the reason since Linux 6.10 (the "rstreason" series),
    // and the kernel's own numbering names it.
    EXPECT_EQ(sent->reason.has_value(), running_kernel().has_btf_enum("sk_rst_reason"));
    if (sent->reason) {
        EXPECT_NE(*sent->reason, ResetReason::Unknown) << "reason number " << sent->reason_code.value_or(0);
    }
    EXPECT_EQ(collector.decode_errors(), 0u);
}

}  // namespace

TEST(BpfSession, ReceivedResetAfterIdleIsPinnedOnOwnerIPv4)
{
    REQUIRE_ROOT();
    expect_idle_reset_attributed(false, /*ttl_evidence=*/false);
}

TEST(BpfSession, ReceivedResetAfterIdleIsPinnedOnOwnerIPv4WithTtlEvidence)
{
    REQUIRE_ROOT();
    expect_idle_reset_attributed(false, /*ttl_evidence=*/true);
}

TEST(BpfSession, ReceivedResetAfterIdleIsPinnedOnOwnerIPv6WithTtlEvidence)
{
    REQUIRE_ROOT();
    expect_idle_reset_attributed(true, /*ttl_evidence=*/true);
}

// Nothing was recorded when the connection opened: the owner of one older
// than the agent is found the same way as any other's.
TEST(BpfSession, ConnectionOpenedBeforeAttachIsPinnedOnItsOwner)
{
    REQUIRE_ROOT();
    ResettingServer server(false);
    rwtest::Fd client(rwtest::connect_to(false, server.port()));
    ASSERT_TRUE(client.valid());
    const std::string local = rwtest::endpoint_of(client.get(), false);
    const Exchange exchange = request_response(client.get());

    // The agent attaches while the connection sits idle, as in an nginx
    // keepalive pool that filled up before anyone started watching.
    Collector collector;
    std::this_thread::sleep_for(200ms);
    server.reset_now();
    auto received = collector.wait_for_reset([&](const ResetEvent &e) {
        return e.direction == Direction::Received && e.local == local;
    });
    ASSERT_TRUE(received);
    EXPECT_TRUE(received->owner_known);
    EXPECT_EQ(received->pid, static_cast<uint32_t>(getpid()));
    EXPECT_EQ(received->role, Role::Upstream);
    // Idle comes from the socket's own kernel timestamps, so it covers the
    // time before the agent attached.
    expect_idle_since(received->idle_ms, received->mono_ns, exchange);
}

TEST(BpfSession, RingBufferOverflowIsCountedNotSilent)
{
    REQUIRE_ROOT();
    // One page of ring buffer holds about twenty records; nobody consumes.
    // Only this process's own sockets, so that other resets on the host
    // cannot change the counts.
    Collector collector(4096, /*peer_resets=*/false);
    rwtest::Fd listener(rwtest::listen_on_loopback(false));
    ASSERT_TRUE(listener.valid());
    const int resets = 200;
    for (int i = 0; i < resets; i++) {
        rwtest::Fd client(rwtest::connect_to(false, rwtest::port_of(listener.get())));
        ASSERT_TRUE(client.valid());
        rwtest::Fd accepted(accept(listener.get(), nullptr, nullptr));
        rwtest::close_with_reset(client.release());
    }
    listener.reset();

    BpfCounters counters = collector.session().counters();
    EXPECT_GT(counters.ring_buffer_full, 0u);
    EXPECT_GE(counters.records_emitted + counters.ring_buffer_full, static_cast<uint64_t>(resets));
    collector.session().stop_and_drain();
    EXPECT_EQ(collector.received_count(), counters.records_emitted);
}

TEST(BpfSession, ReusedConnectionReportsPoolIdleAndTheOpenRequest)
{
    REQUIRE_ROOT();
    Collector collector;
    rwtest::Fd listener(rwtest::listen_on_loopback(false));
    ASSERT_TRUE(listener.valid());
    const uint16_t port = rwtest::port_of(listener.get());
    // A backend that answers the first request and resets the connection
    // when the second arrives on it, as a backend that dropped it would.
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int conn = accept(listener.get(), nullptr, nullptr);
        char buf[64];
        if (conn >= 0 && read(conn, buf, sizeof(buf)) > 0 && write(conn, "resp", 4) == 4 &&
            read(conn, buf, sizeof(buf)) > 0)
            rwtest::close_with_reset(conn);
        _exit(0);
    }
    std::optional<rwtest::KilledOnExit> child_guard(child);
    listener.reset();
    rwtest::Fd client(rwtest::connect_to(false, port));
    ASSERT_TRUE(client.valid());
    const std::string local = rwtest::endpoint_of(client.get(), false);
    const uint64_t first_response = request_response(client.get()).read_ns;
    std::this_thread::sleep_for(200ms);
    const uint64_t second_request = rwtest::monotonic_ns();
    ASSERT_EQ(write(client.get(), "GET", 3), 3);

    auto received = collector.wait_for_reset([&](const ResetEvent &e) {
        return e.direction == Direction::Received && e.local == local;
    });
    child_guard.reset();
    ASSERT_TRUE(received) << "seen:" << collector.describe();
    EXPECT_TRUE(received->reused);
    EXPECT_TRUE(received->in_request);
    ASSERT_TRUE(received->pool_idle_ms);
    EXPECT_NEAR(*received->pool_idle_ms, (second_request - first_response) / 1e6, 10.0);
    ASSERT_TRUE(received->since_request_ms);
    EXPECT_LT(*received->since_request_ms, 50.0);
}

// A process the agent has not met sends its first reset's record to the
// agent, which looks it up (owner.bpf.h); once it is known to be untracked,
// its resets stay out of the ring buffer.
TEST(BpfSession, ResetsOfUntrackedFlowsStayOutOfTheRingBuffer)
{
    REQUIRE_ROOT();
    Collector collector;  // peer resets on, as the agent runs
    // A grandchild is not tracked (only a tracked pid's children are), and
    // its connections are no tracked process's flows. It resets one
    // connection, waits for `go`, then resets 50 more.
    rwtest::Pipe first_done, go;
    ASSERT_TRUE(first_done.open() && go.open());
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pid_t grandchild = fork();
        if (grandchild == 0) {
            int listener = rwtest::listen_on_loopback(false);
            auto reset_one = [listener] {
                int client = rwtest::connect_to(false, rwtest::port_of(listener));
                int accepted = accept(listener, nullptr, nullptr);
                rwtest::close_with_reset(client);
                close(accepted);
            };
            char x;
            reset_one();
            if (write(first_done.write_end.get(), "x", 1) != 1 || read(go.read_end.get(), &x, 1) != 1)
                _exit(1);
            for (int i = 0; i < 50 && listener >= 0; i++)
                reset_one();
            _exit(0);
        }
        waitpid(grandchild, nullptr, 0);
        _exit(0);
    }
    rwtest::KilledOnExit child_guard(child);
    char x;
    ASSERT_EQ(read(first_done.read_end.get(), &x, 1), 1);
    collector.session().poll(100);  // the agent meets the grandchild
    const size_t after_first = collector.received_count();
    ASSERT_EQ(write(go.write_end.get(), "x", 1), 1);
    EXPECT_EQ(child_guard.reap(), 0);
    collector.session().poll(100);
    EXPECT_EQ(collector.received_count(), after_first) << "seen:" << collector.describe();
    EXPECT_LE(after_first, 1u) << "at most the far end of its first reset, as evidence: " << collector.describe();
}

// `count` sockets of this process reset one another: each reset is
// received by a socket whose file carries this process's credentials.
void reset_own_connections(int count)
{
    rwtest::Fd listener(rwtest::listen_on_loopback(false));
    ASSERT_TRUE(listener.valid());
    for (int i = 0; i < count; i++) {
        rwtest::Fd client(rwtest::connect_to(false, rwtest::port_of(listener.get())));
        ASSERT_TRUE(client.valid());
        rwtest::Fd accepted(accept(listener.get(), nullptr, nullptr));
        ASSERT_TRUE(accepted.valid());
        rwtest::close_with_reset(accepted.release());  // the client, still open, receives it
    }
}

// Owners the reset programs could not name and left to the agent, counted
// across `resets`, run in a window of milliseconds (the resets are handled
// synchronously on loopback), so that another process's first reset on the
// host is unlikely to add one.
uint64_t lookups_during(Collector &collector, const std::function<void()> &resets)
{
    const uint64_t before = collector.session().counters().owner_lookups;
    resets();
    return collector.session().counters().owner_lookups - before;
}

// A handler that throws must not unwind through libbpf's C frames (that
// aborted the agent): poll() stops at that record and rethrows, and the
// records after it are still there for the next poll.
TEST(BpfSession, AHandlerExceptionComesOutOfPollAndTheRestIsKept)
{
    REQUIRE_ROOT();
    LoaderOptions options;
    options.filter = Collector::self_filter();
    options.emit_peer_resets = false;
    size_t handled = 0;
    BpfSession session(options, running_kernel(), [&](std::span<const uint8_t>) {
        if (handled++ == 0)
            throw std::runtime_error("first record refused");
    });
    reset_own_connections(3);
    EXPECT_THROW(session.poll(200), std::runtime_error);
    EXPECT_EQ(handled, 1u) << "the consumer stops at the record that threw";
    session.poll(0);
    // Each connection gives two records: the reset sent and the one received.
    EXPECT_EQ(handled, 6u) << "the other records were left in the ring, not lost";
}

// The owners of processes running at attach are learnt then, by the task
// iterator in the agent's context: no reset needs the agent to look.
TEST(BpfSession, OwnersRunningAtAttachAreKnownWithoutALookup)
{
    REQUIRE_ROOT();
    Collector collector(1u << 20, /*peer_resets=*/false);
    const int resets = 50;
    EXPECT_EQ(lookups_during(collector, [&] { reset_own_connections(resets); }), 0u);
    collector.collect_for(300ms);
    const size_t received = collector.count([](const ResetEvent &e) {
        return e.direction == Direction::Received && e.pid == static_cast<uint32_t>(getpid());
    });
    EXPECT_EQ(received, static_cast<size_t>(resets)) << "seen:" << collector.describe();
    EXPECT_EQ(collector.session().counters().owners_unresolved, 0u);
}

// A tracked process started after attach (a new worker after an nginx
// reload): its first reset asks the agent, which learns it with the task
// iterator; the reset programs never search the task list themselves, so
// what a reset costs in softirq does not grow with the number of processes.
// Once learnt (or once the sweep has seen it), it costs no lookup at all.
TEST(BpfSession, AProcessStartedLaterIsLookedUpOnceByTheAgent)
{
    REQUIRE_ROOT();
    Collector collector(1u << 20, /*peer_resets=*/false);
    // fork() gives the child credentials of its own, as it does a worker.
    // For each byte on `go` it resets `count` connections and answers on
    // `done`; it stays until killed: a worker outlives its resets.
    struct Child {
        rwtest::Pipe go, done;
        pid_t pid = -1;
    };
    auto start_child = [](Child &c, int count) {
        ASSERT_TRUE(c.go.open() && c.done.open());
        c.pid = fork();
        if (c.pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            char x;
            while (read(c.go.read_end.get(), &x, 1) == 1) {
                reset_own_connections(count);
                if (write(c.done.write_end.get(), "d", 1) != 1)
                    break;
            }
            _exit(::testing::Test::HasFailure() ? 1 : 0);
        }
    };
    const int resets = 20;
    auto run = [&](Child &c) {
        return lookups_during(collector, [&] {
            ASSERT_EQ(write(c.go.write_end.get(), "x", 1), 1);
            char x;
            EXPECT_EQ(read(c.done.read_end.get(), &x, 1), 1) << "the child's resets are done";
        });
    };

    Child unknown;
    start_child(unknown, resets);
    rwtest::KilledOnExit first(unknown.pid);
    const uint64_t lookups = run(unknown);
    EXPECT_GE(lookups, 1u);
    EXPECT_LE(lookups, 2u) << "one lookup for the child, not one per reset";
    collector.collect_for(300ms);  // the agent looks while the child runs, as a worker does
    EXPECT_EQ(collector.count([&](const ResetEvent &e) {
        return e.direction == Direction::Received && e.pid == static_cast<uint32_t>(unknown.pid);
    }), static_cast<size_t>(resets)) << "seen:" << collector.describe();
    EXPECT_EQ(run(unknown), 0u) << "learnt: the second round needs no lookup";

    Child swept;
    start_child(swept, resets);
    rwtest::KilledOnExit second(swept.pid);
    collector.session().learn_cred_holders();  // the sweep, with the child already there
    EXPECT_EQ(run(swept), 0u);
    collector.collect_for(300ms);
    EXPECT_EQ(collector.count([&](const ResetEvent &e) {
        return e.direction == Direction::Received && e.pid == static_cast<uint32_t>(swept.pid);
    }), static_cast<size_t>(resets)) << "seen:" << collector.describe();
}

// A process that replaces its credentials (setuid()) after opening a
// socket leaves the socket's file with credentials nobody holds: its
// owner is unknown, which is counted, and the reset is not reported.
TEST(BpfSession, SocketOpenedBeforeSetuidHasNoOwnerAndIsCounted)
{
    REQUIRE_ROOT();
    Collector collector(1u << 20, /*peer_resets=*/false);
    rwtest::Fd listener(rwtest::listen_on_loopback(false));
    ASSERT_TRUE(listener.valid());
    rwtest::Pipe ready;
    ASSERT_TRUE(ready.open());
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int client = rwtest::connect_to(false, rwtest::port_of(listener.get()));
        // Same uid, new struct cred: what a worker dropping privileges does.
        if (client >= 0 && setuid(getuid()) == 0 && write(ready.write_end.get(), "x", 1) == 1)
            pause();
        _exit(1);
    }
    rwtest::KilledOnExit kill_child(child);
    char x;
    ASSERT_EQ(read(ready.read_end.get(), &x, 1), 1);
    rwtest::Fd accepted(accept(listener.get(), nullptr, nullptr));
    ASSERT_TRUE(accepted.valid());
    const std::string child_end = rwtest::endpoint_of(accepted.get(), true);
    rwtest::close_with_reset(accepted.release());
    collector.collect_for(300ms);
    EXPECT_EQ(collector.count([&](const ResetEvent &e) {
        return e.direction == Direction::Received && e.local == child_end;
    }), 0u) << "seen:" << collector.describe();
    EXPECT_GE(collector.session().counters().owners_unresolved, 1u);
}

// The cache names a holder through its task_struct, read without a
// reference: a holder that has exited must not pass for alive. Its socket,
// inherited by its child, still carries its credentials (the file holds
// them), so the cache has an entry for them; the owner is unknown.
TEST(BpfSession, AnExitedHoldersSocketLeftToItsChildNamesNobody)
{
    REQUIRE_ROOT();
    Collector collector(1u << 20, /*peer_resets=*/false);
    rwtest::Fd listener(rwtest::listen_on_loopback(false));
    ASSERT_TRUE(listener.valid());
    // ready: the child's pid, then its child's. go: the child may exit.
    // hold: the grandchild keeps the socket until the write end closes,
    // which the end of the test does, however it ends.
    rwtest::Pipe ready, go, hold;
    ASSERT_TRUE(ready.open() && go.open() && hold.open());
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int client = rwtest::connect_to(false, rwtest::port_of(listener.get()));
        if (client < 0)
            _exit(1);
        close(hold.write_end.get());
        pid_t grandchild = fork();
        if (grandchild == 0) {
            char x;
            (void)!read(hold.read_end.get(), &x, 1);
            _exit(0);
        }
        char x;
        if (grandchild < 0 ||
            write(ready.write_end.get(), &grandchild, sizeof grandchild) != sizeof grandchild ||
            read(go.read_end.get(), &x, 1) != 1)
            _exit(1);
        _exit(0);
    }
    ASSERT_GT(child, 0);
    rwtest::KilledOnExit child_guard(child);
    hold.read_end.reset();
    pid_t grandchild = -1;
    ASSERT_EQ(read(ready.read_end.get(), &grandchild, sizeof grandchild), static_cast<ssize_t>(sizeof grandchild));
    collector.session().learn_cred_holders();  // the child's credentials, cached with its task
    ASSERT_EQ(write(go.write_end.get(), "x", 1), 1);
    EXPECT_EQ(child_guard.reap(), 0);
    std::this_thread::sleep_for(200ms);  // its task_struct is freed after an RCU grace period

    rwtest::Fd accepted(accept(listener.get(), nullptr, nullptr));
    ASSERT_TRUE(accepted.valid());
    const std::string inherited_end = rwtest::endpoint_of(accepted.get(), true);
    rwtest::close_with_reset(accepted.release());
    collector.collect_for(300ms);
    hold.write_end.reset();  // the grandchild exits; it is not ours to wait for (reparented)
    EXPECT_EQ(collector.count([&](const ResetEvent &e) {
        return e.direction == Direction::Received && e.local == inherited_end;
    }), 0u) << "the exited child must not be named; seen:" << collector.describe();
    EXPECT_GE(collector.session().counters().owners_unresolved, 1u);
}

// How a client connection's owner is found when the client resets it.
enum class Acceptor {
    Self,          // this process accepted it and still has it open: its file names us
    Worker,        // a forked child accepted it, as an nginx worker does: the child
    ClosedAlready  // this process closed it first (an orphan, no file): the listener's process
};

// A client resets a connection accepted from a listener of this process,
// learnt from bind() after attach, or seeded when it is older than the
// agent.
void expect_client_reset_owned(Acceptor acceptor, bool listener_before_attach = false)
{
    REQUIRE_ROOT();
    rwtest::Fd listener;
    if (listener_before_attach)
        listener = rwtest::Fd(rwtest::listen_on_loopback(true));
    Collector collector;
    if (listener_before_attach) {
        SeedReport seed = seed_listeners(collector.session().listeners_map_fd(), collector.session().listened_ports(),
                                         Collector::self_filter());
        EXPECT_EQ(seed.listeners, 1u);
        EXPECT_TRUE(seed.problems.empty()) << seed.problems.front();
    } else {
        listener = rwtest::Fd(rwtest::listen_on_loopback(true));
    }
    ASSERT_TRUE(listener.valid());
    const uint16_t port = rwtest::port_of(listener.get());
    rwtest::Pipe go;
    ASSERT_TRUE(go.open());
    pid_t client_pid = fork();
    if (client_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int client = rwtest::connect_to(true, port);
        char buf[4];
        if (client >= 0 && write(client, "GET", 3) == 3 && read(go.read_end.get(), buf, 1) == 1)
            rwtest::close_with_reset(client);
        _exit(0);
    }
    rwtest::KilledOnExit client_guard(client_pid);
    // The acceptor reads the request and answers; the client resets when told.
    auto serve = [&](int accepted) {
        char buf[4];
        return read(accepted, buf, sizeof(buf)) == 3 && write(accepted, "r", 1) == 1;
    };
    pid_t worker = -1;
    std::optional<rwtest::KilledOnExit> worker_guard;
    rwtest::Fd accepted;
    std::string local;
    if (acceptor == Acceptor::Worker) {
        rwtest::Pipe ready;
        ASSERT_TRUE(ready.open());
        worker = fork();
        if (worker == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            int conn = accept(listener.get(), nullptr, nullptr);
            if (conn >= 0 && serve(conn)) {
                const std::string ep = rwtest::endpoint_of(conn, false);
                if (write(ready.write_end.get(), ep.data(), ep.size()) == static_cast<ssize_t>(ep.size()))
                    pause();  // holds the connection until killed
            }
            _exit(1);
        }
        worker_guard.emplace(worker);
        ready.write_end.reset();
        char ep[128] = {};
        ASSERT_GT(read(ready.read_end.get(), ep, sizeof(ep) - 1), 0);
        local = ep;
    } else {
        accepted = rwtest::Fd(accept(listener.get(), nullptr, nullptr));
        ASSERT_TRUE(accepted.valid());
        local = rwtest::endpoint_of(accepted.get(), false);
        ASSERT_TRUE(serve(accepted.get()));
        if (acceptor == Acceptor::ClosedAlready)
            accepted.reset();  // FIN_WAIT: the socket lingers without a file
    }
    ASSERT_EQ(write(go.write_end.get(), "x", 1), 1);
    auto received = collector.wait_for_reset([&](const ResetEvent &e) {
        return e.direction == Direction::Received && e.local == local;
    });
    client_guard.reap();
    worker_guard.reset();
    ASSERT_TRUE(received) << "seen:" << collector.describe();
    EXPECT_TRUE(received->owner_known);
    EXPECT_EQ(received->pid, static_cast<uint32_t>(acceptor == Acceptor::Worker ? worker : getpid()));
    EXPECT_EQ(received->role, Role::Downstream);
    EXPECT_EQ(received->owner_listener, acceptor == Acceptor::ClosedAlready);
    EXPECT_FALSE(received->owner_holder) << "nobody held the socket when the reset came";
}

TEST(BpfSession, ClientResetNamesTheProcessThatAcceptedIt)
{
    expect_client_reset_owned(Acceptor::Self);
}

TEST(BpfSession, ClientResetNamesTheWorkerThatAcceptedIt)
{
    expect_client_reset_owned(Acceptor::Worker);
}

TEST(BpfSession, ClientResetOfAClosedConnectionNamesTheListeningProcess)
{
    expect_client_reset_owned(Acceptor::ClosedAlready);
}

TEST(BpfSession, ClientResetOfAClosedConnectionNamesTheProcessOfASeededListener)
{
    expect_client_reset_owned(Acceptor::ClosedAlready, /*listener_before_attach=*/true);
}

// The backend's side of a reset that a tracked socket receives, when the
// backend runs on this host: its sent reset is reported next to it, and
// resets it sends to nobody tracked are not.
TEST(BpfSession, BackendSideOfAReceivedResetComesWithIt)
{
    REQUIRE_ROOT();
    Collector collector;
    rwtest::Pipe listen_ready, go;
    ASSERT_TRUE(listen_ready.open() && go.open());
    // The backend is a grandchild: untracked (only a tracked pid's children
    // are). Should the test end early, it sees EOF on `go` and leaves.
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pid_t backend = fork();
        if (backend == 0) {
            int listener = rwtest::listen_on_loopback(false);
            uint16_t port = listener >= 0 ? rwtest::port_of(listener) : 0;
            if (write(listen_ready.write_end.get(), &port, sizeof(port)) != sizeof(port))
                _exit(1);
            int conn = accept(listener, nullptr, nullptr);
            char buf[4];
            if (conn >= 0 && read(go.read_end.get(), buf, 1) == 1)
                rwtest::close_with_reset(conn);
            _exit(0);
        }
        waitpid(backend, nullptr, 0);
        _exit(0);
    }
    rwtest::KilledOnExit child_guard(child);
    uint16_t port = 0;
    ASSERT_EQ(read(listen_ready.read_end.get(), &port, sizeof(port)), static_cast<ssize_t>(sizeof(port)));
    ASSERT_NE(port, 0);
    rwtest::Fd client(rwtest::connect_to(false, port));
    ASSERT_TRUE(client.valid());
    const std::string local = rwtest::endpoint_of(client.get(), false);
    ASSERT_EQ(write(go.write_end.get(), "x", 1), 1);
    auto received = collector.wait_for_reset([&](const ResetEvent &e) {
        return e.direction == Direction::Received && e.local == local;
    });
    auto sent = collector.wait_for_reset([&](const ResetEvent &e) {
        return e.direction == Direction::Sent && e.remote == local;
    });
    child_guard.reap();
    ASSERT_TRUE(received) << "seen:" << collector.describe();
    ASSERT_TRUE(sent) << "the backend's side is missing; seen:" << collector.describe();
    EXPECT_FALSE(sent->owner_known) << "the backend is not tracked";
    EXPECT_NE(sent->on_cpu_pid, 0u) << "the backend, read when it sent the reset";
    EXPECT_NE(sent->on_cpu_pid, static_cast<uint32_t>(getpid()));
    // A reset from close() is traced after it is sent, so after it is received on loopback.
    EXPECT_LT(std::max(sent->mono_ns, received->mono_ns) - std::min(sent->mono_ns, received->mono_ns), 1000000000u);
    EXPECT_EQ(collector.count([](const ResetEvent &e) { return e.direction == Direction::Sent; }), 1u)
        << "seen:" << collector.describe();
}

namespace {

// Entries of the listener table, read the way bpftool would.
size_t listener_entries(const BpfSession &session)
{
    const int fd = session.listeners_map_fd();
    size_t n = 0;
    rw_endpoint key{}, next{};
    const void *prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
        n++;
        key = next;
        prev = &key;
    }
    return n;
}

// A TCP socket bound to 127.0.0.1:port (0: any) after setting the socket
// option level/name to 1 (name 0: none; level IPPROTO_IP is 0), e.g. IP_BIND_ADDRESS_NO_PORT as
// nginx's proxy_bind sets it, or SO_REUSEPORT as its `reuseport` does.
int bound_loopback_socket(uint16_t port, int level = 0, int name = 0)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        return -1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    if ((name && setsockopt(fd, level, name, &one, sizeof(one)) != 0) ||
        bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

}  // namespace

// Listeners are learnt at bind() (there is no hook at listen() alone): a
// port bound and then connect()ed from is a client's, and its connection
// is upstream, not one accepted from a listener.
TEST(BpfSession, APortBoundToConnectFromIsNoListener)
{
    REQUIRE_ROOT();
    Collector collector;
    const size_t before = listener_entries(collector.session());
    rwtest::Fd listener(rwtest::listen_on_loopback(false));
    ASSERT_TRUE(listener.valid());
    EXPECT_EQ(listener_entries(collector.session()), before + 1) << "bind() of the listener";

    sockaddr_in server{};
    server.sin_family = AF_INET;
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    server.sin_port = htons(rwtest::port_of(listener.get()));
    for (bool no_port : {false, true}) {
        rwtest::Fd client(no_port ? bound_loopback_socket(0, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT)
                                  : bound_loopback_socket(0));
        ASSERT_TRUE(client.valid());
        // The port bound in the first round stays recorded (this process lives on).
        EXPECT_EQ(listener_entries(collector.session()), before + 2)
            << (no_port ? "a bind() without a port yet records nothing" : "a bind() records the endpoint");
        ASSERT_EQ(connect(client.get(), reinterpret_cast<sockaddr *>(&server), sizeof(server)), 0);
        const std::string local = rwtest::endpoint_of(client.get(), false);
        rwtest::Fd accepted(accept(listener.get(), nullptr, nullptr));
        ASSERT_TRUE(accepted.valid());
        rwtest::close_with_reset(accepted.release());
        auto received = collector.wait_for_reset([&](const ResetEvent &e) {
            return e.direction == Direction::Received && e.local == local;
        });
        ASSERT_TRUE(received) << "seen:" << collector.describe();
        EXPECT_EQ(received->role, Role::Upstream) << (no_port ? "port chosen at connect()" : "port bound first");
        EXPECT_FALSE(received->owner_listener);
    }
}

// The table of listeners holds 1024: a tracked process binding more ports
// than that gets the excess counted, not silently dropped.
TEST(BpfSession, FullListenerTableIsCounted)
{
    REQUIRE_ROOT();
    Collector collector;
    const size_t before = listener_entries(collector.session());
    const uint32_t endpoints = 1024 - static_cast<uint32_t>(before) + 8;
    std::vector<rwtest::Fd> fds;
    for (uint32_t i = 0; i < endpoints; i++) {
        rwtest::Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        ASSERT_TRUE(fd.valid());
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(0x7f4d0000u + i + 1);  // 127.77.0.1 and on: distinct endpoints
        ASSERT_EQ(bind(fd.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)), 0) << strerror(errno);
        fds.push_back(std::move(fd));
    }
    EXPECT_EQ(collector.session().counters().listeners_dropped, 8u)
        << "entries before " << before << ", after " << listener_entries(collector.session());
}

// A stopped nginx's ports must not stay its own: once the process that
// bound them is gone, the agent's sweep forgets them.
TEST(BpfSession, ListenerEntryLeavesWithItsProcess)
{
    REQUIRE_ROOT();
    Collector collector;
    const size_t before = listener_entries(collector.session());
    rwtest::Pipe ready;
    ASSERT_TRUE(ready.open());
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int listener = rwtest::listen_on_loopback(false);
        if (listener >= 0 && write(ready.write_end.get(), "x", 1) == 1)
            pause();
        _exit(1);
    }
    std::optional<rwtest::KilledOnExit> child_guard(child);
    char x;
    ASSERT_EQ(read(ready.read_end.get(), &x, 1), 1);
    EXPECT_EQ(listener_entries(collector.session()), before + 1);
    EXPECT_EQ(sweep_listeners(collector.session().listeners_map_fd()), 0u) << "its process is still there";
    child_guard.reset();  // killed and reaped
    EXPECT_EQ(sweep_listeners(collector.session().listeners_map_fd()), 1u);
    EXPECT_EQ(listener_entries(collector.session()), before);
}
