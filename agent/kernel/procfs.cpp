#include "kernel/procfs.h"

#include <dirent.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace rstwatch::procfs {

static std::optional<std::string> read_file(const std::string &path)
{
    std::ifstream in(path);
    if (!in)
        return std::nullopt;
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

bool pid_exists(uint32_t pid) { return pid > 0 && access(("/proc/" + std::to_string(pid)).c_str(), F_OK) == 0; }

std::vector<uint32_t> list_pids()
{
    std::vector<uint32_t> pids;
    std::error_code ec;
    for (const auto &entry : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string name = entry.path().filename();
        if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos)
            pids.push_back(static_cast<uint32_t>(std::stoul(name)));
    }
    return pids;
}

std::optional<std::string> comm(uint32_t pid)
{
    auto text = read_file("/proc/" + std::to_string(pid) + "/comm");
    if (!text)
        return std::nullopt;
    if (!text->empty() && text->back() == '\n')
        text->pop_back();
    return text;
}

std::optional<uint32_t> parent_pid(uint32_t pid)
{
    auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    if (!stat)
        return std::nullopt;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    auto close = stat->rfind(')');
    if (close == std::string::npos)
        return std::nullopt;
    std::istringstream rest(stat->substr(close + 1));
    std::string state;
    uint32_t ppid = 0;
    if (!(rest >> state >> ppid))
        return std::nullopt;
    return ppid;
}

std::string cgroup_path_from(const std::string &text)
{
    std::istringstream in(text);
    std::string line, unified;
    while (std::getline(in, line)) {
        // "hierarchy-ID:controller-list:path"
        auto first = line.find(':');
        auto second = line.find(':', first + 1);
        if (first == std::string::npos || second == std::string::npos)
            continue;
        std::string controllers = line.substr(first + 1, second - first - 1);
        std::string path = line.substr(second + 1);
        std::istringstream list(controllers);
        std::string controller;
        while (std::getline(list, controller, ','))
            if (controller == "memory")
                return path;  // where an OOM kill is decided on cgroup v1
        if (controllers.empty() && line.compare(0, first, "0") == 0)
            unified = path;
    }
    return unified;
}

std::string cgroup_path(uint32_t pid)
{
    auto text = read_file("/proc/" + std::to_string(pid) + "/cgroup");
    return text ? cgroup_path_from(*text) : std::string();
}

std::string cgroup2_root_from(const std::string &text)
{
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS
        std::istringstream fields(line);
        std::string id, parent, device, root, mountpoint, field, fstype;
        fields >> id >> parent >> device >> root >> mountpoint;
        while (fields >> field && field != "-") {
        }
        fields >> fstype;
        if (fstype == "cgroup2" && root == "/")
            return mountpoint;
    }
    return {};
}

std::string cgroup2_root()
{
    auto text = read_file("/proc/self/mountinfo");
    return text ? cgroup2_root_from(*text) : std::string();
}

std::vector<int> socket_fds(uint32_t pid)
{
    std::vector<int> fds;
    const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    std::error_code ec;
    for (const auto &entry : std::filesystem::directory_iterator(dir, ec)) {
        std::error_code link_ec;
        auto target = std::filesystem::read_symlink(entry.path(), link_ec);
        if (!link_ec && target.native().rfind("socket:[", 0) == 0)
            fds.push_back(std::stoi(entry.path().filename()));
    }
    return fds;
}

}  // namespace rstwatch::procfs
