#include <gtest/gtest.h>
#include <unistd.h>

#include "kernel/procfs.h"
#include "kernel/tracking_filter.h"

using namespace rstwatch;

TEST(Procfs, CgroupV1MemoryControllerWins)
{
    const std::string text = "12:pids:/user.slice\n"
                             "9:memory:/rstwatch-test/backend\n"
                             "1:name=systemd:/init.scope\n"
                             "0::/unified/path\n";
    EXPECT_EQ(procfs::cgroup_path_from(text), "/rstwatch-test/backend");
}

TEST(Procfs, CgroupV2UnifiedPathWhenNoMemoryController)
{
    EXPECT_EQ(procfs::cgroup_path_from("0::/system.slice/backend.service\n"), "/system.slice/backend.service");
    EXPECT_EQ(procfs::cgroup_path_from("garbage"), "");
}

TEST(Procfs, ReadsThisProcess)
{
    const uint32_t self = static_cast<uint32_t>(getpid());
    EXPECT_TRUE(procfs::pid_exists(self));
    EXPECT_EQ(procfs::parent_pid(self), static_cast<uint32_t>(getppid()));
    EXPECT_TRUE(procfs::comm(self).has_value());
}

TEST(TrackingFilter, PidCoversItsChildren)
{
    TrackingFilter f;
    f.pids = {100};
    EXPECT_TRUE(f.matches(100, 1, "nginx"));
    EXPECT_TRUE(f.matches(101, 100, "nginx")) << "a worker of master 100";
    EXPECT_FALSE(f.matches(102, 1, "nginx"));
    f.comms = {"nginx"};
    EXPECT_TRUE(f.matches(102, 1, "nginx"));
    EXPECT_FALSE(f.matches(103, 1, "envoy"));
}

// The cgroup v2 root is where rstwatch attaches its connect() and bind() hooks.
TEST(Procfs, Cgroup2RootOnAHybridHost)
{
    const std::string mountinfo =
        "25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
        "31 25 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
        "32 31 0:28 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 "
        "rw,nsdelegate\n"
        "35 31 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory\n";
    EXPECT_EQ(procfs::cgroup2_root_from(mountinfo), "/sys/fs/cgroup/unified");
}

TEST(Procfs, Cgroup2RootOnAUnifiedHostWithoutOptionalFields)
{
    EXPECT_EQ(procfs::cgroup2_root_from("29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"),
              "/sys/fs/cgroup");
}

TEST(Procfs, Cgroup2SubtreeMountIsNotTheRoot)
{
    // A container's view of its own cgroup: attaching there would miss the host.
    const std::string mountinfo =
        "700 650 0:26 /system.slice/docker-1.scope /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
    EXPECT_EQ(procfs::cgroup2_root_from(mountinfo), "");
    EXPECT_EQ(procfs::cgroup2_root_from(""), "");
    EXPECT_EQ(procfs::cgroup2_root_from("garbage\n"), "");
}
