// `kvstore restore` (see offline_restore.h). The whole file is checked (every frame and the
// whole-file checksum) while its snapshot is extracted aside, before the engine is even opened;
// Engine::InstallSnapshot then replaces the key space in one transaction.
#include "main/offline_restore.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "engine/engine.h"
#include "snapshot/backup_file.h"

namespace kvstore {
namespace {

int Refuse(const std::string& message) {
  std::fprintf(stderr, "kvstore restore: %s\n", message.c_str());
  return 1;
}

void Say(const std::string& message) { std::printf("kvstore restore: %s\n", message.c_str()); }

}  // namespace

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
  std::error_code ec;
  if (args.if_empty) {
    if (role.kind == RoleDecision::Kind::kReplica) {
      Say("this pod is a replica (" + role.reason +
          "): not restoring; it will full-sync from the restored master");
      return 0;
    }
    if (fs::exists(dir + "/db", ec) || fs::exists(dir + "/log", ec)) {
      Say("the data directory " + dir + " already holds a store: not restoring");
      return 0;
    }
  }
  const auto started = std::chrono::steady_clock::now();
  fs::create_directories(dir + "/replication", ec);
  if (ec) return Refuse("cannot create " + dir + "/replication: " + ec.message());
  const std::string snapshot_path = dir + "/replication/restore.kvsnap";
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

  EngineOptions options;
  options.data_dir = dir;
  options.fsync = config.fsync;
  options.max_map_bytes = config.max_map_bytes;
  options.initial_map_bytes = std::min<std::uint64_t>(64ull << 20, config.max_map_bytes);
  options.log_segment_bytes = config.log_segment_bytes;
  auto engine = Engine::Open(options);
  if (!engine.ok()) return Refuse("cannot open " + dir + ": " + engine.status().ToString());
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
  if (!status.ok()) return Refuse(status.message() + "; nothing changed");
  if (!shutdown.ok()) return Refuse("the final sync failed: " + shutdown.ToString());
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
