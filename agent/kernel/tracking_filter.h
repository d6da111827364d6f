// Which processes' sockets rstwatch attributes. The BPF side applies the
// same rule in current_is_tracked(); start-up seeding applies it here.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace rstwatch {

struct TrackingFilter {
    bool all = false;
    std::vector<std::string> comms;  // task comm, at most 15 characters
    std::vector<uint32_t> pids;      // a pid covers its children (nginx master -> workers)

    bool matches(uint32_t pid, uint32_t parent_pid, const std::string &comm) const
    {
        if (all)
            return true;
        for (uint32_t p : pids)
            if (p == pid || p == parent_pid)
                return true;
        return std::find(comms.begin(), comms.end(), comm) != comms.end();
    }
};

}  // namespace rstwatch
