// Test harness shared by the privileged and scenario tests: child processes we
// own by pid, a real nginx in its own temp prefix, a loopback HTTP client and
// the parser for nginx's "recv() failed (104 ...)" error-log line.
//
// Everything here cleans up in destructors, so a failing ASSERT leaves no nginx,
// backend or agent behind. Processes are only ever signalled by the pid we got
// from fork(), never by name.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace rstwatch::testlab {

using namespace std::chrono_literals;

// A port on the loopback that was free a moment ago (bind to port 0, read it
// back, close). ipv6 picks on ::1 instead of 127.0.0.1.
uint16_t pick_free_port(bool ipv6 = false);

// A connected TCP socket (close-on-exec) to host:port, host an IP literal
// ("127.0.0.1", "2001:db8::2"), or -1 with errno set. SO_RCVTIMEO and
// SO_SNDTIMEO are set to timeout, which also bounds the connect.
int tcp_connect(const std::string &host, uint16_t port, std::chrono::milliseconds timeout);

// Blocking HTTP/1.1 request over loopback ("Connection: close", Content-Length
// when body is non-empty). Returns the status code, or -1 on connect failure,
// timeout or an unparsable answer. host is "127.0.0.1" or "::1".
int http_request(uint16_t port, std::string_view method, std::string_view path,
                 std::string_view body = {}, std::chrono::milliseconds timeout = 5s,
                 const std::string &host = "127.0.0.1");

// A client that gives up mid-response: sends a GET, reads until it has
// read_bytes (or timeout), then closes with SO_LINGER 0, which resets the
// connection (what a browser tab or a client timeout does to nginx). Returns the
// bytes read, -1 on connect/send failure.
long http_request_abort(uint16_t port, std::string_view path, size_t read_bytes,
                        std::chrono::milliseconds timeout = 5s, const std::string &host = "127.0.0.1");

// True once something accepts TCP connections on host:port, false after timeout.
bool wait_for_listen(uint16_t port, std::chrono::milliseconds timeout,
                     const std::string &host = "127.0.0.1");

// Direct children of pid, from /proc/*/stat.
std::vector<pid_t> child_pids(pid_t parent);

// Contents of a file, "" when it cannot be read.
std::string read_file(const std::filesystem::path &path);

// A forked and exec'd child whose stdout and stderr are captured (a reader
// thread drains both pipes so the child never blocks on a full pipe). The child
// gets PR_SET_PDEATHSIG(SIGKILL) so it cannot outlive a crashed test.
class ChildProcess {
public:
    enum class Stream { Stdout, Stderr, Either };

    // argv[0] is the path of the program (no PATH lookup). Throws
    // std::runtime_error when fork/pipe fail; an exec failure shows up as exit
    // status 127 with the reason on stderr.
    explicit ChildProcess(std::vector<std::string> argv);
    ~ChildProcess();  // terminate()
    ChildProcess(const ChildProcess &) = delete;
    ChildProcess &operator=(const ChildProcess &) = delete;

    pid_t pid() const { return pid_; }

    // Waits until the captured stream contains substr. false on timeout or
    // when the child exited and its output is drained without a match.
    bool wait_for_output(std::string_view substr, std::chrono::milliseconds timeout,
                         Stream stream = Stream::Either);

    std::string stdout_text() const;
    std::string stderr_text() const;

    // Waits until both pipes reached end of file (all output captured).
    bool wait_output_closed(std::chrono::milliseconds timeout);

    // kill(pid, sig) if still running; false if it already exited.
    bool signal(int sig);

    // Waits for exit up to timeout (reaps it). Returns the raw waitpid status,
    // or nullopt if still running.
    std::optional<int> wait(std::chrono::milliseconds timeout);
    bool running();

    // SIGTERM, then SIGKILL after grace; reaps. Returns the raw wait status.
    // Safe to call more than once.
    int terminate(std::chrono::milliseconds grace = 5s);

    // Human-readable summary of how it ended ("exit 0", "signal 6") for messages.
    static std::string describe_status(int status);

private:
    void reader_loop(int out_fd, int err_fd);
    bool try_reap(int options);

    pid_t pid_ = -1;
    bool reaped_ = false;
    int status_ = 0;
    std::thread reader_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::string out_;
    std::string err_;
    bool eof_ = false;
};

struct NginxLabOptions {
    // "127.0.0.1:8081" or "[::1]:8081"; one `server` line each, in
    // `upstream backend`, which `location /` proxies to. May be empty when
    // root_dir or server_extra say what to serve.
    std::vector<std::string> upstreams;
    int worker_processes = 2;
    // `keepalive N;` in the upstream block; 0 leaves upstream keep-alive off
    // (and then proxy_http_version / Connection "" are not set either).
    int upstream_keepalive = 16;
    // Raw directives appended inside upstream{}, server{} location / {} and
    // http{}, for scenarios (e.g. "keepalive_timeout 60s;",
    // "proxy_next_upstream off;").
    std::string upstream_extra;
    std::string location_extra;
    std::string http_extra;
    // 0 picks a free port.
    uint16_t listen_port = 0;
    // Also listen on [::1]:listen_port.
    bool listen_ipv6 = false;
    // Address of the main `listen` (IPv6 without brackets: "2001:db8::1").
    std::string listen_host = "127.0.0.1";
    // Run nginx inside this network namespace (`ip netns exec NAME nginx`);
    // "" is the test's own. listen_host must be an address of that namespace.
    std::string netns;
    // With no upstreams: `location /` serves this directory (`root DIR;`).
    std::string root_dir;
    // Raw directives inside server{} (more locations, send_timeout, ...).
    std::string server_extra;
    // error_log level ("info" shows client aborts).
    std::string error_log_level = "error";
    std::chrono::milliseconds start_timeout = 10s;
};

// nginx's "recv() failed (104: Connection reset by peer) ... upstream" line
// (or any other call's 104 while talking to the upstream).
struct UpstreamResetLine {
    pid_t pid = 0;            // the worker that logged it (the "1234" of "1234#1234")
    std::string upstream;     // "127.0.0.1:8081" or "[::1]:8081", as the agent writes addresses
    std::string context;      // "while reading response header from upstream", ...
    std::string line;         // the raw line
};

// Parses one error-log line; nullopt unless it is a 104 reset with an upstream.
std::optional<UpstreamResetLine> parse_upstream_reset_line(std::string_view line);

// A real nginx (/usr/sbin/nginx) in a fresh temp prefix, master in the
// foreground (daemon off) so that we own its pid. Constructor returns once the
// master accepts on listen_port() and all workers exist; throws
// std::runtime_error with error.log attached otherwise.
class NginxLab {
public:
    explicit NginxLab(NginxLabOptions options);
    ~NginxLab();  // stop(), then remove the prefix
    NginxLab(const NginxLab &) = delete;
    NginxLab &operator=(const NginxLab &) = delete;

    pid_t master_pid() const { return master_pid_; }
    std::vector<pid_t> worker_pids() const;  // children of the master, now
    uint16_t listen_port() const { return listen_port_; }
    const std::filesystem::path &prefix() const { return prefix_; }
    std::filesystem::path error_log_path() const { return prefix_ / "error.log"; }
    std::filesystem::path access_log_path() const { return prefix_ / "access.log"; }
    std::string config_text() const { return config_; }

    std::string error_log() const;
    std::string access_log() const;
    std::vector<UpstreamResetLine> error_log_resets() const;
    // Polls error.log until it holds at least `count` upstream reset lines.
    std::vector<UpstreamResetLine> wait_for_error_log_resets(size_t count,
                                                             std::chrono::milliseconds timeout);

    // Graceful stop (SIGQUIT), then SIGTERM, then SIGKILL to the master and the
    // workers we saw; reaps the master. Idempotent.
    void stop(std::chrono::milliseconds grace = 5s);

private:
    std::string render_config() const;
    bool listening() const;

    NginxLabOptions opt_;
    std::filesystem::path prefix_;
    uint16_t listen_port_ = 0;
    pid_t master_pid_ = -1;
    bool reaped_ = false;
    std::string config_;
    std::vector<pid_t> known_workers_;
};

}  // namespace rstwatch::testlab
