// Session implementation. One coroutine per connection on the socket's event loop:
//   read -> parse every complete request -> run reads at once, queue writes -> flush writes as
//   one engine batch -> write all replies -> read again.
// Writing replies before reading more is the backpressure: a client that does not read its
// replies stops being read, so buffers stay bounded. The exception is a client blocked in a
// deferred command (WAIT): it is read while it waits, to notice when it goes (AwaitDeferred).
#include "server/session.h"

#include <algorithm>
#include <asio/experimental/as_tuple.hpp>
#include <exception>

#include "common/logging.h"
#include "replication/replication.h"
#include "server/server.h"

namespace kvstore {
namespace {

constexpr auto kUseTuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t kReadChunkBytes = 16 * 1024;
// Replies are written out once this much is pending, even mid-pipeline.
constexpr std::size_t kSoftOutputBytes = 64 * 1024;
// Pipelined reads: a run at least this long goes to the read pool, where its storage lookups
// (most of a GET's cost: LMDB's tree walk misses the CPU caches) overlap the loop's I/O for
// other connections. Shorter runs stay on the loop: the hop costs two thread handoffs, more
// than one lookup. A run is cut at kMaxReadRun so its replies stay within a bounded buffer.
constexpr std::size_t kMinPooledReadRun = 4;
constexpr std::size_t kMaxReadRun = 256;

// Queues writes with the engine and resumes the awaiting coroutine on its own executor with
// the per-write statuses and the committed sequence after them. The event loop commits the
// queue once it has run every ready handler (RunEventLoop), so the writes of all connections
// served in one pass share one fsync. The work guard keeps the io_context alive while the
// writer holds the handler.
template <typename CompletionToken>
auto AsyncSubmit(Engine& engine, std::vector<WriteFn> writes, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(std::vector<Status>, std::uint64_t)>(
      [&engine](auto handler, std::vector<WriteFn> writes) {
        struct Pending {
          decltype(handler) resume;
          asio::executor_work_guard<asio::associated_executor_t<decltype(handler)>> guard;
        };
        auto guard = asio::make_work_guard(asio::get_associated_executor(handler));
        // Owned by the completion, which the engine runs exactly once; a raw pointer keeps the
        // WriteDone small enough for std::function to store without an allocation.
        Pending* pending = new Pending{std::move(handler), std::move(guard)};
        engine.Enqueue(
            std::move(writes), [pending](std::vector<Status> results, std::uint64_t seq) {
              std::unique_ptr<Pending> owned(pending);
              auto executor = owned->guard.get_executor();
              asio::post(executor, [owned = std::move(owned), results = std::move(results),
                                    seq]() mutable { owned->resume(std::move(results), seq); });
            });
      },
      token, std::move(writes));
}

// Runs work on the pool, then resumes the awaiting coroutine on its own executor. An exception
// from work is rethrown in the coroutine, as if work had run there.
template <typename Work, typename CompletionToken>
auto AsyncRunOn(asio::thread_pool& pool, Work work, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(std::exception_ptr)>(
      [&pool](auto handler, Work work) {
        auto guard = asio::make_work_guard(asio::get_associated_executor(handler));
        asio::post(pool, [work = std::move(work), handler = std::move(handler),
                          guard = std::move(guard)]() mutable {
          std::exception_ptr failure;
          try {
            work();
          } catch (...) {
            failure = std::current_exception();
          }
          asio::post(guard.get_executor(),
                     [handler = std::move(handler), failure]() mutable { handler(failure); });
        });
      },
      token, std::move(work));
}

// Runs a deferred command (Outcome::kDeferred) and resumes with its reply, on the awaiting
// coroutine's executor, whatever thread delivers it.
template <typename CompletionToken>
auto AsyncDeferred(std::function<void(std::function<void(std::string)>)> deferred,
                   CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(std::string)>(
      [](auto handler, std::function<void(std::function<void(std::string)>)> deferred) {
        auto executor = asio::get_associated_executor(handler);
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        auto guard = asio::make_work_guard(executor);
        deferred([shared, executor, guard](std::string reply) {
          asio::post(executor,
                     [shared, reply = std::move(reply)]() mutable { (*shared)(std::move(reply)); });
        });
      },
      token, std::move(deferred));
}

// Waits for replica acknowledgements (sync mode) without blocking the event loop. The wait is
// bounded by sync_timeout_ms, so unlike WAIT it does not watch the connection meanwhile.
template <typename CompletionToken>
auto AsyncWaitForAcks(ReplicationContext& replication, std::uint64_t seq, int replicas,
                      std::chrono::milliseconds timeout, std::uint64_t client,
                      CompletionToken&& token) {
  return AsyncDeferred(
      [&replication, seq, replicas, timeout, client](std::function<void(std::string)> deliver) {
        replication.WaitForAcks(
            seq, replicas, timeout, client,
            [deliver = std::move(deliver)](int acked) { deliver(std::to_string(acked)); });
      },
      std::forward<CompletionToken>(token));
}

// Whether the reply that starts at out[mark] is a RESP error (for the command metrics).
bool IsErrorReply(const std::string& out, std::size_t mark) {
  return out.size() > mark && out[mark] == '-';
}

std::string Endpoint(const asio::ip::tcp::endpoint& endpoint) {
  return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

}  // namespace

Session::Session(asio::ip::tcp::socket socket, std::uint64_t id, Server& server,
                 Dispatcher& dispatcher, Engine& engine, ReplicationManager* replication,
                 const ServerOptions& options)
    : socket_(std::move(socket)),
      frame_timer_(socket_.get_executor()),
      server_(server),
      dispatcher_(dispatcher),
      engine_(engine),
      replication_(replication),
      options_(options),
      read_buffer_(kReadChunkBytes),
      parser_(options.parser_limits),
      reads_(engine) {
  client_.info.id = id;
  std::error_code ec;
  auto remote = socket_.remote_endpoint(ec);
  if (!ec) client_.info.addr = Endpoint(remote);
  auto local = socket_.local_endpoint(ec);
  if (!ec) client_.info.local_addr = Endpoint(local);
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  client_.info.created = client_.info.last_active = std::chrono::steady_clock::now();
  client_.info.fd = socket_.native_handle();
  published_ = client_.Snapshot();
}

void Session::Start() {
  asio::co_spawn(
      socket_.get_executor(), [self = shared_from_this()] { return self->Run(); }, asio::detached);
}

void Session::Stop() {
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    self->stopping_ = true;
    // Only an idle read is interrupted; a command in progress finishes and replies first.
    if (self->state_ == State::kReading) {
      std::error_code ignored;
      self->socket_.cancel(ignored);
    }
  });
}

void Session::ForceClose() {
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    self->stopping_ = true;
    std::error_code ignored;
    self->socket_.close(ignored);
  });
}

ClientInfo Session::Info() const {
  std::lock_guard lock(published_mutex_);
  return published_;
}

void Session::Publish() {
  std::lock_guard lock(published_mutex_);
  published_ = client_.Snapshot();
}

void Session::ArmFrameTimer() {
  if (!parser_.mid_frame()) {
    frame_deadline_.reset();
    return;
  }
  // A request must arrive in full within frame_timeout of its first byte, so a client trickling
  // a byte at a time cannot pin its (up to max_query_buffer_bytes) buffer forever.
  if (!frame_deadline_) frame_deadline_ = std::chrono::steady_clock::now() + options_.frame_timeout;
  frame_timer_.expires_at(*frame_deadline_);
  frame_timer_.async_wait(
      [self = shared_from_this(), generation = read_generation_](std::error_code ec) {
        if (ec || self->read_generation_ != generation) return;
        self->frame_timed_out_ = true;
        std::error_code ignored;
        self->socket_.cancel(ignored);
      });
}

asio::awaitable<void> Session::Run() {
  while (!stopping_) {
    state_ = State::kReading;
    ArmFrameTimer();
    auto [ec, n] = co_await socket_.async_read_some(asio::buffer(read_buffer_), kUseTuple);
    ++read_generation_;
    frame_timer_.cancel();
    state_ = State::kExecuting;
    if (!ec) frame_timed_out_ = false;  // the timer fired just as data arrived: too late to count
    if (ec) {
      if (frame_timed_out_) {
        resp::AppendError(&out_, "ERR Protocol error: request not completed within " +
                                     std::to_string(options_.frame_timeout.count()) + " ms");
        co_await WriteOut();
      }
      break;
    }
    server_.CountTraffic(n, 0, 0);
    parser_.Feed(std::string_view(read_buffer_.data(), n));
    if (QueryBufferOverLimit()) {
      co_await WriteOut();
      break;
    }
    if (!co_await ProcessBuffered()) break;
  }
  frame_timer_.cancel();
  server_.OnSessionClosed(client_.info.id);
  if (handoff_) {
    // From here on the connection is a stream owned by whoever serves the command. It moves to
    // the shared io_context, where replication and backups run, so that their shutdown (which
    // waits for these streams) never depends on a session loop.
    auto it = options_.handoffs.find(ToLower(handoff_args_[0]));
    const bool has_owner = it != options_.handoffs.end() || replication_ != nullptr;
    std::error_code ec;
    const auto protocol = socket_.local_endpoint(ec).protocol();
    auto native =
        has_owner && !ec ? socket_.release(ec) : asio::ip::tcp::socket::native_handle_type{-1};
    if (has_owner && !ec) {
      asio::io_context& shared = server_.shared_io();
      asio::ip::tcp::socket moved(shared, protocol, native);
      if (it != options_.handoffs.end()) {
        asio::co_spawn(shared, it->second(std::move(moved), std::move(handoff_args_)),
                       asio::detached);
      } else {  // REPLSYNC
        asio::co_spawn(shared,
                       replication_->ServeReplica(std::move(moved), std::move(handoff_args_)),
                       asio::detached);
      }
      co_return;
    }
    logging::Warn("cannot hand a connection over", {{"error", ec.message()}});
  }
  std::error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

asio::awaitable<bool> Session::ProcessBuffered() {
  std::uint64_t commands = 0;
  bool keep_open = true;
  for (;;) {
    const auto status = NextRequest();
    if (status == resp::RequestParser::ParseStatus::kNeedMore) break;
    if (status == resp::RequestParser::ParseStatus::kError) {
      co_await FlushWrites();
      resp::AppendError(&out_, "ERR " + parser_.error());
      keep_open = false;
      break;
    }
    const CommandSpec* spec = dispatcher_.Lookup(args_[0]);
    const bool is_write = spec != nullptr && (spec->flags & kFlagWrite);
    // A read must see the writes queued before it: read-your-writes within a pipeline.
    if (!is_write && !queued_replies_.empty()) co_await FlushWrites();
    const auto started = std::chrono::steady_clock::now();
    Outcome outcome;
    if (spec != nullptr && (spec->flags & kFlagSnapshotRead) && !client_.transaction.open) {
      // Nothing is queued ahead of a read (flushed above), so it and the reads after it run
      // as one run, maybe on the read pool. (Inside MULTI the dispatcher queues them instead.)
      if (!co_await RunReads(spec, &commands)) co_return false;
    } else {
      ++commands;
      if (queued_replies_.empty()) {
        const std::size_t mark = out_.size();
        outcome = dispatcher_.Execute(spec, args_, client_, reads_, &out_);
        if (outcome.kind == Outcome::Kind::kWrite) {
          QueueWrite(std::move(outcome), spec, started);
        } else if (outcome.kind == Outcome::Kind::kReplied && !outcome.queued) {
          RecordCommand(spec, !IsErrorReply(out_, mark), started);
          RecordExecuted(outcome.executed.get());
        }
      } else {
        // Writes are queued, so even an immediate reply (a syntax error, NOAUTH) must wait its
        // turn behind theirs.
        auto reply = std::make_shared<std::string>();
        outcome = dispatcher_.Execute(spec, args_, client_, reads_, reply.get());
        if (outcome.kind == Outcome::Kind::kWrite) {
          QueueWrite(std::move(outcome), spec, started);
        } else {
          if (outcome.kind == Outcome::Kind::kReplied && !outcome.queued) {
            RecordCommand(spec, !IsErrorReply(*reply, 0), started);
            RecordExecuted(outcome.executed.get());
          }
          queued_replies_.push_back({false, std::move(reply), nullptr, spec, started, nullptr});
        }
      }
    }
    if (outcome.kind == Outcome::Kind::kDeferred) {
      co_await FlushWrites();
      // The client blocks: what it has been answered so far goes out now, as Redis sends it,
      // and CLIENT LIST shows the blocking command.
      client_.info.last_active = std::chrono::steady_clock::now();
      client_.info.blocked = true;
      Publish();
      if (!co_await WriteOut()) co_return false;
      const std::optional<std::string> reply = co_await AwaitDeferred(std::move(outcome.deferred));
      client_.info.blocked = false;
      if (!reply) co_return false;
      RecordCommand(spec, !IsErrorReply(*reply, 0), started);
      out_ += *reply;
    } else if (outcome.kind == Outcome::Kind::kHandoff) {
      RecordCommand(spec, true, started);
      co_await FlushWrites();
      if (!co_await WriteOut()) co_return false;
      handoff_ = true;
      handoff_args_ = args_;
      co_return false;
    }
    if (client_.close_after_reply) {
      keep_open = false;
      break;
    }
    if (OutputOverLimit()) co_return false;
    if (out_.size() > kSoftOutputBytes && !co_await WriteOut()) co_return false;
  }
  // Guarded here, not only inside: a read-only batch (every unpipelined GET) then makes no
  // coroutine frame for a flush with nothing to do. WriteOut releases the snapshot either way.
  if (!queued_replies_.empty()) co_await FlushWrites();
  client_.info.last_active = std::chrono::steady_clock::now();
  Publish();
  server_.CountTraffic(0, 0, commands);
  if (!co_await WriteOut()) co_return false;
  co_return keep_open;
}

// A deferred command may block for as long as its timeout, forever with WAIT's 0. Redis notices
// at once that a blocked client closed its connection and frees it; a session that only awaited
// the reply kept its connection, its max_clients slot and its memory until the reply came: for
// WAIT 1 0 without acknowledging replicas, never. So the session goes on reading while it waits,
// as Redis does: the bytes go to the parser, to run after the reply in order (bounded by
// max_query_buffer_bytes, Redis' query buffer limit), and EOF or an error ends the session at
// once, cancelling its wait in replication.
//
// The reply may be delivered on any thread, at any time: the delivery posts to this loop, stores
// the reply in `delivered` and cancels the pending read, the only operation on the socket while
// blocked. A read that completed just before still finds the reply stored when it resumes. Once
// the session is gone the delivery only fills `delivered` (its own, shared) and finds no session
// to wake. (Asio's awaitable operator || would need the deferred operation to support
// cancellation and runs both sides as child coroutines; a read loop is simpler.)
asio::awaitable<std::optional<std::string>> Session::AwaitDeferred(
    std::function<void(std::function<void(std::string)>)> deferred) {
  auto delivered = std::make_shared<std::optional<std::string>>();
  deferred(
      [delivered, executor = socket_.get_executor(), weak = weak_from_this()](std::string reply) {
        asio::post(executor, [delivered, weak, reply = std::move(reply)]() mutable {
          *delivered = std::move(reply);
          if (auto self = weak.lock()) {
            std::error_code ignored;
            self->socket_.cancel(ignored);
          }
        });
      });
  while (!*delivered) {
    auto [ec, n] = co_await socket_.async_read_some(asio::buffer(read_buffer_), kUseTuple);
    if (!ec) {
      server_.CountTraffic(n, 0, 0);
      parser_.Feed(std::string_view(read_buffer_.data(), n));
    }
    if (*delivered) break;
    if (!ec && !QueryBufferOverLimit()) continue;
    // The client went (EOF, reset, ForceClose) or sent too much: nothing waits for it any more.
    if (replication_ != nullptr) replication_->CancelWaits(client_.info.id);
    if (!ec) co_await WriteOut();  // the query buffer error
    co_return std::nullopt;
  }
  co_return std::move(*delivered);
}

bool Session::QueryBufferOverLimit() {
  if (parser_.buffered_bytes() <= options_.max_query_buffer_bytes) return false;
  logging::Warn("closing client: query buffer limit exceeded",
                {{"client", client_.info.addr},
                 {"limit_bytes", std::to_string(options_.max_query_buffer_bytes)}});
  resp::AppendError(&out_, "ERR Protocol error: query buffer limit exceeded (" +
                               std::to_string(options_.max_query_buffer_bytes) + " bytes)");
  return true;
}

resp::RequestParser::ParseStatus Session::NextRequest() {
  // Before AUTH, requests are held to what AUTH needs. Set per request: the AUTH just run may
  // have lifted it (a read run's further requests cannot change it).
  parser_.set_unauthenticated(AuthPending(dispatcher_.options(), client_));
  if (!lookahead_) return parser_.Next(&args_);
  const auto status = *lookahead_;
  lookahead_.reset();
  args_.swap(lookahead_args_);
  return status;
}

asio::awaitable<bool> Session::RunReads(const CommandSpec* first, std::uint64_t* commands) {
  using ParseStatus = resp::RequestParser::ParseStatus;
  std::size_t count = 0;
  auto take = [this, &count](const CommandSpec* spec) {
    if (read_run_.size() == count) read_run_.emplace_back();
    read_run_[count].spec = spec;
    read_run_[count].args.swap(args_);
    ++count;
  };
  take(first);
  // Gather what follows while it is a snapshot read too. The first other request (or a parse
  // error) is kept for NextRequest; kNeedMore consumed nothing.
  while (count < kMaxReadRun) {
    const ParseStatus status = parser_.Next(&args_);
    if (status == ParseStatus::kNeedMore) break;
    const CommandSpec* spec =
        status == ParseStatus::kCommand ? dispatcher_.Lookup(args_[0]) : nullptr;
    if (spec == nullptr || !(spec->flags & kFlagSnapshotRead)) {
      lookahead_ = status;
      lookahead_args_.swap(args_);
      break;
    }
    take(spec);
  }
  // Runs reads from `next` on, until the replies pass kSoftOutputBytes (or the client's limit, as
  // a read on the loop is checked after each command); returns where it stopped.
  const std::size_t pause_above =
      std::min<std::uint64_t>(kSoftOutputBytes, options_.client_output_buffer_limit_bytes);
  auto run = [this, count, pause_above](std::size_t next) {
    // Each read starts when the one before it finished: one clock read per read.
    auto started = std::chrono::steady_clock::now();
    while (next < count && out_.size() <= pause_above) {
      ParsedRead& read = read_run_[next++];
      const std::size_t mark = out_.size();
      const Outcome outcome = dispatcher_.Execute(read.spec, read.args, client_, reads_, &out_);
      if (outcome.kind != Outcome::Kind::kReplied) {  // kFlagSnapshotRead promises a reply
        resp::AppendError(&out_, "ERR internal error: a snapshot read did not reply");
      }
      started = RecordCommand(read.spec, !IsErrorReply(out_, mark), started);
    }
    return next;
  };
  asio::thread_pool* pool = count >= kMinPooledReadRun ? server_.read_pool() : nullptr;
  std::size_t done = 0;
  while (done < count) {
    if (pool == nullptr) {
      done = run(done);
    } else {
      // The snapshot is taken and released on the pool's thread (the storage counts the
      // snapshots each thread holds). While the run is away nothing else touches this
      // session's state: its coroutine is suspended until the pool posts it back.
      reads_.Release();
      const std::size_t from = done;
      co_await AsyncRunOn(
          *pool,
          [this, run, &done] {
            struct ReleaseAtExit {
              SnapshotLender& reads;
              ~ReleaseAtExit() { reads.Release(); }
            } release{reads_};
            done = run(done);
          },
          asio::use_awaitable);
      server_.CountPooledReads(done - from);
    }
    if (OutputOverLimit() || (done < count && !co_await WriteOut())) {
      *commands += done;
      co_return false;
    }
  }
  *commands += count;
  co_return true;
}

bool Session::OutputOverLimit() {
  if (out_.size() <= options_.client_output_buffer_limit_bytes) return false;
  reads_.Release();
  logging::Warn("closing client: output buffer limit exceeded",
                {{"client", client_.info.addr},
                 {"limit_bytes", std::to_string(options_.client_output_buffer_limit_bytes)}});
  return true;
}

void Session::QueueWrite(Outcome outcome, const CommandSpec* spec,
                         std::chrono::steady_clock::time_point started) {
  queued_writes_.push_back(std::move(outcome.write));
  queued_replies_.push_back({true, std::move(outcome.reply), std::move(outcome.logged), spec,
                             started, std::move(outcome.executed)});
}

std::chrono::steady_clock::time_point Session::RecordCommand(
    const CommandSpec* spec, bool ok, std::chrono::steady_clock::time_point started) {
  const auto finished = std::chrono::steady_clock::now();
  server_.mutable_command_metrics().Record(
      spec, ok, std::chrono::duration<double>(finished - started).count());
  return finished;
}

void Session::RecordExecuted(const std::vector<ExecutedCommand>* executed) {
  if (executed == nullptr) return;
  for (const ExecutedCommand& command : *executed) {
    server_.mutable_command_metrics().Record(command.spec, command.ok, command.seconds);
  }
}

asio::awaitable<void> Session::FlushWrites() {
  reads_.Release();  // never hold a snapshot while waiting (see SnapshotLender)
  if (queued_replies_.empty()) co_return;
  std::vector<Status> results;
  // Which writes committed, when sync mode waited: its refusal (NOREPLICAS) replaces the status
  // of a write that did, and an EXEC's commands count as run whenever its write did. Otherwise a
  // write committed when its status is ok.
  std::vector<bool> committed;
  if (!queued_writes_.empty()) {
    std::vector<WriteFn> writes;
    writes.swap(queued_writes_);
    std::uint64_t seq = 0;
    std::tie(results, seq) = co_await AsyncSubmit(engine_, std::move(writes), asio::use_awaitable);
    client_.last_write_seq = seq;
    // Checked here rather than only inside WaitForSyncReplicas: outside sync mode (the usual
    // case) no coroutine frame and no vectors are made for every flush.
    if (replication_ != nullptr && replication_->SyncReplicasRequired() > 0) {
      std::vector<bool> logged;
      for (const QueuedReply& queued : queued_replies_) {
        if (queued.from_engine) logged.push_back(queued.logged && *queued.logged);
      }
      for (const Status& result : results) committed.push_back(result.ok());
      co_await WaitForSyncReplicas(seq, logged, &results);
    }
  }
  std::size_t next_result = 0;
  for (const QueuedReply& queued : queued_replies_) {
    if (!queued.from_engine) {
      out_.append(*queued.reply);
      continue;
    }
    const Status status =
        next_result < results.size() ? results[next_result] : Status::IOError("write lost");
    const bool write_committed =
        next_result < committed.size() ? committed[next_result] : status.ok();
    ++next_result;
    const std::size_t mark = out_.size();
    AppendWriteResult(status, *queued.reply, &out_);
    RecordCommand(queued.spec, !IsErrorReply(out_, mark), queued.started);
    if (write_committed) RecordExecuted(queued.executed.get());
  }
  queued_replies_.clear();
}

// Sync mode: a write is answered once sync_replicas replicas acknowledged it; otherwise its
// reply becomes -NOREPLICAS (the write itself stays: it is durable here and replicates later).
asio::awaitable<void> Session::WaitForSyncReplicas(std::uint64_t seq,
                                                   const std::vector<bool>& logged,
                                                   std::vector<Status>* results) {
  const int required = replication_->SyncReplicasRequired();
  // Only writes that changed something wait: there is nothing to replicate for the others.
  auto waits = [&](std::size_t i) { return (*results)[i].ok() && i < logged.size() && logged[i]; };
  bool any = false;
  for (std::size_t i = 0; i < results->size(); ++i) any = any || waits(i);
  if (!any) co_return;
  // Replicas cut off (a partition, a stopped process) acknowledge nothing: once too few have
  // been heard from lately, a write is answered at once, not after sync_timeout_ms for each
  // batch of a pipeline (a 100-command pipeline took 50 s across a partition).
  const auto timeout = replication_->SyncTimeout();
  const bool cut_off = replication_->ResponsiveReplicas() < required;
  client_.info.blocked = true;  // CLIENT LIST's flags=b while it waits
  Publish();
  const std::string acked_text = co_await AsyncWaitForAcks(
      *replication_, seq, required, cut_off ? std::chrono::milliseconds(1) : timeout,
      client_.info.id, asio::use_awaitable);
  client_.info.blocked = false;
  const int acked = std::atoi(acked_text.c_str());
  if (acked >= required) co_return;
  const std::string why =
      cut_off ? " acknowledged (too few replicas were heard from in the last " +
                    std::to_string(replication_->ResponsiveWindow().count()) + " ms)"
              : " acknowledged within " + std::to_string(timeout.count()) + " ms";
  const Status refused =
      Status::Unavailable("NOREPLICAS Not enough good replicas to write: " + std::to_string(acked) +
                          " of " + std::to_string(required) + why +
                          " (the write is durable on the master and replicates later)");
  for (std::size_t i = 0; i < results->size(); ++i) {
    if (waits(i)) (*results)[i] = refused;
  }
}

asio::awaitable<bool> Session::WriteOut() {
  reads_.Release();  // never hold a snapshot while waiting (see SnapshotLender)
  if (out_.empty()) co_return true;
  state_ = State::kWriting;
  auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(out_), kUseTuple);
  state_ = State::kExecuting;
  server_.CountTraffic(0, n, 0);
  out_.clear();
  if (out_.capacity() > 4 * kSoftOutputBytes) out_.shrink_to_fit();
  co_return !ec;
}

}  // namespace kvstore
