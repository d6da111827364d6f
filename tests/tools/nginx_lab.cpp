#include "nginx_lab.h"

#include "explain/error_log_line.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace rstwatch::testlab {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string errno_text(const char *what) { return std::string(what) + ": " + std::strerror(errno); }

bool fill_loopback(sockaddr_storage &ss, socklen_t &len, const std::string &host, uint16_t port) {
    std::memset(&ss, 0, sizeof ss);
    auto *in4 = reinterpret_cast<sockaddr_in *>(&ss);
    auto *in6 = reinterpret_cast<sockaddr_in6 *>(&ss);
    if (inet_pton(AF_INET, host.c_str(), &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        len = sizeof *in4;
        return true;
    }
    if (inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        len = sizeof *in6;
        return true;
    }
    return false;
}

void set_timeouts(int fd, std::chrono::milliseconds t) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(t.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    // Linux also bounds a blocking connect() by SO_SNDTIMEO.
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// True while pid is a live (not zombie) process named nginx.
bool is_live_nginx(pid_t pid) {
    std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    auto open_paren = stat.find('(');
    auto close_paren = stat.rfind(')');
    if (open_paren == std::string::npos || close_paren == std::string::npos || close_paren + 2 >= stat.size())
        return false;
    return stat.substr(open_paren + 1, close_paren - open_paren - 1) == "nginx" && stat[close_paren + 2] != 'Z';
}

void sleep_for(std::chrono::milliseconds d) { std::this_thread::sleep_for(d); }

}  // namespace

int tcp_connect(const std::string &host, uint16_t port, std::chrono::milliseconds timeout) {
    sockaddr_storage ss;
    socklen_t len = 0;
    if (!fill_loopback(ss, len, host, port)) return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    set_timeouts(fd, timeout);
    if (connect(fd, reinterpret_cast<sockaddr *>(&ss), len) < 0) {
        const int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

uint16_t pick_free_port(bool ipv6) {
    sockaddr_storage ss;
    socklen_t len = 0;
    fill_loopback(ss, len, ipv6 ? "::1" : "127.0.0.1", 0);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(errno_text("socket"));
    if (bind(fd, reinterpret_cast<sockaddr *>(&ss), len) < 0) {
        close(fd);
        throw std::runtime_error(errno_text("bind"));
    }
    sockaddr_storage bound{};
    socklen_t blen = sizeof bound;
    getsockname(fd, reinterpret_cast<sockaddr *>(&bound), &blen);
    close(fd);
    return ipv6 ? ntohs(reinterpret_cast<sockaddr_in6 *>(&bound)->sin6_port)
                : ntohs(reinterpret_cast<sockaddr_in *>(&bound)->sin_port);
}

int http_request(uint16_t port, std::string_view method, std::string_view path, std::string_view body,
                 std::chrono::milliseconds timeout, const std::string &host) {
    auto deadline = Clock::now() + timeout;
    int fd = tcp_connect(host, port, timeout);
    if (fd < 0) return -1;
    std::string host_header = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    std::string req = std::string(method) + " " + std::string(path) + " HTTP/1.1\r\nHost: " + host_header +
                      ":" + std::to_string(port) + "\r\nUser-Agent: rstwatch-testlab\r\nConnection: close\r\n";
    if (!body.empty() || method == "POST" || method == "PUT") {
        req += "Content-Type: application/octet-stream\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    }
    req += "\r\n";
    req += body;
    std::string_view rest = req;
    while (!rest.empty()) {
        ssize_t n = send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            close(fd);
            return -1;
        }
        rest.remove_prefix(static_cast<size_t>(n));
    }
    // Read the whole answer (nginx closes after it): leaving it unread would
    // make our own close() send a RST, which the agent would rightly report.
    std::string resp;
    char buf[8192];
    while (Clock::now() < deadline) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        resp.append(buf, static_cast<size_t>(n));
        if (resp.size() > (1u << 20)) break;
    }
    close(fd);
    // "HTTP/1.1 502 Bad Gateway"
    if (resp.rfind("HTTP/1.", 0) != 0 || resp.size() < 12) return -1;
    int code = std::atoi(resp.c_str() + 9);
    return code >= 100 && code <= 999 ? code : -1;
}

long http_request_abort(uint16_t port, std::string_view path, size_t read_bytes, std::chrono::milliseconds timeout,
                        const std::string &host) {
    auto deadline = Clock::now() + timeout;
    int fd = tcp_connect(host, port, timeout);
    if (fd < 0) return -1;
    std::string host_header = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    std::string req = "GET " + std::string(path) + " HTTP/1.1\r\nHost: " + host_header + ":" + std::to_string(port) +
                      "\r\nUser-Agent: rstwatch-testlab-abort\r\nConnection: close\r\n\r\n";
    if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    char buf[8192];
    while (got < read_bytes && Clock::now() < deadline) {
        ssize_t n = recv(fd, buf, std::min(sizeof buf, read_bytes - got), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += static_cast<size_t>(n);
    }
    linger l{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd);
    return static_cast<long>(got);
}

bool wait_for_listen(uint16_t port, std::chrono::milliseconds timeout, const std::string &host) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        int fd = tcp_connect(host, port, 500ms);
        if (fd >= 0) {
            close(fd);
            return true;
        }
        sleep_for(50ms);
    }
    return false;
}

std::vector<pid_t> child_pids(pid_t parent) {
    std::vector<pid_t> out;
    std::error_code ec;
    for (const auto &entry : fs::directory_iterator("/proc", ec)) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::string stat = read_file(entry.path() / "stat");
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        auto close_paren = stat.rfind(')');
        if (close_paren == std::string::npos) continue;
        std::istringstream rest(stat.substr(close_paren + 1));
        std::string state;
        long ppid = 0;
        if (!(rest >> state >> ppid)) continue;
        if (ppid == parent) out.push_back(static_cast<pid_t>(std::stol(name)));
    }
    return out;
}

std::string read_file(const fs::path &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return {};
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// ---------------------------------------------------------------- ChildProcess

ChildProcess::ChildProcess(std::vector<std::string> argv) {
    if (argv.empty()) throw std::invalid_argument("ChildProcess: empty argv");
    std::vector<char *> cargv;
    for (auto &a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);

    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) < 0) throw std::runtime_error(errno_text("pipe2"));
    if (pipe2(err, O_CLOEXEC) < 0) {
        close(out[0]);
        close(out[1]);
        throw std::runtime_error(errno_text("pipe2"));
    }
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) {
        int e = errno;
        for (int fd : {out[0], out[1], err[0], err[1]}) close(fd);
        errno = e;
        throw std::runtime_error(errno_text("fork"));
    }
    if (pid_ == 0) {
        // Child: async-signal-safe calls only.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);  // the test died before prctl
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        // Undo what the test process may have set that exec would inherit.
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGPIPE, SIG_DFL);
        ::signal(SIGINT, SIG_DFL);
        ::signal(SIGTERM, SIG_DFL);
        execv(cargv[0], cargv.data());
        const char msg[] = "ChildProcess: execv failed: ";
        (void)!write(2, msg, sizeof msg - 1);
        const char *e = strerror(errno);
        (void)!write(2, e, strlen(e));
        (void)!write(2, "\n", 1);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    reader_ = std::thread([this, o = out[0], e = err[0]] { reader_loop(o, e); });
}

ChildProcess::~ChildProcess() {
    terminate();
    if (reader_.joinable()) reader_.join();
}

void ChildProcess::reader_loop(int out_fd, int err_fd) {
    int fds[2] = {out_fd, err_fd};
    bool open_[2] = {true, true};
    // Bounded: once the child is reaped, grandchildren holding the pipe must
    // not keep us (and the destructor's join) waiting forever.
    Clock::time_point reaped_at{};
    while (open_[0] || open_[1]) {
        pollfd p[2];
        int n = 0;
        int idx[2];
        for (int i = 0; i < 2; ++i) {
            if (open_[i]) {
                p[n] = {fds[i], POLLIN, 0};
                idx[n++] = i;
            }
        }
        int r = poll(p, static_cast<nfds_t>(n), 100);
        if (r < 0 && errno != EINTR) break;
        for (int k = 0; k < n && r > 0; ++k) {
            if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[8192];
            ssize_t got = read(p[k].fd, buf, sizeof buf);
            std::lock_guard lk(mu_);
            if (got <= 0) {
                open_[idx[k]] = false;
            } else {
                (idx[k] == 0 ? out_ : err_).append(buf, static_cast<size_t>(got));
            }
            cv_.notify_all();
        }
        if (r == 0) {
            std::lock_guard lk(mu_);
            if (reaped_) {
                if (reaped_at == Clock::time_point{}) reaped_at = Clock::now();
                if (Clock::now() - reaped_at > 1s) break;
            }
        }
    }
    close(out_fd);
    close(err_fd);
    std::lock_guard lk(mu_);
    eof_ = true;
    cv_.notify_all();
}

bool ChildProcess::wait_for_output(std::string_view substr, std::chrono::milliseconds timeout, Stream stream) {
    std::unique_lock lk(mu_);
    auto found = [&] {
        bool o = stream != Stream::Stderr && out_.find(substr) != std::string::npos;
        bool e = stream != Stream::Stdout && err_.find(substr) != std::string::npos;
        return o || e;
    };
    cv_.wait_for(lk, timeout, [&] { return found() || eof_; });
    return found();
}

bool ChildProcess::wait_output_closed(std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return eof_; });
}

std::string ChildProcess::stdout_text() const {
    std::lock_guard lk(mu_);
    return out_;
}

std::string ChildProcess::stderr_text() const {
    std::lock_guard lk(mu_);
    return err_;
}

bool ChildProcess::try_reap(int options) {
    {
        std::lock_guard lk(mu_);
        if (reaped_ || pid_ <= 0) return true;
    }
    int status = 0;
    pid_t r;
    do {
        r = waitpid(pid_, &status, options);
    } while (r < 0 && errno == EINTR);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
        std::lock_guard lk(mu_);
        reaped_ = true;
        status_ = r == pid_ ? status : 0;
        return true;
    }
    return false;
}

bool ChildProcess::signal(int sig) {
    if (try_reap(WNOHANG)) return false;
    return ::kill(pid_, sig) == 0;
}

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
        if (try_reap(WNOHANG)) {
            std::lock_guard lk(mu_);
            return status_;
        }
        if (Clock::now() >= deadline) return std::nullopt;
        sleep_for(10ms);
    }
}

bool ChildProcess::running() { return !try_reap(WNOHANG); }

int ChildProcess::terminate(std::chrono::milliseconds grace) {
    if (!try_reap(WNOHANG)) {
        ::kill(pid_, SIGTERM);
        if (!wait(grace)) {
            ::kill(pid_, SIGKILL);
            try_reap(0);
        }
    }
    std::lock_guard lk(mu_);
    return status_;
}

std::string ChildProcess::describe_status(int status) {
    if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
    return "status " + std::to_string(status);
}

// --------------------------------------------------------- error-log parsing

// The agent's own parser (agent/explain), so that the tests read nginx's
// lines as `rstwatch explain` does.
std::optional<UpstreamResetLine> parse_upstream_reset_line(std::string_view line) {
    auto failure = rstwatch::parse_upstream_failure(line);
    if (!failure || failure->kind != rstwatch::FailureKind::Reset || !failure->pid ||
        failure->upstream_kind == rstwatch::UpstreamKind::Missing)
        return std::nullopt;
    return UpstreamResetLine{static_cast<pid_t>(*failure->pid), failure->upstream, failure->context, failure->raw};
}

// ------------------------------------------------------------------ NginxLab

NginxLab::NginxLab(NginxLabOptions options) : opt_(std::move(options)) {
    if (opt_.upstreams.empty() && opt_.root_dir.empty() && opt_.server_extra.empty())
        throw std::invalid_argument("NginxLab: nothing to serve (no upstreams, root_dir or server_extra)");
    char tmpl[] = "/tmp/rstwatch-lab.XXXXXX";
    if (!mkdtemp(tmpl)) throw std::runtime_error(errno_text("mkdtemp"));
    prefix_ = tmpl;
    // Workers drop to an unprivileged user: they must be able to reach the
    // body-buffering temp dirs inside the prefix (mkdtemp makes it 0700).
    chmod(prefix_.c_str(), 0755);

    try {
        listen_port_ = opt_.listen_port ? opt_.listen_port : pick_free_port(false);
        if (!opt_.netns.empty() && !opt_.listen_port) listen_port_ = 80;  // a namespace of its own
        config_ = render_config();
        {
            std::ofstream conf(prefix_ / "nginx.conf");
            conf << config_;
            if (!conf) throw std::runtime_error("NginxLab: cannot write nginx.conf");
        }
        const std::string prefix_arg = prefix_.string() + "/";
        const std::string conf_arg = (prefix_ / "nginx.conf").string();
        const std::string startup_log = (prefix_ / "startup.log").string();
        const std::string globals = "pid " + (prefix_ / "nginx.pid").string() + ";";
        const std::string out_path = (prefix_ / "nginx.out").string();
        std::vector<std::string> argv = {"/usr/sbin/nginx", "-p", prefix_arg, "-c",       conf_arg,
                                         "-e",              startup_log, "-g", globals};
        // `ip netns exec` enters the namespace and execs nginx: same pid.
        if (!opt_.netns.empty()) argv.insert(argv.begin(), {"/usr/sbin/ip", "netns", "exec", opt_.netns});
        std::vector<char *> cargv;
        for (auto &a : argv) cargv.push_back(a.data());
        cargv.push_back(nullptr);

        const pid_t parent = getpid();
        master_pid_ = fork();
        if (master_pid_ < 0) throw std::runtime_error(errno_text("fork"));
        if (master_pid_ == 0) {
            // If the test dies, SIGTERM makes the master stop its workers too
            // (SIGKILL would orphan them).
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent) _exit(127);
            int devnull = open("/dev/null", O_RDONLY);
            if (devnull >= 0) dup2(devnull, 0);
            int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (out >= 0) {
                dup2(out, 1);
                dup2(out, 2);
            }
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, nullptr);
            execv(cargv[0], cargv.data());
            _exit(127);
        }

        auto deadline = Clock::now() + opt_.start_timeout;
        bool ready = false;
        while (Clock::now() < deadline) {
            int status = 0;
            if (waitpid(master_pid_, &status, WNOHANG) == master_pid_) {
                reaped_ = true;
                throw std::runtime_error("nginx exited at start (" + ChildProcess::describe_status(status) +
                                         ")\n" + read_file(prefix_ / "startup.log") + read_file(prefix_ / "nginx.out") +
                                         error_log());
            }
            if (static_cast<int>(worker_pids().size()) >= opt_.worker_processes && listening()) {
                ready = true;
                break;
            }
            sleep_for(50ms);
        }
        if (!ready) {
            throw std::runtime_error("nginx did not come up on port " + std::to_string(listen_port_) + "\n" +
                                     read_file(prefix_ / "startup.log") + error_log());
        }
        known_workers_ = worker_pids();
    } catch (...) {
        stop(2s);
        std::error_code ec;
        fs::remove_all(prefix_, ec);
        throw;
    }
}

NginxLab::~NginxLab() {
    stop();
    std::error_code ec;
    fs::remove_all(prefix_, ec);
}

bool NginxLab::listening() const {
    if (opt_.netns.empty()) return wait_for_listen(listen_port_, 200ms, opt_.listen_host);
    // Check from inside the namespace: a thread of ours enters it (the
    // network namespace is per thread).
    bool ok = false;
    std::thread t([&] {
        int fd = open(("/run/netns/" + opt_.netns).c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return;
        int r = setns(fd, CLONE_NEWNET);
        close(fd);
        if (r == 0) ok = wait_for_listen(listen_port_, 200ms, opt_.listen_host);
    });
    t.join();
    return ok;
}

std::string NginxLab::render_config() const {
    const std::string p = prefix_.string();
    std::ostringstream c;
    c << "# written by rstwatch's test harness (tests/tools/nginx_lab.cpp)\n"
      << "worker_processes " << opt_.worker_processes << ";\n"
      << "daemon off;\n"
      << "master_process on;\n"
      << "error_log " << p << "/error.log " << opt_.error_log_level << ";\n"
      << "events { worker_connections 1024; }\n"
      << "http {\n"
      << "    log_format lab '$remote_addr [$time_local] \"$request\" $status "
         "upstream_addr=$upstream_addr upstream_connect_time=$upstream_connect_time "
         "upstream_header_time=$upstream_header_time upstream_status=$upstream_status';\n"
      << "    access_log " << p << "/access.log lab;\n"
      << "    client_body_temp_path " << p << "/client_body_temp;\n"
      << "    proxy_temp_path " << p << "/proxy_temp;\n"
      << "    fastcgi_temp_path " << p << "/fastcgi_temp;\n"
      << "    uwsgi_temp_path " << p << "/uwsgi_temp;\n"
      << "    scgi_temp_path " << p << "/scgi_temp;\n";
    if (!opt_.upstreams.empty()) {
        c << "    upstream backend {\n";
        for (const auto &u : opt_.upstreams) c << "        server " << u << ";\n";
        if (opt_.upstream_keepalive > 0) c << "        keepalive " << opt_.upstream_keepalive << ";\n";
        if (!opt_.upstream_extra.empty()) c << "        " << opt_.upstream_extra << "\n";
        c << "    }\n";
    }
    if (!opt_.http_extra.empty()) c << "    " << opt_.http_extra << "\n";
    const std::string host =
        opt_.listen_host.find(':') != std::string::npos ? "[" + opt_.listen_host + "]" : opt_.listen_host;
    c << "    server {\n"
      << "        listen " << host << ":" << listen_port_ << ";\n";
    if (opt_.listen_ipv6) c << "        listen [::1]:" << listen_port_ << ";\n";
    if (!opt_.upstreams.empty()) {
        c << "        location / {\n"
          << "            proxy_pass http://backend;\n";
        if (opt_.upstream_keepalive > 0) {
            c << "            proxy_http_version 1.1;\n"
              << "            proxy_set_header Connection \"\";\n";
        }
        if (!opt_.location_extra.empty()) c << "            " << opt_.location_extra << "\n";
        c << "        }\n";
    } else if (!opt_.root_dir.empty()) {
        c << "        location / {\n"
          << "            root " << opt_.root_dir << ";\n";
        if (!opt_.location_extra.empty()) c << "            " << opt_.location_extra << "\n";
        c << "        }\n";
    }
    if (!opt_.server_extra.empty()) c << "        " << opt_.server_extra << "\n";
    c << "    }\n"
      << "}\n";
    return c.str();
}

std::vector<pid_t> NginxLab::worker_pids() const {
    if (master_pid_ <= 0 || reaped_) return {};
    return child_pids(master_pid_);
}

std::string NginxLab::error_log() const { return read_file(error_log_path()); }

std::string NginxLab::access_log() const { return read_file(access_log_path()); }

std::vector<UpstreamResetLine> NginxLab::error_log_resets() const {
    std::vector<UpstreamResetLine> out;
    std::istringstream in(error_log());
    std::string line;
    while (std::getline(in, line)) {
        if (auto r = parse_upstream_reset_line(line)) out.push_back(std::move(*r));
    }
    return out;
}

std::vector<UpstreamResetLine> NginxLab::wait_for_error_log_resets(size_t count,
                                                                   std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
        auto r = error_log_resets();
        if (r.size() >= count || Clock::now() >= deadline) return r;
        sleep_for(50ms);
    }
}

void NginxLab::stop(std::chrono::milliseconds grace) {
    if (master_pid_ <= 0 || reaped_) return;
    for (pid_t w : worker_pids()) {
        if (std::find(known_workers_.begin(), known_workers_.end(), w) == known_workers_.end())
            known_workers_.push_back(w);
    }
    auto wait_exit = [&](std::chrono::milliseconds t) {
        auto deadline = Clock::now() + t;
        for (;;) {
            int status = 0;
            pid_t r = waitpid(master_pid_, &status, WNOHANG);
            if (r == master_pid_ || (r < 0 && errno == ECHILD)) return true;
            if (Clock::now() >= deadline) return false;
            sleep_for(20ms);
        }
    };
    ::kill(master_pid_, SIGQUIT);  // graceful: workers finish and exit
    if (!wait_exit(grace)) {
        ::kill(master_pid_, SIGTERM);  // fast shutdown
        if (!wait_exit(2s)) {
            ::kill(master_pid_, SIGKILL);
            wait_exit(2s);
        }
    }
    reaped_ = true;
    // A killed master orphans its workers; end those we saw, by pid, if they
    // are still nginx (guards against pid reuse).
    for (pid_t w : known_workers_) {
        for (int i = 0; i < 100 && is_live_nginx(w); ++i) {
            if (i == 0) ::kill(w, SIGKILL);
            sleep_for(10ms);
        }
    }
}

}  // namespace rstwatch::testlab
