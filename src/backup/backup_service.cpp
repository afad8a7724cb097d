// The backup streams (see backup_service.h). SNAPSHOT serves a file written by FullSyncSource
// from one LMDB read transaction: the read transaction lasts as long as writing the file to
// local disk, not as long as the (possibly slow) transfer to the client, which bounds LMDB's
// growth under writes (docs/BACKUP.md measures it); the cost is one snapshot's size of disk.
#include "backup/backup_service.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <asio/experimental/as_tuple.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "common/logging.h"
#include "kvstore/resp.h"
#include "replication/full_sync.h"
#include "replication/off_strand.h"
#include "replication/replication.h"
#include "snapshot/snapshot_format.h"

namespace kvstore {
namespace {

constexpr auto kUseTuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t kChunkBytes = 1 << 20;
// How long, and how much, a refused restore's remaining input is read and dropped (see
// DrainThenClose).
constexpr std::chrono::seconds kDrainTime{2};
constexpr std::uint64_t kDrainBytes = 256ull << 20;

// Closes the socket when an operation does not complete within the timeout. Everything runs on
// the socket's executor; the shared state outlives a handler that fires after the destructor.
class Watchdog {
 public:
  Watchdog(asio::ip::tcp::socket& socket, std::chrono::milliseconds timeout)
      : state_(std::make_shared<State>(State{&socket, 0})),
        timer_(socket.get_executor()),
        timeout_(timeout) {}
  ~Watchdog() {
    state_->socket = nullptr;
    timer_.cancel();
  }
  void Arm() {
    const std::uint64_t generation = ++state_->generation;
    timer_.expires_after(timeout_);
    timer_.async_wait([state = state_, generation](std::error_code ec) {
      if (ec || state->socket == nullptr || state->generation != generation) return;
      std::error_code ignored;
      state->socket->close(ignored);
    });
  }
  void Disarm() {
    ++state_->generation;
    timer_.cancel();
  }

 private:
  struct State {
    asio::ip::tcp::socket* socket;
    std::uint64_t generation;
  };
  std::shared_ptr<State> state_;
  asio::steady_timer timer_;
  std::chrono::milliseconds timeout_;
};

asio::awaitable<bool> Send(asio::ip::tcp::socket& socket, Watchdog& watchdog, std::string bytes) {
  watchdog.Arm();
  auto [ec, n] = co_await asio::async_write(socket, asio::buffer(bytes), kUseTuple);
  watchdog.Disarm();
  co_return !ec;
}

void Close(asio::ip::tcp::socket& socket) {
  std::error_code ignored;
  socket.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
}

// After an error reply to a client that may still be sending (a restore refused part-way):
// closing a socket with unread input makes the kernel send a reset, and the client then gets
// "connection reset" or "broken pipe" instead of the reply. So the send side is shut (the client
// reads the reply, then end of stream), and what arrives is dropped until the client closes,
// for at most kDrainTime and kDrainBytes.
asio::awaitable<void> DrainThenClose(asio::ip::tcp::socket& socket) {
  std::error_code ignored;
  socket.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  Watchdog deadline(socket, kDrainTime);
  deadline.Arm();
  std::vector<char> buffer(256 << 10);
  std::uint64_t drained = 0;
  while (drained < kDrainBytes) {
    auto [ec, n] = co_await socket.async_read_some(asio::buffer(buffer), kUseTuple);
    if (ec) break;
    drained += n;
  }
  Close(socket);
}

// An online restore's snapshot, stored aside until it is installed.
std::string RestorePath(const std::string& data_dir) {
  return data_dir + "/replication/restore.kvsnap";
}

// "2026-11-25T03:17:00Z": a backup header's `created`.
std::string UtcTime(std::chrono::system_clock::time_point when) {
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}",
                     fmt::gmtime(std::chrono::system_clock::to_time_t(when)));
}

std::string ErrorReply(std::string_view message) {
  std::string out;
  resp::AppendError(&out, message);
  return out;
}

// Records the snapshot header's sequence and epoch history and the end frame's key count.
class HeaderReader : public SnapshotVisitor {
 public:
  Status OnHeader(std::uint64_t applied_seq, std::string_view meta) override {
    seq = applied_seq;
    this->meta = meta;
    header = true;
    return Status::Ok();
  }
  Status OnPair(std::string_view, std::string_view) override { return Status::Ok(); }
  Status OnEnd(std::uint64_t keys) override {
    this->keys = keys;
    return Status::Ok();
  }
  bool header = false;
  std::uint64_t seq = 0, keys = 0;
  std::string meta;
};

// "<number>:<id hex>" of the newest epoch in a snapshot file's header, or "-".
Result<std::string> NewestEpochOf(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IOError("cannot open " + path);
  SnapshotDecoder decoder;
  HeaderReader reader;
  std::string chunk(64 << 10, '\0');
  while (!reader.header && in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    const auto n = static_cast<std::size_t>(in.gcount());
    if (n == 0) break;
    if (Status s = decoder.Feed(std::string_view(chunk.data(), n), reader); !s.ok()) return s;
  }
  if (!reader.header) return Status::Corruption(path + " has no snapshot header");
  auto history = DecodeEpochHistory(reader.meta);
  if (!history.ok()) return history.status();
  return history->empty() ? std::string("-") : EpochName(history->back());
}

}  // namespace

BackupService::BackupService(Engine& engine, ReplicationManager* replication,
                             BackupServiceOptions options)
    : engine_(engine),
      replication_(replication),
      options_(std::move(options)),
      snapshots_(std::make_unique<FullSyncSource>(engine, options_.data_dir + "/backup",
                                                  FullSyncSource::Sharing::kCurrentOnly)) {
  // A restore killed part-way (kill -9, power loss) leaves its partial snapshot. The server
  // holds the data directory's lock by now (Engine::Open), so the file is no other process's.
  std::error_code ignored;
  std::filesystem::remove(RestorePath(options_.data_dir), ignored);
}

BackupService::~BackupService() = default;

asio::awaitable<void> BackupService::ServeSnapshot(asio::ip::tcp::socket socket,
                                                   std::vector<std::string>) {
  Watchdog watchdog(socket, options_.idle_timeout);
  std::string peer;
  {
    std::error_code ec;
    auto remote = socket.remote_endpoint(ec);
    if (!ec) peer = remote.address().to_string();
  }
  // A replica whose copy its master has not confirmed (empty, or maybe holding writes the master
  // dropped) is not backed up: the file would look like any good backup, and retention (kvctl
  // backup --keep) would delete good backups for it.
  if (replication_ != nullptr) {
    const ReplicationStatus status = replication_->LiveStatus();
    if (auto unconfirmed = UnconfirmedReplicaData(status)) {
      logging::Warn("snapshot: refused, the replica's data is not confirmed by its master",
                    {{"client", peer}, {"why", *unconfirmed}});
      std::string reply = ErrorReply(fmt::format(
          "ERR backup refused: this replica's data is not confirmed by its master {}:{}: {}; "
          "back up the master or a ready replica",
          status.master_host, status.master_port, *unconfirmed));
      co_await Send(socket, watchdog, std::move(reply));
      Close(socket);
      co_return;
    }
    // Nor a master that started empty and has not opened its epoch: its replicas may hold the
    // data (a lost volume), and its empty file would count as the newest backup.
    if (status.role == ReplicationStatus::Role::kMaster &&
        (status.failover_state == "waiting-for-replicas" ||
         status.failover_state == "empty-master-held")) {
      logging::Warn("snapshot: refused, the master started empty and has not taken its role",
                    {{"client", peer}});
      co_await Send(socket, watchdog,
                    ErrorReply("ERR backup refused: this master started with an empty data "
                               "directory and has not opened its epoch (" +
                               status.failover_state + "); back up a ready replica"));
      Close(socket);
      co_return;
    }
  }
  std::shared_ptr<FullSyncFile> file = snapshots_->Acquire();
  struct Releaser {
    FullSyncSource& source;
    std::shared_ptr<FullSyncFile> file;
    ~Releaser() { source.Release(file); }
  } releaser{*snapshots_, file};
  asio::steady_timer poll(socket.get_executor());
  while (!file->ready.load()) {
    poll.expires_after(std::chrono::milliseconds(20));
    co_await poll.async_wait(kUseTuple);
  }
  Result<std::string> epoch =
      file->status.ok() ? NewestEpochOf(file->path) : Result<std::string>(file->status);
  std::ifstream in(file->path, std::ios::binary);
  if (epoch.ok() && !in) epoch = Status::IOError("cannot open " + file->path);
  if (!epoch.ok()) {
    logging::Error("snapshot: cannot take it", {{"error", epoch.status().ToString()}});
    std::string reply = ErrorReply("ERR cannot take a snapshot: " + epoch.status().message());
    co_await Send(socket, watchdog, std::move(reply));
    Close(socket);
    co_return;
  }
  logging::Info("snapshot: streaming to a client", {{"client", peer},
                                                    {"epoch", *epoch},
                                                    {"seq", std::to_string(file->seq)},
                                                    {"keys", std::to_string(file->keys)},
                                                    {"bytes", std::to_string(file->bytes)}});
  const std::string pod = options_.pod.empty() ? "-" : options_.pod;
  std::string first = fmt::format("+SNAPSHOT {} {} {} {} {} {}\r\n", pod, *epoch, file->seq,
                                  file->keys, file->bytes, UtcTime(file->taken));
  bool ok = co_await Send(socket, watchdog, std::move(first));
  std::string chunk(kChunkBytes, '\0');
  std::uint64_t sent = 0;
  while (ok && sent < file->bytes) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    const auto n = static_cast<std::size_t>(in.gcount());
    if (n == 0) break;
    std::string message;
    resp::AppendBulkString(&message, std::string_view(chunk.data(), n));
    ok = co_await Send(socket, watchdog, std::move(message));
    sent += n;
  }
  if (!ok || sent != file->bytes) {
    logging::Warn("snapshot: the stream stopped early",
                  {{"client", peer}, {"sent", std::to_string(sent)}});
  }
  Close(socket);
}

asio::awaitable<void> BackupService::ServeRestore(asio::ip::tcp::socket socket,
                                                  std::vector<std::string> args) {
  Watchdog watchdog(socket, options_.idle_timeout);
  const std::uint64_t bytes = std::stoull(args[1]);
  const bool force = args.size() == 3;
  if (restoring_.exchange(true)) {
    std::string reply = ErrorReply("ERR another restore is running");
    co_await Send(socket, watchdog, std::move(reply));
    Close(socket);
    co_return;
  }
  // Frees the restore slot once: at the end, or before draining a refused client (a retry at
  // once must not find "another restore" running).
  struct Done {
    std::atomic<bool>& flag;
    std::string path;
    bool released = false;
    void Release() {
      if (released) return;
      released = true;
      std::error_code ignored;
      std::filesystem::remove(path, ignored);
      flag.store(false);
    }
    ~Done() { Release(); }
  } done{restoring_, RestorePath(options_.data_dir)};
  const std::string& path = done.path;

  // Receive: every frame is checked as it arrives, and stored aside.
  Status status;
  HeaderReader header;
  SnapshotDecoder decoder(options_.max_frame_bytes);
  {
    std::error_code ec;
    std::filesystem::create_directories(options_.data_dir + "/replication", ec);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) status = Status::IOError("cannot create " + path);
    if (status.ok()) {
      std::string ready = "+SEND\r\n";
      if (!co_await Send(socket, watchdog, std::move(ready))) co_return;
    }
    resp::ParserLimits limits;
    limits.max_bulk_bytes = 16 << 20;
    resp::ReplyParser parser(limits);
    std::vector<char> buffer(256 << 10);
    resp::Value value;
    // Until the end frame or the last announced byte: a stream cut inside a frame is refused
    // at once, rather than after waiting (holding the restore slot) for bytes never announced.
    while (status.ok() && !decoder.finished() && decoder.bytes_fed() < bytes) {
      const auto parsed = parser.Next(&value);
      if (parsed == resp::ReplyParser::ParseStatus::kError) {
        status = Status::InvalidArgument("malformed stream: " + parser.error());
      } else if (parsed == resp::ReplyParser::ParseStatus::kValue) {
        if (value.type != resp::Value::Type::kBulkString) {
          status = Status::InvalidArgument("expected the snapshot as bulk strings");
        } else if (decoder.bytes_fed() + value.str.size() > bytes) {
          status = Status::InvalidArgument(
              fmt::format("the snapshot is longer than the announced {} bytes", bytes));
        } else if (Status s = decoder.Feed(value.str, header); !s.ok()) {
          status = Status::Corruption("the snapshot is damaged: " + s.message());
        } else if (!out.write(value.str.data(), static_cast<std::streamsize>(value.str.size()))) {
          status = Status::IOError("cannot write " + path + " (disk full?)");
        }
      } else {
        watchdog.Arm();
        auto [ec, n] = co_await socket.async_read_some(asio::buffer(buffer), kUseTuple);
        watchdog.Disarm();
        if (ec) {
          logging::Warn("restore: the client went away before the end of the snapshot",
                        {{"received", std::to_string(decoder.bytes_fed())}});
          co_return;  // nothing changed
        }
        parser.Feed(std::string_view(buffer.data(), n));
      }
    }
    if (status.ok() && !decoder.finished()) {
      status = Status::Corruption(fmt::format(
          "the snapshot is truncated: its {} announced bytes end before its end frame", bytes));
    } else if (status.ok() && decoder.bytes_fed() != bytes) {
      status = Status::InvalidArgument(
          fmt::format("the snapshot has {} bytes, {} were announced", decoder.bytes_fed(), bytes));
    }
    if (status.ok() && !out.flush()) status = Status::IOError("cannot write " + path);
  }
  if (status.ok()) {
    logging::Info("restore: installing a snapshot", {{"seq", std::to_string(header.seq)},
                                                     {"keys", std::to_string(header.keys)},
                                                     {"bytes", std::to_string(bytes)}});
    ReplicationManager* replication = replication_;
    Engine* engine = &engine_;
    // Without FORCE, emptiness is checked by the install itself, atomically with the
    // replacement: a check here would let a write acknowledged meanwhile be wiped.
    const bool only_into_empty = !force;
    std::function<Status()> install = [replication, engine, path, only_into_empty] {
      return replication != nullptr ? replication->InstallRestoredSnapshot(path, only_into_empty)
                                    : engine->InstallSnapshot(path, only_into_empty);
    };
    std::function<void()> nothing_meanwhile;  // named: see RunOffStrand
    status = co_await RunOffStrand<Status>(std::move(install), std::move(nothing_meanwhile));
  }
  if (!status.ok()) {
    logging::Warn("restore refused; nothing changed", {{"error", status.ToString()}});
    std::string reply = ErrorReply("ERR restore refused, nothing changed: " + status.message());
    done.Release();
    if (co_await Send(socket, watchdog, std::move(reply))) co_await DrainThenClose(socket);
    Close(socket);
    co_return;
  }
  logging::Info("restore: done",
                {{"seq", std::to_string(header.seq)}, {"keys", std::to_string(header.keys)}});
  std::string reply = fmt::format("+OK {} {}\r\n", header.keys, header.seq);
  co_await Send(socket, watchdog, std::move(reply));
  Close(socket);
}

}  // namespace kvstore
