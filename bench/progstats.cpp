// rstwatch-bench-progstats: nanoseconds per invocation of BPF programs.
//
//   rstwatch-bench-progstats [--owner LABEL:PID]... [--no-floor] [--duration S]
//   rstwatch-bench-progstats --empty-rstwatch-hooks [--duration S]
//
// Turns on BPF run-time statistics with the BPF_ENABLE_STATS command (they stay
// on only while this process holds the returned fd, so nothing is left
// switched on if it is killed), attaches empty programs on rstwatch's
// tracepoints and cgroup hooks (the floor, floor.bpf.c), and snapshots run_cnt/run_time_ns of
// its own programs and of every program each --owner process holds an fd to
// (found in /proc/PID/fdinfo, so another rstwatch on the same host is never
// mistaken for the one under test). Prints "attached" on stderr, then waits
// for SIGINT/SIGTERM or --duration and prints, per program, the difference:
//
//   LABEL TRACEPOINT PROG_ID RUN_CNT RUN_TIME_NS NS_PER_RUN
//
// Example: rstwatch-bench-progstats --owner rstwatch:$(pidof rstwatch) --duration 30
//
// With --empty-rstwatch-hooks it only holds the floor's programs on the hooks
// `rstwatch run` attaches by default, statistics off, and prints nothing at
// the end: scripts/bench's tool "floor", what any program on those hooks
// costs by running at all, next to what rstwatch costs.

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "floor.skel.h"
#include "kernel/procfs.h"
#include "kernel/unique_fd.h"

namespace {

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

struct Watched {
    std::string label;
    uint32_t id;
    int fd;  // held so the id cannot be reused while we measure
};

struct Sample {
    uint64_t run_cnt = 0;
    uint64_t run_time_ns = 0;
};

bool sample(int fd, Sample &out, bpf_prog_info *keep = nullptr)
{
    bpf_prog_info info = {};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0)
        return false;
    out.run_cnt = info.run_cnt;
    out.run_time_ns = info.run_time_ns;
    if (keep)
        *keep = info;
    return true;
}

// Program ids a process holds, directly or through a bpf_link fd.
std::set<uint32_t> prog_ids_of(pid_t pid)
{
    std::set<uint32_t> ids;
    std::error_code ec;
    std::filesystem::path dir = "/proc/" + std::to_string(pid) + "/fdinfo";
    for (const auto &entry : std::filesystem::directory_iterator(dir, ec)) {
        std::ifstream in(entry.path());
        std::string line;
        while (std::getline(in, line))
            if (line.rfind("prog_id:", 0) == 0)
                ids.insert(static_cast<uint32_t>(std::strtoul(line.c_str() + 8, nullptr, 10)));
    }
    return ids;
}

// "tcp_probe" for a tp_btf program (its attach type is btf_trace_tcp_probe in
// vmlinux BTF); for cgroup programs, the hook their name gives after a prefix
// ("on_connect4", "fl_connect4": "cgroup/connect4"), as bpf_prog_info has no
// attach type (and keeps 15 characters of a name).
std::string tracepoint_of(const bpf_prog_info &info, const btf *vmlinux)
{
    if (vmlinux && info.attach_btf_id && info.attach_btf_obj_id <= 1) {
        const btf_type *t = btf__type_by_id(vmlinux, info.attach_btf_id);
        const char *name = t ? btf__name_by_offset(vmlinux, t->name_off) : nullptr;
        if (name) {
            std::string s = name;
            if (s.rfind("btf_trace_", 0) == 0)
                s = s.substr(10);
            return s;
        }
    }
    std::string name = info.name;
    if (info.type == BPF_PROG_TYPE_CGROUP_SOCK_ADDR || info.type == BPF_PROG_TYPE_CGROUP_SOCK) {
        for (const char *prefix : {"on_", "fl_"})
            if (name.rfind(prefix, 0) == 0)
                return "cgroup/" + name.substr(std::strlen(prefix));
    }
    return "prog:" + name;
}

[[noreturn]] void usage(int status)
{
    std::fprintf(status ? stderr : stdout,
                 "usage: rstwatch-bench-progstats [--owner LABEL:PID]... [--no-floor] [--duration S]\n"
                 "       rstwatch-bench-progstats --empty-rstwatch-hooks [--duration S]\n"
                 "Attaches empty programs on rstwatch's tracepoints, enables BPF run-time stats while\n"
                 "it runs, and on SIGINT/SIGTERM or after S seconds prints per program:\n"
                 "  LABEL TRACEPOINT PROG_ID RUN_CNT RUN_TIME_NS NS_PER_RUN\n"
                 "--empty-rstwatch-hooks: only the empty programs on the hooks rstwatch attaches by\n"
                 "default, no statistics, no output: the cost of a program there running at all.\n"
                 "example: rstwatch-bench-progstats --owner rstwatch:1234 --duration 30\n");
    std::exit(status);
}

}  // namespace

int main(int argc, char **argv)
{
    std::vector<std::pair<std::string, pid_t>> owners;
    bool floor = true;
    bool empty_rstwatch_hooks = false;
    double duration_s = 600;  // bounded even if nobody stops it
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc)
                usage(2);
            return argv[++i];
        };
        if (a == "--owner") {
            std::string v = value();
            auto colon = v.rfind(':');
            if (colon == std::string::npos)
                usage(2);
            owners.emplace_back(v.substr(0, colon), std::atoi(v.c_str() + colon + 1));
        } else if (a == "--no-floor") {
            floor = false;
        } else if (a == "--empty-rstwatch-hooks") {
            empty_rstwatch_hooks = true;
        } else if (a == "--duration") {
            duration_s = std::atof(value().c_str());
        } else if (a == "-h" || a == "--help") {
            usage(0);
        } else {
            usage(2);
        }
    }

    struct sigaction sa = {};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);

    if (empty_rstwatch_hooks && (!floor || !owners.empty()))
        usage(2);
    int stats_fd = empty_rstwatch_hooks ? -1 : bpf_enable_stats(BPF_STATS_RUN_TIME);
    if (stats_fd < 0 && !empty_rstwatch_hooks) {
        std::fprintf(stderr, "progstats: BPF_ENABLE_STATS failed: %s (needs root, Linux 5.8+)\n",
                     std::strerror(errno));
        return 1;
    }

    std::unique_ptr<floor_bpf, void (*)(floor_bpf *)> skel(nullptr, floor_bpf__destroy);
    std::vector<Watched> watched;
    if (floor) {
        skel.reset(floor_bpf__open());
        if (skel && empty_rstwatch_hooks) {
            // Hooks of other tools, of rstwatch's option --ttl-evidence and of its
            // earlier versions (per connection: connect(), socket destruction).
            for (bpf_program *other : {skel->progs.floor_inet_sock_set_state, skel->progs.floor_sock_recv_length,
                                       skel->progs.floor_tcp_probe, skel->progs.floor_tcp_destroy_sock,
                                       skel->progs.fl_connect4, skel->progs.fl_connect6})
                bpf_program__set_autoload(other, false);
        }
        if (!skel || floor_bpf__load(skel.get()) != 0 || floor_bpf__attach(skel.get()) != 0) {
            std::fprintf(stderr, "progstats: cannot load/attach the floor programs: %s\n", std::strerror(errno));
            return 1;
        }
        // The skeleton attaches tracepoints only: cgroup hooks need the cgroup.
        const std::string root = rstwatch::procfs::cgroup2_root();
        const rstwatch::UniqueFd cgroup(root.empty() ? -1 : open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!cgroup.valid()) {
            std::fprintf(stderr, "progstats: no cgroup v2 root to attach the floor's cgroup hooks to\n");
            return 1;
        }
        for (auto [prog, link] : {std::pair{skel->progs.fl_connect4, &skel->links.fl_connect4},
                                  std::pair{skel->progs.fl_connect6, &skel->links.fl_connect6},
                                  std::pair{skel->progs.fl_post_bind4, &skel->links.fl_post_bind4},
                                  std::pair{skel->progs.fl_post_bind6, &skel->links.fl_post_bind6}}) {
            if (!bpf_program__autoload(prog))
                continue;
            *link = bpf_program__attach_cgroup(prog, cgroup.get());
            if (!*link) {
                std::fprintf(stderr, "progstats: cannot attach %s: %s\n", bpf_program__name(prog),
                             std::strerror(errno));
                return 1;
            }
        }
        bpf_program *prog;
        bpf_object__for_each_program(prog, skel->obj)
        {
            bpf_prog_info info = {};
            uint32_t len = sizeof(info);
            int fd = bpf_program__fd(prog);
            if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0)
                watched.push_back({"floor", info.id, dup(fd)});
        }
    }
    for (const auto &[label, pid] : owners) {
        auto ids = prog_ids_of(pid);
        if (ids.empty())
            std::fprintf(stderr, "progstats: warning: pid %d (%s) holds no BPF programs\n", pid, label.c_str());
        for (uint32_t id : ids) {
            int fd = bpf_prog_get_fd_by_id(id);
            if (fd >= 0)
                watched.push_back({label, id, fd});
        }
    }

    btf *vmlinux = btf__load_vmlinux_btf();
    std::vector<Sample> before(watched.size());
    std::vector<bpf_prog_info> infos(watched.size());
    for (size_t i = 0; i < watched.size(); i++)
        sample(watched[i].fd, before[i], &infos[i]);
    std::fprintf(stderr, "progstats: attached; watching %zu programs\n", watched.size());

    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(duration_s);
    while (!g_stop && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (empty_rstwatch_hooks) {
        btf__free(vmlinux);
        for (auto &w : watched)
            close(w.fd);
        return 0;
    }

    std::printf("%-10s %-22s %8s %12s %14s %10s\n", "LABEL", "TRACEPOINT", "PROG_ID", "RUN_CNT", "RUN_TIME_NS",
                "NS_PER_RUN");
    for (size_t i = 0; i < watched.size(); i++) {
        Sample after;
        if (!sample(watched[i].fd, after))
            continue;
        uint64_t cnt = after.run_cnt - before[i].run_cnt;
        uint64_t ns = after.run_time_ns - before[i].run_time_ns;
        std::printf("%-10s %-22s %8u %12llu %14llu %10.1f\n", watched[i].label.c_str(),
                    tracepoint_of(infos[i], vmlinux).c_str(), watched[i].id, (unsigned long long)cnt,
                    (unsigned long long)ns, cnt ? double(ns) / double(cnt) : 0.0);
    }
    std::fflush(stdout);
    btf__free(vmlinux);
    for (auto &w : watched)
        close(w.fd);
    close(stats_fd);
    return 0;
}
