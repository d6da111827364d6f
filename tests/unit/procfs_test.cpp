#include <gtest/gtest.h>
#include <unistd.h>

#include "procfs.h"
#include "tracking_filter.h"

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
