/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The BPF side's state: the configuration the agent writes before load,
 * every map, and the counters and ring-buffer records every program uses.
 */
#ifndef RSTWATCH_MAPS_BPF_H
#define RSTWATCH_MAPS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "rstwatch_abi.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_STREAM 1
#define PF_EXITING 0x00000004
#define E2BIG 7   /* what a map update returns when the map is full */

/* Set by the agent before load. */
const volatile __u8 track_all_tasks = 0;
const volatile __u8 emit_peer_resets = 1;
/* A TTL program is loaded (ttl.bpf.h): reset records carry TTLs. */
const volatile __u8 record_ttls = 0;
const volatile __u32 tracked_pid_count = 0;
const volatile __u32 tracked_pids[RW_MAX_PIDS] = {};
const volatile __u32 tracked_comm_count = 0;
/*
 * Each name as two little 8-byte words, so a match is two compares, and a
 * mask of its bytes up to its NUL: before Linux 5.12 or so a task's comm
 * was not zero-padded (set_task_comm used strlcpy), and the bytes after
 * the NUL are an earlier name's (seen on 5.10: "sh\0tch_root").
 */
const volatile __u64 tracked_comms[RW_MAX_COMMS][2] = {};
const volatile __u64 tracked_comm_masks[RW_MAX_COMMS][2] = {};
/* An eighth of the ring's size (which the agent sets): see wakeup_flags(). */
const volatile __u64 ring_wakeup_bytes = 1;

/*
 * The kernel's CONFIG_HZ, for its jiffies stamps; 0 if the agent could not
 * tell. Not a __kconfig extern: libbpf refuses to load those where no
 * kernel config can be read (/boot/config-*, /proc/config.gz), and the
 * agent can measure it instead (agent/kernel/kernel_features.cpp).
 */
const volatile __u32 kernel_hz = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* resized by the agent before load */
} records SEC(".maps");

/* Credentials to their holder: struct rw_cred_holder (rstwatch_abi.h) says how. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct rw_cred_holder);
} cred_holders SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rw_counters);
} counters SEC(".maps");

/*
 * The two ends of a reset on this host, one untracked (the backend) and
 * one tracked (nginx), both by the flow as the receiving end sees it. The
 * kernel traces a reset answering a segment before sending it, and one
 * from close() or an abort after it was delivered: so the last few resets
 * sent by untracked sockets wait for a tracked receiver, and the last few
 * flows a tracked socket received a reset on wait for their senders. On
 * loopback and veth the receiver runs on the sender's CPU, within the
 * sending call, so each CPU keeps its own few: no lock, no hashing (a hash
 * map's update took about 1 µs per reset here). A flow can see two: close()
 * unhashes the backend's socket before its own reset leaves, and a segment
 * arriving in between is answered by its listener; both are reported, and
 * the agent tells them apart (agent/diagnosis/diagnosis.cpp). A task preempted while
 * it writes a slot can leave it torn: a miss, at worst a garbled record of
 * the same flow.
 */
#define RW_PEER_SLOTS 8
struct rw_unclaimed_sent_resets {
	struct rw_flow flow[RW_PEER_SLOTS];
	struct rw_reset_record rec[RW_PEER_SLOTS];
	__u32 next;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rw_unclaimed_sent_resets);
} unclaimed_sent_resets SEC(".maps");

struct rw_tracked_received_flows {
	struct rw_flow flow[RW_PEER_SLOTS];
	__u64 ts_ns[RW_PEER_SLOTS]; /* 0: free */
	__u32 next;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rw_tracked_received_flows);
} tracked_received_flows SEC(".maps");

/* A flow's ports come round again: only a reset this recent is the other end's. */
#define RW_PEER_RESET_MAX_AGE_NS 2000000000ULL

/*
 * Sockets tracked processes bound a port for (nginx's master opens them):
 * a connection with such a local end was accepted, and once its worker has
 * closed it, it is still that process family's. An entry stays until its
 * process is gone (the agent sweeps) or another tracked process binds the
 * endpoint.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct rw_endpoint);
	__type(value, struct rw_listener);
} listeners SEC(".maps");

/*
 * The ports with an entry in `listeners` (see RW_PORTS). Most resets are
 * on connections nginx opened, from an ephemeral port that no listener
 * has; for those, the two lookups of listener_at() hash a new key into a
 * cold bucket each time (70 ns of a send reset's 530 here). One load from
 * this table settles it. In .bss, so that seeding marks ports too.
 */
__u8 listened_ports[RW_PORTS] = {};

static __always_inline void mark_listened_port(__u16 port)
{
	listened_ports[port] = 1;
}

static __always_inline int port_has_listener(__u16 port)
{
	return listened_ports[port];
}

/*
 * The TTL of each peer address's segments (its data with --ttl-evidence,
 * else its SYN-ACKs), and when it was read.
 */
struct rw_peer_ttl {
	__u64 read_jiffies;
	__u8 ttl;
	__u8 pad0[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct rw_endpoint); /* port 0 */
	__type(value, struct rw_peer_ttl);
} peer_data_ttls SEC(".maps");

/* The last reset seen on this CPU (tcp_reset or tcp_probe), for tcp_receive_reset. */
struct rw_last_rst {
	__u64 sk;
	__u8 ttl;
	__u8 pad0[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rw_last_rst);
} last_rst_ttl SEC(".maps");

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
 * twice a second anyway: wake it early only once an eighth of the ring
 * waits. Then every record wakes it, and pays for that: a reset storm
 * faster than the agent consumes is slowed to its pace rather than lost.
 * Asking the ring reads the consumer's position, a line the agent writes
 * from another CPU (150 ns per record in a storm); counting records per
 * CPU instead saved that, and lost records at 43k resets/s (run 18).
 * The ring's size is known at load time: a constant, not a second query.
 */
static __always_inline __u64 wakeup_flags(void)
{
	return bpf_ringbuf_query(&records, BPF_RB_AVAIL_DATA) >= ring_wakeup_bytes ? BPF_RB_FORCE_WAKEUP
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
		COUNT(ring_buffer_full);
}

/*
 * A map update that failed for want of room is counted, never silent. The
 * error is compared as an int: on Linux 6.1 (not 6.18) the helper's result
 * reached a cgroup program without its upper 32 bits sign-extended.
 */
static __always_inline void count_if_full(long err)
{
	if ((int)err == -E2BIG)
		COUNT(listeners_dropped);
}

static __always_inline void *reserve_record(__u32 size, __u16 type)
{
	struct rw_record_header *hdr = bpf_ringbuf_reserve(&records, size, 0);

	count_record(hdr != NULL);
	if (hdr)
		init_header(hdr, size, type);
	return hdr;
}

#endif /* RSTWATCH_MAPS_BPF_H */
