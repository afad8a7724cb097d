// Server: the RESP listener on port 5555. Owns the acceptor and every session.
// Threads: io_threads event loops, each one io_context run by one thread (as Redis's I/O threads
// or memcached's workers): the shared io_context given to the constructor, which also runs the
// acceptor, replication and shutdown, plus io_threads - 1 of the server's own. Each connection
// lives on one loop, assigned round-robin, so its handlers never need a strand and a write's
// completion wakes one loop, not a pool of threads contending for one queue. read_threads more
// run the storage lookups of pipelined reads while the loops go on with I/O. The
// public methods are thread-safe. Shutdown (SIGTERM/SIGINT or Shutdown()) closes the acceptor,
// lets each session finish the command it is running, then force-closes what remains after
// shutdown_timeout; Run() returns once no session is left.
#pragma once

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "commands/command_metrics.h"
#include "commands/dispatcher.h"
#include "commands/server_context.h"
#include "engine/engine.h"
#include "kvstore/resp.h"

namespace kvstore {

class Session;
class ReplicationManager;

struct ServerOptions {
  std::string bind = "0.0.0.0";
  int port = 5555;  // 0 picks a free port (tests)
  int io_threads = 1;
  // Threads that run pipelined reads off the event loops (Session::RunReads); 0: every read runs
  // on its connection's loop.
  int read_threads = 1;
  std::uint64_t max_clients = 10000;
  std::uint64_t max_query_buffer_bytes = 1ull << 30;
  std::uint64_t client_output_buffer_limit_bytes = 1ull << 30;
  std::chrono::milliseconds frame_timeout{30000};
  std::chrono::milliseconds shutdown_timeout{10000};
  // A master's wait for its replicas to acknowledge everything at shutdown.
  std::chrono::milliseconds shutdown_replica_wait{10000};
  resp::ParserLimits parser_limits;
  // Who takes the connection after a command answered Outcome::kHandoff, by lower-case command
  // name (SNAPSHOT, RESTORE-SNAPSHOT); REPLSYNC goes to replication when not listed. Each runs
  // on the socket's executor and owns the socket from then on.
  using HandoffFn =
      std::function<asio::awaitable<void>(asio::ip::tcp::socket, std::vector<std::string>)>;
  std::map<std::string, HandoffFn> handoffs;
};

class Server final : public ServerContext {
 public:
  // replication may be null: a standalone server without replication.
  // io is run by Run(); replication (which shares it) may be null.
  Server(ServerOptions options, asio::io_context& io, Engine& engine,
         ReplicationManager* replication, DispatcherOptions dispatcher_options);
  ~Server() override;

  // Binds and listens. IOError("cannot listen on <bind>:<port>: <reason>") on failure.
  Status Listen();
  // The bound port (after Listen).
  int port() const { return bound_port_; }

  // Serves until shutdown completes. Handles SIGTERM and SIGINT.
  void Run();
  // Starts a graceful shutdown; returns at once.
  void Shutdown();

  // ServerContext
  std::vector<ClientInfo> ListClients() const override;
  ServerCounters Counters() const override;
  const CommandMetrics* command_metrics() const override { return &command_metrics_; }
  bool RequestShutdown() override;
  // Sessions record every command here.
  CommandMetrics& mutable_command_metrics() { return command_metrics_; }
  // The shared io_context: a connection handed off to a stream (REPLSYNC, SNAPSHOT) moves there.
  asio::io_context& shared_io() { return io_; }
  // Where sessions run long runs of pipelined reads; null when read_threads is 0.
  asio::thread_pool* read_pool() { return read_pool_.get(); }

  // Called by sessions.
  void OnSessionClosed(std::uint64_t id);
  void CountTraffic(std::uint64_t in_bytes, std::uint64_t out_bytes, std::uint64_t commands);
  void CountPooledReads(std::uint64_t commands) {
    pooled_read_commands_.fetch_add(commands, std::memory_order_relaxed);
  }

 private:
  void RunEventLoop(asio::io_context& io);
  asio::awaitable<void> AcceptLoop();
  void BeginShutdown();  // runs on control_

  const ServerOptions options_;
  Engine& engine_;
  ReplicationManager* replication_;
  // At shutdown: waits for the replicas, then stops replication (it blocks, so not on io).
  std::thread replication_stopper_;
  asio::io_context& io_;
  // The other event loops (io_threads - 1), each run by one thread in Run().
  std::vector<std::unique_ptr<asio::io_context>> session_loops_;
  std::unique_ptr<asio::thread_pool> read_pool_;  // read_threads threads, or null
  std::size_t next_loop_ = 0;  // round-robin over io_ and session_loops_; on control_ only
  // The acceptor, the signals, the shutdown timer and BeginShutdown all run on this strand, so
  // closing the acceptor and arming or cancelling the timer never race between io threads.
  asio::strand<asio::io_context::executor_type> control_;
  asio::ip::tcp::acceptor acceptor_;
  asio::signal_set signals_;
  asio::steady_timer shutdown_timer_;
  Dispatcher dispatcher_;
  CommandMetrics command_metrics_;
  int bound_port_ = 0;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

  mutable std::mutex sessions_mutex_;
  std::map<std::uint64_t, std::shared_ptr<Session>> sessions_;  // GUARDED_BY(sessions_mutex_)
  bool shutting_down_ = false;                                  // GUARDED_BY(sessions_mutex_)
  std::uint64_t next_session_id_ = 1;                           // GUARDED_BY(sessions_mutex_)

  std::atomic<std::uint64_t> total_connections_{0};
  std::atomic<std::uint64_t> rejected_connections_{0};
  std::atomic<std::uint64_t> total_commands_{0};
  std::atomic<std::uint64_t> pooled_read_commands_{0};
  std::atomic<std::uint64_t> net_input_bytes_{0};
  std::atomic<std::uint64_t> net_output_bytes_{0};
};

}  // namespace kvstore
