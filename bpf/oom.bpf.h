/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * OOM kills: what the two oom:mark_victim programs (rstwatch.bpf.c), the
 * classic tracepoint and the raw one, share: the record reserved in the
 * ring, and the victim's memory cgroup read before it goes out. The agent
 * loads the programs only where the tracepoint exists and attaches one of
 * the two.
 */
#ifndef RSTWATCH_OOM_BPF_H
#define RSTWATCH_OOM_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "core_fixes.bpf.h"
#include "maps.bpf.h"

/* The current task's memory cgroup path into rec, leaf first. */
static __always_inline void read_memory_cgroup(struct rw_oom_record *rec)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task(); /* rare: probe reads do */
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

/* An OOM record reserved in the ring, all but its header zeroed. */
static __always_inline struct rw_oom_record *begin_oom_record(void)
{
	struct rw_oom_record *rec = reserve_record(sizeof(*rec), RW_REC_OOM);

	if (rec)
		__builtin_memset((char *)rec + sizeof(rec->hdr), 0, sizeof(*rec) - sizeof(rec->hdr));
	return rec;
}

/* The victim's memory cgroup, if the victim is on the CPU, then out. */
static __always_inline void submit_oom_record(struct rw_oom_record *rec)
{
	if ((bpf_get_current_pid_tgid() >> 32) == rec->pid)
		read_memory_cgroup(rec);
	bpf_ringbuf_submit(rec, wakeup_flags());
}

#endif /* RSTWATCH_OOM_BPF_H */
