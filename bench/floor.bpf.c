// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The floor for rstwatch's kernel cost: empty programs on the same hooks as
 * rstwatch's hot programs (tp_btf tracepoints; cgroup socket hooks, which
 * rstwatch-bench-progstats attaches to the cgroup v2 root as rstwatch
 * does). Attached next to rstwatch, they run on exactly the same
 * invocations, so the difference in run_time_ns/run_cnt is what rstwatch's
 * program bodies cost, and the floor itself is what any BPF program on that
 * hook costs (trampoline, stats accounting).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* rstwatch before the cgroup hooks (bench --alt-agent), tcpstates, tcplife. */
SEC("tp_btf/inet_sock_set_state")
int floor_inet_sock_set_state(void *ctx) { return 0; }

/*
 * Cgroup socket hooks allow the call with 1. Named fl_<hook> to fit the
 * 15 characters of bpf_prog_info.name, which progstats reads the hook from.
 */
SEC("cgroup/connect4")
int fl_connect4(void *ctx) { return 1; }

SEC("cgroup/connect6")
int fl_connect6(void *ctx) { return 1; }

SEC("cgroup/post_bind4")
int fl_post_bind4(void *ctx) { return 1; }

SEC("cgroup/post_bind6")
int fl_post_bind6(void *ctx) { return 1; }

SEC("tp_btf/sock_recv_length")
int floor_sock_recv_length(void *ctx) { return 0; }

/* rstwatch --ttl-evidence only. */
SEC("tp_btf/tcp_probe")
int floor_tcp_probe(void *ctx) { return 0; }

SEC("tp_btf/tcp_receive_reset")
int floor_tcp_receive_reset(void *ctx) { return 0; }

SEC("tp_btf/tcp_send_reset")
int floor_tcp_send_reset(void *ctx) { return 0; }

SEC("tp_btf/tcp_destroy_sock")
int floor_tcp_destroy_sock(void *ctx) { return 0; }
