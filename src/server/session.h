// Session: one client connection. Reads requests, runs them through the Dispatcher, batches
// consecutive writes into one engine submission, and writes replies in request order.
// Threads: everything runs on the session's event loop (the socket's executor); Stop() and Info()
// may be called from any thread.
#pragma once

#include <asio.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "commands/dispatcher.h"
#include "kvstore/resp.h"

namespace kvstore {

class Server;
class ReplicationManager;
struct ServerOptions;

class Session : public std::enable_shared_from_this<Session> {
 public:
  // replication may be null (standalone).
  Session(asio::ip::tcp::socket socket, std::uint64_t id, Server& server, Dispatcher& dispatcher,
          Engine& engine, ReplicationManager* replication, const ServerOptions& options);

  void Start();
  // Graceful: finish the command in progress, then close. Thread-safe.
  void Stop();
  // Immediate: close the socket. Thread-safe.
  void ForceClose();
  // A copy of the client's public state. Thread-safe.
  ClientInfo Info() const;

 private:
  enum class State { kReading, kExecuting, kWriting };

  asio::awaitable<void> Run();
  // Runs every complete buffered request. False when the connection must close.
  asio::awaitable<bool> ProcessBuffered();
  // The next request: the one RunReads parsed past its run, else the parser's next.
  resp::RequestParser::ParseStatus NextRequest();
  // Runs the snapshot read in args_ and every one that follows it in the buffer, appending their
  // replies and adding to *commands how many ran; a long run executes on the server's read
  // pool. False when the connection must close.
  asio::awaitable<bool> RunReads(const CommandSpec* first, std::uint64_t* commands);
  // Runs a deferred command (WAIT, REPLFAILOVER) and returns its reply once delivered, reading
  // the connection meanwhile into the parser; nullopt when the connection must close instead
  // (the peer closed it, an error, the query buffer limit).
  asio::awaitable<std::optional<std::string>> AwaitDeferred(
      std::function<void(std::function<void(std::string)>)> deferred);
  // Whether the unparsed input passed max_query_buffer_bytes; if so, logs it and appends the
  // error the client gets before the connection closes.
  bool QueryBufferOverLimit();
  // Submits the queued writes as one engine batch and appends their replies.
  asio::awaitable<void> FlushWrites();
  // Whether the replies pending exceed the client output buffer limit; if so, logs that the
  // connection closes.
  bool OutputOverLimit();
  void QueueWrite(Outcome outcome, const CommandSpec* spec,
                  std::chrono::steady_clock::time_point started);
  // The commands an EXEC ran (null for other commands): counted as if sent alone, as Redis does.
  void RecordExecuted(const std::vector<ExecutedCommand>* executed);
  // Counts a finished command in the server's CommandMetrics; returns when it finished.
  std::chrono::steady_clock::time_point RecordCommand(
      const CommandSpec* spec, bool ok, std::chrono::steady_clock::time_point started);
  // Sync mode only (replication_ set, SyncReplicasRequired() > 0). logged[i]: whether the write
  // of results[i] logged anything (only those wait).
  asio::awaitable<void> WaitForSyncReplicas(std::uint64_t seq, const std::vector<bool>& logged,
                                            std::vector<Status>* results);
  asio::awaitable<bool> WriteOut();
  void ArmFrameTimer();
  void Publish();

  asio::ip::tcp::socket socket_;
  asio::steady_timer frame_timer_;
  Server& server_;
  Dispatcher& dispatcher_;
  Engine& engine_;
  ReplicationManager* replication_;
  const ServerOptions& options_;

  std::vector<char> read_buffer_;  // what the socket's reads land in (one read at a time)
  resp::RequestParser parser_;
  std::vector<std::string> args_;
  std::string out_;
  // One entry per command since the first queued write, in request order: the reply of a
  // write the engine will run (from_engine), or an immediate reply that must wait behind it.
  struct QueuedReply {
    bool from_engine;
    std::shared_ptr<std::string> reply;
    std::shared_ptr<const bool> logged;  // from_engine: whether the write logged anything
    // For the command metrics of a write, recorded once its result is known.
    const CommandSpec* spec = nullptr;
    std::chrono::steady_clock::time_point started;
    std::shared_ptr<const std::vector<ExecutedCommand>> executed;  // an EXEC's commands
  };
  std::vector<WriteFn> queued_writes_;
  std::vector<QueuedReply> queued_replies_;
  // RunReads: the run of reads (capacity reused), and the request parsed after it, if any.
  struct ParsedRead {
    const CommandSpec* spec = nullptr;
    std::vector<std::string> args;
  };
  std::vector<ParsedRead> read_run_;
  std::optional<resp::RequestParser::ParseStatus> lookahead_;
  std::vector<std::string> lookahead_args_;
  ClientState client_;
  SnapshotLender reads_;
  State state_ = State::kReading;
  bool stopping_ = false;
  bool frame_timed_out_ = false;
  std::optional<std::chrono::steady_clock::time_point> frame_deadline_;  // of the partial request
  std::uint64_t read_generation_ = 0;
  bool handoff_ = false;  // REPLSYNC: the socket goes to replication when Run ends
  std::vector<std::string> handoff_args_;

  mutable std::mutex published_mutex_;
  ClientInfo published_;  // GUARDED_BY(published_mutex_)
};

}  // namespace kvstore
