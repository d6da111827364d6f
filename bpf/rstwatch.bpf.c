// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * rstwatch kernel side.
 *
 * Resets are reported from softirq context, where `current` is whoever
 * happened to be on the CPU, so the owner of a connection is recorded when
 * the owner itself touches the socket (connect(), send(), recv()) and kept
 * in socket-local storage that the kernel frees with the socket.
 *
 *   inet_sock_set_state  CLOSE->SYN_SENT: owner = connect() caller (upstream);
 *                        SYN_SENT->ESTABLISHED: the flow, for peer evidence
 *   sock_send_length     owner's sends: request turns, last send
 *   sock_recv_length     owner's receives: accepted sockets, last receive
 *   tcp_probe            TTL of the peer's data and of a reset
 *   tcp_receive_reset    a reset arrived on a tracked socket
 *   tcp_send_reset       a reset left a tracked socket, or an untracked one
 *                        answering a tracked flow (the backend's side: evidence)
 *   oom/mark_victim      the OOM killer chose a victim (and its memory cgroup)
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "core_fixes.bpf.h"
#include "rstwatch_abi.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_STREAM 1
#define MSG_PEEK 2
#define PF_EXITING 0x00000004

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the agent before load. */
const volatile __u8 track_all_tasks = 0;
const volatile __u8 emit_peer_resets = 1;
const volatile __u32 tracked_pid_count = 0;
const volatile __u32 tracked_pids[RW_MAX_PIDS] = {};
const volatile __u32 tracked_comm_count = 0;
/* Each name as two little 8-byte words, so a match is two compares. */
const volatile __u64 tracked_comms[RW_MAX_COMMS][2] = {};

extern const unsigned int CONFIG_HZ __kconfig __weak;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* resized by the agent before load */
} records SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct rw_conn);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rw_counters);
} counters SEC(".maps");

/* Flows of tracked connections; entries outlive the socket until evicted. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct rw_flow);
	__type(value, __u8);
} tracked_flows SEC(".maps");

/* A sent reset is assembled here before we know whether it is wanted. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rw_reset_record);
} reset_scratch SEC(".maps");

static __always_inline struct rw_counters *this_cpu_counters(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&counters, &zero);
}

static __always_inline void init_header(struct rw_record_header *hdr, __u32 size, __u16 type)
{
	hdr->type = type;
	hdr->size = size;
	hdr->cpu = bpf_get_smp_processor_id();
	hdr->ts_ns = bpf_ktime_get_ns();
}

/*
 * A ring buffer wakeup is an irq_work self-IPI (on a VM, an exit to the
 * hypervisor) that costs microseconds per record. The agent polls at least
 * twice a second anyway: wake it early only once an eighth of the ring waits.
 */
static __always_inline __u64 wakeup_flags(void)
{
	__u64 waiting = bpf_ringbuf_query(&records, BPF_RB_AVAIL_DATA);

	return waiting >= bpf_ringbuf_query(&records, BPF_RB_RING_SIZE) / 8 ? BPF_RB_FORCE_WAKEUP
									     : BPF_RB_NO_WAKEUP;
}

static __always_inline void count_record(int delivered)
{
	struct rw_counters *cnt = this_cpu_counters();

	if (!cnt)
		return;
	if (delivered)
		cnt->records_emitted++;
	else
		cnt->records_lost++;
}

static __always_inline void *reserve_record(__u32 size, __u16 type)
{
	struct rw_record_header *hdr = bpf_ringbuf_reserve(&records, size, 0);

	count_record(hdr != NULL);
	if (hdr)
		init_header(hdr, size, type);
	return hdr;
}

static __always_inline int comm_is_tracked(void)
{
	__u64 comm[2] = {};

	bpf_get_current_comm(comm, sizeof(comm));
	for (__u32 i = 0; i < RW_MAX_COMMS; i++) {
		if (i >= tracked_comm_count)
			break;
		if (comm[0] == tracked_comms[i][0] && comm[1] == tracked_comms[i][1])
			return 1;
	}
	return 0;
}

/* A tracked pid covers its children too: an nginx master covers its workers. */
static __always_inline int pid_is_tracked(struct task_struct *task)
{
	__u32 tgid = task->tgid;
	/* Direct BTF loads, not BPF_CORE_READ: no helper call on the hot path. */
	__u32 parent = task->real_parent->tgid;

	for (__u32 i = 0; i < RW_MAX_PIDS; i++) {
		if (i >= tracked_pid_count)
			break;
		if (tracked_pids[i] == tgid || tracked_pids[i] == parent)
			return 1;
	}
	return 0;
}

static __always_inline int current_is_tracked(void)
{
	if (track_all_tasks)
		return 1;
	if (tracked_pid_count && pid_is_tracked(bpf_get_current_task_btf()))
		return 1;
	return tracked_comm_count && comm_is_tracked();
}

static __always_inline int is_inet_tcp(const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	return sk->sk_type == SOCK_STREAM && rw_sk_protocol(sk) == IPPROTO_TCP;
}

/* Full sockets only: request and timewait minisocks are not tcp_socks. */
static __always_inline int is_full_sock(const struct sock *sk)
{
	__u8 state = sk->__sk_common.skc_state;

	return state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV;
}

static __always_inline __u64 jiffies_to_ns(__u64 j)
{
	return CONFIG_HZ ? j * (1000000000ULL / CONFIG_HZ) : RW_UNKNOWN_NS;
}

/* Time since `stamp`, a 32-bit jiffies timestamp from struct tcp_sock. */
static __always_inline __u64 ns_since_jiffies(__u32 stamp)
{
	return jiffies_to_ns((__u32)((__u32)bpf_jiffies64() - stamp));
}

static __always_inline struct rw_conn *
claim_for_current(struct sock *sk, __u8 role, __u32 flags, __u64 now)
{
	struct rw_conn *conn;
	struct rw_counters *cnt;
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	conn = bpf_sk_storage_get(&conns, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
	if (!conn)
		return NULL;
	conn->owner_tgid = pid_tgid >> 32;
	bpf_get_current_comm(conn->owner_comm, sizeof(conn->owner_comm));
	conn->role = role;
	conn->flags = flags;
	conn->created_ns = (flags & RW_CONN_CONNECTED) ? now : 0;
	conn->pool_idle_ns = RW_UNKNOWN_NS;
	cnt = this_cpu_counters();
	if (cnt)
		cnt->owners_recorded++;
	return conn;
}

static __always_inline void remember_flow(const struct sock *sk)
{
	const struct sock_common *skc = &sk->__sk_common;
	struct rw_flow flow = {};
	__u8 one = 1;

	flow.family = skc->skc_family;
	flow.local_port = skc->skc_num;
	flow.remote_port = bpf_ntohs(skc->skc_dport);
	if (flow.family == AF_INET) {
		__builtin_memcpy(flow.local_addr, &skc->skc_rcv_saddr, 4);
		__builtin_memcpy(flow.remote_addr, &skc->skc_daddr, 4);
	} else {
		__builtin_memcpy(flow.local_addr, &skc->skc_v6_rcv_saddr, 16);
		__builtin_memcpy(flow.remote_addr, &skc->skc_v6_daddr, 16);
	}
	bpf_map_update_elem(&tracked_flows, &flow, &one, BPF_ANY);
}

/* Whether a reset sent from `rec->local` answers a tracked connection. */
static __always_inline int answers_tracked_flow(const struct rw_reset_record *rec)
{
	struct rw_flow flow = {};

	flow.family = rec->family;
	flow.local_port = rec->remote_port;
	flow.remote_port = rec->local_port;
	__builtin_memcpy(flow.local_addr, rec->remote_addr, 16);
	__builtin_memcpy(flow.remote_addr, rec->local_addr, 16);
	return bpf_map_lookup_elem(&tracked_flows, &flow) != NULL;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	/* connect() moves CLOSE -> SYN_SENT in the caller's context. */
	if (newstate == TCP_SYN_SENT && oldstate == TCP_CLOSE) {
		if (is_inet_tcp(sk) && current_is_tracked())
			claim_for_current(sk, RW_ROLE_UPSTREAM, RW_CONN_CONNECTED, bpf_ktime_get_ns());
		return 0;
	}
	/* The local port is bound after SYN_SENT: the flow is known once established. */
	if (newstate == TCP_ESTABLISHED && oldstate == TCP_SYN_SENT && bpf_sk_storage_get(&conns, sk, NULL, 0))
		remember_flow(sk);
	return 0;
}

/*
 * A tracked process's socket that nobody claimed at connect() and that the
 * agent did not seed at start-up was accepted after the agent attached: every
 * connect() since attach is seen, every older connection is seeded.
 */
#define ROLE_OF_UNCLAIMED RW_ROLE_DOWNSTREAM

/*
 * How long the server side had been quiet when a new request turn starts:
 * the pool idle of a reused connection. Unknown for a fresh connection.
 */
static __always_inline __u64 pool_idle_before_turn(const struct rw_conn *conn, const struct tcp_sock *tp,
						   __u64 now)
{
	__u64 server_last = (conn->role == RW_ROLE_DOWNSTREAM) ? conn->last_send_ns : conn->last_recv_ns;

	if ((conn->flags & RW_CONN_CONNECTED) && conn->requests == 0)
		return RW_UNKNOWN_NS;
	if (server_last)
		return now - server_last;
	if (conn->role != RW_ROLE_DOWNSTREAM)
		/* Seeded: the previous response's last byte, by the kernel's clock. */
		return ns_since_jiffies(tp->inet_conn.icsk_ack.lrcvtime);
	return RW_UNKNOWN_NS;
}

/*
 * The client side of a connection speaks first in each request turn: the
 * owner's send on an upstream socket, the peer's data (our recv) on a
 * downstream one. A turn starts when the client speaks after the server did.
 */
static __always_inline void note_traffic(struct sock *sk, int is_send)
{
	struct tcp_sock *tp = NULL;
	struct rw_conn *conn;
	__u64 now;
	int client_spoke, new_turn;

	if (!is_inet_tcp(sk))
		return;
	conn = bpf_sk_storage_get(&conns, sk, NULL, 0);
	if (!conn && !current_is_tracked())
		return; /* most sockets on a host: leave before reading the clock */
	now = bpf_ktime_get_ns();
	if (!conn) {
		/*
		 * Accepted: no flow to remember, only upstream flows are looked
		 * up (the backend's side of a reset).
		 */
		conn = claim_for_current(sk, ROLE_OF_UNCLAIMED, 0, now);
		if (!conn)
			return;
	}

	client_spoke = (conn->role == RW_ROLE_DOWNSTREAM) ? !is_send : is_send;
	new_turn = client_spoke && !(conn->flags & RW_CONN_IN_REQUEST);
	/*
	 * Most calls continue a turn and need no tcp_sock; a new turn does, and
	 * so does an upstream send (tx_bytes_seen, see fill_connection()).
	 */
	if (new_turn || (is_send && conn->role == RW_ROLE_UPSTREAM))
		tp = bpf_skc_to_tcp_sock(sk);
	if (new_turn && tp) {
		conn->pool_idle_ns = pool_idle_before_turn(conn, tp, now);
		conn->requests++;
		conn->turn_rx_base = rw_tcp_has_byte_counters(tp) ? tp->bytes_received : 0;
		conn->flags |= RW_CONN_IN_REQUEST;
	} else if (!client_spoke) {
		conn->flags &= ~RW_CONN_IN_REQUEST;
	}
	if (is_send) {
		conn->last_send_ns = now;
		if (tp && conn->role == RW_ROLE_UPSTREAM && rw_tcp_has_byte_counters(tp))
			conn->tx_bytes_seen = tp->bytes_sent;
	} else {
		conn->last_recv_ns = now;
	}
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(on_sock_send_length, struct sock *sk, int ret, int flags)
{
	if (ret > 0)
		note_traffic(sk, 1);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(on_sock_recv_length, struct sock *sk, int ret, int flags)
{
	/* nginx peeks at pooled connections to see whether they closed. */
	if (ret > 0 && !(flags & MSG_PEEK))
		note_traffic(sk, 0);
	return 0;
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
 * Every segment an established socket receives, the reset included, passes
 * tcp_probe first. Keeping the TTL of the peer's data and of the reset tells
 * who sent the reset: a middlebox answers from fewer hops away than the
 * backend. Untracked sockets leave at the first check.
 */
SEC("tp_btf/tcp_probe")
int BPF_PROG(on_tcp_probe, struct sock *sk, const struct sk_buff *skb)
{
	struct rw_conn *conn = bpf_sk_storage_get(&conns, sk, NULL, 0);
	__u8 flags;

	if (!conn)
		return 0;
	/*
	 * TCP_SKB_CB(skb)->tcp_flags, filled in by tcp_v4_rcv()/tcp_v6_rcv()
	 * before tcp_rcv_established() fires tcp_probe: a direct load from
	 * skb->cb instead of reading the header through a helper.
	 */
	flags = skb->cb[bpf_core_field_offset(struct tcp_skb_cb, tcp_flags)];
	if (flags & 0x04) /* RST */
		conn->rst_ttl = ttl_of(skb);
	else if (!conn->data_ttl) /* a path's TTL is stable: once per connection */
		conn->data_ttl = ttl_of(skb);
	return 0;
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
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
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

static __always_inline void fill_connection(struct rw_reset_record *rec, struct sock *sk,
					    struct rw_conn *conn, __u64 now)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	__u32 last_send, last_recv, last_data;

	rec->state = sk->__sk_common.skc_state;
	rec->sock_cookie = bpf_get_socket_cookie(sk);
	fill_tuple_from_sock(rec, sk, tp);
	rec->idle_ns = rec->since_send_ns = RW_UNKNOWN_NS;
	rec->pool_idle_ns = rec->conn_age_ns = RW_UNKNOWN_NS;
	if (!tp)
		return;
	last_send = tp->lsndtime;
	last_recv = tp->inet_conn.icsk_ack.lrcvtime;
	last_data = ((__s32)(last_recv - last_send) > 0) ? last_recv : last_send;
	rec->idle_ns = last_data ? ns_since_jiffies(last_data) : RW_UNKNOWN_NS;
	if (rw_tcp_has_byte_counters(tp)) {
		rec->bytes_sent = tp->bytes_sent;
		rec->bytes_received = tp->bytes_received;
		rec->flags |= RW_RST_BYTES_KNOWN;
	}
	rec->total_retrans = tp->total_retrans;
	rec->stalled_retrans = tp->inet_conn.icsk_retransmits;
	rec->packets_out = tp->packets_out;
	rec->mss_cache = tp->mss_cache;
	if (last_send)
		rec->since_send_ns = ns_since_jiffies(last_send);
	if (!conn)
		return;

	rec->flags |= RW_RST_OWNER_KNOWN;
	if (conn->flags & RW_CONN_SEEDED)
		rec->flags |= RW_RST_SEEDED;
	rec->owner_tgid = conn->owner_tgid;
	__builtin_memcpy(rec->owner_comm, conn->owner_comm, RW_COMM_LEN);
	rec->role = conn->role;
	rec->requests = conn->requests;
	rec->data_ttl = conn->data_ttl;
	rec->rst_ttl = conn->rst_ttl;
	if (conn->flags & RW_CONN_IN_REQUEST)
		rec->flags |= RW_RST_IN_REQUEST;
	if (conn->requests && (rec->flags & RW_RST_BYTES_KNOWN))
		rec->response_bytes = rec->bytes_received - conn->turn_rx_base;
	rec->pool_idle_ns = conn->requests ? conn->pool_idle_ns : RW_UNKNOWN_NS;
	if (conn->last_send_ns)
		rec->since_send_ns = now - conn->last_send_ns;
	if (conn->created_ns)
		rec->conn_age_ns = now - conn->created_ns;

	/*
	 * A reset that answers a request still inside send(): the peer's reset
	 * waited in the socket backlog and is processed at release_sock(),
	 * before sock_send_length fires for that send. bytes_sent already
	 * counts the request, so the turn it opened is counted here.
	 */
	if (conn->role == RW_ROLE_UPSTREAM && !(conn->flags & RW_CONN_IN_REQUEST) &&
	    (rec->flags & RW_RST_BYTES_KNOWN) && rec->bytes_sent > conn->tx_bytes_seen) {
		rec->flags |= RW_RST_DURING_SEND | RW_RST_IN_REQUEST;
		rec->requests = conn->requests + 1;
		rec->since_send_ns = 0;
		rec->response_bytes = 0;
		rec->pool_idle_ns = pool_idle_before_turn(conn, tp, now);
	}
}

static __always_inline void fill_current(struct rw_reset_record *rec)
{
	struct task_struct *task = bpf_get_current_task_btf();

	rec->current_tgid = task->tgid;
	bpf_get_current_comm(rec->current_comm, sizeof(rec->current_comm));
	if (task->flags & PF_EXITING) {
		rec->flags |= RW_RST_CURRENT_EXITING;
		rec->current_exit_code = task->exit_code;
	}
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(on_tcp_receive_reset, struct sock *sk)
{
	struct rw_conn *conn = bpf_sk_storage_get(&conns, sk, NULL, 0);
	struct rw_reset_record *rec;

	if (!conn && !track_all_tasks)
		return 0;
	rec = reserve_record(sizeof(*rec), RW_REC_RESET);
	if (!rec)
		return 0;
	__builtin_memset((char *)rec + sizeof(rec->hdr), 0, sizeof(*rec) - sizeof(rec->hdr));
	rec->direction = RW_DIR_RECEIVED;
	fill_connection(rec, sk, conn, rec->hdr.ts_ns);
	fill_current(rec);
	bpf_ringbuf_submit(rec, wakeup_flags());
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(on_tcp_send_reset, const struct sock *csk, const struct sk_buff *skb)
{
	struct sock *sk = (struct sock *)csk;
	struct rw_conn *conn = NULL;
	struct rw_reset_record *rec;
	int full = sk && is_full_sock(sk);
	__u32 zero = 0;

	if (full)
		conn = bpf_sk_storage_get(&conns, sk, NULL, 0);
	/* Resets of untracked sockets are the peer's side of a tracked flow. */
	if (!conn && !emit_peer_resets && !track_all_tasks)
		return 0;
	rec = bpf_map_lookup_elem(&reset_scratch, &zero);
	if (!rec)
		return 0;
	__builtin_memset(rec, 0, sizeof(*rec));
	init_header(&rec->hdr, sizeof(*rec), RW_REC_RESET);
	rec->direction = RW_DIR_SENT;
	if (rw_send_reset_has_reason()) {
		rec->reason = (__u32)ctx[2];
		rec->flags |= RW_RST_REASON_KNOWN;
	}
	if (full && sk->__sk_common.skc_state != TCP_LISTEN) {
		fill_connection(rec, sk, conn, rec->hdr.ts_ns);
	} else {
		/* No connection: none at all, or only a listener answering a stray. */
		rec->flags |= RW_RST_NO_SOCKET;
		rec->state = sk ? sk->__sk_common.skc_state : TCP_CLOSE;
		rec->idle_ns = rec->since_send_ns = RW_UNKNOWN_NS;
		rec->pool_idle_ns = rec->conn_age_ns = RW_UNKNOWN_NS;
	}
	/* A reset answering a segment belongs to that segment's flow. */
	if (skb)
		fill_tuple_from_skb(rec, skb);
	if (!conn && !track_all_tasks && !answers_tracked_flow(rec))
		return 0;
	fill_current(rec);
	count_record(bpf_ringbuf_output(&records, rec, sizeof(*rec), wakeup_flags()) == 0);
	return 0;
}

/* The current task's memory cgroup path into rec, leaf first. */
static __always_inline void read_memory_cgroup(struct rw_oom_record *rec)
{
	struct task_struct *task = bpf_get_current_task_btf();
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

/* A classic tracepoint: OOM kills are rare, and its fields vary by kernel. */
SEC("tracepoint/oom/mark_victim")
int on_mark_victim(struct trace_event_raw_mark_victim *ctx)
{
	struct rw_oom_record *rec = reserve_record(sizeof(*rec), RW_REC_OOM);

	if (!rec)
		return 0;
	__builtin_memset((char *)rec + sizeof(rec->hdr), 0, sizeof(*rec) - sizeof(rec->hdr));
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
	if ((bpf_get_current_pid_tgid() >> 32) == (__u32)ctx->pid)
		read_memory_cgroup(rec);
	bpf_ringbuf_submit(rec, wakeup_flags());
	return 0;
}
