// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * rstwatch kernel side.
 *
 * Resets are reported from softirq context, where `current` is whoever
 * happened to be on the CPU, so the owner of a connection is recorded when
 * the owner itself touches the socket: at connect(), or at its first recv()
 * of an accepted socket. Nothing runs per state change, send, receive or
 * segment: what the connection was doing (request open, idle, reused) is
 * read from the tcp_sock when it is reset.
 *
 *   cgroup/connect4,6    owner = connect() caller (upstream), and the server
 *                        it connects to, for peer evidence
 *   cgroup/post_bind4,6  a tracked process bound a port: its listener
 *   sock_recv_length     only with --client-workers: owner = first reader of
 *                        an accepted socket (downstream)
 *   tcp_receive_reset    a reset arrived on a tracked socket
 *   tcp_send_reset       a reset left a tracked socket, or an untracked one
 *                        on an upstream server (the backend's side: evidence)
 *   tcp_destroy_sock     the socket is gone: so is its owner
 *   oom/mark_victim      the OOM killer chose a victim (and its memory cgroup)
 *   tcp_probe            only with --ttl-evidence: TTL of the peer's data and
 *                        of a reset, to tell a middlebox from the backend
 *
 * The cgroup hooks are attached to the root of the cgroup v2 hierarchy, so
 * they see every process; they run once per connect() or bind() on the
 * host, where the tracepoint sock:inet_sock_set_state, which earlier
 * versions used, runs about ten times per connection for every TCP socket.
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
#define PF_EXITING 0x00000004
#define E2BIG 7   /* what a map update returns when the map is full */
#define EEXIST 17 /* ... with BPF_NOEXIST when the key is there */

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

/*
 * Owners of connections claimed here (see struct rw_owner_set). The agent
 * sizes it before load: a power of two of sets, owner_set_mask below.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RW_MAX_CONNS / RW_OWNER_WAYS);
	__type(key, __u32);
	__type(value, struct rw_owner_set);
} owners SEC(".maps");
const volatile __u32 owner_set_mask = RW_MAX_CONNS / RW_OWNER_WAYS - 1;

/*
 * Owners of connections older than the agent, written once by it at
 * start-up (SO_COOKIE) and only read here. Never deleted: cookies are not
 * reused, so an entry outliving its socket can match nothing.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, RW_MAX_CONNS); /* resized by the agent before load */
	__type(key, __u64);
	__type(value, struct rw_conn);
} seeded_owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rw_counters);
} counters SEC(".maps");

/*
 * Servers tracked processes connect to. A handful per nginx: looked up
 * before it is written, so a connect() to a known server writes nothing.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct rw_endpoint);
	__type(value, __u8);
} upstream_endpoints SEC(".maps");

/*
 * The last few servers connect()ed to on this CPU, in front of
 * upstream_endpoints: a proxy connects to the same handful of servers over
 * and over, and comparing three words is cheaper than hashing the key and
 * walking a bucket (about 60 ns per connect() here). A task preempted while
 * it writes a slot can leave it torn: a miss later, not a false match.
 */
#define RW_RECENT_ENDPOINTS 4
struct rw_recent_endpoints {
	struct rw_endpoint ep[RW_RECENT_ENDPOINTS];
	__u32 next; /* the slot replaced next: round robin */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rw_recent_endpoints);
} recent_upstream_endpoints SEC(".maps");

/*
 * Sockets tracked processes listen on (nginx's master opens them): a reset
 * on a connection accepted from one is downstream, owned by that process
 * family even when no worker claimed it (see on_sock_recv_length).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct rw_endpoint);
	__type(value, struct rw_listener);
} listeners SEC(".maps");

/*
 * The sockets behind the listeners entries, by cookie: a listener's entry
 * goes when its last socket does (tcp_destroy_sock), or when a bound socket
 * turns out to be a client (connect()).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct rw_endpoint);
} bound_sockets SEC(".maps");

/* A reset is assembled here before we know whether it is wanted. */
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

/*
 * Atomic although per-CPU: a reset sent from a task's close() can be
 * interrupted on its CPU by a softirq handling a received one, and a task
 * in a cgroup hook can be preempted (migration is off, preemption is not)
 * by another running the same hook. A plain increment would lose counts.
 */
#define COUNT(field)                                                                   \
	do {                                                                           \
		struct rw_counters *cnt_ = this_cpu_counters();                        \
		if (cnt_)                                                              \
			__sync_fetch_and_add(&cnt_->field, 1);                         \
	} while (0)

static __always_inline void count_record(int delivered)
{
	if (delivered)
		COUNT(records_emitted);
	else
		COUNT(records_lost);
}

/* A map update that failed for want of room is counted, never silent. */
static __always_inline void count_if_full(long err)
{
	if (err == -E2BIG)
		COUNT(endpoints_dropped);
}

static __always_inline void *reserve_record(__u32 size, __u16 type)
{
	struct rw_record_header *hdr = bpf_ringbuf_reserve(&records, size, 0);

	count_record(hdr != NULL);
	if (hdr)
		init_header(hdr, size, type);
	return hdr;
}

/*
 * The current task's name as two words: direct loads from task->comm,
 * where bpf_get_current_comm() is a helper call and a string copy (about
 * 60 ns per connect() here). The kernel pads comm with zeros
 * (strscpy_pad), so the words compare and copy whole.
 */
static __always_inline void current_comm_words(__u64 words[2])
{
	const __u64 *comm = (const __u64 *)bpf_get_current_task_btf()->comm;

	words[0] = comm[0];
	words[1] = comm[1];
}

static __always_inline void copy_current_comm(char dst[RW_COMM_LEN])
{
	__u64 words[2];

	current_comm_words(words);
	__builtin_memcpy(dst, words, RW_COMM_LEN);
}

static __always_inline int comm_is_tracked(void)
{
	__u64 comm[2];

	current_comm_words(comm);
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

/*
 * The socket's cookie if it has one yet, without generating it: a direct
 * load. The kernel makes cookies on demand, and every claimed socket got
 * one when it was claimed, so no cookie means no owner.
 */
static __always_inline __u64 cookie_if_any(const struct sock *sk)
{
	return sk->__sk_common.skc_cookie.counter;
}

/*
 * The set a cookie belongs in: its low bits. The kernel hands cookies out
 * in sequence (per-CPU batches of a global counter), so connections opened
 * together land in different, neighbouring sets, and a set fills only if
 * RW_OWNER_WAYS connections whose cookies are a table size apart all stay
 * open.
 */
static __always_inline struct rw_owner_set *owner_set_of(__u64 cookie)
{
	__u32 index = (__u32)cookie & owner_set_mask;

	return bpf_map_lookup_elem(&owners, &index);
}

static __always_inline struct rw_conn *conn_of(const struct sock *sk)
{
	__u64 cookie = cookie_if_any(sk);
	struct rw_owner_set *set;

	if (!cookie)
		return NULL;
	set = owner_set_of(cookie);
	if (set) {
		for (int i = 0; i < RW_OWNER_WAYS; i++)
			if (set->cookie[i] == cookie)
				return &set->conn[i];
	}
	return bpf_map_lookup_elem(&seeded_owners, &cookie);
}

/*
 * Records the current task as the owner of the socket with `cookie` in a
 * free way of its set, taken with a compare-and-exchange (another CPU may
 * be claiming into the same set). The way is filled before anything can
 * reset the connection: connect() sends its SYN after its hook. False if
 * the set is full.
 */
static __always_inline int claim_for_current(__u64 cookie, __u8 role)
{
	struct rw_owner_set *set = owner_set_of(cookie);
	struct rw_conn *conn = NULL;

	if (!set)
		return 0;
	/* A socket connect()ed again after a failed attempt keeps its cookie and its way. */
	for (int i = 0; i < RW_OWNER_WAYS; i++)
		if (set->cookie[i] == cookie)
			conn = &set->conn[i];
	for (int i = 0; i < RW_OWNER_WAYS && !conn; i++) {
		if (set->cookie[i])
			continue;
		if (__sync_val_compare_and_swap(&set->cookie[i], 0, cookie) == 0) {
			conn = &set->conn[i];
			break;
		}
	}
	if (!conn) {
		COUNT(owners_dropped);
		return 0;
	}
	conn->owner_tgid = bpf_get_current_pid_tgid() >> 32;
	copy_current_comm(conn->owner_comm);
	conn->role = role;
	conn->flags = 0;
	conn->data_ttl = conn->rst_ttl = 0;
	conn->created_jiffies = bpf_jiffies64(); /* a load, where the clock is a call */
	COUNT(owners_recorded);
	return 1;
}

/*
 * A socket's own end as a map key: its address and port as bound (valid
 * while the socket holds its port: not after a close with SO_LINGER 0, see
 * fill_tuple_from_sock()).
 */
static __always_inline void sock_local_endpoint(struct rw_endpoint *ep, const struct sock *sk)
{
	const struct sock_common *skc = &sk->__sk_common;

	__builtin_memset(ep, 0, sizeof(*ep));
	ep->family = skc->skc_family;
	ep->port = skc->skc_num;
	if (ep->family == AF_INET)
		__builtin_memcpy(ep->addr, &skc->skc_rcv_saddr, 4);
	else
		__builtin_memcpy(ep->addr, &skc->skc_v6_rcv_saddr, 16);
}

/* Our end of a reset, as filled into the record. */
static __always_inline void record_local_endpoint(struct rw_endpoint *ep, const struct rw_reset_record *rec)
{
	__builtin_memset(ep, 0, sizeof(*ep));
	ep->family = rec->family;
	ep->port = rec->local_port;
	__builtin_memcpy(ep->addr, rec->local_addr, 16);
}

/* Whether a reset sent from `rec->local` left an upstream server. */
static __always_inline int sent_by_upstream_endpoint(const struct rw_reset_record *rec)
{
	struct rw_endpoint ep;

	record_local_endpoint(&ep, rec);
	return bpf_map_lookup_elem(&upstream_endpoints, &ep) != NULL;
}

static __always_inline int same_endpoint(const struct rw_endpoint *a, const struct rw_endpoint *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	_Static_assert(sizeof(struct rw_endpoint) == 3 * sizeof(__u64), "rw_endpoint is three words");
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2];
}

/* Adds `ep` to upstream_endpoints unless this CPU saw it lately or it is there already. */
static __always_inline void remember_endpoint_once(const struct rw_endpoint *ep)
{
	struct rw_recent_endpoints *recent;
	__u32 zero = 0;
	__u8 one = 1;

	recent = bpf_map_lookup_elem(&recent_upstream_endpoints, &zero);
	if (!recent)
		return;
	for (int i = 0; i < RW_RECENT_ENDPOINTS; i++)
		if (same_endpoint(&recent->ep[i], ep))
			return;
	if (!bpf_map_lookup_elem(&upstream_endpoints, ep))
		count_if_full(bpf_map_update_elem(&upstream_endpoints, ep, &one, BPF_NOEXIST));
	recent->ep[recent->next++ % RW_RECENT_ENDPOINTS] = *ep;
}

/*
 * The server a connect() goes to, as the caller gave it (user_port holds
 * the port in network order). `family` is a constant per program: the
 * verifier rejects reading the other family's fields of the context.
 */
static __always_inline void remember_upstream_endpoint(const struct bpf_sock_addr *ctx, __u16 family)
{
	struct rw_endpoint ep = {};

	ep.family = family;
	ep.port = bpf_ntohs((__u16)ctx->user_port);
	if (family == AF_INET) {
		__u32 addr = ctx->user_ip4;

		__builtin_memcpy(ep.addr, &addr, 4);
	} else {
		__u32 addr[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};

		__builtin_memcpy(ep.addr, addr, 16);
	}
	remember_endpoint_once(&ep);
}

/*
 * A bound socket's own end (src_port is in host order in struct bpf_sock).
 * `family` as above: constant, the socket's.
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
 * A socket that bind() recorded is gone, or turned out to be a client: one
 * socket fewer on its listener's endpoint, and the entry goes with the
 * last. An entry whose sockets the agent could not count when it seeded
 * it (0) stays.
 */
static __always_inline void forget_bound_socket(__u64 cookie)
{
	struct rw_endpoint *ep = bpf_map_lookup_elem(&bound_sockets, &cookie);
	struct rw_listener *l;

	if (!ep)
		return;
	l = bpf_map_lookup_elem(&listeners, ep);
	if (l && l->sockets && __sync_fetch_and_add(&l->sockets, -1) == 1)
		bpf_map_delete_elem(&listeners, ep);
	bpf_map_delete_elem(&bound_sockets, &cookie);
}

/*
 * connect() of a socket, in the caller's context, before anything is
 * sent. A socket bound to a port before it connects was a client all
 * along: it gives up its share of the listener entry its bind() made
 * (only a bound socket can have one: the port test saves the lookup).
 */
static __always_inline void on_connect(struct bpf_sock_addr *ctx, __u16 family)
{
	struct bpf_sock *sk = ctx->sk;
	__u64 cookie;

	if (!is_tcp(ctx->type, ctx->protocol) || !current_is_tracked())
		return;
	cookie = bpf_get_socket_cookie(ctx);
	if (sk && sk->src_port)
		forget_bound_socket(cookie);
	if (claim_for_current(cookie, RW_ROLE_UPSTREAM) && emit_peer_resets)
		remember_upstream_endpoint(ctx, family);
}

/*
 * A tracked process bound a TCP socket to a port: nginx's master does so
 * for each listen directive, and there is no hook at listen() that runs
 * for listens only. A bind() with IP_BIND_ADDRESS_NO_PORT (nginx's
 * proxy_bind without a port) has no port yet and is skipped; one that
 * binds a port and then connects gives its share back at connect().
 */
static __always_inline void on_post_bind(struct bpf_sock *sk, __u16 family)
{
	struct rw_endpoint ep;
	struct rw_listener owner = {}, *l;
	__u64 cookie;

	if (!is_tcp(sk->type, sk->protocol) || !sk->src_port || !current_is_tracked())
		return;
	bound_endpoint(&ep, sk, family);
	cookie = bpf_get_socket_cookie(sk);
	if (bpf_map_update_elem(&bound_sockets, &cookie, &ep, BPF_NOEXIST)) {
		COUNT(endpoints_dropped); /* full: this socket would never leave its count */
		return;
	}
	l = bpf_map_lookup_elem(&listeners, &ep);
	if (!l) {
		long err;

		owner.owner_tgid = bpf_get_current_pid_tgid() >> 32;
		owner.sockets = 1;
		copy_current_comm(owner.owner_comm);
		err = bpf_map_update_elem(&listeners, &ep, &owner, BPF_NOEXIST);
		if (err != -EEXIST) {
			count_if_full(err);
			return;
		}
		/* Another CPU's bind() on the endpoint created it meanwhile. */
		l = bpf_map_lookup_elem(&listeners, &ep);
		if (!l)
			return;
	}
	/* Another socket on the endpoint (reuseport): one more, same owner. */
	if (l->sockets)
		__sync_fetch_and_add(&l->sockets, 1);
}

/* Cgroup socket hooks must return 1: 0 would fail the caller's system call with EPERM. */
SEC("cgroup/connect4")
int on_connect4(struct bpf_sock_addr *ctx)
{
	on_connect(ctx, AF_INET);
	return 1;
}

SEC("cgroup/connect6")
int on_connect6(struct bpf_sock_addr *ctx)
{
	on_connect(ctx, AF_INET6);
	return 1;
}

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

/*
 * Only with --client-workers (the agent leaves it unloaded otherwise): an
 * accepted socket is claimed the first time its owner reads from it, so a
 * reset on a client connection names the worker, not only the listening
 * process. No hook runs in the acceptor at accept() here: no kprobes or
 * fentry, and the syscall tracepoints would put every syscall on the host
 * on the tracing slow path. This program runs for every recv() on the
 * host, several times per proxied request, so it leaves early: on nothing
 * read (nginx reads until EAGAIN), on sockets already claimed, on
 * untracked callers.
 */
SEC("tp_btf/sock_recv_length")
int BPF_PROG(on_sock_recv_length, struct sock *sk, int ret, int flags)
{
	if (ret <= 0)
		return 0;
	if (conn_of(sk))
		return 0;
	if (current_is_tracked() && is_inet_tcp(sk))
		claim_for_current(bpf_get_socket_cookie(sk), RW_ROLE_DOWNSTREAM);
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
 * Only with --ttl-evidence (the agent leaves it unloaded otherwise): it
 * fires for every segment an established socket receives, the reset
 * included. The TTL of the peer's data and of the reset tells who sent the
 * reset: a middlebox answers from fewer hops away than the backend.
 * Sockets without storage (untracked) leave at one load, before any helper
 * call.
 */
SEC("tp_btf/tcp_probe")
int BPF_PROG(on_tcp_probe, struct sock *sk, const struct sk_buff *skb)
{
	struct rw_conn *conn = conn_of(sk);
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
	__u32 last_data;

	rec->state = sk->__sk_common.skc_state;
	rec->sock_cookie = bpf_get_socket_cookie(sk);
	fill_tuple_from_sock(rec, sk, tp);
	rec->idle_ns = rec->since_send_ns = RW_UNKNOWN_NS;
	rec->pool_idle_ns = rec->conn_age_ns = RW_UNKNOWN_NS;
	if (!tp)
		return;
	stamps->last_send = tp->lsndtime;
	stamps->last_recv = tp->inet_conn.icsk_ack.lrcvtime;
	last_data = jiffies_after(stamps->last_recv, stamps->last_send) ? stamps->last_recv : stamps->last_send;
	rec->idle_ns = last_data ? ns_since_jiffies(last_data) : RW_UNKNOWN_NS;
	if (stamps->last_send)
		rec->since_send_ns = ns_since_jiffies(stamps->last_send);
	if (rw_tcp_has_byte_counters(tp)) {
		rec->bytes_sent = tp->bytes_sent;
		rec->bytes_received = tp->bytes_received;
		rec->flags |= RW_RST_BYTES_KNOWN;
	}
	rec->total_retrans = tp->total_retrans;
	rec->stalled_retrans = tp->inet_conn.icsk_retransmits;
	rec->packets_out = tp->packets_out;
	rec->mss_cache = tp->mss_cache;
}

static __always_inline void fill_owner_from_conn(struct rw_reset_record *rec, const struct rw_conn *conn)
{
	rec->flags |= RW_RST_OWNER_KNOWN;
	if (conn->flags & RW_CONN_SEEDED)
		rec->flags |= RW_RST_SEEDED;
	rec->owner_tgid = conn->owner_tgid;
	__builtin_memcpy(rec->owner_comm, conn->owner_comm, RW_COMM_LEN);
	rec->role = conn->role;
	rec->data_ttl = conn->data_ttl;
	rec->rst_ttl = conn->rst_ttl;
	if (conn->created_jiffies)
		rec->conn_age_ns = jiffies_to_ns(bpf_jiffies64() - conn->created_jiffies);
}

/* The tracked listener a connection with local end `ep` was accepted from. */
static __always_inline const struct rw_listener *listener_at(struct rw_endpoint *ep)
{
	const struct rw_listener *l = bpf_map_lookup_elem(&listeners, ep);

	if (l)
		return l;
	__builtin_memset(ep->addr, 0, sizeof(ep->addr)); /* bound to the wildcard address */
	return bpf_map_lookup_elem(&listeners, ep);
}

/*
 * Whether the task on the CPU holds the socket (lock_sock()): in close() or
 * another system call, or processing the backlog on release_sock(), where
 * a reset that arrived meanwhile is handled. Softirqs and timers never run
 * TCP on a socket a task holds, they leave it to the holder, so then the
 * task on the CPU is the socket's owner.
 */
static __always_inline int held_by_current(const struct sock *sk)
{
	return sk->sk_lock.owned;
}

static __always_inline void fill_owner_from_listener(struct rw_reset_record *rec, const struct rw_listener *l,
						     int held)
{
	rec->flags |= RW_RST_OWNER_KNOWN | RW_RST_OWNER_LISTENER;
	rec->role = RW_ROLE_DOWNSTREAM;
	rec->owner_tgid = l->owner_tgid;
	__builtin_memcpy(rec->owner_comm, l->owner_comm, RW_COMM_LEN);
	if (held) {
		rec->flags |= RW_RST_OWNER_HOLDER;
		rec->owner_tgid = bpf_get_current_pid_tgid() >> 32;
		copy_current_comm(rec->owner_comm);
	}
}

/*
 * The owner: the socket's own entry, else the tracked listener it was
 * accepted from. False if neither: the reset is no tracked process's.
 */
static __always_inline int fill_owner(struct rw_reset_record *rec, const struct rw_conn *conn,
				      const struct rw_listener *l, const struct rw_stamps *stamps, int held)
{
	if (conn)
		fill_owner_from_conn(rec, conn);
	else if (l)
		fill_owner_from_listener(rec, l, held);
	else
		return 0;
	fill_turn(rec, rec->role, stamps->last_send, stamps->last_recv);
	return 1;
}

static __always_inline void fill_current(struct rw_reset_record *rec)
{
	struct task_struct *task = bpf_get_current_task_btf();

	rec->current_tgid = task->tgid;
	copy_current_comm(rec->current_comm);
	if (task->flags & PF_EXITING) {
		rec->flags |= RW_RST_CURRENT_EXITING;
		rec->current_exit_code = task->exit_code;
	}
}

/* A reset assembled in the per-CPU scratch record, to the ring buffer. */
static __always_inline void emit(struct rw_reset_record *rec)
{
	fill_current(rec);
	count_record(bpf_ringbuf_output(&records, rec, sizeof(*rec), wakeup_flags()) == 0);
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

/*
 * A received reset on a socket without an owner entry is still nginx's
 * when the socket was accepted from a tracked listener. Resets of other
 * sockets on the host leave after those lookups, before a record is
 * assembled: the socket still holds its port here (tcp_reset() traces
 * before it closes the socket).
 */
SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(on_tcp_receive_reset, struct sock *sk)
{
	struct rw_conn *conn = conn_of(sk);
	const struct rw_listener *l = NULL;
	struct rw_stamps stamps = {};
	struct rw_reset_record *rec;
	struct rw_endpoint local;

	if (!conn) {
		sock_local_endpoint(&local, sk);
		l = listener_at(&local);
		if (!l && !track_all_tasks)
			return 0;
	}
	rec = scratch_record(RW_DIR_RECEIVED);
	if (!rec)
		return 0;
	fill_connection(rec, sk, &stamps);
	fill_owner(rec, conn, l, &stamps, held_by_current(sk));
	emit(rec);
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(on_tcp_send_reset, const struct sock *csk, const struct sk_buff *skb)
{
	struct sock *sk = (struct sock *)csk;
	struct rw_conn *conn = NULL;
	struct rw_stamps stamps = {};
	struct rw_reset_record *rec;
	int full = sk && is_full_sock(sk);
	int owned = 0;

	if (full)
		conn = conn_of(sk);
	rec = scratch_record(RW_DIR_SENT);
	if (!rec)
		return 0;
	if (rw_send_reset_has_reason()) {
		rec->reason = (__u32)ctx[2];
		rec->flags |= RW_RST_REASON_KNOWN;
	}
	if (full && sk->__sk_common.skc_state != TCP_LISTEN) {
		fill_connection(rec, sk, &stamps);
		/* After a close with SO_LINGER 0 only the record has our port. */
		const struct rw_listener *l = NULL;
		struct rw_endpoint local;

		if (!conn) {
			record_local_endpoint(&local, rec);
			l = listener_at(&local);
		}
		owned = fill_owner(rec, conn, l, &stamps, held_by_current(sk));
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
	/* Resets of untracked sockets are evidence only when they left an upstream server. */
	if (!owned && !track_all_tasks && !(emit_peer_resets && sent_by_upstream_endpoint(rec)))
		return 0;
	emit(rec);
	return 0;
}

/*
 * The owner's way is freed with the socket. Not at TCP_CLOSE: a close
 * with SO_LINGER 0 reaches TCP_CLOSE before its reset is traced, and that
 * reset must still find its owner. Sockets without a cookie (most of the
 * host's) leave at one load; owned ones after their set. The few others
 * with a cookie (bound listeners, sockets someone asked SO_COOKIE of) pay
 * one more lookup.
 */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(on_tcp_destroy_sock, struct sock *sk)
{
	__u64 cookie = cookie_if_any(sk);
	struct rw_owner_set *set;

	if (!cookie)
		return 0;
	set = owner_set_of(cookie);
	if (!set)
		return 0;
	for (int i = 0; i < RW_OWNER_WAYS; i++) {
		if (set->cookie[i] == cookie) {
			set->cookie[i] = 0;
			return 0;
		}
	}
	forget_bound_socket(cookie);
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
