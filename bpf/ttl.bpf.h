/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * TTL evidence, only with --ttl-evidence: remember_ttl(), the tcp_probe
 * program's work, reads the TTL of the peer's data and of a reset as
 * segments arrive, and fill_ttls() puts them into the reset's record.
 */
#ifndef RSTWATCH_TTL_BPF_H
#define RSTWATCH_TTL_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "core_fixes.bpf.h"
#include "maps.bpf.h"
#include "connection.bpf.h"

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
 * The tcp_probe program's work. Only with --ttl-evidence (the agent leaves
 * the program unloaded otherwise): it fires for every segment an
 * established socket on the host receives, the reset included. The TTL of
 * the peer's data and of the reset tells who sent the reset: a middlebox
 * answers from fewer hops away than the backend. A path's TTL is stable,
 * so each peer address's is read at most once a second; a reset's TTL
 * waits on this CPU for tcp_receive_reset, which the same softirq runs
 * next.
 */
static __always_inline void remember_ttl(const struct sock *sk, const struct sk_buff *skb)
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
		return;
	}
	/*
	 * The TTL of the connection is the backend's data's: a pure ACK may
	 * come from whatever answers for the backend (a proxy, a balancer).
	 */
	if (!rw_tcp_skb_has_payload(skb))
		return;
	sock_endpoint(&peer, sk, RW_PEER_ADDRESS);
	now = bpf_jiffies64();
	known = bpf_map_lookup_elem(&peer_data_ttls, &peer);
	if (known && now - known->read_jiffies < (kernel_hz ? kernel_hz : 1000))
		return;
	fresh.read_jiffies = now;
	fresh.ttl = ttl_of(skb);
	bpf_map_update_elem(&peer_data_ttls, &peer, &fresh, BPF_ANY);
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

#endif /* RSTWATCH_TTL_BPF_H */
