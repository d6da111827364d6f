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

#include "decode.h"
#include "kernel_features.h"
#include "loader.h"
#include "privileged.h"
#include "reset_reasons.h"
#include "seed.h"

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
    // client_workers: claim accepted sockets at their first recv() too.
    explicit Collector(uint32_t ring_buffer_bytes = 1u << 20, bool peer_resets = true, bool ttl_evidence = false,
                       uint32_t max_connections = 65536, bool client_workers = false)
        : reasons_(ResetReasonNames::load_from_tracefs(nullptr)),
          session_(options(ring_buffer_bytes, peer_resets, ttl_evidence, max_connections, client_workers),
                   running_kernel(),
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

    size_t owned_connections() const { return session_.owned_connections(); }
    size_t decode_errors() const { return decode_errors_; }
    size_t received_count() const { return resets_.size(); }

private:
    static LoaderOptions options(uint32_t ring_buffer_bytes, bool peer_resets, bool ttl_evidence,
                                 uint32_t max_connections, bool client_workers)
    {
        LoaderOptions o;
        o.client_workers = client_workers;
        o.max_connections = max_connections;
        o.emit_peer_resets = peer_resets;
        o.ttl_evidence = ttl_evidence;
        o.filter = self_filter();
        o.ring_buffer_bytes = ring_buffer_bytes;
        return o;
    }

    void on_record(std::span<const uint8_t> bytes)
    {
        DecodeContext ctx;
        ctx.reason_name = [this](uint32_t code) { return reasons_.name(code); };
        DecodeResult r = decode_record(bytes, ctx);
        if (!r.event) {
            decode_errors_++;
            return;
        }
        if (auto *reset = std::get_if<ResetEvent>(&*r.event))
            resets_.push_back(*reset);
    }

    ResetReasonNames reasons_;
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
void expect_idle_since(const std::optional<double> &idle_ms, uint64_t reset_ns, const Exchange &x)
{
    ASSERT_TRUE(idle_ms);
    const double at_least = (reset_ns - x.read_ns) / 1e6, at_most = (reset_ns - x.sent_ns) / 1e6;
    EXPECT_GE(*idle_ms, at_least - 5.0);
    EXPECT_LE(*idle_ms, at_most + 5.0);
    EXPECT_LE(at_most - at_least, 10.0) << "the exchange itself took too long to measure within 10 ms";
}

std::string self_comm()
{
    char comm[17] = {};
    prctl(PR_GET_NAME, comm);
    return comm;
}

void expect_idle_reset_attributed(bool v6, bool ttl_evidence, bool client_workers)
{
    Collector collector(1u << 20, /*peer_resets=*/true, ttl_evidence, 65536, client_workers);
    const auto &attached = collector.session().attached_programs();
    EXPECT_EQ(std::count(attached.begin(), attached.end(), "tcp_probe"), ttl_evidence ? 1 : 0)
        << "the per-segment hook is attached only with --ttl-evidence";
    EXPECT_EQ(std::count(attached.begin(), attached.end(), "sock_recv_length"), client_workers ? 1 : 0)
        << "the per-recv() hook is attached only with --client-workers";
    ResettingServer server(v6);
    int client = rwtest::connect_to(v6, server.port());
    ASSERT_GE(client, 0);
    const std::string local = rwtest::endpoint_of(client, false);
    const std::string remote = rwtest::endpoint_of(client, true);

    const Exchange exchange = request_response(client);
    std::this_thread::sleep_for(300ms);
    server.reset_now();

    auto received = collector.wait_for_reset([&](const ResetEvent &e) {
        return e.direction == Direction::Received && e.local == local;
    });
    ASSERT_TRUE(received) << "no received reset for " << local << "; seen:" << collector.describe();
    EXPECT_TRUE(received->owner_known);
    EXPECT_EQ(received->pid, static_cast<uint32_t>(getpid()));
    EXPECT_EQ(received->comm, self_comm());
    EXPECT_EQ(received->role, Role::Upstream);
    EXPECT_EQ(received->ipv6, v6);
    EXPECT_EQ(received->remote, remote);
    EXPECT_EQ(tcp_state_name(received->state), "ESTABLISHED");
    // The reset was processed while the child ran: the CPU's task is not the owner.
    EXPECT_NE(received->current_pid, static_cast<uint32_t>(getpid()));

    const double measured_idle_ms = (received->mono_ns - exchange.read_ns) / 1e6;
    EXPECT_GE(measured_idle_ms, 300.0);
    expect_idle_since(received->idle_ms, received->mono_ns, exchange);
    ASSERT_TRUE(received->since_request_ms);
    EXPECT_NEAR(*received->since_request_ms, (received->mono_ns - exchange.sent_ns) / 1e6, 5.0);
    EXPECT_FALSE(received->reused);
    EXPECT_FALSE(received->pool_idle_ms) << "a connection idle after its response has no open request";
    ASSERT_TRUE(received->conn_age_ms);
    EXPECT_GE(*received->conn_age_ms, measured_idle_ms - 5.0) << "jiffies: 4 ms at HZ 250";
    EXPECT_EQ(received->bytes_sent, 3u);
    EXPECT_EQ(received->bytes_received, 4u);
    EXPECT_FALSE(received->in_request) << "the response had arrived";
    // Loopback: data and reset both come straight from this host (TTL / hop limit 64).
    EXPECT_EQ(received->data_ttl, ttl_evidence ? 64 : 0);
    EXPECT_EQ(received->rst_ttl, ttl_evidence ? 64 : 0);

    // The child's side: a sent reset on its accepted socket, owned by the
    // child. It read from the socket (claimed with --client-workers) and
    // reset it from close(), in its own context, while the listener is its
    // parent's (found that way without --client-workers).
    auto sent = collector.wait_for_reset([&](const ResetEvent &e) {
        return e.direction == Direction::Sent && e.remote == local;
    });
    ASSERT_TRUE(sent) << "no sent reset towards " << local << "; seen:" << collector.describe();
    EXPECT_EQ(sent->pid, static_cast<uint32_t>(server.pid()));
    EXPECT_EQ(sent->role, Role::Downstream);
    EXPECT_EQ(sent->owner_listener, !client_workers);
    EXPECT_EQ(sent->owner_holder, !client_workers);
    EXPECT_EQ(sent->local, remote);
    EXPECT_FALSE(sent->reason.empty());
    EXPECT_EQ(collector.decode_errors(), 0u);
    close(client);
}

}  // namespace

TEST(BpfSession, ReceivedResetAfterIdleIsPinnedOnOwnerIPv4)
{
    REQUIRE_ROOT();
    expect_idle_reset_attributed(false, /*ttl_evidence=*/false, /*client_workers=*/false);
}

TEST(BpfSession, ReceivedResetAfterIdleIsPinnedOnOwnerIPv4WithClientWorkers)
{
    REQUIRE_ROOT();
    expect_idle_reset_attributed(false, /*ttl_evidence=*/false, /*client_workers=*/true);
}

TEST(BpfSession, ReceivedResetAfterIdleIsPinnedOnOwnerIPv4WithTtlEvidence)
{
    REQUIRE_ROOT();
    expect_idle_reset_attributed(false, /*ttl_evidence=*/true, /*client_workers=*/false);
}

TEST(BpfSession, ReceivedResetAfterIdleIsPinnedOnOwnerIPv6WithTtlEvidence)
{
    REQUIRE_ROOT();
    expect_idle_reset_attributed(true, /*ttl_evidence=*/true, /*client_workers=*/true);
}

TEST(BpfSession, ConnectionOpenedBeforeAttachIsSeededWithItsOwner)
{
    REQUIRE_ROOT();
    ResettingServer server(false);
    int client = rwtest::connect_to(false, server.port());
    ASSERT_GE(client, 0);
    const std::string local = rwtest::endpoint_of(client, false);
    const Exchange exchange = request_response(client);

    // The agent attaches while the connection sits idle, as in an nginx
    // keepalive pool that filled up before anyone started watching.
    Collector collector;
    SeedReport seed = seed_existing_connections(collector.session().seed_maps(), Collector::self_filter());
    EXPECT_GE(seed.seeded, 1u);
    EXPECT_TRUE(seed.problems.empty()) << seed.problems.front();

    std::this_thread::sleep_for(200ms);
    server.reset_now();
    auto received = collector.wait_for_reset([&](const ResetEvent &e) {
        return e.direction == Direction::Received && e.local == local;
    });
    ASSERT_TRUE(received);
    EXPECT_TRUE(received->owner_known);
    EXPECT_TRUE(received->owner_seeded);
    EXPECT_EQ(received->pid, static_cast<uint32_t>(getpid()));
    EXPECT_EQ(received->role, Role::Upstream);
    EXPECT_FALSE(received->conn_age_ms) << "age of a connection older than the agent is unknown";
    // Idle comes from the socket's own kernel timestamps, so it covers the
    // time before the agent attached.
    expect_idle_since(received->idle_ms, received->mono_ns, exchange);
    close(client);
}

TEST(BpfSession, RingBufferOverflowIsCountedNotSilent)
{
    REQUIRE_ROOT();
    // One page of ring buffer holds about twenty records; nobody consumes.
    // Only this process's own sockets, so that other resets on the host
    // cannot change the counts.
    Collector collector(4096, /*peer_resets=*/false);
    int listener = rwtest::listen_on_loopback(false);
    ASSERT_GE(listener, 0);
    const int resets = 200;
    for (int i = 0; i < resets; i++) {
        int client = rwtest::connect_to(false, rwtest::port_of(listener));
        ASSERT_GE(client, 0);
        int accepted = accept(listener, nullptr, nullptr);
        rwtest::close_with_reset(client);
        close(accepted);
    }
    close(listener);

    BpfCounters counters = collector.session().counters();
    EXPECT_GT(counters.records_lost, 0u);
    EXPECT_GE(counters.records_emitted + counters.records_lost, static_cast<uint64_t>(resets));
    collector.session().drain();
    EXPECT_EQ(collector.received_count(), counters.records_emitted);
}

TEST(BpfSession, ReusedConnectionReportsPoolIdleAndTheOpenRequest)
{
    REQUIRE_ROOT();
    Collector collector;
    int listener = rwtest::listen_on_loopback(false);
    ASSERT_GE(listener, 0);
    const uint16_t port = rwtest::port_of(listener);
    // A backend that answers the first request and resets the connection
    // when the second arrives on it, as a backend that dropped it would.
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int conn = accept(listener, nullptr, nullptr);
        char buf[64];
        if (conn >= 0 && read(conn, buf, sizeof(buf)) > 0 && write(conn, "resp", 4) == 4 &&
            read(conn, buf, sizeof(buf)) > 0)
            rwtest::close_with_reset(conn);
        _exit(0);
    }
    close(listener);
    int client = rwtest::connect_to(false, port);
    ASSERT_GE(client, 0);
    const std::string local = rwtest::endpoint_of(client, false);
    const uint64_t first_response = request_response(client).read_ns;
    std::this_thread::sleep_for(200ms);
    const uint64_t second_request = rwtest::monotonic_ns();
    ASSERT_EQ(write(client, "GET", 3), 3);

    auto received = collector.wait_for_reset([&](const ResetEvent &e) {
        return e.direction == Direction::Received && e.local == local;
    });
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    ASSERT_TRUE(received) << "seen:" << collector.describe();
    EXPECT_TRUE(received->reused);
    EXPECT_TRUE(received->in_request);
    ASSERT_TRUE(received->pool_idle_ms);
    EXPECT_NEAR(*received->pool_idle_ms, (second_request - first_response) / 1e6, 10.0);
    ASSERT_TRUE(received->since_request_ms);
    EXPECT_LT(*received->since_request_ms, 50.0);
    close(client);
}

TEST(BpfSession, ResetsOfUntrackedFlowsStayOutOfTheRingBuffer)
{
    REQUIRE_ROOT();
    Collector collector;  // peer resets on, as the agent runs
    // A grandchild is not tracked (only a tracked pid's children are), and
    // its connections are no tracked process's flows.
    pid_t child = fork();
    if (child == 0) {
        pid_t grandchild = fork();
        if (grandchild == 0) {
            int listener = rwtest::listen_on_loopback(false);
            for (int i = 0; i < 50 && listener >= 0; i++) {
                int client = rwtest::connect_to(false, rwtest::port_of(listener));
                int accepted = accept(listener, nullptr, nullptr);
                rwtest::close_with_reset(client);
                close(accepted);
            }
            _exit(0);
        }
        waitpid(grandchild, nullptr, 0);
        _exit(0);
    }
    waitpid(child, nullptr, 0);
    collector.session().poll(100);
    EXPECT_EQ(collector.received_count(), 0u) << "seen:" << collector.describe();
}

// Owners live in a table keyed by socket cookie: each one must leave with
// its socket, however the connection ends, or the table fills on a busy host.
TEST(BpfSession, OwnersLeaveTheTableWithTheirSockets)
{
    REQUIRE_ROOT();
    Collector collector(1u << 20, true, false, 65536, /*client_workers=*/true);
    const size_t before = collector.owned_connections();
    int listener = rwtest::listen_on_loopback(false);
    ASSERT_GE(listener, 0);
    const int connections = 200;
    for (int i = 0; i < connections; i++) {
        int client = rwtest::connect_to(false, rwtest::port_of(listener));
        ASSERT_GE(client, 0);
        int accepted = accept(listener, nullptr, nullptr);
        ASSERT_GE(accepted, 0);
        // The accepted side is claimed at its first read of data.
        char buf[4];
        ASSERT_EQ(write(client, "GET", 3), 3);
        ASSERT_EQ(read(accepted, buf, sizeof(buf)), 3);
        // Every other connection ends with a reset, the others with FINs.
        if (i % 2)
            rwtest::close_with_reset(client);
        else
            close(client);
        close(accepted);
    }
    close(listener);
    BpfCounters counters = collector.session().counters();
    EXPECT_GE(counters.owners_recorded, 2u * connections);
    EXPECT_EQ(counters.owners_dropped, 0u);
    // Closed sockets go at once on loopback (TIME_WAIT is a minisock).
    size_t left = collector.owned_connections();
    for (int i = 0; i < 50 && left > before; i++) {
        std::this_thread::sleep_for(20ms);
        left = collector.owned_connections();
    }
    EXPECT_EQ(left, before) << "owners outlived their sockets";
}

// The smallest table: one set of RW_OWNER_WAYS slots.
TEST(BpfSession, FullOwnerTableIsCountedAndOlderOwnersStay)
{
    REQUIRE_ROOT();
    const uint32_t table = RW_OWNER_WAYS;
    Collector collector(1u << 20, /*peer_resets=*/true, /*ttl_evidence=*/false, table);
    int listener = rwtest::listen_on_loopback(false);
    ASSERT_GE(listener, 0);
    std::vector<int> fds;  // client, accepted, client, accepted, ...
    auto open_connection = [&] {
        int client = rwtest::connect_to(false, rwtest::port_of(listener));
        ASSERT_GE(client, 0);
        fds.push_back(client);
        fds.push_back(accept(listener, nullptr, nullptr));
    };
    for (uint32_t i = 0; i < table + 3; i++)
        open_connection();
    BpfCounters counters = collector.session().counters();
    EXPECT_EQ(counters.owners_recorded, table);
    EXPECT_EQ(counters.owners_dropped, 3u);
    EXPECT_EQ(collector.owned_connections(), table);

    // The first connection still has its owner when it is reset.
    const std::string local = rwtest::endpoint_of(fds[0], false);
    rwtest::close_with_reset(fds[1]);
    auto received = collector.wait_for_reset([&](const ResetEvent &e) {
        return e.direction == Direction::Received && e.local == local;
    });
    ASSERT_TRUE(received) << "seen:" << collector.describe();
    EXPECT_EQ(received->pid, static_cast<uint32_t>(getpid()));
    EXPECT_TRUE(received->owner_known);

    // Its slot is free once the socket is gone, and the next connection takes it.
    close(fds[0]);
    EXPECT_EQ(collector.owned_connections(), table - 1);
    open_connection();
    EXPECT_EQ(collector.session().counters().owners_recorded, table + 1);
    EXPECT_EQ(collector.owned_connections(), table);
    for (size_t i = 2; i < fds.size(); i++)
        close(fds[i]);
    close(listener);
}

// A client resets a connection the tracked process accepted and read from.
// Without --client-workers nothing claimed the socket: the listener's
// process owns it. With it, the reader does. The listener is learnt from
// bind() after attach, or seeded when it is older than the agent.
void expect_client_reset_owned(bool client_workers, bool listener_before_attach = false)
{
    REQUIRE_ROOT();
    int listener = listener_before_attach ? rwtest::listen_on_loopback(true) : -1;
    Collector collector(1u << 20, true, false, 65536, client_workers);
    if (listener_before_attach) {
        SeedReport seed = seed_existing_connections(collector.session().seed_maps(), Collector::self_filter());
        EXPECT_EQ(seed.listeners, 1u);
    } else {
        listener = rwtest::listen_on_loopback(true);
    }
    ASSERT_GE(listener, 0);
    const uint16_t port = rwtest::port_of(listener);
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int client = rwtest::connect_to(true, port);
        char buf[4];
        if (client >= 0 && write(client, "GET", 3) == 3 && read(client, buf, 1) == 1)
            rwtest::close_with_reset(client);
        _exit(0);
    }
    int accepted = accept(listener, nullptr, nullptr);
    ASSERT_GE(accepted, 0);
    const std::string local = rwtest::endpoint_of(accepted, false);
    char buf[4];
    ASSERT_EQ(read(accepted, buf, sizeof(buf)), 3);
    ASSERT_EQ(write(accepted, "r", 1), 1);
    auto received = collector.wait_for_reset([&](const ResetEvent &e) {
        return e.direction == Direction::Received && e.local == local;
    });
    waitpid(child, nullptr, 0);
    ASSERT_TRUE(received) << "seen:" << collector.describe();
    EXPECT_TRUE(received->owner_known);
    EXPECT_EQ(received->pid, static_cast<uint32_t>(getpid()));
    EXPECT_EQ(received->role, Role::Downstream);
    EXPECT_EQ(received->owner_listener, !client_workers);
    EXPECT_FALSE(received->owner_holder) << "nobody held the socket when the reset came";
    EXPECT_EQ(received->conn_age_ms.has_value(), client_workers);
    close(accepted);
    close(listener);
}

TEST(BpfSession, ClientResetOfAnUnclaimedConnectionNamesTheListeningProcess)
{
    expect_client_reset_owned(/*client_workers=*/false);
}

TEST(BpfSession, ClientResetNamesTheProcessOfASeededListener)
{
    expect_client_reset_owned(/*client_workers=*/false, /*listener_before_attach=*/true);
}

TEST(BpfSession, ClientResetNamesTheReaderWithClientWorkers)
{
    expect_client_reset_owned(/*client_workers=*/true);
}

// connect() refused, then connect() again on the same socket: one socket,
// one cookie, so one way of the owner table, not two.
TEST(BpfSession, SocketConnectedAgainKeepsOneOwner)
{
    REQUIRE_ROOT();
    Collector collector;
    const size_t before = collector.owned_connections();
    int listener = rwtest::listen_on_loopback(false);
    ASSERT_GE(listener, 0);
    const uint16_t port = rwtest::port_of(listener);
    close(listener);  // nothing listens there now: the first connect() is refused

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    ASSERT_NE(connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)), 0);
    ASSERT_EQ(errno, ECONNREFUSED);
    EXPECT_NE(connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(collector.session().counters().owners_recorded, 2u) << "each connect() claims";
    EXPECT_EQ(collector.owned_connections(), before + 1);
    close(fd);
    EXPECT_EQ(collector.owned_connections(), before);
}

namespace {

// Entries of the listener table, read the way bpftool would.
size_t listener_entries(const BpfSession &session)
{
    const int fd = session.seed_maps().listeners;
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
// port bound and then connect()ed was a client's and must not stay in the
// table, or a later connection on that port would be taken for nginx's.
TEST(BpfSession, OnlyPortsBoundToListenStayListeners)
{
    REQUIRE_ROOT();
    Collector collector;
    const size_t before = listener_entries(collector.session());
    int listener = rwtest::listen_on_loopback(false);
    ASSERT_GE(listener, 0);
    EXPECT_EQ(listener_entries(collector.session()), before + 1) << "bind() of the listener";

    sockaddr_in server{};
    server.sin_family = AF_INET;
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    server.sin_port = htons(rwtest::port_of(listener));
    for (bool no_port : {false, true}) {
        int client = no_port ? bound_loopback_socket(0, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT)
                             : bound_loopback_socket(0);
        ASSERT_GE(client, 0);
        EXPECT_EQ(listener_entries(collector.session()), before + 1 + (no_port ? 0 : 1))
            << (no_port ? "a bind() without a port yet is no listener's" : "bound, not yet connected");
        ASSERT_EQ(connect(client, reinterpret_cast<sockaddr *>(&server), sizeof(server)), 0);
        EXPECT_EQ(listener_entries(collector.session()), before + 1) << "connect() shows it was a client";
        int accepted = accept(listener, nullptr, nullptr);
        close(accepted);
        close(client);
    }
    EXPECT_EQ(collector.session().counters().owners_recorded, 2u);
    close(listener);
}

// The table of upstream servers holds 4096: a tracked process connecting to
// more servers than that gets the excess counted, not silently dropped.
TEST(BpfSession, FullEndpointTableIsCounted)
{
    REQUIRE_ROOT();
    Collector collector(1u << 22);
    // A port held bound and never listened on: nothing can listen there,
    // so each connect() below is refused at once on loopback.
    int holder = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in any{};
    any.sin_family = AF_INET;
    ASSERT_EQ(bind(holder, reinterpret_cast<sockaddr *>(&any), sizeof(any)), 0);
    const uint16_t port = rwtest::port_of(holder);
    const uint32_t servers = 4096 + 8;
    for (uint32_t i = 0; i < servers; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(fd, 0);
        sockaddr_in server{};
        server.sin_family = AF_INET;
        server.sin_port = htons(port);
        server.sin_addr.s_addr = htonl(0x7f4d0000u + i + 1);  // 127.77.0.1 and on: distinct servers
        EXPECT_NE(connect(fd, reinterpret_cast<sockaddr *>(&server), sizeof(server)), 0);
        close(fd);
    }
    close(holder);
    EXPECT_EQ(collector.session().counters().endpoints_dropped, servers - 4096);
}

// A listener on 127.0.0.1:port with SO_REUSEPORT, as nginx's `reuseport`
// binds one per worker; port 0 picks one.
static int reuseport_listener(uint16_t port)
{
    int fd = bound_loopback_socket(port, SOL_SOCKET, SO_REUSEPORT);
    if (fd >= 0 && listen(fd, 16) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

// A port nginx stops listening on must not stay nginx's: the entry goes with
// the last socket bound there (reuseport binds several), and not with the
// connections accepted from it.
TEST(BpfSession, ListenerEntryLeavesWithItsLastSocket)
{
    REQUIRE_ROOT();
    Collector collector;
    const size_t before = listener_entries(collector.session());
    int first = reuseport_listener(0);
    ASSERT_GE(first, 0);
    int second = reuseport_listener(rwtest::port_of(first));
    ASSERT_GE(second, 0);
    EXPECT_EQ(listener_entries(collector.session()), before + 1) << "one endpoint, two sockets";

    int client = rwtest::connect_to(false, rwtest::port_of(first));
    ASSERT_GE(client, 0);
    pollfd ready[2] = {{first, POLLIN, 0}, {second, POLLIN, 0}};
    ASSERT_EQ(poll(ready, 2, 1000), 1);
    int accepted = accept(ready[0].revents ? first : second, nullptr, nullptr);
    ASSERT_GE(accepted, 0);
    close(accepted);
    close(client);
    EXPECT_EQ(listener_entries(collector.session()), before + 1) << "an accepted connection is not its listener";

    close(first);
    EXPECT_EQ(listener_entries(collector.session()), before + 1) << "the other socket still listens";
    close(second);
    EXPECT_EQ(listener_entries(collector.session()), before) << "the port is no longer listened on";
}

// A listener older than the agent is seeded with its socket count, so its
// entry leaves with it too.
TEST(BpfSession, SeededListenerEntryLeavesWithItsSocket)
{
    REQUIRE_ROOT();
    int listener = rwtest::listen_on_loopback(false);
    ASSERT_GE(listener, 0);
    Collector collector;
    const size_t before = listener_entries(collector.session());
    SeedReport seed = seed_existing_connections(collector.session().seed_maps(), Collector::self_filter());
    EXPECT_EQ(seed.listeners, 1u);
    EXPECT_TRUE(seed.problems.empty()) << seed.problems.front();
    EXPECT_EQ(listener_entries(collector.session()), before + 1);
    close(listener);
    EXPECT_EQ(listener_entries(collector.session()), before) << "the seeded listener's socket is gone";
}
