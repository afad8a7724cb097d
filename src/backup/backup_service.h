// BackupService: serves the two backup streams on the client port once a session handed the
// connection over: SNAPSHOT (a consistent copy, master or replica) and RESTORE-SNAPSHOT (an
// online restore into a master). Wire grammar at the handlers in commands/backup_commands.cpp.
// Threads: each stream runs as a coroutine on its socket's executor; disk-heavy steps (writing
// the snapshot file, installing one) run on their own threads. One restore at a time.
#pragma once

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace kvstore {

class FullSyncSource;
class ReplicationManager;

struct BackupServiceOptions {
  std::string data_dir;  // snapshot files in <data_dir>/backup, restores in <data_dir>/replication
  std::string pod;       // named in SNAPSHOT's reply, and so in backup files
  // The largest snapshot frame a restore accepts (a frame holds up to 256 KiB of pairs plus one
  // pair): bounds what a client can make the server buffer. main sets max_value_bytes + 1 MiB.
  std::uint64_t max_frame_bytes = 513ull << 20;
  // A stream that moves no byte for this long is dropped (a stalled or vanished peer).
  std::chrono::milliseconds idle_timeout{60000};
};

class BackupService {
 public:
  // replication may be null (no replication: restores install directly).
  BackupService(Engine& engine, ReplicationManager* replication, BackupServiceOptions options);
  ~BackupService();

  // args: SNAPSHOT. Writes the snapshot file (or shares one at the current committed sequence,
  // being written or written), then streams it. Closes the socket when done.
  asio::awaitable<void> ServeSnapshot(asio::ip::tcp::socket socket, std::vector<std::string> args);
  // args: RESTORE-SNAPSHOT <bytes> [FORCE], already checked by the command layer.
  asio::awaitable<void> ServeRestore(asio::ip::tcp::socket socket, std::vector<std::string> args);

 private:
  Engine& engine_;
  ReplicationManager* replication_;
  const BackupServiceOptions options_;
  std::unique_ptr<FullSyncSource> snapshots_;
  std::atomic<bool> restoring_{false};
};

}  // namespace kvstore
