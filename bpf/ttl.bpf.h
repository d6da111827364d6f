/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * TTL evidence: the TTL of a received reset against that of the backend's
 * segments tells a middlebox's reset from the backend's. Two ways to read
 * them, which the agent chooses between (agent/kernel/loader.cpp):
 *
 *   by default, where fentry can attach and tcp_reset() is given the
 *   reset's skb (Linux 5.11+): the reset's TTL at tcp_reset() only
 *   (remember_reset_ttl()), the backend's from the SYN-ACK that completes
 *   a tracked process's connect() (remember_handshake_ttl()): nothing runs
 *   per segment or per request, one program per connection opened;
 *
 *   with --ttl-evidence: remember_ttl(), the tcp_probe program's work, on
 *   every segment an established socket receives; the backend's TTL then
 *   comes from its data, not its handshake.
 *
 * fill_ttls() puts them into the reset's record either way.
 */
#ifndef RSTWATCH_TTL_BPF_H
#define RSTWATCH_TTL_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "core_fixes.bpf.h"
#include "maps.bpf.h"
#include "owner.bpf.h"
#include "connection.bpf.h"

/* The IP TTL (IPv4) or hop limit (IPv6) of a received segment; 0 unknown. */
static __always_inline __u8 ttl_of(const struct sk_buff *skb)
{
	unsigned char *head;
	__u16 nh;
	__u8 version = 0, ttl = 0;

	if (!skb)
		return 0;
	head = skb->head;
	nh = skb->network_header;
	bpf_probe_read_kernel(&version, 1, head + nh);
	if ((version >> 4) == 4)
		bpf_probe_read_kernel(&ttl, 1, head + nh + offsetof(struct iphdr, ttl));
	else
		bpf_probe_read_kernel(&ttl, 1, head + nh + offsetof(struct ipv6hdr, hop_limit));
	return ttl;
}

/*
 * A reset's TTL, for tcp_receive_reset, which the same CPU runs next in the
 * same call of tcp_reset(): kept per CPU with its socket, so that a reset
 * of another socket in between (a softirq interrupting a task that handles
 * its socket's backlog) leaves the TTL unknown rather than wrong.
 */
static __always_inline void remember_reset_ttl(const struct sock *sk, const struct sk_buff *skb)
{
	struct rw_last_rst *last;
	__u32 zero = 0;

	last = bpf_map_lookup_elem(&last_rst_ttl, &zero);
	if (last) {
		last->sk = (__u64)sk;
		last->ttl = ttl_of(skb);
	}
}

/*
 * The backend's TTL by default: that of the SYN-ACK that completed a
 * tracked process's connect() (tcp_finish_connect()), kept per peer address
 * as tcp_probe keeps the data's, so that a pooled connection opened before
 * the agent, or by a worker whose credentials it has not learnt yet, gets
 * the TTL any other connection to that backend saw. The map is written
 * only when the TTL changes: per connection, a header read and two lookups.
 *
 * A stand-in for the backend's data: sound where the backend's own kernel
 * answers the handshake, as it does behind routers, NAT and stateful
 * firewalls (the middleboxes meant here). Not where something else answers
 * it for the backend: a SYN proxy (iptables SYNPROXY, DDoS scrubbing) or an
 * L4 balancer that completes handshakes itself. Then the SYN-ACK's TTL is
 * that box's, a reset from the backend looks like a middlebox's and one
 * from that box like the backend's; --ttl-evidence reads the data's TTL
 * instead. (A full proxy sends everything itself: no TTL tells then.)
 */
static __always_inline void remember_handshake_ttl(const struct sock *sk, const struct sk_buff *skb)
{
	struct rw_peer_ttl fresh = {}, *known;
	struct rw_endpoint peer;
	__u8 ttl;

	if (!connection_is_tracked(sk))
		return;
	ttl = ttl_of(skb);
	if (!ttl)
		return;
	sock_endpoint(&peer, sk, RW_PEER_ADDRESS);
	known = bpf_map_lookup_elem(&peer_data_ttls, &peer);
	if (known && known->ttl == ttl)
		return;
	fresh.read_jiffies = bpf_jiffies64();
	fresh.ttl = ttl;
	bpf_map_update_elem(&peer_data_ttls, &peer, &fresh, BPF_ANY);
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
		remember_reset_ttl(sk, skb);
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

/* What was seen of this reset and of the peer's segments before it. */
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
