// ServerContext: what commands need to know about the server around them (clients, counters).
// Implemented by the server module, so commands stay free of sockets. All methods are
// thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "commands/client_state.h"

namespace kvstore {

class CommandMetrics;

struct ServerCounters {
  std::uint64_t connected_clients = 0;
  std::uint64_t total_connections = 0;
  std::uint64_t rejected_connections = 0;
  std::uint64_t total_commands = 0;
  std::uint64_t pooled_read_commands = 0;  // of those, run on a read thread
  std::uint64_t net_input_bytes = 0;
  std::uint64_t net_output_bytes = 0;
  double uptime_seconds = 0;
  int port = 0;
};

class ServerContext {
 public:
  virtual ~ServerContext() = default;
  virtual std::vector<ClientInfo> ListClients() const = 0;
  virtual ServerCounters Counters() const = 0;
  // Per-command calls and latency (INFO stats and commandstats); null when not kept.
  virtual const CommandMetrics* command_metrics() const { return nullptr; }
  // Starts the graceful shutdown SIGTERM starts (SHUTDOWN); returns at once. False when this
  // context cannot stop the process.
  virtual bool RequestShutdown() { return false; }
};

}  // namespace kvstore
