// ClientState: what the command layer knows about one connection. Owned by its session and
// touched only on that session's event loop; ClientInfo is the copy other threads may read.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kvstore {

// A snapshot of one connection, for CLIENT LIST and INFO.
struct ClientInfo {
  std::uint64_t id = 0;
  std::string addr;        // peer "ip:port"
  std::string local_addr;  // "ip:port"
  std::string name;
  std::string lib_name;
  std::string lib_ver;
  std::string last_command;
  std::chrono::steady_clock::time_point created;
  std::chrono::steady_clock::time_point last_active;
};

struct ClientState {
  ClientInfo info;
  bool authenticated = false;
  bool close_after_reply = false;    // set by QUIT
  std::uint64_t last_write_seq = 0;  // committed sequence after this client's last write (WAIT)
};

}  // namespace kvstore
