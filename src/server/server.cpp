// Server implementation: accept loop, session registry, counters and graceful shutdown.
#include "server/server.h"

#include <asio/experimental/as_tuple.hpp>
#include <thread>

#include "common/logging.h"
#include "replication/replication.h"
#include "server/session.h"

namespace kvstore {
namespace {
constexpr auto kUseTuple = asio::experimental::as_tuple(asio::use_awaitable);
}  // namespace

Server::Server(ServerOptions options, asio::io_context& io, Engine& engine,
               ReplicationManager* replication, DispatcherOptions dispatcher_options)
    : options_(std::move(options)),
      engine_(engine),
      replication_(replication),
      io_(io),
      control_(asio::make_strand(io_)),
      acceptor_(control_),
      signals_(control_, SIGINT, SIGTERM),
      shutdown_timer_(control_),
      dispatcher_(engine, *this, replication, std::move(dispatcher_options)) {
  for (int i = 1; i < options_.io_threads; ++i) {
    session_loops_.push_back(std::make_unique<asio::io_context>(1));
  }
  if (options_.read_threads > 0) {
    read_pool_ = std::make_unique<asio::thread_pool>(options_.read_threads);
  }
}

Server::~Server() {
  if (replication_stopper_.joinable()) replication_stopper_.join();
}

Status Server::Listen() {
  const std::string where = options_.bind + ":" + std::to_string(options_.port);
  std::error_code ec;
  const auto address = asio::ip::make_address(options_.bind, ec);
  if (ec) return Status::InvalidArgument("invalid bind address \"" + options_.bind + "\"");
  const asio::ip::tcp::endpoint endpoint(address, static_cast<unsigned short>(options_.port));
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::IOError("cannot listen on " + where + ": " + ec.message());
  bound_port_ = acceptor_.local_endpoint().port();
  return Status::Ok();
}

// Runs io as io.run() would, but once the ready handlers are exhausted (or after a bounded
// number of them, so that a stream of reads cannot hold writes back), commits the writes the
// sessions queued in that pass, on this thread: Redis's beforeSleep. The completions it posts
// to this loop run in the next pass, on this thread: no other thread is woken.
void Server::RunEventLoop(asio::io_context& io) {
  constexpr int kMaxHandlersPerPass = 512;
  while (io.run_one() > 0) {
    for (int i = 1; i < kMaxHandlersPerPass && io.poll_one() > 0; ++i) {
    }
    engine_.CommitQueued();
  }
}

void Server::Run() {
  signals_.async_wait([this](std::error_code ec, int signal) {
    if (ec) return;
    logging::Info("shutdown: signal received, stopping", {{"signal", std::to_string(signal)}});
    BeginShutdown();
  });
  asio::co_spawn(control_, AcceptLoop(), asio::detached);
  // The session loops run until io_ is done: io_ holds the acceptor until shutdown, then the
  // shutdown timer until the last session closed or was force-closed.
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::vector<std::thread> threads;
  for (auto& loop : session_loops_) {
    guards.push_back(asio::make_work_guard(*loop));
    threads.emplace_back([this, &loop] { RunEventLoop(*loop); });
  }
  RunEventLoop(io_);
  guards.clear();
  for (auto& thread : threads) thread.join();
  // Sessions are gone, so nothing is left on the pool: this only ends its threads.
  if (read_pool_ != nullptr) read_pool_->join();
  if (replication_stopper_.joinable()) replication_stopper_.join();
}

void Server::Shutdown() {
  asio::post(control_, [this] { BeginShutdown(); });
}

bool Server::RequestShutdown() {
  logging::Info("shutdown: requested by the SHUTDOWN command");
  Shutdown();
  return true;
}

void Server::BeginShutdown() {
  std::vector<std::shared_ptr<Session>> sessions;
  {
    std::lock_guard lock(sessions_mutex_);
    if (shutting_down_) return;
    shutting_down_ = true;
    for (auto& [id, session] : sessions_) sessions.push_back(session);
  }
  std::error_code ignored;
  acceptor_.close(ignored);
  signals_.cancel(ignored);
  logging::Info("shutdown: stopped accepting connections; finishing commands in flight",
                {{"sessions", std::to_string(sessions.size())}});
  for (auto& session : sessions) session->Stop();
  if (replication_ != nullptr) {
    // Replica feeds and the link keep the io_context busy until replication stops: a master
    // first lets its replicas acknowledge everything (so a planned restart loses nothing), a
    // replica finishes applying what it received.
    replication_stopper_ = std::thread([this] {
      replication_->DrainReplicas(options_.shutdown_replica_wait);
      replication_->Shutdown();
    });
  }
  if (sessions.empty()) return;
  shutdown_timer_.expires_after(options_.shutdown_timeout);
  shutdown_timer_.async_wait([this](std::error_code ec) {
    if (ec) return;
    std::lock_guard lock(sessions_mutex_);
    logging::Warn("shutdown: timeout reached, closing remaining connections",
                  {{"sessions", std::to_string(sessions_.size())}});
    for (auto& [id, session] : sessions_) session->ForceClose();
  });
}

asio::awaitable<void> Server::AcceptLoop() {
  for (;;) {
    const std::size_t loop = next_loop_++ % (session_loops_.size() + 1);
    asio::io_context& context = loop == 0 ? io_ : *session_loops_[loop - 1];
    auto [ec, socket] = co_await acceptor_.async_accept(context, kUseTuple);
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
      // EMFILE and friends: back off briefly instead of spinning.
      logging::Warn("accept failed", {{"error", ec.message()}});
      asio::steady_timer pause(io_, std::chrono::milliseconds(100));
      co_await pause.async_wait(kUseTuple);
      continue;
    }
    total_connections_.fetch_add(1, std::memory_order_relaxed);
    std::shared_ptr<Session> session;
    {
      std::lock_guard lock(sessions_mutex_);
      if (shutting_down_) co_return;
      if (sessions_.size() < options_.max_clients) {
        session = std::make_shared<Session>(std::move(socket), next_session_id_++, *this,
                                            dispatcher_, engine_, replication_, options_);
        sessions_.emplace(next_session_id_ - 1, session);
      }
    }
    if (session) {
      session->Start();
      continue;
    }
    rejected_connections_.fetch_add(1, std::memory_order_relaxed);
    static const std::string kTooMany = "-ERR max number of clients reached\r\n";
    std::error_code ignored;
    asio::write(socket, asio::buffer(kTooMany), ignored);  // small: fits the socket buffer
    socket.close(ignored);
  }
}

void Server::OnSessionClosed(std::uint64_t id) {
  std::lock_guard lock(sessions_mutex_);
  sessions_.erase(id);
  if (shutting_down_ && sessions_.empty()) {
    // Last one out: nothing else keeps the io_context busy, so Run() returns.
    asio::post(control_, [this] { shutdown_timer_.cancel(); });
  }
}

void Server::CountTraffic(std::uint64_t in_bytes, std::uint64_t out_bytes, std::uint64_t commands) {
  if (in_bytes) net_input_bytes_.fetch_add(in_bytes, std::memory_order_relaxed);
  if (out_bytes) net_output_bytes_.fetch_add(out_bytes, std::memory_order_relaxed);
  if (commands) total_commands_.fetch_add(commands, std::memory_order_relaxed);
}

std::vector<ClientInfo> Server::ListClients() const {
  std::vector<ClientInfo> clients;
  std::lock_guard lock(sessions_mutex_);
  for (const auto& [id, session] : sessions_) clients.push_back(session->Info());
  return clients;
}

ServerCounters Server::Counters() const {
  ServerCounters counters;
  {
    std::lock_guard lock(sessions_mutex_);
    counters.connected_clients = sessions_.size();
  }
  counters.total_connections = total_connections_.load(std::memory_order_relaxed);
  counters.rejected_connections = rejected_connections_.load(std::memory_order_relaxed);
  counters.total_commands = total_commands_.load(std::memory_order_relaxed);
  counters.pooled_read_commands = pooled_read_commands_.load(std::memory_order_relaxed);
  counters.net_input_bytes = net_input_bytes_.load(std::memory_order_relaxed);
  counters.net_output_bytes = net_output_bytes_.load(std::memory_order_relaxed);
  counters.uptime_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  counters.port = bound_port_;
  return counters;
}

}  // namespace kvstore
