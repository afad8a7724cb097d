// Backup commands: SNAPSHOT (stream a consistent copy of the key space) and RESTORE-SNAPSHOT
// (replace the key space of an empty master with one). Only the checks that can be answered at
// once live here; the streams themselves run in src/backup/backup_service.cpp once the session
// hands the connection over (Outcome::kHandoff). Handlers run on the session's strand.
#include <fmt/format.h>

#include "commands/command.h"
#include "kvstore/resp.h"

namespace kvstore {
namespace {

// SNAPSHOT
//   Admin (needs AUTH when a password is set); masters and replicas. The server replies
//     +SNAPSHOT <pod> <epoch number:id hex | -> <seq> <keys> <bytes>
//   then sends the snapshot (snapshot/snapshot_format.h) as RESP bulk strings totalling
//   <bytes>, and closes the connection. On failure: one error reply instead.
Outcome Snapshot(CommandContext&) {
  Outcome outcome;
  outcome.kind = Outcome::Kind::kHandoff;
  return outcome;
}

// RESTORE-SNAPSHOT <bytes> [FORCE]
//   Admin; masters only. Refused (error reply) on a replica, and on a non-empty key space
//   unless FORCE. Otherwise the server replies +SEND; the client then sends the snapshot as RESP
//   bulk strings totalling <bytes> (it must wait for +SEND before sending them). The server
//   checks every frame while it stores them aside, installs the snapshot atomically, opens a
//   new epoch (replicas full-resync), and replies +OK <keys> <seq> or an error; nothing changed
//   unless +OK. The connection is closed afterwards.
Outcome RestoreSnapshot(CommandContext& c) {
  std::int64_t bytes = 0;
  if (!resp::ParseInteger(c.args[1], &bytes) || bytes <= 0) {
    resp::AppendError(c.out, "ERR RESTORE-SNAPSHOT expects <bytes> [FORCE]");
    return Outcome::Replied();
  }
  const bool force = c.args.size() == 3 && EqualsIgnoreCase(c.args[2], "force");
  if (c.args.size() > 3 || (c.args.size() == 3 && !force)) {
    ReplySyntaxError(c.out);
    return Outcome::Replied();
  }
  if (c.replication == nullptr) {
    resp::AppendError(c.out, "ERR replication is disabled on this server");
    return Outcome::Replied();
  }
  if (c.replication->CurrentStatus().role != ReplicationStatus::Role::kMaster) {
    resp::AppendError(c.out,
                      "ERR this pod is a replica; restore into the master (replicas follow it)");
    return Outcome::Replied();
  }
  if (!force) {
    Storage::Snapshot* snapshot = c.reads.Borrow(c.out);
    if (snapshot == nullptr) return Outcome::Replied();
    if (const std::uint64_t keys = snapshot->KeyCount(); keys > 0) {
      resp::AppendError(c.out, fmt::format("ERR the target holds {} keys; restore only into an "
                                           "empty master, or add FORCE to replace them",
                                           keys));
      return Outcome::Replied();
    }
  }
  Outcome outcome;
  outcome.kind = Outcome::Kind::kHandoff;
  return outcome;
}

constexpr CommandSpec kCommands[] = {
    {"snapshot", 1, kFlagAdmin, Snapshot, 0, 0, 0},
    {"restore-snapshot", -2, kFlagAdmin, RestoreSnapshot, 0, 0, 0},
};

}  // namespace

std::span<const CommandSpec> BackupCommands() { return kCommands; }

}  // namespace kvstore
