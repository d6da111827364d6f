#include "app/preflight.h"

#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/errors.h"
#include "control/control.h"
#include "kernel/kernel_features.h"
#include "outputs/file_checks.h"
#include "outputs/store.h"

namespace rstwatch {

namespace {

void check_prerequisites()
{
    std::string all;
    for (const auto &problem : missing_prerequisites(running_kernel()))
        all += (all.empty() ? "" : "; ") + problem;
    if (!all.empty())
        throw FatalError(all);
}

// The log's folder must exist: spdlog would make it, and a mistyped folder
// would then hold the log where nobody looks. A file that is there must take
// writes now: O_NONBLOCK, so that a FIFO nobody reads is an error (ENXIO)
// rather than a start that hangs.
void check_can_write_file(const std::string &path)
{
    struct stat st{};
    if (stat(path.c_str(), &st) != 0) {
        check_can_create_in(folder_of(path));
        return;
    }
    if (S_ISDIR(st.st_mode))
        throw FatalError(path + " is a folder", "give the path of a file");
    int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        throw FatalError("cannot write to " + path + ": " +
                         (errno == ENXIO ? std::string("a FIFO that nothing reads") : std::strerror(errno)));
    close(fd);
}

// Binds and lets go at once, as the metrics server will bind: an address
// not of this host, or a port taken, refuses the start now.
void check_can_listen(const std::string &host, uint16_t port)
{
    const std::string where =
        (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo *found = nullptr;
    if (int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0)
        throw FatalError("cannot serve metrics on " + where + ": " + gai_strerror(rc));
    int fd = socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC, found->ai_protocol);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int rc = fd < 0 ? -1 : bind(fd, found->ai_addr, found->ai_addrlen);
    int err = errno;
    if (fd >= 0)
        close(fd);
    freeaddrinfo(found);
    if (rc != 0)
        throw FatalError("cannot serve metrics on " + where + ": " + std::strerror(err),
                         err == EADDRINUSE ? "pick another port" : "give an address of this host");
}

}  // namespace

void check_before_start(const RunSettings &settings)
{
    if (!settings.log_file.empty())
        as_option("--log-file", [&] { check_can_write_file(settings.log_file); });
    if (settings.check)
        return;
    check_prerequisites();
    // The socket first: when another agent has both, its error says how to
    // dump from that agent.
    if (!settings.socket_path.empty())
        as_option("--socket", [&] { ControlServer::check_free(settings.socket_path); });
    if (!settings.store_path.empty())
        as_option("--store", [&] { Store::check_can_write(settings.store_path); });
    if (!settings.metrics_host.empty())
        as_option("--metrics", [&] { check_can_listen(settings.metrics_host, settings.metrics_port); });
    if (!settings.record_path.empty())
        as_option("--record", [&] { check_can_write_file(settings.record_path); });  // a file that takes writes
}

}  // namespace rstwatch
