/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The records and map entries shared by the BPF programs and the agent.
 *
 * Required both by the BPF side (compiled against vmlinux.h) and by user
 * space (C++, which static_asserts every size below). Plain C, fixed-width
 * types, explicit padding, no bool: the layout must be identical for both
 * compilers. Every ring-buffer record starts with struct rw_record_header,
 * whose `type` tells user space how to decode the rest.
 */
#ifndef RSTWATCH_ABI_H
#define RSTWATCH_ABI_H

#ifndef __bpf__
#include <linux/types.h>
#endif

#define RW_COMM_LEN 16
#define RW_MAX_COMMS 8
#define RW_MAX_PIDS 8
#define RW_CGROUP_LEVELS 8     /* path components kept, leaf first */
#define RW_CGROUP_NAME_LEN 96    /* fits docker-<64 hex>.scope */

/* A timestamp or duration the kernel side could not know. */
#define RW_UNKNOWN_NS (~0ULL)

enum rw_record_type {
	RW_REC_RESET = 1,
	RW_REC_OOM = 2,
};

enum rw_direction {
	RW_DIR_RECEIVED = 1,
	RW_DIR_SENT = 2,
};

enum rw_role {
	RW_ROLE_OTHER = 0,
	RW_ROLE_UPSTREAM = 1,   /* not accepted from a tracked listener: the owner connect()ed out */
	RW_ROLE_DOWNSTREAM = 2, /* the owner accepted it */
};

/* One end of a connection: a map key, so all of it is always written. */
struct rw_endpoint {
	__u8 addr[16];   /* IPv4 uses the first 4 bytes */
	__u16 port;      /* host byte order */
	__u16 family;    /* AF_INET or AF_INET6 */
	__u32 pad0;
};

/*
 * A connection as its receiving end sees it: the key under which a reset
 * sent by an untracked socket (the backend, when it runs on this host)
 * waits for the tracked socket that receives it.
 */
struct rw_flow {
	struct rw_endpoint local;
	struct rw_endpoint remote;
};

/*
 * Every port that has ever had an entry in the listeners table, one byte
 * each, in the BPF object's .bss (which user space maps): a reset whose
 * local port has no mark skips both listener lookups. Marks are set by
 * bind() and by seeding, and never cleared, so an unmarked port always
 * means no listener there. Bytes, not bits: a plain store sets one without
 * the atomic OR a shared bit would need (Linux 5.12+).
 */
#define RW_PORTS 65536

/*
 * A socket a tracked process bound a port for (to listen on), keyed by its
 * rw_endpoint as bound (a wildcard address is all zeros): connections with
 * that local end were accepted (downstream). Once the worker that accepted
 * one has closed it, the socket has no file left to name its owner, and a
 * reset on it names the listener's process instead.
 */
struct rw_listener {
	__u32 owner_tgid; /* who bound it: nginx's master */
	__u32 pad0;
	char owner_comm[RW_COMM_LEN];
	/*
	 * The socket that bound it (0: seeded). A reset on that very socket
	 * is a client's: it was bound to connect() from, not to listen.
	 */
	__u64 bound_cookie;
};

struct rw_record_header {
	__u16 type; /* enum rw_record_type */
	__u16 size; /* sizeof the whole record */
	__u32 cpu;
	__u64 ts_ns; /* CLOCK_MONOTONIC */
};

/* struct rw_reset_record.flags */
enum rw_reset_flags {
	RW_RST_OWNER_KNOWN = 1u << 0,     /* owner_* is the connection's process */
	RW_RST_NO_SOCKET = 1u << 1,       /* sent with no connection socket: none, or a listener */
	RW_RST_ON_CPU_EXITING = 1u << 2,  /* the task on the CPU was exiting */
	RW_RST_REASON_KNOWN = 1u << 4,    /* `reason` is the kernel's sk_rst_reason */
	RW_RST_BYTES_KNOWN = 1u << 5,     /* bytes_sent/bytes_received are valid */
	/*
	 * The client side (the owner on an upstream connection, the peer on a
	 * downstream one) sent data after the server side last did: a request
	 * is waiting for its response.
	 */
	RW_RST_IN_REQUEST = 1u << 6,
	/* ... and the server side had answered an earlier one: a reused connection. */
	RW_RST_REUSED = 1u << 7,
	/*
	 * The socket had no file left (its process had closed it): it was
	 * accepted from a tracked listener, and owner_* is the listening
	 * process (nginx's master).
	 */
	RW_RST_OWNER_LISTENER = 1u << 8,
	/*
	 * The task on the CPU held the socket at the reset (a close() with
	 * linger 0 or unread data, or a reset handled on release_sock()): it is
	 * the owner, read from the CPU rather than from the socket's file.
	 */
	RW_RST_OWNER_HOLDER = 1u << 9,
	/*
	 * The socket's file names credentials whose holder the reset programs
	 * did not know yet: `owner_cred` is their key in the cred_holders map,
	 * and the agent fills owner_* (or drops the record) once it has looked.
	 */
	RW_RST_OWNER_PENDING = 1u << 10,
	/*
	 * Sent from a socket its application had closed (no struct socket
	 * left): data arriving after the close was refused. Linux 6.10+ says
	 * so in `reason` too (TCP_ABORT_ON_DATA); older kernels only this way.
	 */
	RW_RST_ORPHAN = 1u << 11,
	/*
	 * RW_RST_IN_REQUEST, and an acknowledgement arrived after the server
	 * side's last data: the peer's socket acknowledged part of the waiting
	 * request, so it was alive when the request came. A connection the
	 * peer had closed or forgotten (a restarted host, a middlebox that
	 * dropped the flow) answers the request's first segment with the reset.
	 */
	RW_RST_REQUEST_ACKED = 1u << 12,
};

struct rw_reset_record {
	struct rw_record_header hdr;
	__u64 sock_cookie;
	__u8 direction; /* enum rw_direction */
	__u8 role;      /* enum rw_role */
	__u8 family;    /* AF_INET or AF_INET6 */
	__u8 state;     /* TCP state (kernel numbering) at the reset */
	__u32 reason;   /* raw enum sk_rst_reason, sent resets only */
	__u32 flags;    /* enum rw_reset_flags */
	__u32 owner_tgid;
	char owner_comm[RW_COMM_LEN];
	/* The task that happened to be on the CPU: evidence, never the owner. */
	__u32 on_cpu_tgid;
	__u32 on_cpu_exit_code; /* task->exit_code when exiting: signal in low 7 bits */
	char on_cpu_comm[RW_COMM_LEN];
	__u8 local_addr[16];  /* IPv4 uses the first 4 bytes */
	__u8 remote_addr[16];
	__u16 local_port;     /* host byte order */
	__u16 remote_port;
	__u32 pad1;
	/* Durations from the tcp_sock's jiffies stamps: 1/CONFIG_HZ resolution. */
	__u64 idle_ns;        /* now - last data either way */
	__u64 since_request_ns; /* now - last data segment sent: on nginx's upstream connections its
	                         * request (or that request's retransmission) */
	__u64 pool_idle_ns;   /* quiet before the open request on a reused connection, else RW_UNKNOWN_NS */
	__u64 bytes_sent;
	__u64 bytes_received;
	__u32 retransmits;    /* tp->total_retrans: over the connection's life, SYN ones included */
	__u32 packets_out;    /* segments in flight at the reset */
	__u32 mss;            /* tp->mss_cache */
	__u8 data_ttl;        /* TTL / hop limit of the peer's data segments, 0 unknown */
	__u8 rst_ttl;         /* TTL / hop limit of the reset segment, 0 unknown */
	__u8 stalled_retransmits; /* icsk_retransmits: timeouts in a row without progress */
	__u8 pad0;
	__u64 owner_cred;     /* RW_RST_OWNER_PENDING: see there */
};

/* struct rw_oom_record.flags */
enum rw_oom_flags {
	RW_OOM_RSS_KNOWN = 1u << 0,
	RW_OOM_CGROUP_TRUNCATED = 1u << 1, /* deeper than RW_CGROUP_LEVELS */
};

struct rw_oom_record {
	struct rw_record_header hdr;
	__u32 pid;
	__u32 flags; /* enum rw_oom_flags */
	char comm[RW_COMM_LEN];
	__u64 total_vm_kb;
	__u64 anon_rss_kb;
	__u64 file_rss_kb;
	__u64 shmem_rss_kb;
	/*
	 * The victim's memory cgroup, read when the victim itself was on the
	 * CPU (a memcg OOM in its own allocation): by the time user space
	 * reads /proc the victim may have left it. Names leaf first.
	 */
	__u32 cgroup_levels; /* 0: not read here */
	__u32 pad0;
	char cgroup_names[RW_CGROUP_LEVELS][RW_CGROUP_NAME_LEN];
};

/*
 * Who holds a set of credentials (a struct cred, the key: its address).
 * A socket's file keeps the credentials of the process that opened it, and
 * every process has its own (copied at fork, replaced by setuid()), so the
 * process holding a socket file's credentials is the socket's owner. The
 * reset programs read an entry and check it against the task at every use;
 * they never search for a holder themselves (that would walk every process
 * in softirq): credentials they meet first are marked pending and the
 * record goes to the agent, which runs the task iterator (in its own
 * process context) to learn their holder.
 */
enum rw_holder_state {
	RW_HOLDER_KNOWN = 1,   /* `tgid` held them when learnt: checked at every use */
	RW_HOLDER_PENDING = 2, /* met at a reset: the agent looks for the holder */
	RW_HOLDER_NOBODY = 3,  /* no process holds them: believed for a second */
};

#define RW_NO_HOLDER_RECHECK_NS 1000000000ULL

struct rw_cred_holder {
	__u32 tgid;
	__u32 state;     /* enum rw_holder_state */
	__u64 looked_ns; /* CLOCK_MONOTONIC, when the state was set */
	__u64 task;      /* the holder's task_struct (its leader): checked, never trusted */
	/* Written by the task iterator for the agent; the reset programs read the task. */
	char comm[RW_COMM_LEN];
	__u8 tracked;
	__u8 pad0[7];
};

/* Per-CPU counters (BPF_MAP_TYPE_PERCPU_ARRAY, one entry); the agent sums them. */
struct rw_counters {
	__u64 records_emitted;
	__u64 ring_buffer_full;  /* bpf_ringbuf_reserve failed */
	__u64 owner_lookups;     /* a socket's credentials not known yet: the agent was asked */
	__u64 owners_unresolved; /* ... and no process holds them any more (changed or gone) */
	__u64 listeners_dropped; /* listeners not recorded: their table was full */
};

#endif /* RSTWATCH_ABI_H */
