// `rstwatch run` refuses to start on a kernel or with privileges it cannot
// work with, and names what is missing. A stand-in kernel lacks things.
#include <gtest/gtest.h>

#include <set>

#include "kernel/kernel_features.h"
#include "kernel/kernel_support.h"

using namespace rstwatch;

namespace {

struct FakeKernel : KernelFeatures {
    bool btf = true;
    bool root = true;
    std::set<int> caps = {12, 21, 38, 39};  // root's: CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF
    std::set<std::string> tracepoints = {"tcp_receive_reset", "tcp_send_reset"};
    std::set<std::string> kfuncs = {"bpf_get_socket_ptr_cookie", "bpf_ringbuf_output", "bpf_iter_task"};
    std::set<std::string> enums = {"sk_rst_reason"};
    std::set<std::string> members = {"trace_event_raw_mark_victim.anon_rss"};
    std::set<std::string> traceable;
    std::set<std::string> params = {"tcp_reset.sk", "tcp_reset.skb", "tcp_finish_connect.sk", "tcp_finish_connect.skb"};
    std::string cgroup2 = "/sys/fs/cgroup";

    bool has_vmlinux_btf() const override { return btf; }
    bool has_btf_tracepoint(const std::string &name) const override { return btf && tracepoints.count(name); }
    bool has_kernel_function(const std::string &name) const override { return btf && kfuncs.count(name); }
    bool has_btf_enum(const std::string &name) const override { return btf && enums.count(name); }
    std::vector<std::pair<std::string, uint32_t>> btf_enum_values(const std::string &) const override { return {}; }
    bool has_struct_member(const std::string &t, const std::string &m) const override { return btf && members.count(t + "." + m); }
    bool has_classic_tracepoint(const std::string &, const std::string &name) const override
    {
        return tracepoints.count(name);
    }
    bool can_trace_function(const std::string &name) const override { return traceable.count(name); }
    bool function_has_param(const std::string &f, const std::string &p) const override
    {
        return btf && params.count(f + "." + p);
    }
    bool tracepoint_first_arg_is_pointer(const std::string &) const override { return false; }
    unsigned jiffies_hz() const override { return 250; }
    bool is_root() const override { return root; }
    bool has_capability(int cap) const override { return caps.count(cap); }
    std::string cgroup2_mount() const override { return cgroup2; }
};

std::string joined(const std::vector<std::string> &v)
{
    std::string s;
    for (const auto &m : v)
        s += m + "\n";
    return s;
}

}  // namespace

TEST(Prerequisites, AGoodKernelAsRootNeedsNothing)
{
    EXPECT_TRUE(missing_prerequisites(FakeKernel{}).empty());
}

TEST(Prerequisites, WithoutRootNamesRootAndTheCapabilities)
{
    FakeKernel k;
    k.root = false;
    k.caps.clear();
    auto missing = missing_prerequisites(k);
    ASSERT_EQ(missing.size(), 1u);
    EXPECT_NE(missing[0].find("root"), std::string::npos);
    EXPECT_NE(missing[0].find("CAP_BPF"), std::string::npos);
    EXPECT_NE(missing[0].find("CAP_PERFMON"), std::string::npos);
}

TEST(Prerequisites, WithoutRootNamesCapNetAdminForTheCgroupHooks)
{
    FakeKernel k;
    k.root = false;
    k.caps.clear();
    EXPECT_NE(joined(missing_prerequisites(k)).find("CAP_NET_ADMIN"), std::string::npos);
}

TEST(Prerequisites, CapBpfCapPerfmonAndCapNetAdminAreEnoughWithoutRoot)
{
    FakeKernel k;
    k.root = false;
    k.caps.clear();
    k.caps = {12, 38, 39};
    EXPECT_TRUE(missing_prerequisites(k).empty());
    k.caps = {38, 39};
    EXPECT_EQ(missing_prerequisites(k).size(), 1u) << "cgroup socket hooks need CAP_NET_ADMIN";
    k.caps = {39};
    EXPECT_EQ(missing_prerequisites(k).size(), 1u) << "CAP_BPF alone cannot attach tracing programs";
}

// Root under a narrowed bounding set (a container, a systemd unit) is
// told which capability it lacks, rather than failing with EPERM later.
TEST(Prerequisites, RootWithoutTheCapabilitiesIsToldWhichOnes)
{
    FakeKernel k;
    k.caps = {38, 39};
    auto missing = missing_prerequisites(k);
    ASSERT_EQ(missing.size(), 1u);
    EXPECT_NE(missing[0].find("missing privileges: CAP_NET_ADMIN (root, but without them"), std::string::npos)
        << missing[0];
    EXPECT_EQ(missing[0].find("CAP_BPF,"), std::string::npos) << missing[0];
}

TEST(Prerequisites, CapSysAdminStandsInForTheOthers)
{
    FakeKernel k;
    k.root = false;
    k.caps = {21};
    EXPECT_TRUE(missing_prerequisites(k).empty());
}

TEST(Prerequisites, MissingCgroupV2IsNamedWithTheMountCommand)
{
    FakeKernel k;
    k.cgroup2.clear();
    auto missing = missing_prerequisites(k);
    ASSERT_EQ(missing.size(), 1u) << joined(missing);
    EXPECT_NE(missing[0].find("cgroup v2"), std::string::npos);
    EXPECT_NE(missing[0].find("mount -t cgroup2"), std::string::npos);
}

TEST(Prerequisites, KernelWithoutBtfIsNamed)
{
    FakeKernel k;
    k.btf = false;
    auto missing = missing_prerequisites(k);
    ASSERT_EQ(missing.size(), 1u) << joined(missing);
    EXPECT_NE(missing[0].find("BTF"), std::string::npos);
    EXPECT_NE(missing[0].find("CONFIG_DEBUG_INFO_BTF"), std::string::npos);
}

TEST(Prerequisites, EachMissingTracepointIsNamed)
{
    FakeKernel k;
    k.tracepoints = {"tcp_probe"};
    auto missing = missing_prerequisites(k);
    ASSERT_EQ(missing.size(), 2u) << joined(missing);
    EXPECT_NE(joined(missing).find("tcp_receive_reset"), std::string::npos);
    EXPECT_NE(joined(missing).find("tcp_send_reset"), std::string::npos);
}

TEST(Prerequisites, AKernelOlderThanTheRingBufferIsNamed)
{
    FakeKernel k;
    k.kfuncs = {};  // Linux 5.7: neither the ring buffer nor the task iterator
    auto missing = missing_prerequisites(k);
    ASSERT_EQ(missing.size(), 2u) << joined(missing);
    EXPECT_NE(joined(missing).find("ring buffer"), std::string::npos);
    EXPECT_NE(joined(missing).find("task iterator"), std::string::npos);
    EXPECT_NE(joined(missing).find("5.8"), std::string::npos);
}

// Linux 5.10 (Debian 11) as its BTF shows it: it runs, with fallbacks and
// named gaps.
FakeKernel debian_5_10()
{
    FakeKernel k;
    k.kfuncs = {"bpf_ringbuf_output", "bpf_iter_task"};
    k.enums = {};
    k.members = {};
    k.tracepoints.insert({"tcp_probe", "mark_victim"});
    k.params = {"tcp_reset.sk", "tcp_finish_connect.sk", "tcp_finish_connect.skb"};
    return k;
}

// Debian's 6.1 and 6.12: tcp_reset() takes the skb, ftrace can attach.
FakeKernel debian_6_1()
{
    FakeKernel k = debian_5_10();
    k.params.insert("tcp_reset.skb");
    k.traceable = {"tcp_v4_send_reset", "tcp_v6_send_reset", "tcp_reset", "tcp_finish_connect"};
    return k;
}

TEST(KernelSupport, AnOlderKernelRunsOnTheFallbacks)
{
    const FakeKernel k = debian_5_10();
    EXPECT_TRUE(missing_prerequisites(k).empty()) << joined(missing_prerequisites(k));
    KernelSupport s = probe_kernel_support(k, false);
    EXPECT_FALSE(s.tracing_socket_cookie);
    EXPECT_FALSE(s.sent_resets_without_socket);
    EXPECT_TRUE(s.oom_kills);
    EXPECT_FALSE(s.oom_victim_details);
}

TEST(KernelSupport, FentryFillsTheSocketlessResetsWhereFtraceCanAttach)
{
    FakeKernel k = debian_5_10();
    k.traceable = {"tcp_v4_send_reset", "tcp_v6_send_reset"};
    KernelSupport s = probe_kernel_support(k, false);
    EXPECT_TRUE(s.socketless_resets_by_fentry);
    EXPECT_TRUE(s.sent_resets_without_socket);
    EXPECT_EQ(evidence_gaps_line(s, false).find("without a socket"), std::string::npos);

    FakeKernel recent;
    recent.traceable = k.traceable;
    EXPECT_FALSE(probe_kernel_support(recent, false).socketless_resets_by_fentry)
        << "the tracepoint covers them since 6.10: no second program";
}

TEST(KernelSupport, TheGapsLineNamesTheEvidenceAndTheCausesNotTheSpeedPaths)
{
    std::string line = evidence_gaps_line(probe_kernel_support(debian_5_10(), false), false);
    EXPECT_NE(line.find("without a socket"), std::string::npos) << line;
    EXPECT_NE(line.find("6.10"), std::string::npos) << line;
    EXPECT_NE(line.find("stale_reuse"), std::string::npos) << line;
    EXPECT_EQ(line.find("cookie"), std::string::npos) << "a fallback path loses no evidence: " << line;
    EXPECT_EQ(line.find("RSS"), std::string::npos) << "the victim's RSS is detail, not evidence: " << line;
}

TEST(KernelSupport, ARecentKernelHasNoGapsAndForcingTakesTheFallbacks)
{
    FakeKernel k;
    k.tracepoints.insert({"tcp_probe", "mark_victim"});
    EXPECT_EQ(evidence_gaps_line(probe_kernel_support(k, false), true), "");
    KernelSupport forced = probe_kernel_support(k, true);
    EXPECT_FALSE(forced.tracing_socket_cookie);
    EXPECT_TRUE(forced.sent_resets_without_socket) << "the tracepoint's own coverage cannot be forced off";
    FakeKernel old = debian_5_10();
    old.traceable = {"tcp_v4_send_reset", "tcp_v6_send_reset"};
    EXPECT_FALSE(probe_kernel_support(old, true).sent_resets_without_socket) << "forced: no fentry either";
}

TEST(KernelSupport, TheCheckTableSaysYesOrNoForEachFacility)
{
    std::string table = support_table(probe_kernel_support(debian_5_10(), false));
    EXPECT_NE(table.find("bpf_get_socket_cookie"), std::string::npos) << table;
    EXPECT_NE(table.find("no"), std::string::npos) << table;
    EXPECT_NE(table.find("yes"), std::string::npos) << table;
}

TEST(KernelSupport, TtlsComeByDefaultWhereTcpResetTakesTheSkbAndFtraceCanAttach)
{
    KernelSupport s = probe_kernel_support(debian_6_1(), false);
    EXPECT_TRUE(s.ttls_by_fentry);
    EXPECT_EQ(evidence_gaps_line(s, false).find("TTL"), std::string::npos) << evidence_gaps_line(s, false);

    FakeKernel old = debian_5_10();
    old.traceable = debian_6_1().traceable;
    s = probe_kernel_support(old, false);
    EXPECT_FALSE(s.ttls_by_fentry) << "tcp_reset(sk) before 5.11: the reset's TTL is out of reach";
    const std::string line = evidence_gaps_line(s, false);
    EXPECT_NE(line.find("TTLs only with --ttl-evidence"), std::string::npos) << line;
    EXPECT_NE(line.find("middlebox_idle"), std::string::npos) << line;

    FakeKernel no_ftrace;  // this project's host: 6.18, no fentry
    no_ftrace.tracepoints.insert("tcp_probe");
    EXPECT_FALSE(probe_kernel_support(no_ftrace, false).ttls_by_fentry);
    FakeKernel no_connect_hook = debian_6_1();
    no_connect_hook.traceable.erase("tcp_finish_connect");
    EXPECT_FALSE(probe_kernel_support(no_connect_hook, false).ttls_by_fentry) << "the reset's TTL alone compares nothing";
    EXPECT_FALSE(probe_kernel_support(debian_6_1(), true).ttls_by_fentry) << "forced fallbacks: no fentry";
}

// With --ttl-evidence tcp_probe gives the TTLs: the default path's absence is no gap then.
TEST(KernelSupport, WithTtlEvidenceOnlyTcpProbeCounts)
{
    FakeKernel old = debian_5_10();
    EXPECT_EQ(evidence_gaps_line(probe_kernel_support(old, false), true).find("TTL"), std::string::npos)
        << evidence_gaps_line(probe_kernel_support(old, false), true);
    old.tracepoints.erase("tcp_probe");
    EXPECT_NE(evidence_gaps_line(probe_kernel_support(old, false), true).find("tcp:tcp_probe"), std::string::npos);
}
