# Turns scripts/bench's raw samples (workload, tool, round, metric, value; tab-
# separated) into the markdown tables and the PASS/FAIL target lines.
# Portable awk (Debian's default is mawk: no asort).

function sortn(a, n,    i, j, x) {
    for (i = 2; i <= n; i++) {
        x = a[i]
        for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]
        a[j + 1] = x
    }
}
# median / min / max of the values of key k in S[k, 1..N[k]], and the
# median's confidence interval (CILO-CIHI, coverage CICOV)
function stats(k,    i, a, n) {
    n = N[k]
    if (!n) { MED = ""; MIN = ""; MAX = ""; CILO = ""; CIHI = ""; CICOV = ""; return 0 }
    for (i = 1; i <= n; i++) a[i] = S[k, i] + 0
    sortn(a, n)
    MED = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    MIN = a[1]; MAX = a[n]
    median_interval(a, n)
    return n
}
# Distribution-free interval for the median of n sorted values: the k-th
# smallest to the k-th largest, with the largest k for which the median
# lies outside with probability at most 5% (each side: Binomial(n, 1/2)
# below k). Few rounds cannot reach 95%: up to 5 the interval is the
# min-max (93.8% for 5, less below); 9 rounds give the 2nd to the 8th
# (96.1%), 15 the 4th to the 12th (96.5%). Unlike the min-max, it narrows
# as rounds are added, so more rounds can settle a target.
function median_interval(a, n,    k, below, pk) {
    below = 0.5 ^ n     # P(B <= k - 1) for k = 1
    pk = below
    for (k = 1; 2 * k < n; k++) {
        pk = pk * (n - k + 1) / k    # P(B = k)
        if (below + pk > 0.025)
            break
        below += pk
    }
    CILO = a[k]; CIHI = a[n - k + 1]; CICOV = 1 - 2 * below
}
# paired ratio tool/off per round for workload w, metric m (tool − off with diff set)
function paired(w, t, m, diff,    r, k) {
    k = (diff ? "diff" : "ratio") SUBSEP w SUBSEP t SUBSEP m
    if (!(k in DONE)) {
        DONE[k] = 1
        for (r = 1; r <= RMAX; r++)
            if (((w, t, m, r) in V) && ((w, "off", m, r) in V) && (diff || V[w, "off", m, r] > 0))
                S[k, ++N[k]] = diff ? V[w, t, m, r] - V[w, "off", m, r] : V[w, t, m, r] / V[w, "off", m, r]
    }
    return stats(k)
}
function fmt(x, d) { return (x == "") ? "-" : sprintf("%." d "f", x) }
function spread(d) { return fmt(MED, d) " (" fmt(MIN, d) "–" fmt(MAX, d) ")" }
function pct(x) { return sprintf("%.1f%%", x * 100) }
function target(ok, text) {
    if (ok == "") { print "- n/a  " text " (not measured)"; return }
    print "- " (ok ? "PASS" : "FAIL") " " text
}
# A ratio target whose median's interval (over the paired ratios of the
# rounds) holds the threshold is not decided by this run: say so next to
# PASS/FAIL. cov is the interval's coverage.
function ratio_target(ok, lo, hi, cov, thr, text) {
    if (ok != "" && lo != "" && lo + 0 < thr && hi + 0 > thr)
        text = text " — INCONCLUSIVE: the median's " sprintf("%.1f%%", cov * 100) " interval " fmt(lo, 3) "–" fmt(hi, 3) \
               " holds " thr "; more rounds or a quieter machine"
    target(ok, text)
}


# rstwatch's median ns per hit of tracepoint tp in workload w; empty if not run.
function reset_ns(w, tp) {
    if (!stats(w SUBSEP "rstwatch" SUBSEP tp "|ns")) return ""
    return fmt(MED, 0)
}

# The table of per-program costs of workload w (kernel or resets), one row per
# tool and program, with the floor measured alongside; fills tl with the
# tools and returns their number. Under kernel it also finds rstwatch's
# hottest program (most hits: the target's) and each tool's BPF time per
# request. A task iterator (bpf_iter_*) is the agent's own periodic work,
# not the workload's path: listed, never the hottest.
function prog_table(w, tl,    n, i, t, nm, ml, j, tp, hits, ns, fl, c1, c2, c3, c4) {
    print "| tool | program (hook) | hits per run | ns per hit | floor ns per hit | vs floor |"
    print "|---|---|---|---|---|---|"
    n = split(TOOLS[w], tl, " ")
    for (i = 1; i <= n; i++) {
        t = tl[i]
        if (t ~ /^floor-with-/) continue
        nm = split(KM[w, t], ml, " ")
        for (j = 1; j <= nm; j++) {
            if (ml[j] !~ /\|hits$/) continue
            tp = substr(ml[j], 1, length(ml[j]) - 5)
            stats(w SUBSEP t SUBSEP tp "|hits"); hits = MED; c1 = fmt(MED, 0)
            stats(w SUBSEP t SUBSEP tp "|ns"); ns = MED; c2 = spread(1)
            stats(w SUBSEP "floor-with-" t SUBSEP tp "|ns"); fl = MED
            c3 = (fl == "") ? "-" : spread(1)
            c4 = (fl == "" || fl == 0) ? "-" : sprintf("%.2f×", ns / fl)
            printf "| %s | %s | %s | %s | %s | %s |\n", t, (tp ~ /^bpf_iter_/) ? tp " (the agent's sweep, every 10 s)" : tp, c1, c2, c3, c4
            if (w != "kernel" || tp ~ /^bpf_iter_/) continue
            if (t == "rstwatch" && hits + 0 > HOT_HITS + 0) { HOT_HITS = hits; HOT = tp; HOT_NS = ns; HOT_FL = fl }
            PER_REQ[t] += hits * ns
            if (fl != "") PER_REQ_FLOOR[t] += hits * fl
        }
    }
    return n
}

{
    w = $1; t = $2; r = $3 + 0; m = $4; v = $5
    k = w SUBSEP t SUBSEP m
    S[k, ++N[k]] = v
    V[w, t, m, r] = v
    if (r > RMAX) RMAX = r
    if (!((w, t) in SEEN)) { SEEN[w, t] = 1; TOOLS[w] = TOOLS[w] " " t }
    if ((w == "kernel" || w ~ /^resets/) && !((w, t, m) in KSEEN)) { KSEEN[w, t, m] = 1; KM[w, t] = KM[w, t] " " m }
    if (m == "rss_kb" && t == "rstwatch" && v + 0 > RSS_MAX) RSS_MAX = v + 0
}

END {
    # --- throughput and latency -------------------------------------------------
    if (("keepalive" in TOOLS) || ("churn" in TOOLS)) {
        print "## HTTP through nginx (wrk → nginx → backend)"
        print ""
        print "Medians over rounds, (min–max) across rounds; \"vs off\" is the ratio to agent-off in the same round."
        print ""
        print "| workload | tool | requests/s | vs off | p99 µs | p99 vs off | server CPU µs/req | vs off | tool CPU % | tool peak RSS MiB |"
        print "|---|---|---|---|---|---|---|---|---|---|"
        for (wi = 1; wi <= 2; wi++) {
            w = (wi == 1) ? "keepalive" : "churn"
            if (!(w in TOOLS)) continue
            n = split(TOOLS[w], tl, " ")
            for (i = 1; i <= n; i++) {
                t = tl[i]
                stats(w SUBSEP t SUBSEP "rps"); c1 = spread(0)
                if (t == "off") c2 = "1"; else { paired(w, t, "rps"); c2 = spread(4) }
                if (t == "rstwatch") { RPS_RATIO[w] = MED; RPS_SPREAD[w] = spread(4); RPS_LO[w] = CILO; RPS_HI[w] = CIHI; RPS_COV[w] = CICOV }
                if (t == "floor") { FLOOR_RPS[w] = MED; FLOOR_RPS_SPREAD[w] = spread(4) }
                stats(w SUBSEP t SUBSEP "p99_us"); c3 = spread(0)
                if (t == "off") c4 = "1"; else { paired(w, t, "p99_us"); c4 = spread(3) }
                if (t == "rstwatch") { P99_RATIO[w] = MED; P99_SPREAD[w] = spread(3); P99_LO[w] = CILO; P99_HI[w] = CIHI; P99_COV[w] = CICOV }
                # (no CPU-per-request samples in results from before that column existed)
                if (!stats(w SUBSEP t SUBSEP "cpu_us_per_req")) { c7 = "-"; c8 = "-" }
                else {
                    c7 = spread(1)
                    if (t == "off") c8 = "1"; else { paired(w, t, "cpu_us_per_req"); c8 = spread(3) }
                }
                if (t == "rstwatch") { CPU_RATIO[w] = MED; CPU_SPREAD[w] = spread(3) }
                stats(w SUBSEP t SUBSEP "cpu_pct"); c5 = (t == "off") ? "-" : fmt(MED, 1)
                stats(w SUBSEP t SUBSEP "rss_kb"); c6 = (t == "off") ? "-" : fmt(MAX / 1024, 1)
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", w, t, c1, c2, c3, c4, c7, c8, c5, c6
            }
        }
        print ""
    }

    # --- connection loop -------------------------------------------------------------
    if ("conn" in TOOLS) {
        print "## Connection churn without HTTP (rstwatch-bench-resetgen --graceful: connect(), accept(), close())"
        print ""
        print "CPU time of the loop's two processes per connection; the tool tracks the connecting one. Medians over runs, (min–max);"
        print "\"added\" is tool − off in the same round."
        print ""
        print "| tool | CPU ns per connection | vs off | added ns per connection |"
        print "|---|---|---|---|"
        n = split(TOOLS["conn"], tl, " ")
        for (i = 1; i <= n; i++) {
            t = tl[i]
            stats("conn" SUBSEP t SUBSEP "cpu_ns_per_conn"); c1 = spread(0)
            if (t == "off") { c2 = "1"; c3 = "-" }
            else {
                paired("conn", t, "cpu_ns_per_conn"); c2 = spread(4)
                paired("conn", t, "cpu_ns_per_conn", 1); c3 = spread(0)
                if (t == "rstwatch") { CONN_ADDED = MED; CONN_SPREAD = c3 }
                if (t == "floor") { FLOOR_CONN_ADDED = MED; FLOOR_CONN_SPREAD = c3 }
            }
            printf "| %s | %s | %s | %s |\n", t, c1, c2, c3
        }
        print ""
    }

    # --- reset storm --------------------------------------------------------------
    if ("storm" in TOOLS) {
        print "## Reset storm (rstwatch-bench-resetgen, loopback, SO_LINGER 0)"
        print ""
        print "| tool | generator resets/s | events delivered/s | delivered / generated | lost (max of rounds) | ring buffer peak fill % | not stored (max of rounds) | store queue peak, of its capacity | longest store write ms | tool peak RSS MiB |"
        print "|---|---|---|---|---|---|---|---|---|---|"
        n = split(TOOLS["storm"], tl, " ")
        for (i = 1; i <= n; i++) {
            t = tl[i]
            stats("storm" SUBSEP t SUBSEP "generated_per_s"); c1 = spread(0)
            if (t == "rstwatch") STORM_RATE = MAX
            stats("storm" SUBSEP t SUBSEP "delivered_per_s"); c2 = (t == "off") ? "-" : spread(0)
            stats("storm" SUBSEP t SUBSEP "delivered_frac"); c3 = (t == "off") ? "-" : spread(3)
            stats("storm" SUBSEP t SUBSEP "lost"); c4 = (t == "off") ? "-" : fmt(MAX, 0)
            if (t == "rstwatch") STORM_LOST = MAX
            c6 = "-"
            if (stats("storm" SUBSEP t SUBSEP "not_stored")) {
                c6 = fmt(MAX, 0)
                if (t == "rstwatch") STORM_NOT_STORED = MAX
            }
            c7 = "-"; c8 = "-"; c9 = "-"
            if (stats("storm" SUBSEP t SUBSEP "ring_peak_pct")) c9 = spread(1)
            if (stats("storm" SUBSEP t SUBSEP "queue_peak_frac")) c7 = spread(3)
            if (stats("storm" SUBSEP t SUBSEP "longest_write_ms")) c8 = spread(0)
            stats("storm" SUBSEP t SUBSEP "rss_kb"); c5 = (t == "off") ? "-" : fmt(MAX / 1024, 1)
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", t, c1, c2, c3, c4, c9, c6, c7, c8, c5
        }
        print ""
    }

    # --- idle ---------------------------------------------------------------------
    if ("idle" in TOOLS) {
        print "## Idle (no traffic; all tools attached at once)"
        print ""
        print "| tool | CPU % | RSS MiB |"
        print "|---|---|---|"
        n = split(TOOLS["idle"], tl, " ")
        for (i = 1; i <= n; i++) {
            t = tl[i]
            if (t == "host") continue
            stats("idle" SUBSEP t SUBSEP "cpu_pct"); c1 = fmt(MED, 3)
            if (t == "rstwatch") IDLE_CPU = MED
            stats("idle" SUBSEP t SUBSEP "rss_kb"); c2 = fmt(MED / 1024, 1)
            printf "| %s | %s | %s |\n", t, c1, c2
        }
        print ""
        if (stats("idle" SUBSEP "host" SUBSEP "tcp_opens_per_s")) {
            o = MED; stats("idle" SUBSEP "host" SUBSEP "tcp_resets_per_s")
            print "Meanwhile the host (other processes; the machine may be shared) opened " o \
                  " TCP connections/s and sent " MED " resets/s (/proc/net/snmp)."
            print ""
        }
    }

    # --- kernel cost ----------------------------------------------------------------
    if ("kernel" in TOOLS) {
        print "## Kernel cost under churn: ns per invocation (run_time_ns / run_cnt)"
        print ""
        print "Empty programs (bench/floor.bpf.c) attached at the same time on the same tracepoints and cgroup hooks are the floor."
        print "Medians over rounds, (min–max)."
        print ""
        n = prog_table("kernel", tl)
        print ""
        # What all of a tool's programs cost per proxied request: the sum that
        # the throughput ratios, at ±3% per round here, cannot resolve.
        if (stats("churn" SUBSEP "off" SUBSEP "cpu_us_per_req")) off_cpu = MED; else off_cpu = ""
        header = 0
        for (i = 1; i <= n; i++) {
            t = tl[i]
            if (t ~ /^floor-with-/ || !stats("kernel" SUBSEP t SUBSEP "requests") || MED <= 0) continue
            if (!header) {
                print "All of a tool's programs per proxied request: Σ hits × ns per hit ÷ requests in the same rounds (medians)."
                print "The floor is what empty programs on the same hooks cost; the share is of agent-off nginx + backend CPU per request under churn."
                print ""
                print "| tool | BPF ns per request | floor ns | above the floor | share of CPU per request |"
                print "|---|---|---|---|---|"
                header = 1
            }
            req = MED
            tot = PER_REQ[t] / req; fl = PER_REQ_FLOOR[t] / req
            share = (off_cpu == "" || off_cpu <= 0) ? "-" : sprintf("%.2f%%", tot / 10 / off_cpu)
            if (fl > 0) printf "| %s | %.0f | %.0f | %.0f | %s |\n", t, tot, fl, tot - fl, share
            else printf "| %s | %.0f | - | - | %s |\n", t, tot, share  # no floor on its hooks
        }
        if (header) print ""
    }

    # --- per-reset cost -------------------------------------------------------------
    if ("resets" in TOOLS) {
        print "## Cost per reset: ns per invocation while a tracked generator resets 100000 loopback connections"
        print ""
        print "Warm: programs run back to back, where under churn a handful of resets each pay first-use costs. Floor as above; medians over rounds, (min–max)."
        print "The tracked client resets each connection: its `tcp_send_reset` reports it (one record); the acceptor, untracked, receives it and its `tcp_receive_reset` filters it out."
        print ""
        prog_table("resets", rl)
        print ""
    }
    if ("resets-received" in TOOLS) {
        print "## Cost per reset received: the same, with the untracked acceptor resetting and the tracked client receiving (nginx's 502, backend on this host)"
        print ""
        print "`tcp_receive_reset` reports the client's side (one record); `tcp_send_reset`, traced after the reset went out, adds the acceptor's side as evidence (a second record)."
        print ""
        prog_table("resets-received", rl)
        print ""
    }
    if ("resets-untracked" in TOOLS) {
        print "## Cost per reset of the rest of the host: the same as above, with neither end tracked (rstwatch only)"
        print ""
        print "The agent tracks an idle process instead: both programs filter every reset out, and what they cost is the filter's price on other processes' resets. The client's socket has a file (socket(), then connect() and read() until the reset), whose credentials name its owner: `tcp_receive_reset` reads them. `tcp_send_reset` keeps the acceptor's reset per CPU in case a tracked socket receives it later (a reset answering a segment is traced before it is sent)."
        print ""
        prog_table("resets-untracked", rl)
        print ""
    }

    # --- targets ----------------------------------------------------------------------
    print "## Targets (rstwatch)"
    print ""
    ratio_target(("churn" in RPS_RATIO) ? (RPS_RATIO["churn"] >= 0.99) : "", RPS_LO["churn"], RPS_HI["churn"], RPS_COV["churn"], 0.99,
           "churn throughput ≥ 99% of agent-off: " (("churn" in RPS_RATIO) ? pct(RPS_RATIO["churn"]) " (paired ratio, median (min–max) " RPS_SPREAD["churn"] ")" : ""))
    for (wi = 1; wi <= 2; wi++) {
        w = (wi == 1) ? "keepalive" : "churn"
        if ((w in CPU_RATIO) && CPU_RATIO[w] != "")
            print "- info " w ": nginx + backend CPU per request with rstwatch " sprintf("%+.1f%%", (CPU_RATIO[w] - 1) * 100) \
                  " (paired ratio " CPU_SPREAD[w] "; no target, less sensitive to other load than requests/s)"
    }
    if ("churn" in FLOOR_RPS)
        print "- info churn: empty programs on rstwatch's hooks (tool floor) give " pct(FLOOR_RPS["churn"]) \
              " (" FLOOR_RPS_SPREAD["churn"] "): the part of the cost that any program there pays by running"
    if (CONN_ADDED != "")
        print "- info connection loop: rstwatch adds " fmt(CONN_ADDED, 0) " ns of CPU per connection, both ends (" CONN_SPREAD " over rounds)"
    if (FLOOR_CONN_ADDED != "")
        print "- info connection loop: empty programs on the same hooks add " fmt(FLOOR_CONN_ADDED, 0) " ns (" FLOOR_CONN_SPREAD ")"
    ratio_target(("keepalive" in RPS_RATIO) ? (RPS_RATIO["keepalive"] >= 0.995) : "", RPS_LO["keepalive"], RPS_HI["keepalive"], RPS_COV["keepalive"], 0.995,
           "keep-alive throughput ≥ 99.5% of agent-off: " (("keepalive" in RPS_RATIO) ? pct(RPS_RATIO["keepalive"]) " (" RPS_SPREAD["keepalive"] ")" : ""))
    for (wi = 1; wi <= 2; wi++) {
        w = (wi == 1) ? "keepalive" : "churn"
        ratio_target((w in P99_RATIO) ? (P99_RATIO[w] <= 1.03) : "", P99_LO[w], P99_HI[w], P99_COV[w], 1.03,
               w " p99 at most 3% higher: " ((w in P99_RATIO) ? sprintf("%+.1f%%", (P99_RATIO[w] - 1) * 100) " (ratio " P99_SPREAD[w] ")" : ""))
    }
    if (HOT == "" && stats("kernel" SUBSEP "rstwatch" SUBSEP "requests"))
        target(1, "hottest program ≤ 100 ns per hit and ≤ 2× the floor: no rstwatch program ran under churn (0 hits in every round)")
    else
        target((HOT != "") ? (HOT_NS <= 100 && HOT_FL > 0 && HOT_NS <= 2 * HOT_FL) : "",
               "hottest program ≤ 100 ns per hit and ≤ 2× the floor: " ((HOT != "") ? HOT " (most hits), " fmt(HOT_NS, 1) " ns vs floor " fmt(HOT_FL, 1) " ns" : ""))
    # The per-reset costs the resets workloads measured, warm, side by side.
    if (reset_ns("resets", "tcp_send_reset") != "")
        print "- info per reset, warm (resets workloads): reported, sent " reset_ns("resets", "tcp_send_reset") \
              " ns, received " reset_ns("resets-received", "tcp_receive_reset") " ns (its backend's side " \
              reset_ns("resets-received", "tcp_send_reset") " ns); filtered out, on a socket with no file yet " \
              reset_ns("resets", "tcp_receive_reset") " ns" \
              ((reset_ns("resets-untracked", "tcp_receive_reset") != "") ? ", received by another process " \
                   reset_ns("resets-untracked", "tcp_receive_reset") " ns, sent by one " \
                   reset_ns("resets-untracked", "tcp_send_reset") " ns" : "")
    # Lost in the ring buffer, and (as strict) delivered but not stored.
    target((STORM_LOST != "") ? (STORM_LOST == 0 && STORM_NOT_STORED + 0 == 0) : "",
           "no lost events in the reset storm: " ((STORM_LOST != "") ? STORM_LOST " lost, " (STORM_NOT_STORED + 0) " not stored, at up to " fmt(STORM_RATE, 0) " resets/s" : ""))
    target((RSS_MAX > 0) ? (RSS_MAX <= 32 * 1024) : "",
           "RSS ≤ 32 MiB: peak " ((RSS_MAX > 0) ? fmt(RSS_MAX / 1024, 1) " MiB over all workloads" : ""))
    target((IDLE_CPU != "") ? (IDLE_CPU <= 0.1) : "",
           "idle CPU ≤ 0.1%: " ((IDLE_CPU != "") ? fmt(IDLE_CPU, 3) "%" : ""))
}
