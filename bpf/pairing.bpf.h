/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The two ends of one reset on this host: a reset sent by a socket no
 * tracked process owns (the backend's, when it runs here) paired with a
 * tracked socket receiving it, whichever the kernel traces first. Both
 * sides wait in small per-CPU tables (maps.bpf.h says why per CPU) keyed
 * by the flow as the receiving end sees it. Only with emit_peer_resets.
 */
#ifndef RSTWATCH_PAIRING_BPF_H
#define RSTWATCH_PAIRING_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "maps.bpf.h"
#include "connection.bpf.h"
#include "reset_record.bpf.h"

/* The connection a reset belongs to, as its receiving end sees it. */
static __always_inline void receivers_flow(struct rw_flow *flow, const struct rw_reset_record *rec)
{
	int received = rec->direction == RW_DIR_RECEIVED;

	record_endpoint(&flow->local, rec, received);
	record_endpoint(&flow->remote, rec, !received);
}

static __always_inline int same_flow(const struct rw_flow *a, const struct rw_flow *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	_Static_assert(sizeof(struct rw_flow) == 6 * sizeof(__u64), "rw_flow is six words");
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4] && x[5] == y[5];
}

/*
 * A reset sent by a socket no tracked process owns: reported if a tracked
 * socket received it already, else kept for one that will. Its `current`
 * is the sender's context (an exiting backend, say).
 */
static __always_inline void emit_or_keep_unclaimed_sent_reset(struct rw_reset_record *rec)
{
	struct rw_tracked_received_flows *received;
	struct rw_unclaimed_sent_resets *kept;
	struct rw_flow flow;
	__u32 zero = 0, slot;

	fill_current(rec);
	receivers_flow(&flow, rec);
	received = bpf_map_lookup_elem(&tracked_received_flows, &zero);
	if (!received)
		return;
	for (int i = 0; i < RW_PEER_SLOTS; i++) {
		if (received->ts_ns[i] && rec->hdr.ts_ns - received->ts_ns[i] < RW_PEER_RESET_MAX_AGE_NS &&
		    same_flow(&received->flow[i], &flow)) {
			output(rec);
			return;
		}
	}
	kept = bpf_map_lookup_elem(&unclaimed_sent_resets, &zero);
	if (!kept)
		return;
	slot = kept->next++ % RW_PEER_SLOTS;
	kept->flow[slot] = flow;
	kept->rec[slot] = *rec;
}

/*
 * The far end's resets of the connection `rec` received, when they were
 * sent on this host: reported now if they were traced already; the flow
 * waits for any traced later.
 */
static __always_inline void emit_and_await_sender_side(const struct rw_reset_record *rec)
{
	struct rw_tracked_received_flows *received;
	struct rw_unclaimed_sent_resets *kept;
	struct rw_flow flow;
	__u32 zero = 0, slot;

	receivers_flow(&flow, rec);
	kept = bpf_map_lookup_elem(&unclaimed_sent_resets, &zero);
	if (kept) {
		for (int i = 0; i < RW_PEER_SLOTS; i++) {
			struct rw_reset_record *sent = &kept->rec[i];

			if (!sent->hdr.ts_ns || !same_flow(&kept->flow[i], &flow))
				continue;
			if (rec->hdr.ts_ns - sent->hdr.ts_ns < RW_PEER_RESET_MAX_AGE_NS)
				output(sent);
			sent->hdr.ts_ns = 0; /* reported once */
		}
	}
	received = bpf_map_lookup_elem(&tracked_received_flows, &zero);
	if (!received)
		return;
	slot = received->next++ % RW_PEER_SLOTS;
	received->flow[slot] = flow;
	received->ts_ns[slot] = rec->hdr.ts_ns;
}

#endif /* RSTWATCH_PAIRING_BPF_H */
