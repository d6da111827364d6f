// The control socket of a running agent: one JSON request line in, one
// JSON response line out, then the connection closes. What the requests
// mean is the protocol's (control_protocol.h); this is the transport.
//
// Only root (SO_PEERCRED uid 0) is answered; the socket itself is mode
// 0600. Each client is served on a thread of its own, so that a slow or
// idle one holds up nobody else: it has kRequestDeadline from connecting to
// send its whole request line, and then gets an error and is disconnected.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

namespace rstwatch {

// Where `rstwatch run` listens and `rstwatch dump` asks, unless told otherwise.
constexpr const char *kDefaultSocketPath = "/run/rstwatch.sock";

class ControlServer {
public:
    // Called on the client's thread, perhaps on several at once.
    using Handler = std::function<nlohmann::json(const nlohmann::json &request)>;
    static constexpr size_t kMaxRequestBytes = 64 * 1024;
    // For the whole request line, however it trickles in.
    static constexpr std::chrono::milliseconds kRequestDeadline{2000};
    // For the whole response, once the handler has it: a client that does
    // not read is not waited for longer.
    static constexpr std::chrono::milliseconds kResponseDeadline{5000};
    // Clients served at once (a thread each); past it a client is told
    // the agent is busy and disconnected at once.
    static constexpr size_t kMaxClients = 64;

    // Binds `path` (mode 0600) and serves on a background thread. A stale
    // socket file is replaced; a live one (another agent answers) is a
    // FatalError, as is a path that exists and is not a socket.
    ControlServer(std::string path, Handler handler, uid_t allowed_uid = 0);
    // Stops the thread and removes the socket file if it is still ours.
    ~ControlServer();
    ControlServer(const ControlServer &) = delete;
    ControlServer &operator=(const ControlServer &) = delete;

    // Throws the FatalError the constructor would (a path too long, a
    // folder missing or not writable, a live or foreign file at path),
    // without binding: a second agent is refused before it does anything
    // else.
    static void check_free(const std::string &path);

    const std::string &path() const { return path_; }
    uint64_t requests_refused() const { return refused_; }

private:
    struct Client {
        std::thread thread;
        std::atomic<bool> done{false};
    };

    void loop();
    void accept_client();
    void reap_clients(bool all);
    void serve(int fd);

    std::string path_;
    Handler handler_;
    uid_t allowed_uid_;
    int listen_fd_ = -1;
    int wake_fd_ = -1;  // eventfd, readable from shutdown on: ends every wait
    dev_t dev_ = 0;
    ino_t ino_ = 0;
    std::atomic<uint64_t> refused_{0};
    std::list<std::unique_ptr<Client>> clients_;  // the accepting thread's alone
    std::thread thread_;
};

// The client side: sends one request, returns the parsed response. Throws
// FatalError (no agent on the socket, permission denied, timeout, garbage).
nlohmann::json control_request(const std::string &path, const nlohmann::json &request,
                               std::chrono::milliseconds timeout = std::chrono::seconds(30));

// Runs calls from other threads on the thread that owns the tables: the
// control thread call()s and waits; the run loop calls run_pending()
// after each poll.
class MainThreadCalls {
public:
    using Fn = std::function<nlohmann::json(const nlohmann::json &)>;

    // The response, or {"error":...} after timeout or close().
    nlohmann::json call(const nlohmann::json &request, std::chrono::milliseconds timeout);
    void run_pending(const Fn &fn);
    // At shutdown: calls waiting and to come get an error at once.
    void close();

private:
    struct Pending {
        nlohmann::json request;
        nlohmann::json response;
        bool done = false;
        bool abandoned = false;
    };
    std::mutex mu_;
    std::condition_variable done_;
    std::deque<std::shared_ptr<Pending>> queue_;
    bool closed_ = false;
};

}  // namespace rstwatch
