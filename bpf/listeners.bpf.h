/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The listeners of tracked processes: recorded at bind() by on_post_bind()
 * (for the cgroup post_bind programs, which see every process), and looked
 * up at a reset (listener_at()) to tell a downstream connection from an
 * upstream one and to find the owner of an orphan accepted from a listener.
 */
#ifndef RSTWATCH_LISTENERS_BPF_H
#define RSTWATCH_LISTENERS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "core_fixes.bpf.h"
#include "maps.bpf.h"
#include "owner.bpf.h"

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

#endif /* RSTWATCH_LISTENERS_BPF_H */
