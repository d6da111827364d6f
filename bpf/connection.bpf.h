/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What a reset's socket says about its connection, read at the reset: its
 * ends, its tuple (or, with no socket, the tuple of the segment a reset
 * answers), its counters and data stamps, and from those stamps what the
 * connection was doing (fill_turn()). Nothing here knows whose socket it
 * is (owner.bpf.h) or whether the reset is reported (reset_record.bpf.h).
 */
#ifndef RSTWATCH_CONNECTION_BPF_H
#define RSTWATCH_CONNECTION_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "core_fixes.bpf.h"
#include "maps.bpf.h"

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

/* Whether jiffies stamp a is later than b (32-bit, wrapping). */
static __always_inline int jiffies_after(__u32 a, __u32 b)
{
	return (__s32)(a - b) > 0;
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
static __always_inline void fill_turn(struct rw_reset_record *rec, __u8 role, __u32 last_send, __u32 last_recv,
				      __u32 last_ack)
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
	/*
	 * tcp_reset() runs before the reset's own ACK field is processed, so
	 * an acknowledgement after the server's last data is one of the
	 * request's segments (jiffies: one within the same tick is missed).
	 */
	if (role == RW_ROLE_UPSTREAM && jiffies_after(last_ack, server_last))
		rec->flags |= RW_RST_REQUEST_ACKED;
	if (!server_bytes)
		return;
	rec->flags |= RW_RST_REUSED;
	rec->pool_idle_ns = jiffies_to_ns(client_last - server_last);
}

/* The tcp_sock's data stamps, kept for fill_turn() once the owner is known. */
struct rw_stamps {
	__u32 last_send; /* lsndtime */
	__u32 last_recv; /* icsk_ack.lrcvtime */
	__u32 last_ack;  /* rcv_tstamp: the last acknowledgement processed */
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
	stamps->last_ack = tp->rcv_tstamp;
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

#endif /* RSTWATCH_CONNECTION_BPF_H */
