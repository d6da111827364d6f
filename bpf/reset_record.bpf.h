/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * A reset's record, from the per-CPU scratch record to the ring buffer:
 * whether it is reported (wanted()), its owner and the connection's turn
 * (fill_owner()), the task on the CPU (fill_current()), and out (emit()).
 */
#ifndef RSTWATCH_RESET_RECORD_BPF_H
#define RSTWATCH_RESET_RECORD_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "maps.bpf.h"
#include "owner.bpf.h"
#include "connection.bpf.h"

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
	fill_turn(rec, rec->role, stamps->last_send, stamps->last_recv, stamps->last_ack);
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

#endif /* RSTWATCH_RESET_RECORD_BPF_H */
