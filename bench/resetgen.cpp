// rstwatch-bench-resetgen: a bounded reset storm on loopback.
//
//   rstwatch-bench-resetgen [--duration S] [--max-resets N] [--threads T] [--wait-signal]
//                           [--graceful | --backend-resets]
//
// T client threads connect to a listener on 127.0.0.1 and close each
// connection at once with SO_LINGER 0, which sends a RST from an ESTABLISHED
// socket: one reset per connection, as fast as the machine allows, until S
// seconds passed or N resets were sent (both bounded).
//
// With --backend-resets the acceptor resets each connection instead, and
// the client reads until the reset arrives: the tracked end receives it, as
// nginx does on an upstream connection whose backend (on this host) aborts.
//
// With --graceful the connections close with a FIN instead: no resets, only
// connection churn, to measure what the per-connection hooks cost. The CPU
// time of both processes (the clients' and the acceptor's) per connection
// is printed at the end. The acceptor closes first and the client after
// reading its FIN, as a backend does after a "Connection: close" request
// from nginx: TIME_WAIT is on the listener's side, where it does not hold
// the client's ports. (Client-side TIME_WAIT made a connect() cost 40 or
// 75 µs here, depending on how full the host's TIME_WAIT table was.)
//
// The listener and its accept loop live in a grandchild, so that an agent
// tracking this pid (which covers its children, not theirs) sees one tracked
// end per reset, as nginx does with a client or a backend: with both ends
// tracked every reset would be two events, one of them a downstream
// connection's.
//
// With --wait-signal it prints "ready PID" and waits (at most 60 s) for SIGUSR1
// before starting, so that an agent can be attached to its pid first.
// At the end it prints "resets N seconds S rate R/s".

#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<bool> g_stop{false};
volatile sig_atomic_t g_go = 0;
void on_go(int) { g_go = 1; }
void on_stop(int) { g_stop.store(true); }

uint64_t process_cpu_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
}

// The grandchild: listens, reports its address, accepts and closes (with a
// reset if `reset`) until `stop` reads EOF, then reports the CPU time it
// used on `cpu_out`.
[[noreturn]] void run_acceptor(int stop, int port_out, int cpu_out, bool reset)
{
    const linger abort = {1, 0};
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(addr);
    if (bind(lfd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) != 0 || listen(lfd, 4096) != 0 ||
        getsockname(lfd, reinterpret_cast<sockaddr *>(&addr), &alen) != 0)
        _exit(1);
    if (write(port_out, &addr, sizeof(addr)) != static_cast<ssize_t>(sizeof(addr)))
        _exit(1);
    close(port_out);
    pollfd p[2] = {{lfd, POLLIN, 0}, {stop, POLLIN, 0}};
    for (;;) {
        if (poll(p, 2, 1000) <= 0)
            continue;
        if (p[1].revents) {
            uint64_t cpu = process_cpu_ns();
            _exit(write(cpu_out, &cpu, sizeof(cpu)) == static_cast<ssize_t>(sizeof(cpu)) ? 0 : 1);
        }
        int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        if (reset)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, sizeof(abort));
        close(fd);
    }
}

[[noreturn]] void usage(int status)
{
    std::fprintf(status ? stderr : stdout,
                 "usage: rstwatch-bench-resetgen [--duration S] [--max-resets N] [--threads T] [--wait-signal] "
                 "[--graceful | --backend-resets]\n"
                 "Loopback only: connects to its own listener and resets each connection (SO_LINGER 0),\n"
                 "or with --backend-resets has the listener's side reset it and reads until it does,\n"
                 "or with --graceful closes it (FIN) and reports the CPU time per connection.\n"
                 "example: rstwatch-bench-resetgen --duration 5 --max-resets 1000000 --threads 2\n");
    std::exit(status);
}

}  // namespace

int main(int argc, char **argv)
{
    double duration_s = 5;
    long max_resets = 1'000'000;
    int threads = 1;
    bool wait_signal = false;
    bool graceful = false;
    bool backend_resets = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc)
                usage(2);
            return argv[++i];
        };
        if (a == "--duration")
            duration_s = std::atof(value().c_str());
        else if (a == "--max-resets")
            max_resets = std::atol(value().c_str());
        else if (a == "--threads")
            threads = std::atoi(value().c_str());
        else if (a == "--wait-signal")
            wait_signal = true;
        else if (a == "--graceful")
            graceful = true;
        else if (a == "--backend-resets")
            backend_resets = true;
        else if (a == "-h" || a == "--help")
            usage(0);
        else
            usage(2);
    }
    // Bounded whatever the caller asks.
    if (duration_s <= 0 || duration_s > 300 || max_resets <= 0 || max_resets > 100'000'000 || threads < 1 ||
        threads > 16 || (graceful && backend_resets)) {
        std::fprintf(stderr, "resetgen: --duration must be in (0, 300], --max-resets in (0, 1e8], --threads in [1, 16];\n"
                     "--graceful and --backend-resets exclude each other\n");
        return 2;
    }

    sockaddr_in addr = {};
    // stop[1] stays open here: the acceptor leaves when it reads EOF, also
    // if this process dies.
    int stop[2], port_pipe[2], cpu_pipe[2];
    if (pipe2(stop, O_CLOEXEC) != 0 || pipe2(port_pipe, O_CLOEXEC) != 0 || pipe2(cpu_pipe, O_CLOEXEC) != 0) {
        std::perror("resetgen: pipe");
        return 1;
    }
    pid_t child = fork();
    if (child == 0) {
        close(stop[1]);
        close(port_pipe[0]);
        close(cpu_pipe[0]);
        if (fork() == 0)
            run_acceptor(stop[0], port_pipe[1], cpu_pipe[1], backend_resets);
        _exit(0);
    }
    close(stop[0]);
    close(port_pipe[1]);
    close(cpu_pipe[1]);
    waitpid(child, nullptr, 0);
    if (read(port_pipe[0], &addr, sizeof(addr)) != static_cast<ssize_t>(sizeof(addr))) {
        std::fprintf(stderr, "resetgen: the acceptor could not listen on 127.0.0.1\n");
        return 1;
    }
    close(port_pipe[0]);

    struct sigaction sa = {};
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    if (wait_signal) {
        sa.sa_handler = on_go;
        sigaction(SIGUSR1, &sa, nullptr);
        std::printf("ready %d\n", static_cast<int>(getpid()));
        std::fflush(stdout);
        for (int i = 0; i < 6000 && !g_go && !g_stop.load(); i++)
            usleep(10'000);
        if (!g_go) {
            std::fprintf(stderr, "resetgen: no SIGUSR1 within 60 s\n");
            return 1;
        }
    }

    std::atomic<long> sent{0};
    std::atomic<long> failures{0};
    const uint64_t cpu_before = process_cpu_ns();
    const auto start = std::chrono::steady_clock::now();
    const auto deadline = start + std::chrono::duration<double>(duration_s);
    std::vector<std::thread> clients;
    for (int t = 0; t < threads; t++) {
        clients.emplace_back([&] {
            const linger lin = {1, 0};
            int n = 0;
            while (!g_stop.load()) {
                // The clock is read every 64 connections; the count bound is exact.
                if ((++n & 63) == 0 && std::chrono::steady_clock::now() >= deadline)
                    break;
                if (sent.fetch_add(1) >= max_resets) {
                    sent.fetch_sub(1);
                    break;
                }
                int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0 || connect(fd, reinterpret_cast<const sockaddr *>(&addr), sizeof(addr)) != 0) {
                    sent.fetch_sub(1);
                    if (fd >= 0)
                        close(fd);
                    if (failures.fetch_add(1) > 100'000)
                        break;
                    continue;
                }
                if (graceful || backend_resets) {
                    char byte;
                    while (read(fd, &byte, 1) > 0) {  // until the acceptor's FIN or reset
                    }
                } else {
                    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin));
                }
                close(fd);
            }
        });
    }
    for (auto &c : clients)
        c.join();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const uint64_t cpu_clients = process_cpu_ns() - cpu_before;
    g_stop.store(true);
    close(stop[1]);
    // The acceptor's CPU covers its whole life, its start-up included (a few
    // hundred microseconds: nothing next to a round's work).
    uint64_t cpu_acceptor = 0;
    if (read(cpu_pipe[0], &cpu_acceptor, sizeof(cpu_acceptor)) != static_cast<ssize_t>(sizeof(cpu_acceptor)))
        cpu_acceptor = 0;
    const long n = sent.load();
    std::printf("%s %ld seconds %.3f rate %.0f failures %ld cpu_ns_per_connection %.0f\n",
                graceful ? "connections" : "resets", n, secs, n / secs, failures.load(),
                n ? double(cpu_clients + cpu_acceptor) / double(n) : 0.0);
    return 0;
}
