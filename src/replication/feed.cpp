// The master's side of a replica connection (see feed.h and the protocol in replication.h).
#include "replication/feed.h"

#include <fmt/format.h>

#include <fstream>

#include "common/logging.h"
#include "log/log.h"
#include "replication/full_sync.h"
#include "replication/replication.h"
#include "replication/wire.h"

namespace kvstore {

using replication_wire::kUseTuple;

namespace {
// As Redis' repl-timeout: no acknowledgement for this long and the replica is considered gone.
constexpr std::chrono::seconds kAckTimeout{60};
}  // namespace

ReplicaFeed::ReplicaFeed(std::uint64_t id, asio::ip::tcp::socket socket,
                         ReplicationManager& manager)
    : id_(id), socket_(std::move(socket)), wake_(socket_.get_executor()), manager_(manager) {
  std::error_code ec;
  auto remote = socket_.remote_endpoint(ec);
  if (!ec) peer_ip_ = remote.address().to_string();
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
}

void ReplicaFeed::Wake() {
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    self->wake_pending_ = true;
    self->wake_.cancel();
  });
}

void ReplicaFeed::Close() {
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    self->closed_ = true;
    std::error_code ignored;
    self->socket_.close(ignored);
    self->wake_.cancel();
  });
}

void ReplicaFeed::SetState(const char* state) { manager_.SetFeedState(id_, state); }

asio::awaitable<bool> ReplicaFeed::Send(std::string bytes) {
  auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(bytes), kUseTuple);
  co_return !ec && !closed_;
}

asio::awaitable<void> ReplicaFeed::Run(std::vector<std::string> args) {
  // args: REPLSYNC <ordinal> <port> <epoch token> <seq>, already checked by the command layer.
  const int ordinal = std::stoi(args[1]);
  const int port = std::stoi(args[2]);
  const std::uint64_t replica_seq = std::stoull(args[4]);
  const std::string who = fmt::format("{}:{}", peer_ip_, port);
  auto token = ParseEpochToken(args[3]);
  if (!token.ok()) {
    std::string reply;
    resp::AppendError(&reply, "ERR " + token.status().message());
    co_await Send(std::move(reply));
    co_return;
  }
  if (auto refusal = manager_.FeedRefusal()) {
    std::string reply;
    resp::AppendError(&reply, *refusal);
    co_await Send(std::move(reply));
    co_return;
  }
  if (manager_.AwaitingReplicas()) {
    // This master started with an empty data directory and waits to hear what its replicas
    // hold (ReplicationManager::Start): one with data holds it; an empty one asks again later.
    std::string reply;
    resp::AppendError(
        &reply,
        replica_seq != 0
            ? manager_.HoldEmptyStart(who, fmt::format("epoch {}, sequence {}", args[3], args[4]))
            : "NOTMASTER this master started with an empty data directory and waits for "
              "its replicas to report their data before it serves them; try again");
    co_await Send(std::move(reply));
    co_return;
  }
  auto history = manager_.engine_.Epochs();
  std::uint64_t committed = manager_.engine_.committed_seq();
  if (!history.ok()) {
    std::string reply;
    resp::AppendError(&reply, "ERR " + history.status().message());
    co_await Send(std::move(reply));
    co_return;
  }
  if (history->empty() && replica_seq != 0) {
    // No epoch here (an empty start held or fenced, a failed install): a full resync would
    // replace the replica's data with nothing.
    std::string reply;
    resp::AppendError(&reply,
                      "NOTMASTER this pod holds no history yet (an empty store); it will "
                      "not resync a replica that holds data");
    co_await Send(std::move(reply));
    co_return;
  }
  Lineage lineage = CompareLineage(*history, committed, *token, replica_seq);
  if (lineage == Lineage::kNewerEpoch && manager_.CatchUpWithNewerReplica(who)) {
    // This pod handed the master role over (REPLFAILOVER) and its configuration names it the
    // master again (or still): the replica with the newer epoch is most likely the pod it
    // handed over to, holding the writes taken since. Resyncing it from here would erase them,
    // so this pod catches up with it first, as a promotion does, then serves it.
    std::string reply;
    resp::AppendError(&reply, "NOTMASTER this pod was fenced and is catching up with " + who +
                                  " (a newer epoch) before it takes the master role back");
    co_await Send(std::move(reply));
    co_return;
  }
  if (lineage == Lineage::kNewerEpoch && manager_.IsUnfencedMaster()) {
    // The configuration makes this pod the master, but the replica has seen a newer epoch
    // number: typically an old master that restarted (opening epochs) while this pod was down.
    // Epoch numbers of separate histories do not order them, so rather than refuse it forever,
    // open an epoch above the replica's: then it follows a master whose epoch is not older
    // than its own, and the lineage check below resyncs it (its newest epoch is not ours).
    logging::Warn("a replica has a newer epoch than ours; opening a newer one so it can follow",
                  {{"replica", who}, {"replica_epoch", args[3]}});
    if (Status s = manager_.OpenEpoch((*token)->number + 1); !s.ok()) {
      std::string reply;
      resp::AppendError(&reply, "ERR cannot open a new epoch: " + s.message());
      co_await Send(std::move(reply));
      co_return;
    }
    history = manager_.engine_.Epochs();
    committed = manager_.engine_.committed_seq();
    if (!history.ok()) co_return;
    lineage = CompareLineage(*history, committed, *token, replica_seq);
  }
  if (lineage == Lineage::kNewerEpoch) {
    const std::uint64_t mine = history->empty() ? 0 : history->back().number;
    logging::Warn("replica refused: its epoch is newer than ours",
                  {{"replica", who}, {"replica_epoch", args[3]}, {"epoch", std::to_string(mine)}});
    std::string reply;
    resp::AppendError(&reply, fmt::format("STALEMASTER this master's epoch {} is older than the "
                                          "replica's ({}); it will not serve it",
                                          mine, args[3]));
    co_await Send(std::move(reply));
    co_return;
  }
  const LogStats log = manager_.engine_.Stats().log;
  const bool continuable =
      lineage == Lineage::kOnHistory &&
      (replica_seq == committed || (log.first_seq != 0 && log.first_seq <= replica_seq + 1));
  // A replica in full resync has acknowledged nothing yet (WAIT and sync mode must not count it).
  if (!manager_.RegisterFeed(shared_from_this(), peer_ip_, port, ordinal,
                             continuable ? replica_seq + 1 : committed + 1,
                             continuable ? replica_seq : 0)) {
    std::string reply;
    resp::AppendError(&reply, "NOTMASTER this pod stopped being the master");
    co_await Send(std::move(reply));
    co_return;
  }
  asio::co_spawn(
      socket_.get_executor(), [self = shared_from_this()] { return self->ReadAcks(); },
      asio::detached);
  std::uint64_t next_seq = replica_seq + 1;
  if (continuable) sent_through_ = replica_seq;
  if (continuable) {
    logging::Info("replica attached: partial resync",
                  {{"replica", who}, {"from_seq", std::to_string(next_seq)}});
    if (!co_await Send("+CONTINUE " + std::to_string(next_seq) + "\r\n")) next_seq = 0;
  } else {
    logging::Info("replica attached: full resync",
                  {{"replica", who},
                   {"why", lineage == Lineage::kDiverged ? "its log is not on this master's history"
                                                         : "the log no longer holds its position"},
                   {"replica_seq", std::to_string(replica_seq)},
                   {"log_first_seq", std::to_string(log.first_seq)}});
    if (!co_await SendFullSync(&next_seq)) next_seq = 0;
    if (next_seq != 0) sent_through_ = next_seq - 1;  // the snapshot's position
  }
  if (next_seq != 0) co_await Stream(next_seq);
  std::error_code ignored;
  socket_.close(ignored);
  manager_.UnregisterFeed(id_);
  logging::Info("replica detached", {{"replica", who}});
}

asio::awaitable<bool> ReplicaFeed::SendFullSync(std::uint64_t* next_seq) {
  SetState("wait_bgsave");
  std::shared_ptr<FullSyncFile> file = manager_.full_sync_->Acquire();
  struct Releaser {
    ReplicationManager& manager;
    std::shared_ptr<FullSyncFile> file;
    ~Releaser() { manager.full_sync_->Release(file); }
  } releaser{manager_, file};
  asio::steady_timer poll(socket_.get_executor());
  while (!file->ready.load() && !closed_) {
    poll.expires_after(std::chrono::milliseconds(20));
    co_await poll.async_wait(kUseTuple);
  }
  if (closed_ || !file->status.ok()) co_return false;
  manager_.SetFeedNeeded(id_, file->seq + 1);
  SetState("send_bulk");
  if (!co_await Send(fmt::format("+FULLRESYNC {} {}\r\n", file->seq, file->bytes))) co_return false;
  std::ifstream in(file->path, std::ios::binary);
  if (!in) co_return false;
  std::string chunk(replication_wire::kMessageBytes, '\0');
  while (in) {
    chunk[0] = replication_wire::kSnapshotChunk;
    in.read(chunk.data() + 1, static_cast<std::streamsize>(chunk.size() - 1));
    const auto n = static_cast<std::size_t>(in.gcount());
    if (n == 0) break;
    std::string message;
    resp::AppendBulkString(&message, std::string_view(chunk.data(), n + 1));
    if (!co_await Send(std::move(message))) co_return false;
  }
  *next_seq = file->seq + 1;
  co_return true;
}

asio::awaitable<void> ReplicaFeed::Stream(std::uint64_t next_seq) {
  SetState("online");
  Engine& engine = manager_.engine_;
  // The cursor keeps its file open and its offset, so each round reads only the new bytes.
  auto cursor = engine.OpenLogCursor(next_seq);
  if (!cursor.ok()) {
    logging::Warn("replica fell behind the retained log; it will get a full resync",
                  {{"next_seq", std::to_string(next_seq)}, {"error", cursor.status().message()}});
    co_return;
  }
  std::string payload;
  while (!closed_) {
    // Read first: every client counted here waits for sequences up to committed at most.
    const std::uint64_t ack_requests = manager_.AckRequests();
    const std::uint64_t committed = engine.committed_seq();
    if ((*cursor)->next_seq() <= committed) {
      payload.assign(1, replication_wire::kLogRecords);
      const std::uint64_t first = (*cursor)->next_seq();
      Status s = (*cursor)->NextRecords(committed, replication_wire::kMessageBytes, &payload);
      if (s.IsNotFound()) {
        logging::Warn("replica fell behind the retained log; it will get a full resync",
                      {{"next_seq", std::to_string(first)}, {"error", s.message()}});
        co_return;
      }
      if (!s.ok()) {
        logging::Error("cannot read the log for a replica", {{"error", s.ToString()}});
        co_return;
      }
      if ((*cursor)->next_seq() == first) {
        // Committed but not readable yet would be a bug; wait for the next wake-up rather than
        // spin.
        logging::Warn("log cursor made no progress", {{"next_seq", std::to_string(first)}});
      } else {
        std::string message;
        message.reserve(payload.size() + 24);
        resp::AppendBulkString(&message, payload);
        // Sync mode: every write waits for acknowledgements, so ask for one with the records
        // (the replica reads both at once and syncs them in one commit, instead of deferring the
        // records' fsync and syncing again when the request follows).
        if (manager_.SyncReplicasRequired() > 0) {
          message += replication_wire::AckRequest();
          if ((*cursor)->next_seq() > committed) ack_requests_sent_ = ack_requests;
        }
        // Set before the send: the acknowledgement may be read before the send resumes us.
        sent_through_ = (*cursor)->next_seq() - 1;
        if (!co_await Send(std::move(message))) co_return;
        continue;
      }
    }
    // Everything committed is sent. A client waiting for acknowledgements of it gets them
    // without the replica's fsync delay. (While the feed is behind, its replica acknowledges
    // after that delay instead: with a backlog the transfer dominates anyway.)
    if (ack_requests > ack_requests_sent_) {
      ack_requests_sent_ = ack_requests;
      if (!co_await Send(replication_wire::AckRequest())) co_return;
      continue;
    }
    if (wake_pending_) {
      wake_pending_ = false;
      continue;
    }
    wake_.expires_after(manager_.options_.heartbeat);
    auto [ec] = co_await wake_.async_wait(kUseTuple);
    if (!ec && !closed_) {  // idle for a heartbeat period
      // A replica that stopped acknowledging (a dead host, a partition without a reset) would
      // otherwise pin the log until the send buffer fills, which can take very long.
      if (manager_.FeedAckAge(id_) > kAckTimeout) {
        logging::Warn("replica stopped acknowledging; closing its stream",
                      {{"replica", peer_ip_}, {"timeout_s", std::to_string(kAckTimeout.count())}});
        co_return;
      }
      if (!co_await Send(replication_wire::Heartbeat(engine.committed_seq()))) co_return;
    }
  }
}

asio::awaitable<void> ReplicaFeed::ReadAcks() {
  resp::RequestParser parser;
  std::vector<std::string> args;
  std::vector<char> buffer(4096);
  while (!closed_) {
    auto [ec, n] = co_await socket_.async_read_some(asio::buffer(buffer), kUseTuple);
    if (ec) break;
    parser.Feed(std::string_view(buffer.data(), n));
    resp::RequestParser::ParseStatus status;
    while ((status = parser.Next(&args)) == resp::RequestParser::ParseStatus::kCommand) {
      std::int64_t seq = 0;
      if (args.size() == 3 && resp::ParseInteger(args[2], &seq) && seq >= 0) {
        // Never beyond what was sent: an acknowledgement of more (a confused or forged peer)
        // would count toward WAIT and sync mode for writes the replica does not have.
        manager_.OnAck(id_, std::min(static_cast<std::uint64_t>(seq), sent_through_.load()));
      }
    }
    if (status == resp::RequestParser::ParseStatus::kError) break;
  }
  // The replica went away (or spoke garbage): stop the sender too.
  closed_ = true;
  std::error_code ignored;
  socket_.close(ignored);
  wake_.cancel();
}

}  // namespace kvstore
