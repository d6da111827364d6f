// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * rstwatch kernel side.
 *
 * Nothing runs per connection, send or receive, nor by default per segment:
 * only when a reset happens, at bind(), and when the agent runs the task
 * iterator. The owner of a connection is read then from the socket itself
 * (owner.bpf.h); what the connection was doing (request open, idle,
 * reused) from the tcp_sock.
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
 *
 * The bind hooks are attached to the root of the cgroup v2 hierarchy, so
 * they see every process. Earlier versions recorded owners at connect()
 * and forgot them at tcp_destroy_sock: two hooks per connection, which on
 * a VM with retpolines cost about 1% of a proxied request even when empty
 * (docs/BENCHMARKS.md).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "core_fixes.bpf.h"
#include "rstwatch_abi.h"
#include "maps.bpf.h"
#include "owner.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline int is_full_sock(const struct sock *sk)
{
	__u8 state = sk->__sk_common.skc_state;

	/* Request and timewait minisocks are not tcp_socks. */
	return state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV;
}

static __always_inline __u64 jiffies_to_ns(__u64 j)
{
	return kernel_hz ? j * (1000000000ULL / kernel_hz) : RW_UNKNOWN_NS;
}

/* From `stamp`, a 32-bit jiffies timestamp from struct tcp_sock, to `now`. */
static __always_inline __u64 ns_between_jiffies(__u32 stamp, __u32 now)
{
	return jiffies_to_ns((__u32)(now - stamp));
}

/*
 * One end of a socket as a map key. Our end: its address and port as
 * bound (valid while the socket holds its port: not after a close with
 * SO_LINGER 0, see fill_tuple_from_sock()). The peer's: its address only
 * (port 0), which is what a path's TTL belongs to.
 */
enum rw_end { RW_OUR_END, RW_PEER_ADDRESS };

static __always_inline void sock_endpoint(struct rw_endpoint *ep, const struct sock *sk, enum rw_end end)
{
	const struct sock_common *skc = &sk->__sk_common;
	int ours = end == RW_OUR_END;

	__builtin_memset(ep, 0, sizeof(*ep));
	ep->family = skc->skc_family;
	ep->port = ours ? skc->skc_num : 0;
	if (ep->family == AF_INET)
		__builtin_memcpy(ep->addr, ours ? &skc->skc_rcv_saddr : &skc->skc_daddr, 4);
	else
		__builtin_memcpy(ep->addr, ours ? &skc->skc_v6_rcv_saddr : &skc->skc_v6_daddr, 16);
}

/* One end of a reset, as filled into the record. */
static __always_inline void record_endpoint(struct rw_endpoint *ep, const struct rw_reset_record *rec, int local)
{
	__builtin_memset(ep, 0, sizeof(*ep));
	ep->family = rec->family;
	ep->port = local ? rec->local_port : rec->remote_port;
	__builtin_memcpy(ep->addr, local ? rec->local_addr : rec->remote_addr, 16);
}

/* The connection a reset belongs to, as its receiving end sees it. */
static __always_inline void receivers_flow(struct rw_flow *flow, const struct rw_reset_record *rec)
{
	int received = rec->direction == RW_DIR_RECEIVED;

	record_endpoint(&flow->local, rec, received);
	record_endpoint(&flow->remote, rec, !received);
}

/*
 * A bound socket's own end (src_port is in host order in struct bpf_sock).
 * `family` is a constant per program: the verifier rejects reading the
 * other family's fields of the context.
 */
static __always_inline void bound_endpoint(struct rw_endpoint *ep, const struct bpf_sock *sk, __u16 family)
{
	__builtin_memset(ep, 0, sizeof(*ep));
	ep->family = family;
	ep->port = sk->src_port;
	if (family == AF_INET) {
		__u32 addr = sk->src_ip4;

		__builtin_memcpy(ep->addr, &addr, 4);
	} else {
		__u32 addr[4] = {sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]};

		__builtin_memcpy(ep->addr, addr, 16);
	}
}

static __always_inline int is_tcp(__u32 type, __u32 protocol)
{
	return type == SOCK_STREAM && protocol == IPPROTO_TCP;
}

/*
 * A tracked process bound a TCP socket to a port: nginx's master does so
 * for each listen directive, and there is no hook at listen() that runs
 * for listens only. A bind() with IP_BIND_ADDRESS_NO_PORT (nginx's
 * proxy_bind without a port) has no port yet and is skipped. The last
 * binder of an endpoint owns it (a restarted nginx replaces its old
 * master). A port bound only to connect() from is recorded too, with the
 * socket's cookie, which tells its own connection apart (listener_at()).
 */
static __always_inline void on_post_bind(struct bpf_sock *sk, __u16 family)
{
	struct rw_task task = current_task();
	struct rw_listener owner = {};
	struct rw_endpoint ep;

	if (!is_tcp(sk->type, sk->protocol) || !sk->src_port || !task_is_tracked(task))
		return;
	bound_endpoint(&ep, sk, family);
	owner.owner_tgid = task_tgid(task);
	owner.bound_cookie = bpf_get_socket_cookie(sk);
	copy_task_comm(task, owner.owner_comm);
	/* The mark first: listener_at() must never skip an entry that exists. */
	mark_listened_port(ep.port);
	count_if_full(bpf_map_update_elem(&listeners, &ep, &owner, BPF_ANY));
}

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

/* The IP TTL (IPv4) or hop limit (IPv6) of a received segment. */
static __always_inline __u8 ttl_of(const struct sk_buff *skb)
{
	unsigned char *head = skb->head;
	__u16 nh = skb->network_header;
	__u8 version = 0, ttl = 0;

	bpf_probe_read_kernel(&version, 1, head + nh);
	if ((version >> 4) == 4)
		bpf_probe_read_kernel(&ttl, 1, head + nh + offsetof(struct iphdr, ttl));
	else
		bpf_probe_read_kernel(&ttl, 1, head + nh + offsetof(struct ipv6hdr, hop_limit));
	return ttl;
}

/*
 * Only with --ttl-evidence (the agent leaves it unloaded otherwise): it
 * fires for every segment an established socket on the host receives, the
 * reset included. The TTL of the peer's data and of the reset tells who
 * sent the reset: a middlebox answers from fewer hops away than the
 * backend. A path's TTL is stable, so each peer address's is read at most
 * once a second; a reset's TTL waits on this CPU for tcp_receive_reset,
 * which the same softirq runs next.
 */
SEC("tp_btf/tcp_probe")
int BPF_PROG(on_tcp_probe, struct sock *sk, const struct sk_buff *skb)
{
	struct rw_peer_ttl fresh = {}, *known;
	struct rw_endpoint peer;
	__u64 now;
	__u8 flags;

	/*
	 * TCP_SKB_CB(skb)->tcp_flags, filled in by tcp_v4_rcv()/tcp_v6_rcv()
	 * before tcp_rcv_established() fires tcp_probe: a direct load from
	 * skb->cb instead of reading the header through a helper.
	 */
	flags = rw_tcp_skb_flags(skb);
	if (flags & 0x04) { /* RST */
		struct rw_last_rst *last;
		__u32 zero = 0;

		last = bpf_map_lookup_elem(&last_rst_ttl, &zero);
		if (last) {
			last->sk = (__u64)sk;
			last->ttl = ttl_of(skb);
		}
		return 0;
	}
	sock_endpoint(&peer, sk, RW_PEER_ADDRESS);
	now = bpf_jiffies64();
	known = bpf_map_lookup_elem(&peer_data_ttls, &peer);
	if (known && now - known->read_jiffies < (kernel_hz ? kernel_hz : 1000))
		return 0;
	fresh.read_jiffies = now;
	fresh.ttl = ttl_of(skb);
	bpf_map_update_elem(&peer_data_ttls, &peer, &fresh, BPF_ANY);
	return 0;
}

/* What tcp_probe saw of this reset and of the peer's data before it. */
static __always_inline void fill_ttls(struct rw_reset_record *rec, const struct sock *sk)
{
	struct rw_peer_ttl *data;
	struct rw_last_rst *last;
	struct rw_endpoint peer;
	__u32 zero = 0;

	last = bpf_map_lookup_elem(&last_rst_ttl, &zero);
	if (last && last->sk == (__u64)sk) {
		rec->rst_ttl = last->ttl;
		last->sk = 0;
	}
	sock_endpoint(&peer, sk, RW_PEER_ADDRESS);
	data = bpf_map_lookup_elem(&peer_data_ttls, &peer);
	if (data)
		rec->data_ttl = data->ttl;
}

static __always_inline void fill_tuple_from_sock(struct rw_reset_record *rec, const struct sock *sk,
						 const struct tcp_sock *tp)
{
	const struct sock_common *skc = &sk->__sk_common;

	rec->family = skc->skc_family;
	/*
	 * A close with SO_LINGER 0 moves the socket to CLOSE, which releases
	 * the bound port (skc_num = 0), before the reset goes out; the
	 * source port the reset carries stays in inet_sport.
	 */
	rec->local_port = tp ? bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport) : skc->skc_num;
	rec->remote_port = bpf_ntohs(skc->skc_dport);
	if (rec->family == AF_INET) {
		__builtin_memcpy(rec->local_addr, &skc->skc_rcv_saddr, 4);
		__builtin_memcpy(rec->remote_addr, &skc->skc_daddr, 4);
	} else {
		__builtin_memcpy(rec->local_addr, &skc->skc_v6_rcv_saddr, 16);
		__builtin_memcpy(rec->remote_addr, &skc->skc_v6_daddr, 16);
	}
}

/*
 * A reset sent with no full socket answers the segment in `skb`: our side
 * of the flow is that segment's destination.
 */
static __always_inline void fill_tuple_from_skb(struct rw_reset_record *rec, const struct sk_buff *skb)
{
	unsigned char *head = skb->head;
	__u16 nh = skb->network_header;
	__u16 th = skb->transport_header;
	struct tcphdr tcp;
	__u8 version;

	if (bpf_probe_read_kernel(&version, 1, head + nh))
		return;
	if (bpf_probe_read_kernel(&tcp, sizeof(tcp), head + th))
		return;
	rec->local_port = bpf_ntohs(tcp.dest);
	rec->remote_port = bpf_ntohs(tcp.source);
	if ((version >> 4) == 4) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return;
		rec->family = AF_INET;
		__builtin_memcpy(rec->local_addr, &ip.daddr, 4);
		__builtin_memcpy(rec->remote_addr, &ip.saddr, 4);
	} else {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return;
		rec->family = AF_INET6;
		__builtin_memcpy(rec->local_addr, &ip6.daddr, 16);
		__builtin_memcpy(rec->remote_addr, &ip6.saddr, 16);
	}
}

/* Whether jiffies stamp a is later than b (32-bit, wrapping). */
static __always_inline int jiffies_after(__u32 a, __u32 b)
{
	return (__s32)(a - b) > 0;
}

/*
 * What the connection was doing, from the kernel's own stamps: lsndtime
 * (last data segment sent) and icsk_ack.lrcvtime (last data received; both
 * start at the handshake). In HTTP the client side speaks first in each
 * turn: nginx on an upstream connection, the peer on a downstream one. If
 * the client side sent after the server side last did, a request is open;
 * if the server side had sent anything before, the connection was reused
 * and the gap between the two stamps is how long it sat idle in the pool.
 * Equal stamps (within one jiffy) count as open only before any answer.
 */
static __always_inline void fill_turn(struct rw_reset_record *rec, __u8 role, __u32 last_send, __u32 last_recv)
{
	__u32 client_last = role == RW_ROLE_DOWNSTREAM ? last_recv : last_send;
	__u32 server_last = role == RW_ROLE_DOWNSTREAM ? last_send : last_recv;
	__u64 client_bytes = role == RW_ROLE_DOWNSTREAM ? rec->bytes_received : rec->bytes_sent;
	__u64 server_bytes = role == RW_ROLE_DOWNSTREAM ? rec->bytes_sent : rec->bytes_received;

	if (!(rec->flags & RW_RST_BYTES_KNOWN) || !client_bytes)
		return;
	if (!jiffies_after(client_last, server_last) && (client_last != server_last || server_bytes))
		return;
	rec->flags |= RW_RST_IN_REQUEST;
	if (!server_bytes)
		return;
	rec->flags |= RW_RST_REUSED;
	rec->pool_idle_ns = jiffies_to_ns(client_last - server_last);
}

/* The tcp_sock's data stamps, kept for fill_turn() once the owner is known. */
struct rw_stamps {
	__u32 last_send; /* lsndtime */
	__u32 last_recv; /* icsk_ack.lrcvtime */
};

/* What the socket itself says: its tuple, counters and stamps. */
static __always_inline void fill_connection(struct rw_reset_record *rec, struct sock *sk,
					    struct rw_stamps *stamps)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	__u32 last_data, now;

	rec->state = sk->__sk_common.skc_state;
	rec->sock_cookie = rw_socket_cookie(sk);
	fill_tuple_from_sock(rec, sk, tp);
	rec->idle_ns = rec->since_request_ns = RW_UNKNOWN_NS;
	rec->pool_idle_ns = RW_UNKNOWN_NS;
	if (!tp)
		return;
	stamps->last_send = tp->lsndtime;
	stamps->last_recv = tp->inet_conn.icsk_ack.lrcvtime;
	last_data = jiffies_after(stamps->last_recv, stamps->last_send) ? stamps->last_recv : stamps->last_send;
	now = (__u32)bpf_jiffies64();
	rec->idle_ns = last_data ? ns_between_jiffies(last_data, now) : RW_UNKNOWN_NS;
	if (stamps->last_send)
		rec->since_request_ns = ns_between_jiffies(stamps->last_send, now);
	if (rw_tcp_has_byte_counters(tp)) {
		rec->bytes_sent = tp->bytes_sent;
		rec->bytes_received = tp->bytes_received;
		rec->flags |= RW_RST_BYTES_KNOWN;
	}
	rec->retransmits = tp->total_retrans;
	rec->stalled_retransmits = tp->inet_conn.icsk_retransmits;
	rec->packets_out = tp->packets_out;
	rec->mss = tp->mss_cache;
}

/*
 * The tracked listener the socket `sk`, with local end `ep`, was accepted
 * from; NULL if it was not accepted: no listener there, or `sk` is the
 * socket that bound the port, to connect() from it.
 */
static __always_inline const struct rw_listener *listener_at(struct rw_endpoint *ep, struct sock *sk)
{
	const struct rw_listener *l;

	if (!port_has_listener(ep->port))
		return NULL;
	l = bpf_map_lookup_elem(&listeners, ep);
	if (!l) {
		__builtin_memset(ep->addr, 0, sizeof(ep->addr)); /* bound to the wildcard address */
		l = bpf_map_lookup_elem(&listeners, ep);
	}
	if (l && l->bound_cookie && l->bound_cookie == rw_socket_cookie(sk))
		return NULL;
	return l;
}

/*
 * Whether a reset is reported: one of a tracked process's sockets, or of an
 * orphan accepted from a tracked listener (its worker closed it already),
 * or any at all with --all. One whose owner is pending goes to the agent,
 * which knows whether it is tracked once it has looked.
 */
static __always_inline int wanted(enum rw_owner_found found, const struct rw_owner *o, const struct rw_listener *l)
{
	if (track_all_tasks || found == RW_OWNER_PENDING)
		return 1;
	return found == RW_OWNER_FOUND ? o->tracked : l != NULL;
}

/*
 * The owner into the record: the process found, else the listener's
 * (nginx's master) for an orphan accepted from it; a pending owner is the
 * agent's to fill. A connection is downstream when its local end is a
 * listener's.
 */
static __always_inline void fill_owner(struct rw_reset_record *rec, enum rw_owner_found found,
				       const struct rw_owner *o, const struct rw_listener *l,
				       const struct rw_stamps *stamps)
{
	rec->role = l ? RW_ROLE_DOWNSTREAM : RW_ROLE_UPSTREAM;
	if (found == RW_OWNER_FOUND) {
		rec->flags |= RW_RST_OWNER_KNOWN;
		if (o->holder)
			rec->flags |= RW_RST_OWNER_HOLDER;
		rec->owner_tgid = o->tgid;
		__builtin_memcpy(rec->owner_comm, o->comm, RW_COMM_LEN);
	} else if (l) {
		rec->flags |= RW_RST_OWNER_KNOWN | RW_RST_OWNER_LISTENER;
		rec->owner_tgid = l->owner_tgid;
		__builtin_memcpy(rec->owner_comm, l->owner_comm, RW_COMM_LEN);
	} else if (found != RW_OWNER_PENDING) {
		rec->role = RW_ROLE_OTHER;
		return;
	}
	if (found == RW_OWNER_PENDING) {
		rec->flags |= RW_RST_OWNER_PENDING;
		rec->owner_cred = o->pending_cred;
	}
	fill_turn(rec, rec->role, stamps->last_send, stamps->last_recv);
}

static __always_inline void fill_current(struct rw_reset_record *rec)
{
	struct rw_task task = current_task();

	rec->on_cpu_tgid = task_tgid(task);
	copy_task_comm(task, rec->on_cpu_comm);
	if (task_flags(task) & PF_EXITING) {
		rec->flags |= RW_RST_ON_CPU_EXITING;
		rec->on_cpu_exit_code = task_exit_code(task);
	}
}

/*
 * A record whose owner is pending wakes the agent at once: it must look
 * while the owner still runs. Such records are rare (a process's first
 * reset), so these wakeups cost nothing that matters.
 */
static __always_inline void output(const struct rw_reset_record *rec)
{
	__u64 flags = rec->flags & RW_RST_OWNER_PENDING ? BPF_RB_FORCE_WAKEUP : wakeup_flags();

	count_record(bpf_ringbuf_output(&records, (void *)rec, sizeof(*rec), flags) == 0);
}

/* A reset assembled in the per-CPU scratch record, to the ring buffer. */
static __always_inline void emit(struct rw_reset_record *rec)
{
	fill_current(rec);
	output(rec);
}

static __always_inline struct rw_reset_record *scratch_record(__u8 direction)
{
	struct rw_reset_record *rec;
	__u32 zero = 0;

	rec = bpf_map_lookup_elem(&reset_scratch, &zero);
	if (!rec)
		return NULL;
	__builtin_memset(rec, 0, sizeof(*rec));
	init_header(&rec->hdr, sizeof(*rec), RW_REC_RESET);
	rec->direction = direction;
	return rec;
}

static __always_inline int same_flow(const struct rw_flow *a, const struct rw_flow *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	_Static_assert(sizeof(struct rw_flow) == 6 * sizeof(__u64), "rw_flow is six words");
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4] && x[5] == y[5];
}

/*
 * A reset sent by a socket no tracked process owns: reported if a tracked
 * socket received it already, else kept for one that will. Its `current`
 * is the sender's context (an exiting backend, say).
 */
static __always_inline void emit_or_keep_unclaimed_sent_reset(struct rw_reset_record *rec)
{
	struct rw_tracked_received_flows *received;
	struct rw_unclaimed_sent_resets *kept;
	struct rw_flow flow;
	__u32 zero = 0, slot;

	fill_current(rec);
	receivers_flow(&flow, rec);
	received = bpf_map_lookup_elem(&tracked_received_flows, &zero);
	if (!received)
		return;
	for (int i = 0; i < RW_PEER_SLOTS; i++) {
		if (received->ts_ns[i] && rec->hdr.ts_ns - received->ts_ns[i] < RW_PEER_RESET_MAX_AGE_NS &&
		    same_flow(&received->flow[i], &flow)) {
			output(rec);
			return;
		}
	}
	kept = bpf_map_lookup_elem(&unclaimed_sent_resets, &zero);
	if (!kept)
		return;
	slot = kept->next++ % RW_PEER_SLOTS;
	kept->flow[slot] = flow;
	kept->rec[slot] = *rec;
}

/*
 * The far end's resets of the connection `rec` received, when they were
 * sent on this host: reported now if they were traced already; the flow
 * waits for any traced later.
 */
static __always_inline void emit_and_await_sender_side(const struct rw_reset_record *rec)
{
	struct rw_tracked_received_flows *received;
	struct rw_unclaimed_sent_resets *kept;
	struct rw_flow flow;
	__u32 zero = 0, slot;

	receivers_flow(&flow, rec);
	kept = bpf_map_lookup_elem(&unclaimed_sent_resets, &zero);
	if (kept) {
		for (int i = 0; i < RW_PEER_SLOTS; i++) {
			struct rw_reset_record *sent = &kept->rec[i];

			if (!sent->hdr.ts_ns || !same_flow(&kept->flow[i], &flow))
				continue;
			if (rec->hdr.ts_ns - sent->hdr.ts_ns < RW_PEER_RESET_MAX_AGE_NS)
				output(sent);
			sent->hdr.ts_ns = 0; /* reported once */
		}
	}
	received = bpf_map_lookup_elem(&tracked_received_flows, &zero);
	if (!received)
		return;
	slot = received->next++ % RW_PEER_SLOTS;
	received->flow[slot] = flow;
	received->ts_ns[slot] = rec->hdr.ts_ns;
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
	if (ttl_evidence)
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

/* The current task's memory cgroup path into rec, leaf first. */
static __always_inline void read_memory_cgroup(struct rw_oom_record *rec)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task(); /* rare: probe reads do */
	struct cgroup_subsys_state *css = NULL;
	struct css_set *cgroups;
	struct kernfs_node *kn;
	__u32 id;

	if (!bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		return;
	id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	cgroups = BPF_CORE_READ(task, cgroups);
	if (!cgroups || id >= 16)
		return;
	bpf_probe_read_kernel(&css, sizeof(css), (void *)cgroups + id * sizeof(void *));
	if (!css)
		return;
	kn = BPF_CORE_READ(css, cgroup, kn);
	for (__u32 i = 0; i < RW_CGROUP_LEVELS; i++) {
		struct kernfs_node *parent;

		if (!kn)
			return;
		parent = rw_kernfs_parent(kn);
		if (!parent) /* the hierarchy's root: the path ends here */
			return;
		bpf_probe_read_kernel_str(rec->cgroup_names[i], RW_CGROUP_NAME_LEN, BPF_CORE_READ(kn, name));
		rec->cgroup_levels = i + 1;
		kn = parent;
	}
	if (kn && rw_kernfs_parent(kn))
		rec->flags |= RW_OOM_CGROUP_TRUNCATED;
}

/* An OOM record reserved in the ring, all but its header zeroed. */
static __always_inline struct rw_oom_record *begin_oom_record(void)
{
	struct rw_oom_record *rec = reserve_record(sizeof(*rec), RW_REC_OOM);

	if (rec)
		__builtin_memset((char *)rec + sizeof(rec->hdr), 0, sizeof(*rec) - sizeof(rec->hdr));
	return rec;
}

/* The victim's memory cgroup, if the victim is on the CPU, then out. */
static __always_inline void submit_oom_record(struct rw_oom_record *rec)
{
	if ((bpf_get_current_pid_tgid() >> 32) == rec->pid)
		read_memory_cgroup(rec);
	bpf_ringbuf_submit(rec, wakeup_flags());
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
