// Small file-system helpers shared by the modules that write files they must find again after
// a crash or a power loss.
#pragma once

#include <string>

#include "kvstore/status.h"

namespace kvstore {

// fsync of a directory, so that a file created, renamed or removed in it stays so after a power
// loss. IOError naming the directory when it cannot be opened or synced.
Status SyncDirectory(const std::string& dir);

}  // namespace kvstore
