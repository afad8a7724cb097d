// ClientState: what the command layer knows about one connection. Owned by its session and
// touched only on that session's event loop; ClientInfo is the copy other threads may read.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvstore {

// A snapshot of one connection, for CLIENT LIST and INFO.
struct ClientInfo {
  std::uint64_t id = 0;
  std::string addr;        // peer "ip:port"
  std::string local_addr;  // "ip:port"
  std::string name;
  std::string lib_name;
  std::string lib_ver;
  // A CommandSpec's name, which has static storage: a view, so recording it per command
  // copies nothing.
  std::string_view last_command;
  // The subcommand's name when last_command has them ("client" "info" shows as client|info):
  // a SubcommandSpec's name, static too.
  std::string_view last_subcommand;
  std::chrono::steady_clock::time_point created;
  std::chrono::steady_clock::time_point last_active;
  // The session records these; -1 and false until it does.
  int fd = -1;           // the socket's file descriptor
  bool blocked = false;  // waiting for replica acknowledgements (WAIT, a sync-mode write)
  // Derived from the transaction by ClientState::Snapshot().
  std::int64_t multi = -1;  // commands queued since MULTI; -1 outside MULTI
  std::uint64_t multi_bytes = 0;
};

struct CommandSpec;

// MULTI ... EXEC and WATCH (commands/transaction.cpp).
struct Transaction {
  struct Queued {
    const CommandSpec* spec;
    std::vector<std::string> args;
  };
  // A watched key and its value when WATCH ran (nullopt: absent). EXEC runs only if every
  // watched key still has that value.
  struct Watched {
    std::string key;
    std::optional<std::string> value;
  };
  bool open = false;     // between MULTI and EXEC or DISCARD
  bool aborted = false;  // a command was refused while queuing: EXEC answers EXECABORT
  std::vector<Queued> queued;
  std::vector<Watched> watched;  // from WATCH until EXEC, DISCARD or UNWATCH
  // Bytes held by queued and watched (keys, values, arguments), bounded like a query buffer.
  std::uint64_t bytes = 0;
};

struct ClientState {
  ClientInfo info;
  bool authenticated = false;
  bool close_after_reply = false;    // set by QUIT
  std::uint64_t last_write_seq = 0;  // committed sequence after this client's last write (WAIT)
  Transaction transaction;

  // info with the fields CLIENT LIST derives from the rest of the state: what a session
  // publishes for other clients to read.
  ClientInfo Snapshot() const {
    ClientInfo snapshot = info;
    if (transaction.open) {
      snapshot.multi = static_cast<std::int64_t>(transaction.queued.size());
      snapshot.multi_bytes = transaction.bytes;
    }
    return snapshot;
  }
};

}  // namespace kvstore
