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
  std::chrono::steady_clock::time_point created;
  std::chrono::steady_clock::time_point last_active;
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
};

}  // namespace kvstore
