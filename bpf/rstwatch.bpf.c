// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * rstwatch kernel side: one object, one skeleton, this one .c file.
 *
 * Nothing runs per send or receive, nor by default per segment: only when
 * a reset happens, at bind(), when the agent runs the task iterator, and,
 * where fentry can attach, once per connection the host opens (the
 * SYN-ACK's TTL). The owner of a connection is read at the reset from the
 * socket itself (owner.bpf.h); what the connection was doing (request
 * open, idle, reused) from the tcp_sock (connection.bpf.h).
 *
 *   tcp_receive_reset    a reset arrived on a tracked process's socket
 *   tcp_send_reset       a reset left a tracked process's socket; one left
 *                        by any other socket is kept for a moment, in case
 *                        a tracked socket receives it (the backend's side,
 *                        when it runs on this host: evidence)
 *   cgroup/post_bind4,6  a tracked process bound a port: its listener
 *   oom/mark_victim      the OOM killer chose a victim (and its memory cgroup)
 *   iter/task            run by the agent at start, every 10 s and when a
 *                        reset met credentials nobody had learnt: who
 *                        holds them (owner.bpf.h)
 *   tcp_probe            only with --ttl-evidence: TTL of the peer's data and
 *                        of a reset, to tell a middlebox from the backend
 *   tcp_reset            fentry, by default where it can attach (5.11+):
 *                        TTL of a received reset, read at the reset only
 *   tcp_finish_connect   fentry, the same kernels, without --ttl-evidence:
 *                        TTL of the SYN-ACK of a tracked process's connect()
 *
 * The bind hooks are attached to the root of the cgroup v2 hierarchy, so
 * they see every process. Earlier versions recorded owners at connect()
 * and forgot them at tcp_destroy_sock: two hooks per connection, which on
 * a VM with retpolines cost about 1% of a proxied request even when empty
 * (docs/BENCHMARKS.md).
 *
 * Where to find what: every program (SEC) is in this file, and so is the
 * handling of a reset, which draws on all the others; each concern is a
 * header, each building on those above it:
 *
 *   core_fixes.bpf.h    every kernel difference, behind CO-RE checks
 *   maps.bpf.h          the agent's settings, every map, counters, records
 *   owner.bpf.h         whose socket it is; what iter/task learns
 *   connection.bpf.h    what the socket says: ends, tuple, counters, turn
 *   listeners.bpf.h     listeners recorded at bind(), looked up at a reset
 *   ttl.bpf.h           TTLs of resets and of the peer; into a reset's record
 *   reset_record.bpf.h  a reset's record: reported or not, owner, out
 *   pairing.bpf.h       a reset sent here paired with its receiving side
 *   oom.bpf.h           what the two mark_victim programs share
 *
 * rstwatch_abi.h is what the agent shares: records, keys, flags.
 *
 * The programs stay in this order, which is the skeleton's: libbpf loads
 * them in it and the skeleton detaches them at exit in it. With the reset
 * programs last, they were still loaded for a moment after the agent had
 * exited (seen on Linux 6.18: AgentBinary.AttachesAndDetachesCleanly).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "core_fixes.bpf.h"
#include "rstwatch_abi.h"
#include "maps.bpf.h"
#include "owner.bpf.h"
#include "connection.bpf.h"
#include "listeners.bpf.h"
#include "ttl.bpf.h"
#include "reset_record.bpf.h"
#include "pairing.bpf.h"
#include "oom.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Cgroup socket hooks must return 1: 0 would fail the caller's system call with EPERM. */
SEC("cgroup/post_bind4")
int on_post_bind4(struct bpf_sock *sk)
{
	on_post_bind(sk, AF_INET);
	return 1;
}

SEC("cgroup/post_bind6")
int on_post_bind6(struct bpf_sock *sk)
{
	on_post_bind(sk, AF_INET6);
	return 1;
}

/* Only with --ttl-evidence: every segment an established socket receives (remember_ttl()). */
SEC("tp_btf/tcp_probe")
int BPF_PROG(on_tcp_probe, struct sock *sk, const struct sk_buff *skb)
{
	remember_ttl(sk, skb);
	return 0;
}

/*
 * TTL evidence at no cost per segment (ttl.bpf.h), where the agent loads
 * these: fentry can attach, and tcp_reset() takes the reset's skb (Linux
 * 5.11, "tcp: parse mptcp options contained in reset packets"; on 5.10 it
 * takes the socket alone, and these stay unloaded). tcp_reset() fires
 * tcp_receive_reset first thing, so its fentry runs right before that
 * program, on the same CPU.
 */
SEC("fentry/tcp_reset")
int BPF_PROG(on_tcp_reset, struct sock *sk, struct sk_buff *skb)
{
	remember_reset_ttl(sk, skb);
	return 0;
}

/* The SYN-ACK of a connection this host opened: once per connection. */
SEC("fentry/tcp_finish_connect")
int BPF_PROG(on_tcp_finish_connect, struct sock *sk, struct sk_buff *skb)
{
	remember_handshake_ttl(sk, skb);
	return 0;
}

/*
 * A reset arrived. The socket still holds its port here (tcp_reset()
 * traces before it closes the socket), and its file if its process has not
 * closed it. Resets of other processes' sockets leave before a record is
 * assembled.
 */
static __always_inline int handle_received_reset(struct sock *sk)
{
	const struct rw_listener *l;
	enum rw_owner_found found;
	struct rw_stamps stamps = {};
	struct rw_reset_record *rec;
	struct rw_endpoint local;
	struct rw_owner owner = {};

	found = find_owner(sk, &owner);
	sock_endpoint(&local, sk, RW_OUR_END);
	l = listener_at(&local, sk);
	if (!wanted(found, &owner, l))
		return 0;
	rec = scratch_record(RW_DIR_RECEIVED);
	if (!rec)
		return 0;
	fill_connection(rec, sk, &stamps);
	fill_owner(rec, found, &owner, l, &stamps);
	if (record_ttls)
		fill_ttls(rec, sk);
	/* Only an upstream connection has a backend whose side is evidence. */
	if (emit_peer_resets && rec->role == RW_ROLE_UPSTREAM)
		emit_and_await_sender_side(rec);
	emit(rec);
	return 0;
}

static __always_inline int handle_sent_reset(struct sock *sk, const struct sk_buff *skb, __u64 reason)
{
	struct rw_stamps stamps = {};
	struct rw_reset_record *rec;
	int report = track_all_tasks;

	rec = scratch_record(RW_DIR_SENT);
	if (!rec)
		return 0;
	if (rw_send_reset_has_reason()) {
		rec->reason = (__u32)reason;
		rec->flags |= RW_RST_REASON_KNOWN;
	}
	if (sk && is_full_sock(sk) && sk->__sk_common.skc_state != TCP_LISTEN) {
		const struct rw_listener *l;
		enum rw_owner_found found;
		struct rw_endpoint local;
		struct rw_owner owner = {};

		fill_connection(rec, sk, &stamps);
		if (!sk->sk_socket)
			rec->flags |= RW_RST_ORPHAN;
		found = find_owner(sk, &owner);
		/* After a close with SO_LINGER 0 only the record has our port. */
		record_endpoint(&local, rec, 1);
		l = listener_at(&local, sk);
		report = wanted(found, &owner, l);
		if (report)
			fill_owner(rec, found, &owner, l, &stamps);
	} else {
		/* No connection: none at all, or only a listener answering a stray. */
		rec->flags |= RW_RST_NO_SOCKET;
		rec->state = sk ? sk->__sk_common.skc_state : TCP_CLOSE;
		rec->idle_ns = rec->since_request_ns = RW_UNKNOWN_NS;
		rec->pool_idle_ns = RW_UNKNOWN_NS;
	}
	/* A reset answering a segment belongs to that segment's flow. */
	if (skb)
		fill_tuple_from_skb(rec, skb);
	if (report)
		emit(rec);
	else if (emit_peer_resets)
		emit_or_keep_unclaimed_sent_reset(rec);
	return 0;
}

/* The reason argument exists since Linux 6.10: read only where it does. */
static __always_inline __u64 send_reset_reason(__u64 *ctx)
{
	return rw_send_reset_has_reason() ? ctx[2] : 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(on_tcp_receive_reset, struct sock *sk)
{
	return handle_received_reset(sk);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(on_tcp_send_reset, const struct sock *sk, const struct sk_buff *skb)
{
	return handle_sent_reset((struct sock *)sk, skb, send_reset_reason(ctx));
}

/*
 * Before Linux 6.10 tcp:tcp_send_reset fires only for full sockets: a reset
 * sent with no socket (the kernel of a backend that restarted) or from a
 * TIME_WAIT socket leaves no trace, and those are the backend's side of
 * stale_reuse and keepalive_race. Where ftrace can attach (Debian's 5.10
 * and 6.1 kernels can, not every host), fentry on the functions that send
 * every reset fills the gap: the agent loads these only there, and they
 * leave full sockets to the tracepoint.
 */
SEC("fentry/tcp_v4_send_reset")
int BPF_PROG(on_tcp_v4_send_reset, const struct sock *sk, struct sk_buff *skb)
{
	if (sk && is_full_sock(sk))
		return 0;
	return handle_sent_reset((struct sock *)sk, skb, 0);
}

SEC("fentry/tcp_v6_send_reset")
int BPF_PROG(on_tcp_v6_send_reset, const struct sock *sk, struct sk_buff *skb)
{
	if (sk && is_full_sock(sk))
		return 0;
	return handle_sent_reset((struct sock *)sk, skb, 0);
}

/* The agent runs it (a read() on an iterator fd): see learn_cred_holder(). */
SEC("iter/task")
int learn_cred_holders(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (task)
		learn_cred_holder(task);
	return 0;
}

/* A classic tracepoint: OOM kills are rare, and its fields vary by kernel. */
SEC("tracepoint/oom/mark_victim")
int on_mark_victim(struct trace_event_raw_mark_victim *ctx)
{
	struct rw_oom_record *rec = begin_oom_record();

	if (!rec)
		return 0;
	rec->pid = ctx->pid;
	if (rw_mark_victim_has_rss(ctx)) {
		__u32 loc = BPF_CORE_READ(ctx, __data_loc_comm);

		bpf_probe_read_kernel_str(rec->comm, sizeof(rec->comm), (char *)ctx + (loc & 0xffff));
		rec->total_vm_kb = BPF_CORE_READ(ctx, total_vm);
		rec->anon_rss_kb = BPF_CORE_READ(ctx, anon_rss);
		rec->file_rss_kb = BPF_CORE_READ(ctx, file_rss);
		rec->shmem_rss_kb = BPF_CORE_READ(ctx, shmem_rss);
		rec->flags |= RW_OOM_RSS_KNOWN;
	}
	submit_oom_record(rec);
	return 0;
}

/*
 * The same tracepoint as a raw one, attached where the agent may not open
 * perf events (Debian's kernels patch perf_event_paranoid to 3 and then ask
 * for CAP_SYS_ADMIN, which the systemd unit does not grant): a raw
 * tracepoint is a BPF link, not a perf event. It sees the arguments only,
 * not the record: (int pid) before Linux 6.8, (struct task_struct *, int
 * uid) since, as the agent tells it; so no RSS.
 */
const volatile __u8 mark_victim_passes_task = 0;

SEC("raw_tp/mark_victim")
int on_mark_victim_raw(struct bpf_raw_tracepoint_args *ctx)
{
	struct rw_oom_record *rec = begin_oom_record();

	if (!rec)
		return 0;
	if (mark_victim_passes_task) {
		struct task_struct *task = (struct task_struct *)ctx->args[0];

		rec->pid = BPF_CORE_READ(task, pid);
		BPF_CORE_READ_STR_INTO(&rec->comm, task, comm);
	} else {
		rec->pid = (__u32)ctx->args[0];
	}
	submit_oom_record(rec);
	return 0;
}
