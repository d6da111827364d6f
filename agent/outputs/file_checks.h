// Whether the agent could create its files (store, socket, log) where it is
// told to, found without creating anything: a start that is refused leaves
// nothing behind.
#pragma once

#include <string>

namespace rstwatch {

// The folder a file would go in: "." for a bare name.
std::string folder_of(const std::string &path);

// Throws FatalError unless a file could be created in `folder`: it exists
// and is a folder this process may write in. With create_missing (the
// store makes its own folder), its nearest existing ancestor is checked
// instead when it does not exist.
void check_can_create_in(const std::string &folder, bool create_missing = false);

}  // namespace rstwatch
