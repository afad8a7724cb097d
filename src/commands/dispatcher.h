// Dispatcher: looks a request up in the command table, enforces AUTH and arity, and runs the
// handler. Thread-safe after construction (the table is read-only); one instance serves all
// sessions.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "commands/command.h"
#include "commands/scan_cursors.h"

namespace kvstore {

class Dispatcher {
 public:
  // replication may be null: a standalone master that always takes writes.
  Dispatcher(Engine& engine, ServerContext& server, ReplicationContext* replication,
             DispatcherOptions options);

  // The command named by args[0] (any case), or nullptr when unknown.
  const CommandSpec* Lookup(std::string_view name) const;

  // Executes args (non-empty); spec is Lookup(args[0]). Replies to reads, connection and server
  // commands are appended to *out at once; writes come back as Outcome::kWrite for the session
  // to batch into the engine.
  Outcome Execute(const CommandSpec* spec, std::vector<std::string>& args, ClientState& client,
                  SnapshotLender& reads, std::string* out);

  const DispatcherOptions& options() const { return options_; }

  // Whether spec (null: unknown) may run with these arguments now: it exists, its arity fits,
  // and a write is not refused (a replica, a fenced master, min_replicas_to_write). Otherwise
  // appends the error a client gets. Used before running a command and before queuing one.
  bool Admits(const CommandSpec* spec, const std::vector<std::string>& args,
              std::string* out) const;

 private:
  // Between MULTI and EXEC: queues the command and replies +QUEUED (true), or replies why not
  // and marks the transaction aborted (EXEC then answers EXECABORT).
  bool Queue(const CommandSpec* spec, std::vector<std::string>& args, Transaction& transaction,
             std::string* out) const;

  // The table's hash and equality ignore ASCII case, so a lookup needs no lower-case copy of the
  // name a client sent (every request looks one up).
  struct NameHash {
    std::size_t operator()(std::string_view name) const;
  };
  struct NameEqual {
    bool operator()(std::string_view a, std::string_view b) const;
  };

  Engine& engine_;
  ServerContext& server_;
  ReplicationContext* replication_;
  DispatcherOptions options_;
  ScanCursors cursors_;
  std::unordered_map<std::string_view, const CommandSpec*, NameHash, NameEqual> table_;  // by name
};

}  // namespace kvstore
