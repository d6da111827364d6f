/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Every kernel difference the BPF side copes with lives here, each behind a
 * CO-RE check that the verifier resolves at load time. No version macros:
 * the running kernel's BTF decides.
 *
 * Differences handled in user space instead (program autoload switched off,
 * see agent/loader.cpp): oom:mark_victim, tcp:tcp_probe. The cgroup socket
 * hooks (Linux 4.17+) need the cgroup v2 hierarchy mounted somewhere, and
 * finding a socket's owner needs the task iterator kfuncs (Linux 6.7+) and
 * bpf_rdonly_cast (6.2+):
 * agent/prerequisites.cpp checks them all before loading.
 */
#ifndef RSTWATCH_CORE_FIXES_BPF_H
#define RSTWATCH_CORE_FIXES_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/*
 * Linux 5.6 turned sk_protocol from an 8-bit bitfield into a u16
 * ("sock: Make sk_protocol a 16-bit value").
 */
struct sock___bitfield_protocol {
	unsigned int sk_protocol : 8;
} __attribute__((preserve_access_index));

static __always_inline __u16 rw_sk_protocol(const struct sock *sk)
{
	if (bpf_core_field_exists(((struct sock___bitfield_protocol *)0)->sk_protocol) &&
	    !bpf_core_field_exists(sk->sk_protocol))
		return (__u16)BPF_CORE_READ_BITFIELD_PROBED(
			(struct sock___bitfield_protocol *)sk, sk_protocol);
	return sk->sk_protocol; /* a direct load: sk is a BTF pointer in tp_btf */
}

/*
 * tcp:tcp_send_reset gained its third argument, enum sk_rst_reason, in
 * Linux 6.10 (the "rstreason" series). The enum arrived in the same series,
 * so its presence tells whether ctx[2] exists; the verifier drops the
 * branch on older kernels, where reading ctx[2] would be rejected.
 */
static __always_inline int rw_send_reset_has_reason(void)
{
	return bpf_core_type_exists(enum sk_rst_reason);
}

/* tcp_sock.bytes_sent arrived in Linux 4.19, bytes_received in 4.1. */
static __always_inline int rw_tcp_has_byte_counters(const struct tcp_sock *tp)
{
	return bpf_core_field_exists(tp->bytes_sent) &&
	       bpf_core_field_exists(tp->bytes_received);
}

/*
 * oom:mark_victim carried only the pid until Linux 6.8 added comm, total_vm
 * and the rss fields ("mm: oom: add more info to the mark_victim tracepoint").
 */
static __always_inline int rw_mark_victim_has_rss(struct trace_event_raw_mark_victim *ctx)
{
	return bpf_core_field_exists(ctx->anon_rss) &&
	       bpf_core_field_exists(ctx->__data_loc_comm);
}

/* Linux 6.15 renamed kernfs_node.parent to __parent (it became RCU-protected). */
struct kernfs_node___parent {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *rw_kernfs_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(kn->__parent))
		return BPF_CORE_READ(kn, __parent);
	return BPF_CORE_READ((struct kernfs_node___parent *)kn, parent);
}

#endif /* RSTWATCH_CORE_FIXES_BPF_H */
