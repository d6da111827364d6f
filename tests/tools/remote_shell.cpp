// rstwatch-test-remote-shell: a test-only remote shell, for the VM that plays
// a backend host on another kernel (tests/tools/remote_host.h).
//
// The tests drive that VM over an isolated tap network (198.18.0.0/15 and
// 2001:db8::/32 only, nothing routed beyond the tap), where nothing like ssh
// is set up. Each TCP connection carries one /bin/sh script: it is read up to
// the client's end of file (shutdown(SHUT_WR)), run with `/bin/sh -c` as
// root, and its output (stdout and stderr) is sent back followed by a last
// line `exit N` (N: sh's exit status, 128 + the signal that ended it); then
// the connection is closed.
//
// sh writes into a temp file rather than to the socket, so that a process
// the script leaves in the background (`setsid backend >log 2>&1 &`) never
// holds the connection open. No authentication: never listen on anything but
// a test network.
//
//   rstwatch-test-remote-shell --listen 0.0.0.0:7000

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace {

[[noreturn]] void usage(int status) {
    std::fprintf(status ? stderr : stdout, "usage: rstwatch-test-remote-shell --listen ADDR:PORT\n"
                                           "  e.g. --listen 0.0.0.0:7000 or --listen [::]:7000\n");
    std::exit(status);
}

// "198.18.200.2:7000" or "[2001:db8::2]:7000".
bool parse_addr(const std::string &text, sockaddr_storage &ss, socklen_t &len) {
    std::memset(&ss, 0, sizeof ss);
    auto colon = text.rfind(':');
    if (colon == std::string::npos) return false;
    std::string host = text.substr(0, colon);
    const int port = std::atoi(text.c_str() + colon + 1);
    if (port <= 0 || port > 65535) return false;
    auto *in4 = reinterpret_cast<sockaddr_in *>(&ss);
    auto *in6 = reinterpret_cast<sockaddr_in6 *>(&ss);
    if (inet_pton(AF_INET, host.c_str(), &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(static_cast<uint16_t>(port));
        len = sizeof *in4;
        return true;
    }
    if (host.size() > 2 && host.front() == '[' && host.back() == ']' &&
        inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(static_cast<uint16_t>(port));
        len = sizeof *in6;
        return true;
    }
    return false;
}

std::string read_to_eof(int fd) {
    std::string text;
    char buf[8192];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return text;
        text.append(buf, static_cast<size_t>(n));
    }
}

void send_all(int fd, const std::string &text) {
    size_t sent = 0;
    while (sent < text.size()) {
        ssize_t n = send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // the client gave up: nobody to tell
        sent += static_cast<size_t>(n);
    }
}

// Runs script with /bin/sh -c, its stdout and stderr into output_fd; returns
// sh's exit status (128 + signal when a signal ended it, 127 if sh could not
// start).
int run_script(const std::string &script, int output_fd) {
    pid_t pid = fork();
    if (pid < 0) return 127;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(output_fd, 1);
        dup2(output_fd, 2);
        signal(SIGPIPE, SIG_DFL);
        execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char *>(nullptr));
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return 127;
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

void serve(int conn) {
    const std::string script = read_to_eof(conn);
    // Unlinked at once: it goes when sh and whatever it left running close it.
    char path[] = "/tmp/rstwatch-remote-shell.XXXXXX";
    int output_fd = mkostemp(path, O_CLOEXEC);
    if (output_fd < 0) {
        send_all(conn, std::string("remote-shell: mkstemp: ") + std::strerror(errno) + "\nexit 127\n");
        close(conn);
        return;
    }
    unlink(path);
    const int status = run_script(script, output_fd);
    lseek(output_fd, 0, SEEK_SET);
    send_all(conn, read_to_eof(output_fd) + "exit " + std::to_string(status) + "\n");
    close(output_fd);
    close(conn);
}

int listen_on(const std::string &where) {
    sockaddr_storage addr;
    socklen_t len = 0;
    if (!parse_addr(where, addr, len)) usage(2);
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&addr), len) < 0 || listen(fd, 16) < 0) {
        std::fprintf(stderr, "rstwatch-test-remote-shell: listen on %s: %s\n", where.c_str(), std::strerror(errno));
        std::exit(1);
    }
    return fd;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc == 2 && (std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help")) usage(0);
    if (argc != 3 || std::string(argv[1]) != "--listen") usage(2);
    signal(SIGPIPE, SIG_IGN);
    const int listener = listen_on(argv[2]);
    std::printf("listening %s\n", argv[2]);
    std::fflush(stdout);
    // A thread per connection: a script that hangs holds only its own client.
    for (;;) {
        int conn = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (conn >= 0) std::thread(serve, conn).detach();
    }
}
