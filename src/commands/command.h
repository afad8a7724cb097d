// The command layer's shared vocabulary: what a command handler receives (CommandContext),
// what it returns (Outcome) and how commands are described (CommandSpec). No sockets here:
// handlers read through Engine snapshots and express writes as WriteFns for the group commit.
// Handlers run on the calling session's event loop; write functions run on the engine's writer
// thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "commands/client_state.h"
#include "commands/replication_context.h"
#include "commands/server_context.h"
#include "engine/engine.h"

namespace kvstore {

// The Redis version we claim (INFO's redis_version, HELLO's version): redis-cli and client
// libraries gate features on it.
inline constexpr std::string_view kRedisCompatVersion = "7.0.0";

struct DispatcherOptions {
  std::string requirepass;
  std::uint64_t max_value_bytes = 512ull << 20;
  std::string version = "0.0.0";
  std::string fsync = "always";  // as configured, for INFO and CONFIG GET
  std::string data_dir;
  std::uint64_t max_clients = 10000;
  // Most bytes one client's MULTI queue and WATCHed values may hold (max_query_buffer_bytes).
  std::uint64_t max_transaction_bytes = 1ull << 30;
  // Largest reply EXEC may build (client_output_buffer_limit_bytes).
  std::uint64_t max_exec_reply_bytes = 1ull << 30;
};

// Whether the client must still authenticate: a password is set and it has not given it.
inline bool AuthPending(const DispatcherOptions& options, const ClientState& client) {
  return !options.requirepass.empty() && !client.authenticated;
}

class ScanCursors;
struct CommandSpec;

// Lends read commands an engine snapshot. A session keeps one lender and reuses the snapshot for
// the consecutive reads of a pipeline (a read transaction per GET is most of a GET's cost); it
// must Release() before anything that waits, because growing the map waits for snapshots.
// Not thread-safe: one per session.
class SnapshotLender {
 public:
  explicit SnapshotLender(Engine& engine) : engine_(engine) {}
  // Lends `view` (a write transaction's, see WriteContext::View) instead of taking snapshots.
  SnapshotLender(Engine& engine, Storage::Snapshot view) : engine_(engine) {
    snapshot_.emplace(std::move(view));
  }
  // The current snapshot, taken on first use. On failure appends an error reply to *out and
  // returns nullptr.
  Storage::Snapshot* Borrow(std::string* out);
  void Release() { snapshot_.reset(); }

 private:
  Engine& engine_;
  std::optional<Storage::Snapshot> snapshot_;
};

struct CommandContext {
  std::vector<std::string>& args;  // args[0] is the command name as sent
  ClientState& client;
  std::string* out;  // replies are appended here
  Engine& engine;
  SnapshotLender& reads;
  ServerContext& server;
  ReplicationContext* replication;  // null: a standalone master (unit tests)
  const DispatcherOptions& options;
  ScanCursors& cursors;
};

// One command that EXEC ran, for the command metrics: counted as if it had been sent alone,
// as Redis counts the commands of a transaction.
struct ExecutedCommand {
  const CommandSpec* spec;
  bool ok;  // its reply is not an error
  double seconds;
};

// What happened to a command.
struct Outcome {
  enum class Kind {
    kReplied,   // the reply is in *out
    kWrite,     // run `write` through the engine, then append `*reply` (or the error)
    kDeferred,  // call `deferred`; the reply it delivers (on any thread) is this command's
    kHandoff,   // the connection becomes a stream (REPLSYNC, SNAPSHOT, RESTORE-SNAPSHOT): hand
                // the socket over to whoever serves that command
  };
  Kind kind = Kind::kReplied;
  WriteFn write;
  std::shared_ptr<std::string> reply;
  // kWrite: whether the write's last run logged anything (a SET NX that found the key, an EXEC
  // whose WATCH failed did not): only then does sync mode wait for replicas.
  std::shared_ptr<const bool> logged;
  std::function<void(std::function<void(std::string reply)> deliver)> deferred;
  // EXEC: the queued commands it ran, filled in by its run (for kWrite, once the write is
  // done: the engine may run it more than once, and the last run is the one that counts).
  std::shared_ptr<const std::vector<ExecutedCommand>> executed;
  // Queued between MULTI and EXEC (+QUEUED): counted in the metrics when EXEC runs it, not now.
  bool queued = false;

  static Outcome Replied() { return {}; }
};

// Wraps a write: fn, a Status(WriteContext&, std::string* reply) callable, runs on the writer
// and encodes its reply into the string it is given (cleared before each run, since the engine
// may run a write twice). A template, so that fn lives inside the WriteFn (one allocation, not
// two: this runs for every write).
template <typename Fn>
Outcome MakeWrite(Fn fn) {
  struct Result {
    std::string reply;
    bool logged = false;
  };
  auto result = std::make_shared<Result>();  // one allocation, shared by both handles below
  Outcome outcome;
  outcome.kind = Outcome::Kind::kWrite;
  outcome.reply = std::shared_ptr<std::string>(result, &result->reply);
  outcome.logged = std::shared_ptr<const bool>(result, &result->logged);
  outcome.write = [fn = std::move(fn), result = std::move(result)](WriteContext& context) {
    result->reply.clear();
    const std::uint64_t first = context.NextSeq();
    Status s = fn(context, &result->reply);
    result->logged = context.NextSeq() != first;
    return s;
  };
  return outcome;
}

// Appends the reply of a finished write: its own reply when ok, else an error naming the cause.
void AppendWriteResult(const Status& status, const std::string& reply, std::string* out);

enum CommandFlags : std::uint32_t {
  kFlagRead = 1u << 0,
  kFlagWrite = 1u << 1,
  kFlagAdmin = 1u << 2,
  kFlagNoAuth = 1u << 3,  // allowed before AUTH
  kFlagFast = 1u << 4,
  // Reads nothing but its arguments and a storage snapshot, and always replies at once: a run of
  // such commands may execute on a read thread (the session's pipelined reads, see session.cpp).
  kFlagSnapshotRead = 1u << 5,
  // May be queued between MULTI and EXEC although neither a read nor a write (PING, ECHO, TIME,
  // SELECT, UNWATCH).
  kFlagInTransaction = 1u << 6,
};

// Whether a command may be queued between MULTI and EXEC: the data commands, read or write,
// and the few others flagged for it. Connection, server and replication commands are refused
// there, since EXEC runs its commands inside one write transaction on the writer.
inline bool QueueableInTransaction(std::uint32_t flags) {
  return (flags & (kFlagRead | kFlagWrite | kFlagInTransaction)) != 0 && !(flags & kFlagAdmin);
}

using Handler = Outcome (*)(CommandContext&);

// A check kvstore adds to Redis' on a command's arguments alone: a key LMDB cannot store, an
// expiry kvstore does not keep. Redis would run such a command, so it is refused before it runs
// and also when MULTI queues it: a transaction holding one is refused whole (EXECABORT), rather
// than run without it. Returns false with the error appended to *out.
using ArgumentCheck = bool (*)(const CommandSpec& spec, const std::vector<std::string>& args,
                               std::string* out);

struct CommandSpec {
  std::string_view name;  // lower case
  int arity;              // Redis convention: N exact, -N at least N (the name counts)
  std::uint32_t flags;
  Handler handler;
  int first_key, last_key, key_step;  // for COMMAND INFO
  ArgumentCheck check = nullptr;      // run by Dispatcher::Admits
};

// ArgumentCheck: every key (first_key, last_key, key_step) is one LMDB can store
// (ValidateKeyForWrite), for the commands that store their keys.
bool CheckKeysStorable(const CommandSpec& spec, const std::vector<std::string>& args,
                       std::string* out);

// One subcommand of a container command (CLIENT ID, CONFIG GET, ...).
struct SubcommandSpec {
  std::string_view name;   // lower case
  int arity;               // as CommandSpec's, counting the command and the subcommand
  std::string_view usage;  // for HELP: the arguments after the name
  std::string_view help;   // for HELP: what it does
};

// Finds the subcommand c.args[1] names among `subcommands` and checks its arity. Otherwise
// answers as Redis 7 does (HELP lists the subcommands; a wrong arity names "command|sub"; an
// unknown one points to HELP) and returns null: the reply is in c.out.
const SubcommandSpec* FindSubcommand(CommandContext& c, std::string_view command,
                                     std::span<const SubcommandSpec> subcommands);

// The command groups, each defined in its own file.
std::span<const CommandSpec> ConnectionCommands();   // connection.cpp
std::span<const CommandSpec> StringCommands();       // strings.cpp
std::span<const CommandSpec> KeyspaceCommands();     // keyspace.cpp
std::span<const CommandSpec> ServerCommands();       // server_commands.cpp
std::span<const CommandSpec> ReplicationCommands();  // replication_commands.cpp
std::span<const CommandSpec> BackupCommands();       // backup_commands.cpp
std::span<const CommandSpec> TransactionCommands();  // transaction.cpp
// Whether spec is MULTI, EXEC, DISCARD, WATCH or QUIT, which run at once even inside MULTI
// (transaction.cpp).
bool ControlsTransaction(const CommandSpec* spec);
// An EXEC refused before it ran (a wrong arity): as Redis, ends the transaction and rewords the
// error reply at out[mark] as "-EXECABORT Transaction discarded because of: <error>".
void AbortExec(Transaction& transaction, std::string* out, std::size_t mark);

// The "# Replication" section of INFO (replication_commands.cpp).
void AppendReplicationInfo(const ReplicationStatus& status, std::string* text);

// Every command, for COMMAND and dispatch.
std::span<const CommandSpec* const> AllCommands();

// Shared reply helpers.
void ReplyWrongArity(std::string_view command, std::string* out);
void ReplySyntaxError(std::string* out);
void ReplyNotInteger(std::string* out);
// Checks a key a write is about to store; appends an error and returns false when invalid.
bool ValidateKeyForWrite(std::string_view key, std::string* out);
bool ValidateValueSize(std::size_t size, const DispatcherOptions& options, std::string* out);
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
std::string ToLower(std::string_view s);
std::string ToUpper(std::string_view s);

}  // namespace kvstore
