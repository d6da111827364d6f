#include "outputs/file_checks.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/errors.h"

namespace rstwatch {

std::string folder_of(const std::string &path)
{
    std::string folder = std::filesystem::path(path).parent_path().string();
    return folder.empty() ? "." : folder;
}

void check_can_create_in(const std::string &folder, bool create_missing)
{
    auto up = [](const std::filesystem::path &p) {
        std::filesystem::path parent = p.parent_path();
        return parent.empty() ? std::filesystem::path(".") : parent;
    };
    // The nearest part of the path that exists: what to look at.
    std::filesystem::path at = folder;
    struct stat st{};
    while (stat(at.c_str(), &st) != 0) {
        int err = errno;
        if ((err != ENOENT && err != ENOTDIR) || up(at) == at)
            throw FatalError("cannot use the folder " + at.string() + ": " + std::strerror(err));
        at = up(at);
    }
    if (!S_ISDIR(st.st_mode))
        throw FatalError(at.string() + " is not a folder", "give a path in a folder");
    if (at != folder && !create_missing)
        throw FatalError("the folder " + folder + " does not exist",
                         "create it first, or give a path in a folder that exists");
    // access() asks with the real ids, the effective ones here (rstwatch is
    // not setuid); EROFS catches a read-only file system even for root.
    if (access(at.c_str(), W_OK | X_OK) != 0)
        throw FatalError("cannot create files in " + at.string() + ": " + std::strerror(errno),
                         "give a path in a folder this user may write in");
}

}  // namespace rstwatch
