/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The records and per-socket state shared by the BPF programs and the agent.
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
#define RW_MAX_CONNS 65536      /* owner table slots by default (--max-connections) */
#define RW_OWNER_WAYS 4          /* slots per set of the owner table */
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
	RW_ROLE_UPSTREAM = 1,   /* the owner connect()ed out */
	RW_ROLE_DOWNSTREAM = 2, /* the owner accepted it */
};

/* struct rw_conn.flags */
enum rw_conn_flags {
	RW_CONN_SEEDED = 1u << 1,     /* owner seeded by the agent at start-up (created_jiffies is 0) */
};

/*
 * Who owns a connection: recorded when the owner itself touches the socket,
 * at connect() (or with --client-workers at its first recv() of an accepted
 * socket) into the owner table, and by the agent for connections that
 * predate it into a hash keyed by socket cookie.
 *
 * Nothing here changes while the connection carries traffic: request turns,
 * idle times and byte counts are read from the tcp_sock when a reset
 * happens.
 */
struct rw_conn {
	__u32 owner_tgid;
	__u32 flags;    /* enum rw_conn_flags */
	char owner_comm[RW_COMM_LEN];
	__u64 created_jiffies; /* jiffies at connect() or first recv(), or 0: CONFIG_HZ resolution */
	__u8 role;          /* enum rw_role */
	__u8 data_ttl;      /* IP TTL / hop limit of the peer's data (--ttl-evidence only) */
	__u8 rst_ttl;       /* ... of the last RST segment, 0 if none */
	__u8 pad0[5];
};

/*
 * The owner table is a set-associative cache in a BPF array: the socket's
 * cookie picks a set, and a claim takes a free way of it with one
 * compare-and-exchange on its cookie. The way is freed when the socket is
 * destroyed. No allocation, no lock: a hash map's update and delete cost
 * about 350 ns per connection here, socket-local storage 1.1 µs. The
 * cookies sit together, so finding a socket's way reads one cache line.
 * A claim finding its set full is counted (rw_counters.owners_dropped).
 */
struct rw_owner_set {
	__u64 cookie[RW_OWNER_WAYS]; /* the socket in each way; 0: free */
	struct rw_conn conn[RW_OWNER_WAYS];
};

/*
 * An address and port that a tracked process connect()ed to: an upstream
 * server. A reset sent from one of these by a socket nobody tracks (the
 * backend, when it runs on this host) is the other side of an upstream
 * reset and is reported as evidence; resets elsewhere on the host are not.
 */
struct rw_endpoint {
	__u8 addr[16];   /* IPv4 uses the first 4 bytes */
	__u16 port;      /* host byte order */
	__u16 family;    /* AF_INET or AF_INET6 */
	__u32 pad0;
};

/*
 * A socket a tracked process listens on, keyed by its rw_endpoint as bound
 * (a wildcard address is all zeros). Its accepted connections are
 * downstream, and without --client-workers nothing records which worker
 * accepted one: a reset on it names the listener's process instead.
 */
struct rw_listener {
	__u32 owner_tgid; /* who bound it: nginx's master */
	__u32 sockets;    /* bound sockets on this endpoint (reuseport: several); 0: not counted, stays */
	char owner_comm[RW_COMM_LEN];
};

struct rw_record_header {
	__u16 type; /* enum rw_record_type */
	__u16 size; /* sizeof the whole record */
	__u32 cpu;
	__u64 ts_ns; /* CLOCK_MONOTONIC */
};

/* struct rw_reset_record.flags */
enum rw_reset_flags {
	RW_RST_OWNER_KNOWN = 1u << 0,     /* the socket had rw_conn state */
	RW_RST_NO_SOCKET = 1u << 1,       /* sent with no connection socket: none, or a listener */
	RW_RST_CURRENT_EXITING = 1u << 2, /* the task on the CPU was exiting */
	RW_RST_SEEDED = 1u << 3,          /* owner came from start-up seeding */
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
	 * The socket had no owner recorded: it was accepted from a tracked
	 * listener, and owner_* is the listening process (nginx's master).
	 */
	RW_RST_OWNER_LISTENER = 1u << 8,
	/*
	 * ... but the task on the CPU held the socket at the reset (a close()
	 * with linger 0 or unread data, or a reset handled on release_sock()):
	 * that task, in owner_*, is the worker that had the connection.
	 */
	RW_RST_OWNER_HOLDER = 1u << 9,
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
	__u32 current_tgid;
	__u32 current_exit_code; /* task->exit_code when exiting: signal in low 7 bits */
	char current_comm[RW_COMM_LEN];
	__u8 local_addr[16];  /* IPv4 uses the first 4 bytes */
	__u8 remote_addr[16];
	__u16 local_port;     /* host byte order */
	__u16 remote_port;
	__u32 pad1;
	/* Durations from the tcp_sock's jiffies stamps: CONFIG_HZ resolution. */
	__u64 idle_ns;        /* now - last data either way */
	__u64 since_send_ns;  /* now - last data segment sent (retransmissions included) */
	__u64 pool_idle_ns;   /* quiet before the open request on a reused connection, else RW_UNKNOWN_NS */
	__u64 conn_age_ns;    /* CONFIG_HZ resolution; RW_UNKNOWN_NS: opened before the agent */
	__u64 bytes_sent;
	__u64 bytes_received;
	__u32 total_retrans;  /* over the connection's life, SYN retransmissions included */
	__u32 packets_out;    /* segments in flight at the reset */
	__u32 mss_cache;
	__u8 data_ttl;        /* TTL / hop limit of the peer's data segments, 0 unknown */
	__u8 rst_ttl;         /* TTL / hop limit of the reset segment, 0 unknown */
	__u8 stalled_retrans; /* retransmission timeouts in a row without progress */
	__u8 pad0;
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

/* Per-CPU counters (BPF_MAP_TYPE_PERCPU_ARRAY, one entry); the agent sums them. */
struct rw_counters {
	__u64 records_emitted;
	__u64 records_lost;      /* bpf_ringbuf_reserve failed: ring buffer full */
	__u64 owners_recorded;   /* sockets given an owner by the BPF side */
	__u64 owners_dropped;    /* ... that could not be: their set of the owner table was full */
	__u64 endpoints_dropped; /* upstream servers or listeners not recorded: their table was full */
};

#endif /* RSTWATCH_ABI_H */
