// Transactions: MULTI, EXEC, DISCARD, WATCH and UNWATCH, as Redis has them, so that client
// libraries' transactional pipelines (redis-py's default pipeline(), go-redis TxPipelined) work.
//
// Between MULTI and EXEC the dispatcher queues each command (Dispatcher::Queue) after the checks
// a command gets before it runs; a refused one is answered at once and makes EXEC answer
// EXECABORT. EXEC then runs the queue as one unit:
// - with a write among them, as ONE write function, so the engine runs every command inside one
//   LMDB write transaction of its group commit: no other client's command runs in between, the
//   queue's reads see its earlier writes (through WriteContext::View), everything reaches the
//   log in one batch, and a failed write (storage full, an I/O error) fails the whole EXEC, whose
//   changes the engine rolls back;
// - with reads alone, against one snapshot on the session's event loop (already atomic).
// WATCH remembers each key's value; EXEC runs only if every watched key still has it (checked
// inside the same transaction), else answers a null array. Comparing values rather than Redis'
// "touched" flags differs only when a key was rewritten to the value it had: kvstore then runs
// the transaction, which is what the check protects (the data it read is still current).
// Threads: the handlers run on the session's event loop; EXEC's write function on the writer.
#include <algorithm>
#include <chrono>
#include <unordered_set>

#include "commands/command.h"
#include "kvstore/resp.h"

namespace kvstore {
namespace {

// What EXEC's write function needs to run the queued handlers on the writer: copies and pointers
// to objects that outlive every session.
struct ExecScope {
  Engine* engine;
  ServerContext* server;
  ReplicationContext* replication;
  const DispatcherOptions* options;
  ScanCursors* cursors;
  ClientState client;  // copied for each run: the session's own stays on its event loop
};

// What one watched key counts toward Transaction::bytes.
std::uint64_t WatchedBytes(std::string_view key, std::size_t value_bytes) {
  return key.size() + value_bytes + sizeof(Transaction::Watched);
}

// Whether every watched key still has the value it had at WATCH. IOError when one cannot be read.
Result<bool> WatchedUnchanged(const std::vector<Transaction::Watched>& watched,
                              const Storage::Snapshot& now) {
  std::string value;
  for (const Transaction::Watched& w : watched) {
    Status s = now.Get(w.key, &value);
    if (!s.ok() && !s.IsNotFound()) return s;
    const bool same = s.ok() ? w.value && *w.value == value : !w.value;
    if (!same) return false;
  }
  return true;
}

// Runs the queued commands in order and appends the array of their replies to *reply. Reads use
// `reads`; writes run through db (null when none is queued). A write that fails (not a reply
// error such as INCR of a non-integer, which is that command's reply) fails the whole EXEC: its
// Status is returned. So does a reply that grows past the client's output limit: it would be
// built whole in memory (on the writer, holding up every other write) and the client dropped.
Status RunQueued(const std::vector<Transaction::Queued>& queued, const ExecScope& scope,
                 SnapshotLender& reads, WriteContext* db, std::string* reply,
                 std::vector<ExecutedCommand>* executed) {
  const std::size_t start = reply->size();
  resp::AppendArrayHeader(reply, queued.size());
  ClientState client = scope.client;
  std::vector<std::string> args;
  for (const Transaction::Queued& command : queued) {
    args = command.args;  // a handler may move its arguments away; the write may run again
    const auto started = std::chrono::steady_clock::now();
    const std::size_t mark = reply->size();
    CommandContext context{args,
                           client,
                           reply,
                           *scope.engine,
                           reads,
                           *scope.server,
                           scope.replication,
                           *scope.options,
                           *scope.cursors};
    Outcome outcome = command.spec->handler(context);
    if (outcome.kind == Outcome::Kind::kWrite) {
      if (db == nullptr) return Status::IOError("a write ran in a read-only transaction");
      Status s = outcome.write(*db);
      if (!s.ok()) return s;
      reply->append(*outcome.reply);
    } else if (outcome.kind != Outcome::Kind::kReplied) {
      resp::AppendError(reply, "ERR internal error: a queued command did not reply");
    }
    executed->push_back(
        {command.spec, !(reply->size() > mark && (*reply)[mark] == '-'),
         std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()});
    if (reply->size() - start > scope.options->max_exec_reply_bytes) {
      return Status::InvalidArgument(
          "EXECABORT Transaction discarded because its reply would pass the client output limit "
          "(client_output_buffer_limit_bytes " +
          std::to_string(scope.options->max_exec_reply_bytes) + "); nothing was written");
    }
  }
  return Status::Ok();
}

// EXEC's body, on one consistent view (`reads` lends it): a null array when a watched key
// changed, else RunQueued.
Status RunIfUnchanged(const Transaction& transaction, const ExecScope& scope, SnapshotLender& reads,
                      WriteContext* db, std::string* reply,
                      std::vector<ExecutedCommand>* executed) {
  executed->clear();  // an earlier run of the same write did not count
  std::string error;
  const Storage::Snapshot* now = reads.Borrow(&error);
  if (now == nullptr) return Status::IOError(error);
  auto unchanged = WatchedUnchanged(transaction.watched, *now);
  if (!unchanged.ok()) return unchanged.status();
  if (!*unchanged) {
    resp::AppendNullArray(reply);
    return Status::Ok();
  }
  return RunQueued(transaction.queued, scope, reads, db, reply, executed);
}

// MULTI: starts queuing. Nested MULTI is an error that leaves the transaction as it is.
Outcome Multi(CommandContext& c) {
  Transaction& transaction = c.client.transaction;
  if (transaction.open) {
    resp::AppendError(c.out, "ERR MULTI calls can not be nested");
    return Outcome::Replied();
  }
  transaction.open = true;
  transaction.aborted = false;
  resp::AppendSimpleString(c.out, "OK");
  return Outcome::Replied();
}

// DISCARD: drops the queue and the watched keys.
Outcome Discard(CommandContext& c) {
  if (!c.client.transaction.open) {
    resp::AppendError(c.out, "ERR DISCARD without MULTI");
    return Outcome::Replied();
  }
  c.client.transaction = Transaction{};
  resp::AppendSimpleString(c.out, "OK");
  return Outcome::Replied();
}

// EXEC -> an array of the queued commands' replies; a null array when a watched key changed;
// -EXECABORT when a command was refused while queuing. Ends the transaction and the WATCH
// whatever the outcome.
Outcome Exec(CommandContext& c) {
  if (!c.client.transaction.open) {
    resp::AppendError(c.out, "ERR EXEC without MULTI");
    return Outcome::Replied();
  }
  Transaction transaction = std::exchange(c.client.transaction, Transaction{});
  if (transaction.aborted) {
    resp::AppendError(c.out, "EXECABORT Transaction discarded because of previous errors.");
    return Outcome::Replied();
  }
  const bool writes = std::any_of(
      transaction.queued.begin(), transaction.queued.end(),
      [](const Transaction::Queued& command) { return command.spec->flags & kFlagWrite; });
  ExecScope scope{&c.engine, &c.server, c.replication, &c.options, &c.cursors, c.client};
  auto executed = std::make_shared<std::vector<ExecutedCommand>>();
  if (!writes) {
    if (c.reads.Borrow(c.out) == nullptr) return Outcome::Replied();
    const std::size_t mark = c.out->size();
    Outcome outcome = Outcome::Replied();
    Status s = RunIfUnchanged(transaction, scope, c.reads, nullptr, c.out, executed.get());
    if (s.ok()) {
      outcome.executed = std::move(executed);
    } else {
      c.out->resize(mark);
      AppendWriteResult(s, "", c.out);
    }
    return outcome;
  }
  // Queued writes were admitted then; the pod may have become a replica or been fenced since.
  if (c.replication != nullptr) {
    if (auto refusal = c.replication->WriteRefusal()) {
      resp::AppendError(c.out, "EXECABORT Transaction discarded because of: " + *refusal);
      return Outcome::Replied();
    }
  }
  Outcome outcome = MakeWrite([scope = std::move(scope), transaction = std::move(transaction),
                               executed](WriteContext& db, std::string* reply) -> Status {
    SnapshotLender reads(*scope.engine, db.View());
    return RunIfUnchanged(transaction, scope, reads, &db, reply, executed.get());
  });
  outcome.executed = std::move(executed);
  return outcome;
}

// WATCH key [key ...]: EXEC of the next transaction runs only if these keys keep their values.
Outcome Watch(CommandContext& c) {
  Transaction& transaction = c.client.transaction;
  if (transaction.open) {
    resp::AppendError(c.out, "ERR WATCH inside MULTI is not allowed");
    return Outcome::Replied();
  }
  Storage::Snapshot* snapshot = c.reads.Borrow(c.out);
  if (snapshot == nullptr) return Outcome::Replied();
  std::vector<Transaction::Watched> added;
  std::unordered_set<std::string_view> seen;  // watching a key twice watches it once
  for (const Transaction::Watched& w : transaction.watched) seen.insert(w.key);
  std::uint64_t bytes = transaction.bytes;
  std::string value;
  for (std::size_t i = 1; i < c.args.size(); ++i) {
    const std::string& key = c.args[i];
    if (!seen.insert(key).second) continue;
    Status s = snapshot->Get(key, &value);
    if (!s.ok() && !s.IsNotFound()) {
      resp::AppendError(c.out, "ERR " + s.message());
      return Outcome::Replied();
    }
    bytes += WatchedBytes(key, s.ok() ? value.size() : 0);
    if (bytes > c.options.max_transaction_bytes) {
      resp::AppendError(c.out, "ERR transaction too large: the watched keys' values would pass " +
                                   std::to_string(c.options.max_transaction_bytes) +
                                   " bytes (max_query_buffer_bytes)");
      return Outcome::Replied();
    }
    added.push_back({key, s.ok() ? std::optional<std::string>(value) : std::nullopt});
  }
  std::move(added.begin(), added.end(), std::back_inserter(transaction.watched));
  transaction.bytes = bytes;
  resp::AppendSimpleString(c.out, "OK");
  return Outcome::Replied();
}

// UNWATCH: forgets the watched keys. Inside MULTI it is queued, as in Redis, and changes nothing
// then (EXEC ends the WATCH anyway).
Outcome Unwatch(CommandContext& c) {
  Transaction& transaction = c.client.transaction;
  for (const Transaction::Watched& w : transaction.watched) {
    transaction.bytes -= WatchedBytes(w.key, w.value ? w.value->size() : 0);
  }
  transaction.watched.clear();  // (the bytes of queued commands stay counted)
  resp::AppendSimpleString(c.out, "OK");
  return Outcome::Replied();
}

constexpr CommandSpec kCommands[] = {
    {"multi", 1, kFlagFast, Multi, 0, 0, 0},
    {"exec", 1, 0, Exec, 0, 0, 0},
    {"discard", 1, kFlagFast, Discard, 0, 0, 0},
    {"watch", -2, kFlagFast, Watch, 1, -1, 1},
    {"unwatch", 1, kFlagFast | kFlagInTransaction, Unwatch, 0, 0, 0},
};

}  // namespace

std::span<const CommandSpec> TransactionCommands() { return kCommands; }

void AbortExec(Transaction& transaction, std::string* out, std::size_t mark) {
  transaction = Transaction{};
  std::string_view error(*out);
  error.remove_prefix(mark);
  if (!error.starts_with("-ERR ") || !error.ends_with("\r\n")) return;
  std::string reason(error.substr(5, error.size() - 7));
  out->resize(mark);
  resp::AppendError(out, "EXECABORT Transaction discarded because of: " + reason);
}

bool ControlsTransaction(const CommandSpec* spec) {
  if (spec == nullptr) return false;
  return spec->handler == Multi || spec->handler == Exec || spec->handler == Discard ||
         spec->handler == Watch || spec->name == "quit";
}

}  // namespace kvstore
