// The replica's side of replication (see link.h and the protocol in replication.h).
#include "replication/link.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/logging.h"
#include "log/log.h"
#include "replication/off_strand.h"
#include "replication/replication.h"
#include "replication/wire.h"
#include "snapshot/snapshot_format.h"

namespace kvstore {

std::string IncomingSnapshotPath(const std::string& data_dir) {
  return data_dir + "/replication/incoming.kvsnap";
}

using replication_wire::kUseTuple;

namespace {

// Applies queued at once before the link stops reading (TCP backpressure then slows the
// master's feed): bounds the memory a fast master can make a slow replica hold.
constexpr int kMaxAppliesInFlight = 64;
// Units larger than this are applied by the engine's writer thread, not the link's event loop.
constexpr std::size_t kLargeApplyBytes = 8 << 20;
// No byte from the master for this long (heartbeats come every second): the link is dead.
constexpr std::chrono::seconds kLinkTimeout{5};
constexpr std::chrono::seconds kConnectTimeout{5};

class CheckOnly : public SnapshotVisitor {
 public:
  Status OnHeader(std::uint64_t, std::string_view) override { return Status::Ok(); }
  Status OnPair(std::string_view, std::string_view) override { return Status::Ok(); }
  Status OnEnd(std::uint64_t) override { return Status::Ok(); }
};

}  // namespace

ReplicaLink::ReplicaLink(asio::io_context& io, ReplicationManager& manager,
                         std::string master_address, std::shared_ptr<ReplicaLink> predecessor)
    : io_(io),
      manager_(manager),
      master_address_(std::move(master_address)),
      predecessor_(std::move(predecessor)),
      strand_(asio::make_strand(io)),
      socket_(strand_),
      timer_(strand_) {
  status_.master_address = master_address_;
  // Counters carry over at once, so that INFO and the metrics never see them drop.
  if (predecessor_) {
    const LinkStatus before = predecessor_->Snapshot();
    inherited_full_resyncs_ = status_.full_resyncs = before.full_resyncs;
    inherited_partial_resyncs_ = status_.partial_resyncs = before.partial_resyncs;
    waiting_for_ = predecessor_;
  }
}

asio::awaitable<void> ReplicaLink::AwaitFinished(std::shared_ptr<ReplicaLink> link) {
  if (!link || link->finished_.load()) co_return;
  logging::Info("replication link: waiting for the previous link to finish",
                {{"master", link->master_address_}});
  asio::steady_timer poll(co_await asio::this_coro::executor);
  while (!link->finished_.load()) {
    poll.expires_after(std::chrono::milliseconds(2));
    co_await poll.async_wait(kUseTuple);
  }
}

void ReplicaLink::Start() {
  asio::co_spawn(
      strand_, [self = shared_from_this()] { return self->Run(); }, asio::detached);
}

void ReplicaLink::Stop() {
  asio::post(strand_, [self = shared_from_this()] {
    self->stopped_ = true;
    std::error_code ignored;
    self->socket_.close(ignored);
    self->timer_.cancel();
  });
}

LinkStatus ReplicaLink::Snapshot() const {
  LinkStatus status;
  std::shared_ptr<const ReplicaLink> waiting_for;
  {
    std::lock_guard lock(mu_);
    status = status_;
    waiting_for = waiting_for_;
  }
  // A copy the predecessor is still installing is this pod's full resync until it is done.
  if (waiting_for) {
    const LinkStatus before = waiting_for->Snapshot();
    if (before.state == LinkState::kSync) {
      status.state = LinkState::kSync;
      status.sync_total_bytes = before.sync_total_bytes;
      status.sync_read_bytes = before.sync_read_bytes;
    }
  }
  return status;
}

void ReplicaLink::Fail(std::string why) {
  logging::Warn("replication link: " + why, {{"master", master_address_}});
  std::lock_guard lock(mu_);
  status_.last_error = std::move(why);
}

void ReplicaLink::Heard() {
  std::lock_guard lock(mu_);
  status_.last_io = std::chrono::steady_clock::now();
  status_.ever_io = true;
}

asio::awaitable<void> ReplicaLink::Run() {
  // Set however Run ends, an exception included (the coroutine is detached, so the exception
  // would vanish): a link replacing this one, or a promotion, waits for this flag.
  struct MarkFinished {
    std::atomic<bool>& finished;
    ~MarkFinished() { finished = true; }
  } mark_finished{finished_};
  try {
    co_await RunSessions();
  } catch (const std::exception& e) {
    logging::Error("replication link failed", {{"master", master_address_}, {"error", e.what()}});
  }
  co_await WaitForApplies();
}

asio::awaitable<void> ReplicaLink::RunSessions() {
  // Even when stopped meanwhile: a link that replaces this one waits for this one only.
  if (auto predecessor = std::move(predecessor_)) {
    co_await AwaitFinished(predecessor);
    // The counters taken over at construction, plus what the predecessor did since.
    const LinkStatus after = predecessor->Snapshot();
    std::lock_guard lock(mu_);
    status_.full_resyncs += after.full_resyncs - inherited_full_resyncs_;
    status_.partial_resyncs += after.partial_resyncs - inherited_partial_resyncs_;
    waiting_for_.reset();
  }
  auto backoff = manager_.options_.reconnect_min;
  while (!stopped_) {
    const std::uint64_t attached_before = Snapshot().full_resyncs + Snapshot().partial_resyncs;
    co_await Session();
    {
      std::lock_guard lock(mu_);
      status_.up = false;
      status_.state = LinkState::kConnect;
    }
    if (stopped_) break;
    // A link that got as far as streaming starts over quickly; one that keeps failing backs
    // off, also when what failed was the stream's data (damaged records from the master,
    // applies that do not fit): starting over at once would read the same megabyte again ten
    // times a second.
    const std::uint64_t attached_after = Snapshot().full_resyncs + Snapshot().partial_resyncs;
    const bool data_failed = stream_damaged_ || apply_failed_.load();
    if (attached_after != attached_before && !data_failed) {
      backoff = manager_.options_.reconnect_min;
    }
    timer_.expires_after(backoff);
    co_await timer_.async_wait(kUseTuple);
    backoff = std::min(backoff * 2, manager_.options_.reconnect_max);
  }
}

asio::awaitable<void> ReplicaLink::WaitForApplies() {
  // Completions of the previous connection's applies must land before the position is read
  // again, or the master would be asked for entries that are already queued here.
  asio::steady_timer poll(strand_);
  while (applies_in_flight_.load() > 0) {
    poll.expires_after(std::chrono::milliseconds(1));
    co_await poll.async_wait(kUseTuple);
  }
  // The master counts the position a replica attaches with as acknowledged, so what is applied
  // must be durable too: applies of an earlier link may still wait for their fsync
  // (replica_sync_delay_ms), and a barrier ends that wait. Bounded: a failed fsync never
  // makes them durable (Session then refuses to attach).
  Engine& engine = manager_.engine_;
  if (engine.durable_seq() >= engine.committed_seq()) co_return;
  auto synced = std::make_shared<std::atomic<bool>>(false);
  engine.Submit(
      {}, [synced](std::vector<Status>, std::uint64_t) { synced->store(true); },
      Engine::Origin::kReplication);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!synced->load() && std::chrono::steady_clock::now() < deadline) {
    poll.expires_after(std::chrono::milliseconds(1));
    co_await poll.async_wait(kUseTuple);
  }
}

asio::awaitable<std::optional<resp::Value>> ReplicaLink::ReadValue(const char* what) {
  std::vector<char> buffer(64 * 1024);
  for (;;) {
    resp::Value value;
    switch (parser_.Next(&value)) {
      case resp::ReplyParser::ParseStatus::kValue:
        co_return value;
      case resp::ReplyParser::ParseStatus::kError:
        Fail(fmt::format("malformed {} from the master: {}", what, parser_.error()));
        co_return std::nullopt;
      case resp::ReplyParser::ParseStatus::kNeedMore:
        break;
    }
    timer_.expires_after(kLinkTimeout);
    timer_.async_wait([self = shared_from_this(), connection = connection_](std::error_code ec) {
      if (ec || connection != self->connection_) return;
      std::error_code ignored;
      self->socket_.close(ignored);
    });
    const auto started = std::chrono::steady_clock::now();
    auto [ec, n] = co_await socket_.async_read_some(asio::buffer(buffer), kUseTuple);
    timer_.cancel();
    if (ec) {
      // A failed apply closed the socket, and said why already.
      if (stopped_ || apply_failed_.load()) co_return std::nullopt;
      if (std::chrono::steady_clock::now() - started >= kLinkTimeout) {
        Fail(
            fmt::format("no data from the master for {} s while waiting for {} (it sends a "
                        "heartbeat every second): the link is dead",
                        kLinkTimeout.count(), what));
      } else {
        Fail(fmt::format("connection lost while waiting for {}: {}", what, ec.message()));
      }
      co_return std::nullopt;
    }
    Heard();
    parser_.Feed(std::string_view(buffer.data(), n));
  }
}

asio::awaitable<void> ReplicaLink::Session() {
  ++connection_;
  co_await WaitForApplies();
  if (Engine& engine = manager_.engine_; engine.durable_seq() < engine.committed_seq()) {
    Fail(
        fmt::format("applied entries up to {} are not durable here (only up to {}): writes "
                    "are disabled after a storage error; see the log",
                    engine.committed_seq(), engine.durable_seq()));
    co_return;
  }
  apply_failed_ = false;
  stream_damaged_ = false;
  ack_writing_ = false;
  acked_ = ack_wanted_ = 0;
  unit_so_far_.clear();  // a new stream starts at this pod's position: where a unit ends
  resp::ParserLimits limits;
  limits.max_bulk_bytes = std::size_t{2} << 30;  // one log record may hold a 512 MiB value
  parser_ = resp::ReplyParser(limits);
  {
    std::lock_guard lock(mu_);
    status_.state = LinkState::kConnecting;
  }
  std::string host, port;
  if (!replication_wire::SplitAddress(master_address_, &host, &port)) {
    Fail("invalid master address \"" + master_address_ + "\": expected host:port");
    co_return;
  }
  asio::ip::tcp::resolver resolver(strand_);
  auto [rec, endpoints] = co_await resolver.async_resolve(host, port, kUseTuple);
  if (rec || stopped_) {
    if (!stopped_) Fail("cannot resolve " + host + ": " + rec.message());
    co_return;
  }
  std::error_code ignored;
  socket_.close(ignored);
  timer_.expires_after(kConnectTimeout);
  timer_.async_wait([self = shared_from_this(), connection = connection_](std::error_code ec) {
    if (ec || connection != self->connection_) return;
    std::error_code ignored_inner;
    self->socket_.close(ignored_inner);
  });
  auto [cec, endpoint] = co_await asio::async_connect(socket_, endpoints, kUseTuple);
  timer_.cancel();
  if (cec || stopped_) {
    if (!stopped_) Fail("cannot connect to " + master_address_ + ": " + cec.message());
    co_return;
  }
  socket_.set_option(asio::ip::tcp::no_delay(true), ignored);

  Engine& engine = manager_.engine_;
  const ReplicationOptions& options = manager_.options_;
  std::optional<Epoch> newest;
  if (auto history = engine.Epochs(); history.ok() && !history->empty()) newest = history->back();
  const std::uint64_t position = engine.committed_seq();
  std::string hello;
  if (!options.password.empty()) hello += resp::EncodeCommand({"AUTH", options.password});
  hello += resp::EncodeCommand({"REPLSYNC", std::to_string(options.ordinal),
                                std::to_string(options.announce_port), EpochToken(newest),
                                std::to_string(position)});
  if (auto [wec, wn] = co_await asio::async_write(socket_, asio::buffer(hello), kUseTuple); wec) {
    Fail("cannot send the handshake: " + wec.message());
    co_return;
  }
  if (!options.password.empty()) {
    auto auth = co_await ReadValue("the AUTH reply");
    if (!auth) co_return;
    if (auth->is_error()) {
      Fail("the master refused our password: " + auth->str);
      co_return;
    }
  }
  auto reply = co_await ReadValue("the REPLSYNC reply");
  if (!reply) co_return;
  if (reply->is_error()) {
    Fail("the master refused to serve us: " + reply->str);
    co_return;
  }
  std::uint64_t a = 0, b = 0;
  char kind[16] = {};
  if (std::sscanf(reply->str.c_str(), "%15s %lu %lu", kind, &a, &b) < 2) {
    Fail("unexpected REPLSYNC reply: " + reply->str);
    co_return;
  }
  // Attached: from now on this pod's log follows the new master's history, so a demoted master
  // must stop serving its old replicas before anything of it is applied (or installed).
  manager_.OnLinkAttached();
  if (std::string_view(kind) == "CONTINUE") {
    if (a != position + 1) {
      Fail(fmt::format("the master continues from {} but we asked for {}", a, position + 1));
      co_return;
    }
    expected_seq_ = a;
    logging::Info("replication link: partial resync",
                  {{"master", master_address_}, {"from_seq", std::to_string(a)}});
    std::lock_guard lock(mu_);
    ++status_.partial_resyncs;
  } else if (std::string_view(kind) == "FULLRESYNC") {
    {
      std::lock_guard lock(mu_);
      status_.full_resync_pending = true;
    }
    if (!co_await ReceiveFullSync(a, b)) co_return;
    {
      std::lock_guard lock(mu_);
      ++status_.full_resyncs;
      status_.full_resync_pending = false;
    }
    // Installed, but replaced meanwhile: the link that replaces this one takes over from here.
    if (stopped_) co_return;
    expected_seq_ = a + 1;
  } else {
    Fail("unexpected REPLSYNC reply: " + reply->str);
    co_return;
  }
  {
    std::lock_guard lock(mu_);
    status_.state = LinkState::kConnected;
    status_.up = true;
    status_.attached = true;
    status_.last_error.clear();
    // What this master says now: its sequence may be below an earlier session's (after a
    // restore, or another master), and a stale maximum would show a lag that never ends.
    status_.master_seq = status_.received_seq = expected_seq_ - 1;
  }
  SendAck(engine.durable_seq());
  for (;;) {
    auto message = co_await ReadValue("the replication stream");
    if (!message) break;
    if (message->type != resp::Value::Type::kBulkString || message->str.empty()) {
      Fail("unexpected message on the replication stream");
      break;
    }
    const char what = message->str[0];
    if (what == replication_wire::kLogRecords) {
      if (!co_await Apply(std::string_view(message->str).substr(1))) break;
    } else if (what == replication_wire::kHeartbeat && message->str.size() == 9) {
      const std::uint64_t master_seq = coding::DecodeFixed64(message->str.data() + 1);
      {
        std::lock_guard lock(mu_);
        status_.master_seq = std::max(status_.master_seq, master_seq);
      }
      // Keeps the master's view of this replica fresh (min_replicas_max_lag, its 60 s
      // acknowledgement timeout) while nothing new is acknowledged: when the stream is idle,
      // and while the writer thread applies a transaction of gigabytes, which can take longer
      // than that timeout (an apply's own acknowledgement follows when it is done).
      SendAck(engine.durable_seq(), /*keepalive=*/true);
    } else if (what == replication_wire::kAckRequest && message->str.size() == 1) {
      RequestDurableAck();
    } else {
      Fail("unexpected message on the replication stream");
      break;
    }
  }
  socket_.close(ignored);
}

asio::awaitable<bool> ReplicaLink::ReceiveFullSync(std::uint64_t seq, std::uint64_t bytes) {
  {
    std::lock_guard lock(mu_);
    status_.state = LinkState::kSync;
    status_.sync_total_bytes = bytes;
    status_.sync_read_bytes = 0;
  }
  const auto started = std::chrono::steady_clock::now();
  logging::Info("replication link: full resync started", {{"master", master_address_},
                                                          {"seq", std::to_string(seq)},
                                                          {"bytes", std::to_string(bytes)}});
  const std::string path = IncomingSnapshotPath(manager_.options_.data_dir);
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  struct Remover {
    std::string path;
    ~Remover() {
      std::error_code ignored;
      std::filesystem::remove(path, ignored);
    }
  } remover{path};
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) {
      Fail("cannot create " + path);
      co_return false;
    }
    SnapshotDecoder decoder;
    CheckOnly check;
    while (!decoder.finished()) {
      auto message = co_await ReadValue("the full-resync snapshot");
      if (!message) co_return false;
      if (message->type != resp::Value::Type::kBulkString || message->str.empty() ||
          message->str[0] != replication_wire::kSnapshotChunk) {
        Fail("unexpected message during the full-resync snapshot");
        co_return false;
      }
      std::string_view data = std::string_view(message->str).substr(1);
      if (Status s = decoder.Feed(data, check); !s.ok()) {
        Fail("the full-resync snapshot is damaged: " + s.message());
        co_return false;
      }
      out.write(data.data(), static_cast<std::streamsize>(data.size()));
      if (!out) {
        Fail("cannot write " + path + " (disk full?)");
        co_return false;
      }
      std::lock_guard lock(mu_);
      status_.sync_read_bytes = decoder.bytes_fed();
    }
    if (decoder.bytes_fed() != bytes) {
      Fail(fmt::format("the full-resync snapshot has {} bytes, the master announced {}",
                       decoder.bytes_fed(), bytes));
      co_return false;
    }
  }
  // Checked completely: now replace the key space, off the io threads (it is a big transaction).
  Engine* engine = &manager_.engine_;
  auto next_keepalive = std::chrono::steady_clock::now();
  // Named, not temporaries in the co_await expression: GCC 12 destroys such temporaries twice.
  std::function<Status()> install = [engine, path] { return engine->InstallSnapshot(path); };
  std::function<void()> keepalive = [this, &next_keepalive] {
    // A big install takes a while: tell the master this replica is alive (its ack timeout).
    if (std::chrono::steady_clock::now() < next_keepalive) return;
    SendAck(0, /*keepalive=*/true);
    next_keepalive += std::chrono::seconds(1);
  };
  const Status installed = co_await RunOffStrand<Status>(std::move(install), std::move(keepalive));
  if (!installed.ok()) {
    Fail("cannot install the full-resync snapshot: " + installed.message());
    co_return false;
  }
  logging::Info(
      "replication link: full resync done",
      {{"master", master_address_},
       {"seq", std::to_string(seq)},
       {"bytes", std::to_string(bytes)},
       {"seconds",
        fmt::format(
            "{:.3f}",
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count())}});
  co_return true;
}

asio::awaitable<bool> ReplicaLink::Apply(std::string_view records) {
  // The records of a unit whose last record has not arrived yet wait in unit_so_far_ (log.h):
  // the master cuts its stream by size, and applying part of an MSET or EXEC would show it.
  // They are appended to it in place and moved out once, so a unit of millions of records
  // costs time linear in its size. The records are checked here and then applied and logged
  // exactly as the master stored them (WriteContext::ApplyLogged), never decoded into copies.
  std::string& pending = unit_so_far_;
  std::size_t whole_bytes = 0;  // of pending + records: the part that ends a unit
  std::size_t offset = pending.size();
  std::string gap;
  Status decoded = DecodeLogRecordViews(records, [&](const LogRecordView& record) {
    if (record.seq != expected_seq_) {
      gap = fmt::format("gap in the replication stream: expected sequence {}, got {}",
                        expected_seq_, record.seq);
      return false;
    }
    ++expected_seq_;
    offset += record.stored.size();
    if (!record.continued) whole_bytes = offset;
    return true;
  });
  if (!decoded.ok() || !gap.empty()) {
    stream_damaged_ = true;
    Fail(gap.empty() ? fmt::format("damaged log records from the master at sequence {}: {}",
                                   expected_seq_, decoded.message())
                     : gap);
    co_return false;
  }
  {
    std::lock_guard lock(mu_);
    status_.master_seq = std::max(status_.master_seq, expected_seq_ - 1);
    status_.received_seq = expected_seq_ - 1;
  }
  pending.append(records);
  if (whole_bytes == 0) {
    // Everything so far is inside one unit: nothing to apply, so nothing to acknowledge, until
    // its last record arrives. A transaction of gigabytes can stream for longer than the
    // master's acknowledgement timeout.
    KeepAlive();
    co_return true;
  }
  auto whole = std::make_shared<std::string>(std::move(pending));
  pending.assign(*whole, whole_bytes);  // the next unit's first records, if any
  whole->resize(whole_bytes);
  asio::steady_timer poll(strand_);
  while (applies_in_flight_.load() >= kMaxAppliesInFlight && !apply_failed_.load()) {
    KeepAlive();  // the applies ahead may take longer than the master's acknowledgement timeout
    poll.expires_after(std::chrono::milliseconds(1));
    co_await poll.async_wait(kUseTuple);
  }
  if (apply_failed_.load()) co_return false;
  applies_in_flight_.fetch_add(1);
  // Checked as they arrived (above).
  WriteFn apply = [whole](WriteContext& context) { return ApplyLoggedRecords(context, *whole); };
  // Usually enqueued, not submitted: the link runs on an event loop, which commits the batch at
  // the end of its pass on this thread (as client writes are), instead of waking the writer
  // thread and being woken back for every batch. A large transaction's unit goes to the writer
  // thread instead: applying it takes the loop seconds per gigabyte, and the loop serves this
  // replica's readers (a loop never waits for the writer role, so it keeps serving meanwhile).
  WriteDone applied = [self = shared_from_this(), connection = connection_](
                          std::vector<Status> statuses, std::uint64_t committed) {
    Status s = statuses.empty() ? Status::IOError("apply lost") : statuses[0];
    asio::post(self->strand_, [self, connection, committed, s] {
      self->applies_in_flight_.fetch_sub(1);
      if (!s.ok()) {
        // Only the first failure of a connection says why: the applies queued behind it fail
        // because it did ("does not follow this pod's last entry"), and would hide the cause
        // (a full disk, say) from INFO's link error.
        if (!self->apply_failed_.exchange(true)) {
          self->Fail("cannot apply replicated entries: " + s.ToString());
        }
        if (connection == self->connection_) {
          std::error_code ignored;
          self->socket_.close(ignored);
        }
        return;
      }
      if (connection == self->connection_) self->SendAck(committed);
    });
  };
  if (whole->size() > kLargeApplyBytes) {
    manager_.engine_.Submit({std::move(apply)}, std::move(applied), Engine::Origin::kReplicaApply);
  } else {
    manager_.engine_.Enqueue({std::move(apply)}, std::move(applied), Engine::Origin::kReplicaApply);
  }
  co_return true;
}

// An acknowledgement request: a barrier behind the applies queued so far makes them durable now
// (it ends the engine's wait for more batches to share an fsync), then the position is acked.
void ReplicaLink::RequestDurableAck() {
  manager_.engine_.Enqueue(
      {},
      [self = shared_from_this(), connection = connection_](std::vector<Status>, std::uint64_t) {
        asio::post(self->strand_, [self, connection] {
          // durable_seq(), not the barrier's committed sequence: a failed fsync leaves that
          // ahead of what is durable for good.
          if (connection == self->connection_) self->SendAck(self->manager_.engine_.durable_seq());
        });
      },
      Engine::Origin::kReplication);
}

void ReplicaLink::KeepAlive() {
  const auto now = std::chrono::steady_clock::now();
  if (now < next_keepalive_) return;
  next_keepalive_ = now + std::chrono::seconds(1);
  SendAck(manager_.engine_.durable_seq(), /*keepalive=*/true);
}

void ReplicaLink::SendAck(std::uint64_t seq, bool keepalive) {
  ack_wanted_ = std::max(ack_wanted_, seq);
  // An acknowledgement already on its way refreshes the master's view just as well.
  if (ack_writing_ || !socket_.is_open()) return;
  if (ack_wanted_ <= acked_ && !keepalive) return;
  ack_writing_ = true;
  acked_ = ack_wanted_;
  ack_buffer_ = replication_wire::Ack(acked_);
  asio::async_write(
      socket_, asio::buffer(ack_buffer_),
      asio::bind_executor(strand_, [self = shared_from_this(), connection = connection_](
                                       std::error_code ec, std::size_t) {
        if (connection != self->connection_) return;
        self->ack_writing_ = false;
        if (!ec) self->SendAck(self->ack_wanted_);
      }));
}

}  // namespace kvstore
