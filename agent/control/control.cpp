#include "control/control.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "common/errors.h"
#include "outputs/file_checks.h"

namespace rstwatch {

namespace {

sockaddr_un socket_address(const std::string &path)
{
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path))
        throw FatalError("control socket path too long: " + path, "use a path under 108 characters");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    return addr;
}

using Clock = std::chrono::steady_clock;

// SO_SNDTIMEO bounds a client's connect() to an agent whose backlog is full.
void set_send_timeout(int fd, std::chrono::milliseconds timeout)
{
    timeval tv{};
    tv.tv_sec = timeout.count() / 1000;
    tv.tv_usec = (timeout.count() % 1000) * 1000;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// Waits until fd has `events`, the deadline passes or wake_fd (if >= 0)
// turns readable. True when fd is ready (or failed: the next call says).
bool wait_for(int fd, short events, Clock::time_point deadline, int wake_fd)
{
    for (;;) {
        auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0)
            return false;
        pollfd fds[2] = {{fd, events, 0}, {wake_fd, POLLIN, 0}};
        int n = ::poll(fds, wake_fd >= 0 ? 2 : 1, static_cast<int>(std::min<int64_t>(left, 60'000)));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (wake_fd >= 0 && fds[1].revents))
            return false;
        if (fds[0].revents)
            return true;
    }
}

// The whole of s by the deadline; false if not.
bool write_all(int fd, const std::string &s, Clock::time_point deadline, int wake_fd = -1)
{
    size_t off = 0;
    while (off < s.size()) {
        ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0)
            off += n;
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && errno == EAGAIN && wait_for(fd, POLLOUT, deadline, wake_fd))
            continue;
        else
            return false;
    }
    return true;
}

// Reads up to the first newline (or end of stream) by the deadline. false
// on timeout, error or a line longer than max.
bool read_line(int fd, std::string &line, size_t max, Clock::time_point deadline, int wake_fd = -1)
{
    char buf[4096];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (!wait_for(fd, POLLIN, deadline, wake_fd))
                return false;
            continue;
        }
        if (n < 0)
            return false;
        if (n == 0)
            return true;
        line.append(buf, n);
        if (auto nl = line.find('\n'); nl != std::string::npos) {
            line.resize(nl);
            return true;
        }
        if (line.size() > max)
            return false;
    }
}

// Does an agent answer on path? (connect succeeds)
bool someone_listens(const std::string &path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr = socket_address(path);
    bool live = connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0;
    close(fd);
    return live;
}

}  // namespace

void ControlServer::check_free(const std::string &path)
{
    socket_address(path);  // the length check
    check_can_create_in(folder_of(path));
    struct stat st{};
    if (lstat(path.c_str(), &st) != 0)
        return;
    if (!S_ISSOCK(st.st_mode))
        throw FatalError(path + " exists and is not a socket; left untouched",
                         "give --socket another path, or remove the file");
    if (someone_listens(path))
        throw FatalError("another rstwatch agent is serving on " + path,
                         "stop it (or dump from it with `rstwatch dump --socket " + path +
                             "`), or give this one its own --socket and --store");
}

ControlServer::ControlServer(std::string path, Handler handler, uid_t allowed_uid)
    : path_(std::move(path)), handler_(std::move(handler)), allowed_uid_(allowed_uid)
{
    sockaddr_un addr = socket_address(path_);
    check_free(path_);
    struct stat st{};
    if (lstat(path_.c_str(), &st) == 0)
        unlink(path_.c_str());  // stale, from an agent that was killed
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    // The socket is created 0600 (no window in which others could connect).
    mode_t old = umask(0177);
    int rc = bind(listen_fd_, reinterpret_cast<sockaddr *>(&addr), sizeof(addr));
    int err = errno;
    umask(old);
    if (rc != 0 || listen(listen_fd_, 16) != 0) {
        if (rc == 0)
            err = errno;
        close(listen_fd_);
        throw FatalError("cannot serve the control socket " + path_ + ": " + std::strerror(err),
                         "give --socket a path in a writable directory, or --socket none");
    }
    chmod(path_.c_str(), 0600);
    if (stat(path_.c_str(), &st) == 0) {
        dev_ = st.st_dev;
        ino_ = st.st_ino;
    }
    wake_fd_ = eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this] { loop(); });
}

ControlServer::~ControlServer()
{
    uint64_t one = 1;
    if (write(wake_fd_, &one, sizeof(one)) < 0) {
    }
    if (thread_.joinable())
        thread_.join();
    close(listen_fd_);
    close(wake_fd_);
    // Only ours: another agent may have replaced a socket we thought stale.
    struct stat st{};
    if (stat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_)
        unlink(path_.c_str());
}

void ControlServer::loop()
{
    for (;;) {
        reap_clients(/*all=*/false);
        pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
        int n = ::poll(fds, 2, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (fds[1].revents & POLLIN))
            break;
        if (fds[0].revents & POLLIN)
            accept_client();
    }
    reap_clients(/*all=*/true);  // they see wake_fd_ too, and stop waiting
}

void ControlServer::accept_client()
{
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    if (clients_.size() >= kMaxClients) {
        // No thread for it: an answer that cannot block, and the door.
        const std::string busy = nlohmann::json{{"error", "busy: " + std::to_string(kMaxClients) +
                                                              " clients are connected; try again"}}.dump() + "\n";
        send(fd, busy.data(), busy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        close(fd);
        return;
    }
    auto client = std::make_unique<Client>();
    Client *c = client.get();
    try {
        client->thread = std::thread([this, fd, c] {
            serve(fd);
            close(fd);
            c->done = true;
        });
    } catch (const std::system_error &e) {
        spdlog::warn("control socket: no thread for a client ({})", e.what());
        close(fd);
        return;
    }
    clients_.push_back(std::move(client));
}

void ControlServer::reap_clients(bool all)
{
    for (auto it = clients_.begin(); it != clients_.end();) {
        if (all || (*it)->done) {
            (*it)->thread.join();
            it = clients_.erase(it);
        } else {
            ++it;
        }
    }
}

void ControlServer::serve(int fd)
{
    auto reply = [&](const nlohmann::json &j) {
        write_all(fd, j.dump() + "\n", Clock::now() + kResponseDeadline, wake_fd_);
    };
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != allowed_uid_) {
        ++refused_;
        spdlog::warn("control socket: refused a client with uid {} (pid {})", cred.uid, cred.pid);
        reply({{"error", "permission denied: the control socket answers root only"}});
        return;
    }
    std::string line;
    if (!read_line(fd, line, kMaxRequestBytes, Clock::now() + kRequestDeadline, wake_fd_)) {
        reply({{"error", "malformed request: one JSON object on one line, at most 64 KiB, within 2 s"}});
        return;
    }
    nlohmann::json request = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (request.is_discarded() || !request.is_object() || !request.contains("cmd") || !request["cmd"].is_string()) {
        reply({{"error", "malformed request: want a JSON object with a string \"cmd\", e.g. {\"cmd\":\"dump\"}"}});
        return;
    }
    nlohmann::json response;
    try {
        response = handler_(request);
    } catch (const std::exception &e) {
        response = {{"error", e.what()}};
    }
    reply(response);
}

nlohmann::json control_request(const std::string &path, const nlohmann::json &request,
                               std::chrono::milliseconds timeout)
{
    sockaddr_un addr = socket_address(path);
    const auto deadline = Clock::now() + timeout;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    set_send_timeout(fd, timeout);
    if (connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) != 0) {
        int err = errno;
        close(fd);
        if (err == ENOENT || err == ECONNREFUSED)
            throw FatalError("no rstwatch agent is running on " + path,
                             "start `rstwatch run`, or read the store with `rstwatch dump --store PATH`");
        if (err == EACCES || err == EPERM)
            throw FatalError("permission denied on " + path, "the control socket answers root only: use sudo");
        throw FatalError("cannot connect to " + path + ": " + std::strerror(err));
    }
    std::string line;
    // The agent may answer (and close) before reading, e.g. to refuse a
    // client: read its answer even when the write failed.
    write_all(fd, request.dump() + "\n", deadline);
    bool ok = read_line(fd, line, SIZE_MAX / 2, deadline) && !line.empty();
    close(fd);
    if (!ok)
        throw FatalError("no answer from the agent on " + path);
    auto response = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (response.is_discarded() || !response.is_object())
        throw FatalError("the agent on " + path + " answered something that is not JSON");
    return response;
}

nlohmann::json MainThreadCalls::call(const nlohmann::json &request, std::chrono::milliseconds timeout)
{
    auto pending = std::make_shared<Pending>();
    pending->request = request;
    std::unique_lock lock(mu_);
    if (closed_)
        return {{"error", "the agent is stopping"}};
    queue_.push_back(pending);
    if (!done_.wait_for(lock, timeout, [&] { return pending->done || closed_; })) {
        pending->abandoned = true;
        return {{"error", "the agent did not answer in time"}};
    }
    if (!pending->done) {
        pending->abandoned = true;
        return {{"error", "the agent is stopping"}};
    }
    return pending->response;
}

void MainThreadCalls::close()
{
    std::lock_guard lock(mu_);
    closed_ = true;
    done_.notify_all();
}

void MainThreadCalls::run_pending(const Fn &fn)
{
    std::deque<std::shared_ptr<Pending>> work;
    {
        std::lock_guard lock(mu_);
        work.swap(queue_);
    }
    if (work.empty())
        return;
    for (auto &p : work) {
        nlohmann::json response;
        bool abandoned;
        {
            std::lock_guard lock(mu_);
            abandoned = p->abandoned;
        }
        if (!abandoned) {
            try {
                response = fn(p->request);
            } catch (const std::exception &e) {
                response = {{"error", e.what()}};
            }
        }
        std::lock_guard lock(mu_);
        p->response = std::move(response);
        p->done = true;
    }
    done_.notify_all();
}

}  // namespace rstwatch
