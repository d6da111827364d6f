/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Whose connection was reset: the owner of a socket, found at the reset.
 *
 * Resets are traced in softirq, where `current` is whoever happened to be
 * on the CPU. A socket's file keeps the credentials of the process that
 * opened it (socket() or accept()), and every process has credentials of
 * its own, so the process whose credentials they still are is the owner
 * (struct rw_cred_holder). Credentials met for the first time are not
 * searched for here: the record goes to the agent marked pending, and the
 * agent learns their holder with the task iterator. The work per reset is
 * one map lookup and a check of the holder, however many processes run.
 */
#ifndef RSTWATCH_OWNER_BPF_H
#define RSTWATCH_OWNER_BPF_H

#include "maps.bpf.h"
#include "core_fixes.bpf.h"

/*
 * A task_struct and how it may be read: `direct` when the verifier knows
 * the pointer's type (BTF), so that fields are plain loads it checks;
 * otherwise with bpf_probe_read_kernel (BPF_CORE_READ): kernels before
 * 5.11 give the current task only as a number, and a cached task pointer
 * may be stale.
 */
struct rw_task {
	const struct task_struct *ptr;
	int direct;
};

static __always_inline struct rw_task current_task(void)
{
	struct rw_task t = {.direct = rw_has_current_task_btf()};

	if (t.direct)
		t.ptr = bpf_get_current_task_btf();
	else
		t.ptr = (const struct task_struct *)bpf_get_current_task();
	return t;
}

/*
 * Each reader copies the pointer out first: inside BPF_CORE_READ() the
 * whole expression is relocated, and struct rw_task is not the kernel's.
 */
static __always_inline __u32 task_tgid(struct rw_task t)
{
	const struct task_struct *task = t.ptr;

	return t.direct ? task->tgid : BPF_CORE_READ(task, tgid);
}

static __always_inline __u32 task_parent_tgid(struct rw_task t)
{
	const struct task_struct *task = t.ptr;

	return t.direct ? task->real_parent->tgid : BPF_CORE_READ(task, real_parent, tgid);
}

static __always_inline __u64 task_cred(struct rw_task t)
{
	const struct task_struct *task = t.ptr;

	return t.direct ? (__u64)task->cred : (__u64)BPF_CORE_READ(task, cred);
}

static __always_inline __u32 task_flags(struct rw_task t)
{
	const struct task_struct *task = t.ptr;

	return t.direct ? task->flags : BPF_CORE_READ(task, flags);
}

static __always_inline __u32 task_exit_code(struct rw_task t)
{
	const struct task_struct *task = t.ptr;

	return t.direct ? task->exit_code : BPF_CORE_READ(task, exit_code);
}

/*
 * A task's name as two words: direct loads from task->comm, where
 * bpf_get_current_comm() is a helper call and a string copy. Recent
 * kernels pad comm with zeros, older ones leave an earlier name's bytes
 * after the NUL: compared under a mask (tracked_comm_masks), and read as a
 * C string by the agent.
 */
static __always_inline void task_comm_words(struct rw_task t, __u64 words[2])
{
	const struct task_struct *task = t.ptr;

	if (t.direct) {
		const __u64 *comm = (const __u64 *)task->comm;

		words[0] = comm[0];
		words[1] = comm[1];
	} else if (bpf_core_read(words, 2 * sizeof(__u64), &task->comm)) {
		words[0] = words[1] = 0;
	}
}

static __always_inline void copy_task_comm(struct rw_task t, char dst[RW_COMM_LEN])
{
	__u64 words[2];

	task_comm_words(t, words);
	__builtin_memcpy(dst, words, RW_COMM_LEN);
}

static __always_inline int comm_is_tracked(struct rw_task t)
{
	__u64 comm[2];

	task_comm_words(t, comm);
	for (__u32 i = 0; i < RW_MAX_COMMS; i++) {
		if (i >= tracked_comm_count)
			break;
		if ((comm[0] & tracked_comm_masks[i][0]) == tracked_comms[i][0] &&
		    (comm[1] & tracked_comm_masks[i][1]) == tracked_comms[i][1])
			return 1;
	}
	return 0;
}

/* A tracked pid covers its children too: an nginx master covers its workers. */
static __always_inline int pid_is_tracked(struct rw_task t)
{
	__u32 tgid = task_tgid(t);
	__u32 parent = task_parent_tgid(t);

	for (__u32 i = 0; i < RW_MAX_PIDS; i++) {
		if (i >= tracked_pid_count)
			break;
		if (tracked_pids[i] == tgid || tracked_pids[i] == parent)
			return 1;
	}
	return 0;
}

static __always_inline int task_is_tracked(struct rw_task t)
{
	if (track_all_tasks)
		return 1;
	if (tracked_pid_count && pid_is_tracked(t))
		return 1;
	return tracked_comm_count && comm_is_tracked(t);
}

/* The process a connection belongs to, as found at its reset. */
struct rw_owner {
	__u32 tgid;
	__u8 tracked;
	__u8 holder; /* it held the socket: the task on the CPU */
	char comm[RW_COMM_LEN];
	__u64 pending_cred; /* OWNER_PENDING: the credentials the agent looks up */
};

enum rw_owner_found {
	RW_OWNER_NONE,    /* an orphan, or credentials nobody holds */
	RW_OWNER_FOUND,   /* `tgid` and the rest are filled */
	RW_OWNER_PENDING, /* credentials not met before: the agent looks */
};

static __always_inline void owner_from_task(struct rw_owner *o, struct rw_task t, __u8 holder)
{
	o->tgid = task_tgid(t);
	o->tracked = task_is_tracked(t);
	o->holder = holder;
	copy_task_comm(t, o->comm);
}

/*
 * The credentials the socket's file was opened with, or 0 once its process
 * has closed it (an orphan has no struct socket). Direct loads through BTF
 * pointers: a NULL on the way reads as 0.
 */
static __always_inline __u64 socket_file_cred(const struct sock *sk)
{
	struct socket *sock = sk->sk_socket;
	struct file *file;

	if (!sock)
		return 0;
	file = sock->file;
	if (!file)
		return 0;
	return (__u64)file->f_cred;
}

/*
 * What the task iterator does for each process (the agent runs it when it
 * attaches, at every listener sweep, and when a record is pending): learn
 * the credentials of tracked processes ahead of their resets, and the
 * holders of pending ones. Other processes are left out: on a host of
 * thousands they would crowd the tracked ones out of the LRU table.
 */
static __always_inline void learn_cred_holder(const struct task_struct *task)
{
	struct rw_task t = {.ptr = task, .direct = 1};
	struct rw_cred_holder holder = {.state = RW_HOLDER_KNOWN};
	struct rw_cred_holder *known;
	__u64 cred;

	/* Leaders only: threads share their leader's credentials. */
	if (task->pid != task->tgid)
		return;
	cred = (__u64)task->cred;
	holder.tracked = task_is_tracked(t);
	if (!holder.tracked) {
		known = bpf_map_lookup_elem(&cred_holders, &cred);
		if (!known || known->state == RW_HOLDER_KNOWN)
			return;
	}
	holder.tgid = task->tgid;
	holder.task = (__u64)task;
	holder.looked_ns = bpf_ktime_get_ns();
	copy_task_comm(t, holder.comm);
	bpf_map_update_elem(&cred_holders, &cred, &holder, BPF_ANY);
}

/* Credentials met at a reset before anyone learnt their holder. */
static __always_inline enum rw_owner_found ask_agent(__u64 cred, struct rw_owner *o)
{
	struct rw_cred_holder pending = {.state = RW_HOLDER_PENDING, .looked_ns = bpf_ktime_get_ns()};

	COUNT(owner_lookups);
	bpf_map_update_elem(&cred_holders, &cred, &pending, BPF_ANY);
	o->pending_cred = cred;
	return RW_OWNER_PENDING;
}

/* Whether the task at `t` is of process `tgid` and holds `cred`. */
static __always_inline int still_holds(struct rw_task t, __u32 tgid, __u64 cred)
{
	return task_tgid(t) == tgid && task_cred(t) == cred;
}

/*
 * The holder learnt for `cred`, if it still holds them: read through the
 * task_struct pointer learnt with it, without taking a reference.
 * bpf_task_from_pid() would take one (a pid lookup and two atomics), which
 * measured 200-300 ns per received reset here, a quarter of its cost. The
 * pointer may be stale, so every read of it is a probe read, fault-safe.
 * (Loads through bpf_rdonly_cast(), Linux 6.2+, measured no faster, and a
 * kfunc extern in the object keeps libbpf from loading it on 6.1 without
 * CAP_SYS_ADMIN: it must search the modules' BTF.) The task is believed
 * only if it is of the cached
 * process and holds `cred`, before and after its name is copied. A
 * task_struct released has no credentials any more (exit_creds() clears
 * them); one freed and reused passes only as a task of the same process
 * with the same credentials (a thread of it, or its child before
 * copy_creds()), which is the same answer. `cred` itself cannot have been
 * reused meanwhile: the socket's file holds a reference to it.
 */
static __always_inline enum rw_owner_found cached_cred_holder(__u64 cred, struct rw_owner *o)
{
	struct rw_cred_holder *holder = bpf_map_lookup_elem(&cred_holders, &cred);
	struct rw_task t = {.direct = 0};
	__u32 tgid;

	if (!holder)
		return ask_agent(cred, o);
	if (holder->state == RW_HOLDER_PENDING) {
		o->pending_cred = cred;
		return RW_OWNER_PENDING;
	}
	if (holder->state != RW_HOLDER_KNOWN) {
		if (bpf_ktime_get_ns() - holder->looked_ns < RW_NO_HOLDER_RECHECK_NS) {
			COUNT(owners_unresolved);
			return RW_OWNER_NONE;
		}
		return ask_agent(cred, o);
	}
	tgid = holder->tgid;
	t.ptr = (const struct task_struct *)holder->task;
	if (!still_holds(t, tgid, cred))
		return ask_agent(cred, o);
	owner_from_task(o, t, 0);
	asm volatile("" ::: "memory"); /* check again: loads, not the values above */
	return still_holds(t, tgid, cred) ? RW_OWNER_FOUND : ask_agent(cred, o);
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

/*
 * Who owns the socket: the task on the CPU if it holds it, else the
 * process whose credentials the socket's file carries.
 */
static __always_inline enum rw_owner_found find_owner(const struct sock *sk, struct rw_owner *o)
{
	__u64 cred;

	if (held_by_current(sk)) {
		owner_from_task(o, current_task(), 1);
		return RW_OWNER_FOUND;
	}
	cred = socket_file_cred(sk);
	if (!cred)
		return RW_OWNER_NONE;
	return cached_cred_holder(cred, o);
}

/*
 * Whether the socket is a tracked process's, as far as is known without
 * asking the agent: for work done per connection (ttl.bpf.h), where a
 * pending lookup per unknown process would cost more than the answer is
 * worth. Credentials not learnt yet (a process started in the last 10 s)
 * count as untracked.
 */
static __always_inline int connection_is_tracked(const struct sock *sk)
{
	const struct rw_cred_holder *holder;
	__u64 cred;

	if (track_all_tasks)
		return 1;
	if (held_by_current(sk))
		return task_is_tracked(current_task());
	cred = socket_file_cred(sk);
	if (!cred)
		return 0;
	holder = bpf_map_lookup_elem(&cred_holders, &cred);
	return holder && holder->state == RW_HOLDER_KNOWN && holder->tracked;
}

#endif /* RSTWATCH_OWNER_BPF_H */
