/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Every kernel difference the BPF side copes with lives here, each behind a
 * CO-RE check that the verifier resolves at load time. No version macros:
 * the running kernel's BTF decides.
 *
 * Differences the agent settles before load instead, by switching programs'
 * autoload or setting read-only flags (agent/kernel/kernel_support.cpp decides,
 * agent/kernel/loader.cpp applies):
 *   - bpf_get_socket_cookie() in tracing programs (5.12): have_socket_cookie;
 *   - resets sent without a socket (6.10): fentry where the tracepoint lacks them;
 *   - TTLs by default: fentry on tcp_reset() and tcp_finish_connect() where
 *     ftrace can attach and tcp_reset() takes the reset's skb (5.11; its
 *     BTF prototype tells), else only tcp_probe with --ttl-evidence;
 *   - oom:mark_victim: a raw tracepoint where perf events are refused;
 *     its arguments (pid, or the task since 6.8): mark_victim_passes_task;
 *   - oom:mark_victim and tcp:tcp_probe may be missing: not loaded.
 */
#ifndef RSTWATCH_CORE_FIXES_BPF_H
#define RSTWATCH_CORE_FIXES_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/*
 * bpf_get_current_task_btf() arrived in Linux 5.11; before it, the current
 * task is a plain number whose fields are read with probe reads. The
 * helper's id in the kernel's enum tells (as libbpf-tools does it).
 */
static __always_inline int rw_has_current_task_btf(void)
{
	return bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf);
}

/*
 * TCP_SKB_CB(skb)->tcp_flags is one byte on Linux 6.12 and two on 6.18
 * (AccECN's flag bits widened it). The flags that
 * matter here (RST is 0x04) sit in its first byte either way on
 * little-endian machines, so one byte is read at the field's offset.
 * The offset is hidden from clang (barrier_var), which would otherwise
 * fold it into a load whose size libbpf checks against the field's.
 */
static __always_inline __u8 rw_tcp_skb_flags(const struct sk_buff *skb)
{
	__u32 off = bpf_core_field_offset(struct tcp_skb_cb, tcp_flags);

	barrier_var(off);
	if (off >= sizeof(skb->cb))
		return 0;
	return skb->cb[off];
}

/*
 * Whether a received segment takes sequence space (data, or a FIN): a pure
 * ACK does not. TCP_SKB_CB(skb)->seq and end_seq have led tcp_skb_cb since
 * before Linux 5.10; the offsets still come from BTF.
 */
static __always_inline int rw_tcp_skb_has_payload(const struct sk_buff *skb)
{
	__u32 seq_off = bpf_core_field_offset(struct tcp_skb_cb, seq);
	__u32 end_off = bpf_core_field_offset(struct tcp_skb_cb, end_seq);
	__u32 seq, end_seq;

	barrier_var(seq_off);
	barrier_var(end_off);
	if (seq_off > sizeof(skb->cb) - 4 || end_off > sizeof(skb->cb) - 4)
		return 0;
	__builtin_memcpy(&seq, &skb->cb[seq_off], 4);
	__builtin_memcpy(&end_seq, &skb->cb[end_off], 4);
	return seq != end_seq;
}

/*
 * The socket's cookie. bpf_get_socket_cookie() takes a socket pointer in
 * tracing programs only since Linux 5.12; before, the cookie is read from
 * the socket itself, where it is 0 until something asked for it (sock_diag
 * does, and the agent's seeding uses it). The agent sets the flag.
 */
const volatile __u8 have_socket_cookie = 1;

static __always_inline __u64 rw_socket_cookie(struct sock *sk)
{
	if (have_socket_cookie)
		return bpf_get_socket_cookie(sk);
	return BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
}

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
