// `kvstore restore`: installs a backup file into a data directory while no server runs on it
// (disaster recovery, and the StatefulSet's init container). Single-threaded; opens the engine
// itself, so it must never run beside a server on the same directory.
#pragma once

#include <string>

#include "config/config.h"
#include "config/role.h"

namespace kvstore {

struct OfflineRestoreArgs {
  std::string from;  // the backup file (--from, env RESTORE_FROM)
  bool force = false;
  // Init-container mode: a no-op (exit 0) when `from` is empty, when this pod is a replica (it
  // full-syncs from the restored master), or when the data directory already holds a store.
  bool if_empty = false;
};

// The file that marks a data directory whose store an offline restore is still creating (or was
// creating when it was killed): such a store is partial, and the server refuses to start on it.
std::string RestoreMarkerPath(const std::string& data_dir);
// Where an offline restore extracts the backup's snapshot before installing it.
std::string RestoreSnapshotPath(const std::string& data_dir);

// Returns the exit code: 0 restored (or skipped in if_empty mode), 1 refused (damaged file,
// non-empty target without --force, storage error; the target is untouched), 2 usage.
int RunOfflineRestore(const Config& config, const RoleDecision& role,
                      const OfflineRestoreArgs& args);

}  // namespace kvstore
