// `kvstore restore` (see offline_restore.h). The whole file is checked (every frame and the
// whole-file checksum) while its snapshot is extracted aside, before the engine is even opened;
// Engine::InstallSnapshot then replaces the key space in one transaction.
#include "main/offline_restore.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/files.h"
#include "engine/engine.h"
#include "replication/replication.h"
#include "snapshot/backup_file.h"

namespace kvstore {
namespace {

int Refuse(const std::string& message) {
  std::fprintf(stderr, "kvstore restore: %s\n", message.c_str());
  return 1;
}

void Say(const std::string& message) { std::printf("kvstore restore: %s\n", message.c_str()); }

Status WriteMarker(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError("cannot create " + path + ": " + std::strerror(errno));
  ::close(fd);
  return SyncDirectory(std::filesystem::path(path).parent_path().string());
}

Status RemoveMarker(const std::string& path) {
  if (::unlink(path.c_str()) != 0) {
    return Status::IOError("cannot remove " + path + ": " + std::strerror(errno));
  }
  return SyncDirectory(std::filesystem::path(path).parent_path().string());
}

// Removes the partial store an unfinished restore created in dir, then its marker.
Status RemovePartialStore(const std::string& dir, const std::string& marker) {
  for (const char* part : {"/db", "/log"}) {
    std::error_code ec;
    std::filesystem::remove_all(dir + part, ec);
    if (ec) return Status::IOError("cannot remove " + dir + part + ": " + ec.message());
  }
  return RemoveMarker(marker);
}

}  // namespace

std::string RestoreMarkerPath(const std::string& data_dir) {
  return data_dir + "/restore-in-progress";
}

// Not under replication/, where a server's own snapshots live and are cleaned up.
std::string RestoreSnapshotPath(const std::string& data_dir) {
  return data_dir + "/restore-in-progress.kvsnap";
}

int RunOfflineRestore(const Config& config, const RoleDecision& role,
                      const OfflineRestoreArgs& args) {
  namespace fs = std::filesystem;
  if (args.from.empty()) {
    if (args.if_empty) {
      Say("RESTORE_FROM is empty: nothing to restore");
      return 0;
    }
    std::fprintf(stderr, "kvstore restore: name the backup file with --from (or RESTORE_FROM)\n");
    return 2;
  }
  const std::string& dir = config.data_dir;
  const std::string marker = RestoreMarkerPath(dir);
  std::error_code ec;
  // The store an interrupted restore into an empty directory left behind is partial: it counts
  // as no store, and goes.
  const bool interrupted = fs::exists(marker, ec);
  if (interrupted) {
    Say("the data directory " + dir +
        " holds the partial store of an interrupted restore: " + "removing it");
    if (Status s = RemovePartialStore(dir, marker); !s.ok()) return Refuse(s.message());
  }
  const bool has_store = fs::exists(dir + "/db", ec) || fs::exists(dir + "/log", ec);
  if (args.if_empty) {
    if (role.kind == RoleDecision::Kind::kReplica) {
      Say("this pod is a replica (" + role.reason +
          "): not restoring; it will full-sync from the restored master");
      return 0;
    }
    if (has_store) {
      Say("the data directory " + dir + " already holds a store: not restoring");
      return 0;
    }
  }
  const auto started = std::chrono::steady_clock::now();
  fs::create_directories(dir, ec);
  if (ec) return Refuse("cannot create " + dir + ": " + ec.message());
  const std::string snapshot_path = RestoreSnapshotPath(dir);
  BackupInfo info;
  if (Status s = ExtractBackupSnapshot(args.from, snapshot_path, &info); !s.ok()) {
    return Refuse(args.from + " refused: " + s.message() + "; the data directory is unchanged");
  }
  struct Remover {
    std::string path;
    ~Remover() {
      std::error_code ignored;
      fs::remove(path, ignored);
    }
  } remover{snapshot_path};

  // Into a directory without a store, the engine creates one before the install fills it. Until
  // the install is durable a marker says that store is not a store: the server refuses to start
  // on it, and the next restore (after a crash or a kill) starts over,
  // where it would otherwise find "a store" and leave the master empty.
  if (!has_store) {
    if (Status s = WriteMarker(marker); !s.ok()) return Refuse(s.message());
  }
  // Best effort on a failure path: what it cannot remove, the marker still covers.
  auto remove_partial_store = [&] {
    if (!has_store) (void)RemovePartialStore(dir, marker);
  };

  EngineOptions options;
  options.data_dir = dir;
  options.fsync = config.fsync;
  options.max_map_bytes = config.max_map_bytes;
  options.initial_map_bytes = std::min<std::uint64_t>(64ull << 20, config.max_map_bytes);
  options.log_segment_bytes = config.log_segment_bytes;
  auto engine = Engine::Open(options);
  if (!engine.ok()) {
    remove_partial_store();
    return Refuse("cannot open " + dir + ": " + engine.status().ToString());
  }
  Status status;
  {
    auto snapshot = (*engine)->Read();
    if (!snapshot.ok()) {
      status = snapshot.status();
    } else if (snapshot->KeyCount() > 0 && !args.force) {
      status = Status::InvalidArgument(
          fmt::format("the data directory {} holds {} keys; restore only into an empty one, or "
                      "add --force to replace them",
                      dir, snapshot->KeyCount()));
    }
  }
  if (status.ok()) status = (*engine)->InstallSnapshot(snapshot_path);
  Status shutdown = (*engine)->Shutdown();
  engine->reset();
  if (!status.ok() || !shutdown.ok()) {
    remove_partial_store();
    if (!status.ok()) return Refuse(status.message() + "; nothing changed");
    return Refuse("the final sync failed: " + shutdown.ToString() + "; nothing changed");
  }
  if (!has_store) {
    if (Status s = RemoveMarker(marker); !s.ok()) return Refuse(s.message());
  }
  ReplicationManager::ForgetRoleHistory(dir);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  Say(
      fmt::format("restored {} into {}: {} keys at epoch {} seq {} (taken from {} at {}), {} "
                  "bytes in {:.1f} s",
                  args.from, dir, info.keys, info.epoch, info.seq, info.pod, info.created,
                  info.snapshot_bytes, seconds));
  return 0;
}

}  // namespace kvstore
