// ReplicationManager: the pod's role, the feeds it serves, the link it follows, and the
// acknowledgement waiters (see replication.h for the design).
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <sstream>
#include <thread>
#include <tuple>

#include "common/files.h"
#include "common/logging.h"
#include "kvstore/client.h"
#include "replication/feed.h"
#include "replication/full_sync.h"
#include "replication/link.h"
#include "replication/off_strand.h"
#include "replication/replication.h"
#include "replication/wire.h"

namespace kvstore {

using replication_wire::kUseTuple;

namespace {

constexpr std::string_view kReplicaRefusal =
    "READONLY You can't write against a read only replica.";

// A promotion waits for its catch-up at most this many promotion timeouts, progress or not.
constexpr int kPromotionWaitFactor = 10;

const char* LinkStateName(LinkState state) {
  switch (state) {
    case LinkState::kConnect:
      return "connect";
    case LinkState::kConnecting:
      return "connecting";
    case LinkState::kSync:
      return "sync";
    case LinkState::kConnected:
      return "connected";
  }
  return "connect";
}

// Small records of this pod's role history in <data_dir>/replication, each one line or two:
// - replica-stopped-attached: "<master address>\n<master seq>", a replica's clean stop while
//   attached (RecordCleanStop), used once by the next start;
// - last-role: "master", or "replica\n<master address>" once a link attached: what this pod was
//   last, so that a start under another role first secures what it held (Start);
// - fenced: "<requester>", written before this pod answers REPLFAILOVER, removed once it is a
//   master of a new epoch or a replica attached to a master: a fenced master that restarts with
//   a configuration that still names it stays fenced.
std::string RecordPath(const std::string& data_dir, std::string_view name) {
  return data_dir + "/replication/" + std::string(name);
}
constexpr std::string_view kCleanStopRecord = "replica-stopped-attached";
constexpr std::string_view kLastRoleRecord = "last-role";
constexpr std::string_view kFencedRecord = "fenced";

// Replaces the record durably (temporary file, fsync, rename, fsync of the directory).
bool WriteRecord(const std::string& data_dir, std::string_view name, const std::string& content) {
  const std::string dir = data_dir + "/replication";
  const std::string path = RecordPath(data_dir, name);
  const std::string temporary = path + ".tmp";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  bool ok = fd >= 0 &&
            ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  ok = fd >= 0 && ::fsync(fd) == 0 && ok;
  if (fd >= 0) ::close(fd);
  ok = ok && ::rename(temporary.c_str(), path.c_str()) == 0;
  if (ok) {
    (void)SyncDirectory(dir);
  } else {
    std::filesystem::remove(temporary, ec);
    logging::Warn("replication: cannot write a role record", {{"path", path}});
  }
  return ok;
}

std::optional<std::string> ReadRecord(const std::string& data_dir, std::string_view name) {
  std::ifstream in(RecordPath(data_dir, name));
  if (!in) return std::nullopt;
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return content;
}

void RemoveRecord(const std::string& data_dir, std::string_view name) {
  std::error_code ignored;
  if (!std::filesystem::remove(RecordPath(data_dir, name), ignored)) return;
  (void)SyncDirectory(data_dir + "/replication");  // removed for good before what follows it
}

}  // namespace

ReplicationManager::ReplicationManager(asio::io_context& io, Engine& engine,
                                       ReplicationOptions options)
    : io_(io),
      engine_(engine),
      options_(std::move(options)),
      strand_(asio::make_strand(io)),
      role_timer_(strand_),
      full_sync_(std::make_unique<FullSyncSource>(engine, options_.data_dir + "/replication")) {
  engine_.SetCommitListener([this](std::uint64_t seq) { OnCommit(seq); });
  engine_.SetRetentionPin([this] { return RetentionPin(); });
  // A full resync killed part-way leaves its snapshot; the next one writes it anew. The engine
  // holds the data directory's lock by now, so the file is no other process's.
  std::error_code ignored;
  std::filesystem::remove(IncomingSnapshotPath(options_.data_dir), ignored);
}

ReplicationManager::~ReplicationManager() {
  Shutdown();
  engine_.SetCommitListener(nullptr);
  engine_.SetRetentionPin(nullptr);
}

void ReplicationManager::ForgetRoleHistory(const std::string& data_dir) {
  for (std::string_view record : {kLastRoleRecord, kFencedRecord, kCleanStopRecord}) {
    RemoveRecord(data_dir, record);
  }
}

Status ReplicationManager::Start(const RoleTarget& role) {
  {
    std::lock_guard lock(mu_);
    target_ = role;
    standalone_ = role.standalone;
  }
  // Every start takes the record away, a master's too: a pod promoted since, then demoted to
  // follow the same master again, holds writes that master never had.
  ResumeCleanStop(role.master ? std::string() : role.master_address);
  // What this pod was before this start (the records are written only with replication on).
  const std::string last_role = ReadRecord(options_.data_dir, kLastRoleRecord).value_or("");
  const std::optional<std::string> fenced_by = ReadRecord(options_.data_dir, kFencedRecord);
  const std::string replica_of = "replica\n";
  const std::string previous_master =
      last_role.starts_with(replica_of) ? last_role.substr(replica_of.size()) : std::string();
  if (role.master && !role.standalone && fenced_by) {
    // It handed the master role over (REPLFAILOVER) and restarted before its configuration
    // caught up: taking writes again would make two masters. It stays fenced until it is
    // configured as a replica, or catches up with the pod it handed over to (a replica with
    // a newer epoch, ReplicaFeed).
    {
      std::lock_guard lock(mu_);
      role_ = Role::kMaster;
      fenced_ = true;
      failover_state_ = "failover-in-progress";
    }
    logging::Warn("starting fenced: before its restart this pod handed the master role over",
                  {{"to", *fenced_by}});
    RefuseWrites("READONLY this pod handed the master role over to " + *fenced_by +
                 " before it restarted; MASTER_ORDINAL still names it");
    Announce("master");
  } else if (role.master && !role.standalone && !previous_master.empty()) {
    // It was a replica: the master it followed may hold writes it never received (it was down
    // or behind when MASTER_ORDINAL changed, or all pods restarted with the change). Opening
    // an epoch now would make its stale copy the history every other pod resyncs to. So it is
    // promoted as a live replica is: it follows that master, fences it and catches up first.
    {
      std::lock_guard lock(mu_);
      role_ = Role::kReplica;
    }
    RefuseWrites("READONLY this pod is being promoted to master");
    logging::Info("starting as master after following " + previous_master +
                  ": catching up with it first");
    // As patient as a live promotion (promotion_timeout_ms): the old master may be restarting
    // too. A longer wait would hold the master role back as long whenever the old master is
    // gone for good, the usual reason to move it.
    asio::co_spawn(strand_, Promote(previous_master), asio::detached);
  } else if (role.master && !role.standalone && options_.empty_master_wait.count() > 0 &&
             last_role.empty() && StoreIsEmpty()) {
    // Named master with an empty data directory: a new cluster, or a master whose volume was
    // lost or replaced while its replicas hold the data. Opening an epoch now would make the
    // empty store the history every replica resyncs to, erasing the data everywhere. So it
    // waits empty_master_wait_ms for its replicas first (each asks again within a connect
    // timeout plus its longest backoff): one with data holds this pod read-only until the
    // configuration promotes another (HoldEmptyStart). The wait runs in full even after an
    // empty replica asked (a new pod, or one that lost its volume too): one with data may come
    // next. Then the epoch opens (EndEmptyStart).
    {
      std::lock_guard lock(mu_);
      role_ = Role::kMaster;
      awaiting_replicas_ = true;
      failover_state_ = "waiting-for-replicas";
    }
    RefuseWrites(fmt::format(
        "READONLY this master started with an empty data directory; it waits up to {} ms for "
        "its replicas to report their data before it takes writes",
        options_.empty_master_wait.count()));
    Announce("master");
    logging::Info("empty data directory: waiting for the replicas to report their data",
                  {{"wait_ms", std::to_string(options_.empty_master_wait.count())}});
    empty_wait_ = std::make_unique<asio::steady_timer>(strand_, options_.empty_master_wait);
    empty_wait_->async_wait([this](std::error_code ec) {
      if (!ec) EndEmptyStart();
    });
  } else if (role.master) {
    {
      std::lock_guard lock(mu_);
      role_ = Role::kMaster;
    }
    if (Status opened = TakeStartEpoch(OpenEpoch()); !opened.ok()) return opened;
  } else {
    {
      std::lock_guard lock(mu_);
      role_ = Role::kReplica;
      // A master until its restart: its log is the history the new master must catch up with
      // (it may hold writes no other pod has), so it serves it, as a master demoted while it
      // runs does, until it attaches to its new master.
      demoted_unattached_ = !role.standalone && last_role == "master";
      attached_master_ = previous_master;
    }
    RefuseWrites(std::string(kReplicaRefusal));
    StartLink(role.master_address);
    Announce("replica");
  }
  if (options_.reread_role && !role.standalone) {
    asio::post(strand_, [this] { PollRole(); });
  }
  return Status::Ok();
}

Status ReplicationManager::TakeStartEpoch(const Status& opened) {
  if (opened.IsStorageFull()) {
    // A full volume is no reason to stop serving reads: the master starts read-only and
    // opens its epoch once space is freed (OpenEpochWhenSpaceIsFreed).
    RefuseWrites(
        "ERR storage full: the master cannot open its epoch until space is freed on "
        "the data volume (" +
        opened.message() + ")");
    Announce("master");
    epoch_retry_ = std::make_unique<asio::steady_timer>(strand_);
    asio::post(strand_, [this] { OpenEpochWhenSpaceIsFreed(); });
    return Status::Ok();
  }
  if (!opened.ok()) return opened;
  TakeWrites();
  Announce("master");
  return Status::Ok();
}

bool ReplicationManager::StoreIsEmpty() const {
  auto history = engine_.Epochs();
  return history.ok() && history->empty() && engine_.committed_seq() == 0;
}

bool ReplicationManager::AwaitingReplicas() const {
  std::lock_guard lock(mu_);
  return awaiting_replicas_;
}

void ReplicationManager::EndEmptyStart() {
  // On the strand (the wait's timer), as role changes are. The wait stays set while the epoch
  // opens: a fence or a demotion meanwhile ends it and refuses writes, and then this pod does
  // not take them.
  {
    std::lock_guard lock(mu_);
    if (!awaiting_replicas_ || !held_by_.empty()) return;
    if (restoring_) {
      // The restore ends the wait when it succeeds; if it fails, the wait goes on.
      empty_wait_->expires_after(std::chrono::seconds(1));
      empty_wait_->async_wait([this](std::error_code ec) {
        if (!ec) EndEmptyStart();
      });
      return;
    }
  }
  logging::Info(
      "empty data directory: no replica with data asked within empty_master_wait_ms; "
      "opening the first epoch");
  const Status opened = OpenEpoch();
  {
    std::lock_guard lock(mu_);
    const bool still_waiting = std::exchange(awaiting_replicas_, false) && held_by_.empty();
    if (!still_waiting || role_ != Role::kMaster || fenced_ || !target_.master || shut_down_) {
      return;
    }
    failover_state_ = "no-failover";
  }
  if (Status s = TakeStartEpoch(opened); !s.ok()) {
    // As a start that cannot open its epoch, which exits: the engine refuses writes after a
    // storage error, and /healthz reports it, so the pod is restarted.
    logging::Error("cannot open the first epoch; writes stay refused", {{"error", s.ToString()}});
  }
}

std::string ReplicationManager::HoldEmptyStart(const std::string& replica,
                                               const std::string& position) {
  bool first = false;
  {
    std::lock_guard lock(mu_);
    // The wait ended since the feed asked (the epoch opened, a fence, a restore): the replica
    // asks again and is served as any other.
    if (!awaiting_replicas_) return "NOTMASTER this master's state changed; try again";
    if (held_by_.empty()) {
      held_by_ = replica;
      failover_state_ = "empty-master-held";
      first = true;
    }
  }
  const std::string what = fmt::format(
      "this master started with an empty data directory and replica {} holds data ({}) it "
      "never had; it will not erase that data by resyncing it, nor take writes: promote a "
      "replica that holds the data (set MASTER_ORDINAL to its ordinal), and this pod resyncs "
      "from it",
      replica, position);
  if (first) {
    asio::post(strand_, [this] {
      if (empty_wait_) empty_wait_->cancel();
    });
    logging::Error("empty data directory, but a replica holds data: staying read-only",
                   {{"replica", replica}, {"position", position}});
    RefuseWrites("READONLY " + what);
  }
  return "EMPTYMASTER " + what;
}

void ReplicationManager::Shutdown() {
  {
    std::lock_guard lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  asio::post(strand_, [this] {
    std::error_code ignored;
    role_timer_.cancel();
    if (epoch_retry_) epoch_retry_->cancel();
    if (empty_wait_) empty_wait_->cancel();  // else the loop would run until it fires
    SettleWaiters(true);
  });
  if (std::shared_ptr<ReplicaLink> link = StopLink()) RecordCleanStop(link->Snapshot());
  CloseFeeds();
}

void ReplicationManager::RecordCleanStop(const LinkStatus& last) {
  std::uint64_t master_seq = last.master_seq;
  bool attached = last.attached;
  {
    std::lock_guard lock(mu_);
    if (role_ != Role::kReplica) return;
    if (resumed_ && resumed_->master_address == last.master_address) {
      attached = true;  // restarted during the same outage, and not detached since
      master_seq = std::max(master_seq, resumed_->master_seq);
    }
  }
  if (!attached || last.full_resync_pending || last.state == LinkState::kSync) return;
  WriteRecord(options_.data_dir, kCleanStopRecord,
              last.master_address + "\n" + std::to_string(master_seq) + "\n");
}

void ReplicationManager::ResumeCleanStop(const std::string& master_address) {
  CleanStop record;
  std::istringstream in(ReadRecord(options_.data_dir, kCleanStopRecord).value_or(""));
  const bool read = static_cast<bool>(std::getline(in, record.master_address) >> record.master_seq);
  // Used once: a crash after this start must not find it again.
  RemoveRecord(options_.data_dir, kCleanStopRecord);
  if (!read || master_address.empty() || record.master_address != master_address) return;
  logging::Info(
      "replication: stopped cleanly while attached to this master; ready with its "
      "data until the link attaches again",
      {{"master", master_address}, {"master_seq", std::to_string(record.master_seq)}});
  std::lock_guard lock(mu_);
  resumed_ = std::move(record);
}

void ReplicationManager::DrainReplicas(std::chrono::milliseconds wait) {
  {
    std::lock_guard lock(mu_);
    if (role_ != Role::kMaster || feeds_.empty()) return;
  }
  RefuseWrites("READONLY the master is shutting down");
  std::promise<std::uint64_t> barrier;
  engine_.Submit(
      {}, [&barrier](std::vector<Status>, std::uint64_t seq) { barrier.set_value(seq); },
      Engine::Origin::kReplication);
  const std::uint64_t final_seq = barrier.get_future().get();
  const auto deadline = std::chrono::steady_clock::now() + wait;
  int behind = 0;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      behind = 0;
      for (const auto& [id, info] : feeds_) behind += info.status.ack_seq < final_seq ? 1 : 0;
    }
    if (behind == 0 || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (behind == 0) {
    logging::Info("shutdown: every replica acknowledged the final sequence",
                  {{"seq", std::to_string(final_seq)}});
  } else {
    logging::Warn(
        "shutdown: replicas still behind after the wait",
        {{"seq", std::to_string(final_seq)}, {"replicas_behind", std::to_string(behind)}});
  }
}

Status ReplicationManager::OpenEpoch(std::uint64_t min_number) {
  std::random_device device;
  std::mt19937_64 generator(
      (std::uint64_t{device()} << 32) ^ device() ^
      static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  const std::uint64_t id = generator() | 1;  // never 0, so an id always reads as set
  auto opened = std::make_shared<Epoch>();
  std::promise<Status> done;
  engine_.Submit(
      {[id, min_number, opened](WriteContext& context) {
        return context.OpenEpoch(id, min_number, opened.get());
      }},
      [&done](std::vector<Status> statuses, std::uint64_t) {
        done.set_value(statuses.empty() ? Status::IOError("epoch write lost") : statuses[0]);
      },
      Engine::Origin::kReplication);
  Status s = done.get_future().get();
  if (!s.ok()) {
    logging::Error("cannot open a new epoch", {{"error", s.ToString()}});
    return s;
  }
  {
    std::lock_guard lock(mu_);
    epoch_ = *opened;
  }
  logging::Info("epoch opened",
                {{"epoch", EpochName(*opened)}, {"first_seq", std::to_string(opened->first_seq)}});
  return Status::Ok();
}

Status ReplicationManager::InstallRestoredSnapshot(const std::string& path, bool only_into_empty) {
  std::uint64_t previous = 0;
  {
    std::lock_guard lock(mu_);
    if (role_ != Role::kMaster || fenced_) {
      return Status::ReadOnly("this pod is not a master; restore into the master");
    }
    if (restoring_) return Status::Unavailable("another restore is running");
    previous = epoch_.number;  // raised below to the newest epoch this pod knows
    // No replica may attach until the new epoch is open: it would continue on a history the
    // install is about to replace.
    restoring_ = true;
  }
  struct Restoring {
    ReplicationManager& manager;
    ~Restoring() {
      std::lock_guard lock(manager.mu_);
      manager.restoring_ = false;
    }
  } restoring{*this};
  if (auto history = engine_.Epochs(); history.ok() && !history->empty()) {
    previous = std::max(previous, history->back().number);
  }
  CloseFeeds();
  if (Status s = engine_.InstallSnapshot(path, only_into_empty); !s.ok()) return s;
  // The writes still waiting for acknowledgements (WAIT, sync mode) were replaced by the
  // install: answer them with the count they have now. Left waiting, they would be counted
  // acknowledged by replicas acknowledging the restored history's sequence numbers. No replica
  // acknowledges anything of the new history before its epoch opens (restoring_).
  {
    std::promise<void> settled;
    asio::post(strand_, [this, &settled] {
      SettleWaiters(/*all=*/true);
      settled.set_value();
    });
    settled.get_future().wait();
  }
  // The restored history may be unrelated to this cluster's, or older than replicas' epochs:
  // open an epoch numbered above the one before, so no replica has a newer epoch and none is on
  // the new history (each full-resyncs).
  Status s = OpenEpoch(previous + 1);
  CloseFeeds();
  if (!s.ok()) {
    logging::Error("restore: cannot open a new epoch", {{"error", s.ToString()}});
    return s;
  }
  // A restore gives an empty start its data: the wait for the replicas' data is over (it
  // stays on if the restore fails), and the replicas resync to the restored history, which is
  // what a restore is for.
  bool ends_empty_start = false;
  {
    std::lock_guard lock(mu_);
    ends_empty_start = std::exchange(awaiting_replicas_, false);
    held_by_.clear();
    if (ends_empty_start) failover_state_ = "no-failover";
  }
  if (ends_empty_start) {
    asio::post(strand_, [this] {
      if (empty_wait_) empty_wait_->cancel();
    });
    TakeWrites();
  }
  Epoch opened;
  {
    std::lock_guard lock(mu_);
    opened = epoch_;
  }
  logging::Info("restore: snapshot installed, epoch opened",
                {{"epoch", EpochName(opened)}, {"first_seq", std::to_string(opened.first_seq)}});
  return Status::Ok();
}

void ReplicationManager::RefuseWrites(std::optional<std::string> refusal) {
  std::optional<std::string> engine_refusal;
  if (refusal) {
    // The engine's ReadOnly status is rendered as "READONLY <message>".
    engine_refusal = refusal->starts_with("READONLY ") ? refusal->substr(9) : *refusal;
  }
  {
    std::lock_guard lock(mu_);
    refusal_ = refusal;
    writes_open_.store(!refusal.has_value());
  }
  engine_.SetClientWriteRefusal(std::move(engine_refusal));
}

void ReplicationManager::Announce(const std::string& role) {
  logging::SetGlobalField("role", role);
  if (options_.on_role) options_.on_role(role);
}

// ---------------------------------------------------------------------------------------------
// What commands see.

std::optional<std::string> ReplicationManager::WriteRefusal() const {
  if (writes_open_.load(std::memory_order_acquire) && options_.min_replicas_to_write <= 0) {
    return std::nullopt;
  }
  std::lock_guard lock(mu_);
  if (refusal_) return refusal_;
  if (options_.min_replicas_to_write > 0) {
    const auto now = std::chrono::steady_clock::now();
    int good = 0;
    for (const auto& [id, info] : feeds_) {
      // In whole seconds, as Redis counts a replica's lag (and as INFO shows it).
      const auto lag = std::chrono::duration_cast<std::chrono::seconds>(now - info.last_ack);
      if (info.status.state == "online" && lag <= options_.min_replicas_max_lag) ++good;
    }
    if (good < options_.min_replicas_to_write) {
      return std::string("NOREPLICAS Not enough good replicas to write.");
    }
  }
  return std::nullopt;
}

ReplicationStatus ReplicationManager::CurrentStatus() const {
  ReplicationStatus status = LiveStatus();
  const EngineStats stats = const_cast<Engine&>(engine_).Stats();
  status.log_first_seq = stats.log.first_seq;
  status.log_bytes = stats.log.bytes;
  status.log_retain_bytes = engine_.options().log_retain_bytes;
  if (auto history = const_cast<Engine&>(engine_).Epochs(); history.ok() && !history->empty()) {
    status.epoch = history->back().number;
    status.epoch_id = fmt::format("{:016x}", history->back().id);
    if (history->size() > 1) {
      status.previous_epoch_id = fmt::format("{:016x}", (history->end() - 2)->id);
      status.epoch_first_seq = history->back().first_seq;
    }
  }
  return status;
}

ReplicationStatus ReplicationManager::LiveStatus() const {
  ReplicationStatus status;
  status.mode = options_.mode;
  status.seq = engine_.committed_seq();
  std::shared_ptr<ReplicaLink> link;
  std::optional<CleanStop> resumed;
  {
    std::lock_guard lock(mu_);
    status.role = role_ == Role::kMaster ? ReplicationStatus::Role::kMaster
                                         : ReplicationStatus::Role::kReplica;
    status.standalone = standalone_;
    status.failover_state = failover_state_;
    const auto now = std::chrono::steady_clock::now();
    for (const auto& [id, info] : feeds_) {
      ReplicaStatus r = info.status;
      r.ack_age_seconds = std::chrono::duration<double>(now - info.last_ack).count();
      status.replicas.push_back(r);
    }
    link = link_;
    if (!link) status.master_host = master_address_;
    resumed = resumed_;
  }
  if (link) {
    const LinkStatus l = link->Snapshot();
    std::string host, port;
    if (replication_wire::SplitAddress(l.master_address, &host, &port)) {
      status.master_host = host;
      status.master_port = std::atoi(port.c_str());
    }
    status.link_state = LinkStateName(l.state);
    status.link_up = l.up;
    status.last_io_seconds_ago =
        l.ever_io
            ? std::chrono::duration<double>(std::chrono::steady_clock::now() - l.last_io).count()
            : -1;
    status.sync_in_progress = l.state == LinkState::kSync;
    status.sync_total_bytes = l.sync_total_bytes;
    status.sync_read_bytes = l.sync_read_bytes;
    status.master_seq = std::max(l.master_seq, status.seq);
    status.full_resyncs = l.full_resyncs;
    status.partial_resyncs = l.partial_resyncs;
    status.last_error = l.last_error;
    status.link_attached = l.attached;
    status.full_resync_pending = l.full_resync_pending;
    if (!l.attached && resumed && resumed->master_address == l.master_address) {
      status.link_attached = true;  // stopped cleanly while attached (RecordCleanStop)
      status.master_seq = std::max(status.master_seq, resumed->master_seq);
    }
  }
  return status;
}

int ReplicationManager::SyncReplicasRequired() const {
  return options_.mode == "sync" ? options_.sync_replicas : 0;
}

std::chrono::milliseconds ReplicationManager::SyncTimeout() const { return options_.sync_timeout; }

std::chrono::milliseconds ReplicationManager::ResponsiveWindow() const {
  // Two heartbeats: an idle replica acknowledges each one, so a live one is never older.
  return std::max(options_.sync_timeout, 2 * options_.heartbeat);
}

int ReplicationManager::ResponsiveReplicas() const {
  const auto oldest = std::chrono::steady_clock::now() - ResponsiveWindow();
  std::lock_guard lock(mu_);
  return static_cast<int>(std::count_if(feeds_.begin(), feeds_.end(), [&](const auto& feed) {
    return feed.second.status.state == "online" && feed.second.last_ack >= oldest;
  }));
}

// ---------------------------------------------------------------------------------------------
// Acknowledgements and waiters.

int ReplicationManager::AckedLocked(std::uint64_t seq) const {
  int acked = 0;
  for (const auto& [id, info] : feeds_) {
    if (info.status.state == "online" && info.status.ack_seq >= seq) ++acked;
  }
  return acked;
}

void ReplicationManager::WaitForAcks(std::uint64_t seq, int replicas,
                                     std::chrono::milliseconds timeout, std::uint64_t client,
                                     std::function<void(int)> done) {
  // The timer counts nanoseconds in 64 bits: a longer timeout (past 292 years) overflowed when
  // converted, into a deadline in the past, and WAIT 1 9223372036854775807 answered at once.
  // It waits forever instead, as in Redis (whose deadline, now + timeout, overflows too).
  constexpr auto kLongestTimeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(asio::steady_timer::duration::max());
  if (timeout > kLongestTimeout) timeout = std::chrono::milliseconds(0);
  int acked = 0;
  {
    std::lock_guard lock(mu_);
    acked = AckedLocked(seq);
    if (acked < replicas && !shut_down_) {
      auto waiter = std::make_shared<Waiter>();
      waiter->seq = seq;
      waiter->replicas = replicas;
      waiter->client = client;
      waiter->done = std::move(done);
      waiters_.push_back(waiter);
      RequestAcks();
      if (timeout.count() > 0) {
        asio::post(strand_, [this, waiter, timeout] {
          waiter->timer = std::make_unique<asio::steady_timer>(strand_, timeout);
          waiter->timer->async_wait([this, waiter](std::error_code ec) {
            if (ec) return;
            int count = 0;
            {
              std::lock_guard inner(mu_);
              auto it = std::find(waiters_.begin(), waiters_.end(), waiter);
              if (it == waiters_.end()) return;  // settled meanwhile
              waiters_.erase(it);
              count = AckedLocked(waiter->seq);
            }
            waiter->done(count);
          });
        });
      }
      return;
    }
  }
  done(acked);
}

void ReplicationManager::CancelWaits(std::uint64_t client) {
  if (client == 0) return;
  std::vector<std::shared_ptr<Waiter>> cancelled;
  {
    std::lock_guard lock(mu_);
    auto from = std::stable_partition(waiters_.begin(), waiters_.end(),
                                      [client](const auto& w) { return w->client != client; });
    cancelled.assign(std::make_move_iterator(from), std::make_move_iterator(waiters_.end()));
    waiters_.erase(from, waiters_.end());
  }
  if (cancelled.empty()) return;
  // Their timers are created and cancelled on strand_ (after the creation WaitForAcks posted
  // there); a timer that fires first finds its waiter gone. done is dropped unrun.
  asio::post(strand_, [cancelled = std::move(cancelled)] {
    for (const auto& waiter : cancelled) {
      if (waiter->timer) waiter->timer->cancel();
    }
  });
}

std::uint64_t ReplicationManager::BlockedClients() const {
  std::lock_guard lock(mu_);
  return waiters_.size();
}

void ReplicationManager::SettleWaiters(bool all) {
  std::vector<std::pair<std::shared_ptr<Waiter>, int>> settled;
  {
    std::lock_guard lock(mu_);
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      const int acked = AckedLocked((*it)->seq);
      if (all || acked >= (*it)->replicas) {
        settled.emplace_back(*it, acked);
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& [waiter, acked] : settled) {
    if (waiter->timer) waiter->timer->cancel();
    waiter->done(acked);
  }
}

void ReplicationManager::OnAck(std::uint64_t feed_id, std::uint64_t seq) {
  bool waiting = false;
  {
    std::lock_guard lock(mu_);
    auto it = feeds_.find(feed_id);
    if (it == feeds_.end()) return;
    FeedInfo& info = it->second;
    info.status.ack_seq = std::max(info.status.ack_seq, seq);
    info.last_ack = std::chrono::steady_clock::now();
    info.needed_from = std::max(info.needed_from, seq + 1);
    waiting = !waiters_.empty();
  }
  if (waiting) asio::post(strand_, [this] { SettleWaiters(false); });
}

void ReplicationManager::OnCommit(std::uint64_t) {
  std::vector<std::shared_ptr<ReplicaFeed>> feeds;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, info] : feeds_) feeds.push_back(info.feed);
  }
  for (auto& feed : feeds) feed->Wake();
}

// REQUIRES: mu_ held. A count, not the waiter's sequence: sequences go back after a restore.
void ReplicationManager::RequestAcks() {
  ++ack_requests_;
  for (auto& [id, info] : feeds_) info.feed->Wake();
}

std::uint64_t ReplicationManager::RetentionPin() const {
  std::uint64_t pinned = full_sync_->PinnedSeq();
  std::lock_guard lock(mu_);
  for (const auto& [id, info] : feeds_) {
    if (pinned == 0 || info.needed_from < pinned) pinned = info.needed_from;
  }
  return pinned;
}

// ---------------------------------------------------------------------------------------------
// Feeds (master side).

asio::awaitable<void> ReplicationManager::ServeReplica(asio::ip::tcp::socket socket,
                                                       std::vector<std::string> args) {
  std::shared_ptr<ReplicaFeed> feed;
  {
    std::lock_guard lock(mu_);
    feed = std::make_shared<ReplicaFeed>(next_feed_id_++, std::move(socket), *this);
  }
  co_await feed->Run(std::move(args));
}

std::optional<std::string> ReplicationManager::FeedRefusal() const {
  std::lock_guard lock(mu_);
  if (shut_down_) return std::string("NOTMASTER this pod is shutting down");
  if (restoring_) return std::string("NOTMASTER this pod is restoring a backup; try again");
  if (ServesHistoryLocked()) return std::nullopt;
  // A demoted master keeps serving the replicas it had until it follows its new master.
  return "NOTMASTER " + NotMasterLocked();
}

std::string ReplicationManager::NotMasterLocked() const {
  if (role_ == Role::kPromoting) return "this pod is not the master (it is being promoted)";
  // Promote follows the addresses to the master of the history: the one it last attached to,
  // else the one it follows.
  return "this pod is not the master (it is a replica of " + master_address_ +
         (attached_master_.empty() ? std::string() : ", last attached to " + attached_master_) +
         ")";
}

bool ReplicationManager::RegisterFeed(std::shared_ptr<ReplicaFeed> feed, const std::string& ip,
                                      int port, int ordinal, std::uint64_t needed_from,
                                      std::uint64_t acked) {
  std::lock_guard lock(mu_);
  if (shut_down_ || !ServesHistoryLocked() || restoring_) return false;
  FeedInfo& info = feeds_[feed->id()];
  info.feed = std::move(feed);
  info.status.ip = ip;
  info.status.port = port;
  info.status.ordinal = ordinal;
  info.status.state = "wait_bgsave";
  info.status.ack_seq = acked;
  info.last_ack = std::chrono::steady_clock::now();
  info.needed_from = needed_from;
  return true;
}

void ReplicationManager::SetFeedState(std::uint64_t id, const char* state) {
  std::lock_guard lock(mu_);
  if (auto it = feeds_.find(id); it != feeds_.end()) {
    it->second.status.state = state;
    it->second.last_ack = std::chrono::steady_clock::now();  // its ack timeout starts now
  }
}

void ReplicationManager::SetFeedNeeded(std::uint64_t id, std::uint64_t needed_from) {
  std::lock_guard lock(mu_);
  if (auto it = feeds_.find(id); it != feeds_.end()) it->second.needed_from = needed_from;
}

std::chrono::steady_clock::duration ReplicationManager::FeedAckAge(std::uint64_t id) const {
  std::lock_guard lock(mu_);
  auto it = feeds_.find(id);
  if (it == feeds_.end()) return {};
  return std::chrono::steady_clock::now() - it->second.last_ack;
}

void ReplicationManager::UnregisterFeed(std::uint64_t id) {
  std::lock_guard lock(mu_);
  feeds_.erase(id);
}

void ReplicationManager::CloseFeeds() {
  std::vector<std::shared_ptr<ReplicaFeed>> feeds;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, info] : feeds_) feeds.push_back(info.feed);
  }
  for (auto& feed : feeds) feed->Close();
}

// ---------------------------------------------------------------------------------------------
// The link (replica side) and role changes.

void ReplicationManager::StartLink(const std::string& address) {
  std::shared_ptr<ReplicaLink> link;
  std::shared_ptr<ReplicaLink> previous;
  {
    std::lock_guard lock(mu_);
    if (shut_down_) return;
    previous = std::move(link_);
    link = std::make_shared<ReplicaLink>(io_, *this, address, previous);
    master_address_ = address;
    link_ = link;
    // The clean-stop record vouches for this pod's data against one master only.
    if (resumed_ && resumed_->master_address != address) resumed_.reset();
  }
  if (previous) previous->Stop();
  logging::Info("replication link: following " + address);
  link->Start();
}

std::shared_ptr<ReplicaLink> ReplicationManager::StopLink() {
  std::shared_ptr<ReplicaLink> link;
  {
    std::lock_guard lock(mu_);
    link.swap(link_);
  }
  if (link) link->Stop();
  return link;
}

void ReplicationManager::OnLinkAttached() {
  bool close_feeds = false;
  std::string master;
  {
    std::lock_guard lock(mu_);
    close_feeds = role_ == Role::kReplica && !feeds_.empty();
    demoted_unattached_ = false;
    fenced_ = false;
    failover_state_ = "no-failover";
    master = master_address_;
    attached_master_ = master_address_;
    resumed_.reset();  // attached for real: the clean-stop record has served
  }
  // The fence first: a crash in between must not leave a stale fence on a pod that follows.
  RemoveRecord(options_.data_dir, kFencedRecord);
  WriteRecord(options_.data_dir, kLastRoleRecord, "replica\n" + master);
  // A demoted master served its old replicas until now, so a promoted one could catch up from
  // it; now that it follows the new master, they must re-point there.
  if (close_feeds) CloseFeeds();
}

void ReplicationManager::TakeWrites() {
  bool standalone = false;
  {
    std::lock_guard lock(mu_);
    standalone = standalone_;
  }
  if (!standalone) WriteRecord(options_.data_dir, kLastRoleRecord, "master");
  RefuseWrites(std::nullopt);
}

void ReplicationManager::OpenEpochWhenSpaceIsFreed() {
  epoch_retry_->expires_after(std::chrono::seconds(1));
  epoch_retry_->async_wait([this](std::error_code ec) {
    {
      std::lock_guard lock(mu_);
      // Shut down, or no longer (or not yet again) a master by configuration: the role change
      // takes over (a promotion opens its own epoch).
      if (ec || shut_down_ || role_ != Role::kMaster || !target_.master || fenced_) return;
    }
    if (Status s = OpenEpoch(); !s.ok()) {
      OpenEpochWhenSpaceIsFreed();
      return;
    }
    TakeWrites();
    logging::Info("space freed: the master opened its epoch and takes writes");
  });
}

bool ReplicationManager::CatchUpWithNewerReplica(const std::string& address) {
  {
    std::lock_guard lock(mu_);
    if (role_ != Role::kMaster || !fenced_ || !target_.master || shut_down_) return false;
    role_ = Role::kPromoting;  // one catch-up at a time; Promote keeps the role
  }
  logging::Warn(
      "fenced master: a replica has a newer epoch; catching up with it before taking "
      "the master role back",
      {{"replica", address}});
  // Its replicas follow a history that is about to grow from elsewhere: they come back once
  // this pod is master again, and find their place on that history.
  CloseFeeds();
  asio::co_spawn(strand_, Promote(address), asio::detached);
  return true;
}

void ReplicationManager::Fence(std::string requester, std::function<void(std::string)> done) {
  bool was_awaiting = false;
  {
    std::lock_guard lock(mu_);
    // A standalone server has no replica to hand over to: nothing would ever lift the fence.
    const std::string refusal = standalone_              ? "replication is disabled on this server"
                                : !ServesHistoryLocked() ? NotMasterLocked()
                                                         : std::string();
    if (!refusal.empty()) {
      std::string reply;
      resp::AppendError(&reply, "ERR REPLFAILOVER: " + refusal);
      done(reply);
      return;
    }
    fenced_ = true;
    failover_state_ = "failover-in-progress";
    was_awaiting = std::exchange(awaiting_replicas_, false);
  }
  logging::Warn("fenced: writes refused while " + requester + " takes over as master");
  // A demoted master already refuses writes (as a replica); keep its wording then.
  if (writes_open_.load() || was_awaiting) {
    RefuseWrites("READONLY this pod is handing over the master role to " + requester);
  }
  // Before the reply: a restart with a configuration that still names this pod stays fenced.
  // Not recorded (a full volume), the fence would hold only until a restart: the promoting pod
  // gets an error instead of the final sequence, and tries again.
  if (!WriteRecord(options_.data_dir, kFencedRecord, requester)) {
    std::string reply;
    resp::AppendError(&reply,
                      "ERR REPLFAILOVER: cannot record the fence on this pod's volume; writes "
                      "stay refused here, try again");
    done(reply);
    return;
  }
  // The barrier: once it completes, every client write that will ever commit here has.
  engine_.Submit(
      {},
      [done = std::move(done)](std::vector<Status>, std::uint64_t committed) {
        std::string reply;
        resp::AppendInteger(&reply, static_cast<std::int64_t>(committed));
        done(std::move(reply));
      },
      Engine::Origin::kReplication);
}

void ReplicationManager::PollRole() {
  {
    std::lock_guard lock(mu_);
    if (shut_down_) return;
  }
  if (auto target = options_.reread_role()) ApplyRole(*target);
  full_sync_->DropExpired();  // a full copy of the key space on the volume: not for long
  role_timer_.expires_after(options_.role_poll);
  role_timer_.async_wait([this](std::error_code ec) {
    if (!ec) PollRole();
  });
}

void ReplicationManager::ApplyRole(const RoleTarget& target) {
  Role role;
  std::string old_master;
  {
    std::lock_guard lock(mu_);
    if (target.master == target_.master && target.master_address == target_.master_address) return;
    target_ = target;
    role = role_;
    old_master = master_address_;
  }
  logging::Info("role change requested: " + target.reason,
                {{"target", target.master ? "master" : "replica of " + target.master_address}});
  if (target.master) {
    if (role == Role::kReplica) {
      asio::co_spawn(strand_, Promote(old_master), asio::detached);
    }
    return;
  }
  if (role == Role::kMaster) {
    {
      std::lock_guard lock(mu_);
      role_ = Role::kReplica;
      demoted_unattached_ = true;
      awaiting_replicas_ = false;  // an empty start: nothing to serve, and no epoch to open
      held_by_.clear();
      failover_state_ = "no-failover";
    }
    if (empty_wait_) empty_wait_->cancel();
    RefuseWrites(std::string(kReplicaRefusal));
    logging::Info("demoted: writes refused; following the new master " + target.master_address);
    StartLink(target.master_address);
    Announce("replica");
    return;
  }
  // A replica re-pointing to another master (or a promotion cancelled half-way: Promote sees it).
  // The new link starts once the old one has finished (an install may be under way).
  if (role == Role::kReplica) StartLink(target.master_address);
}

// Waits until this pod has applied the fenced old master's final sequence, or gives up.
asio::awaitable<void> ReplicationManager::CatchUpWith(std::uint64_t final_seq) {
  // Wait while the catch-up makes progress, and give up after promotion_timeout without any:
  // the old master is fenced, so what is left to receive is finite, and taking over early
  // would drop writes it acknowledged. Progress is a new high of anything the link received
  // or applied: a transaction of millions of records is held back until its last record, and
  // a full resync's snapshot streams before any sequence moves. Only new highs count, so a
  // link that keeps failing and starting over (an install that cannot fit, an apply that
  // keeps failing) is no progress. Bounded anyway by kPromotionWaitFactor timeouts, and left
  // as soon as the configuration no longer makes this pod the master.
  struct Highs {
    std::uint64_t committed = 0, received = 0, snapshot_bytes = 0;
  } highs;
  auto progressed = [this, &highs] {
    std::shared_ptr<ReplicaLink> link;
    {
      std::lock_guard lock(mu_);
      link = link_;
    }
    const LinkStatus status = link ? link->Snapshot() : LinkStatus{};
    // A finished full resync leaves its byte count behind: only one under way counts.
    const std::uint64_t snapshot_bytes =
        status.state == LinkState::kSync ? status.sync_read_bytes : 0;
    bool moved = false;
    for (auto [high, now] : {std::pair{&highs.committed, engine_.committed_seq()},
                             std::pair{&highs.received, status.received_seq},
                             std::pair{&highs.snapshot_bytes, snapshot_bytes}}) {
      if (now > *high) {
        *high = now;
        moved = true;
      }
    }
    return moved;
  };
  auto still_promoting = [this] {
    std::lock_guard lock(mu_);
    return target_.master && !shut_down_;
  };
  progressed();
  const auto started = std::chrono::steady_clock::now();
  auto stalled_since = started;
  asio::steady_timer poll(strand_);
  while (engine_.committed_seq() < final_seq && still_promoting()) {
    const auto now = std::chrono::steady_clock::now();
    if (now - stalled_since >= options_.promotion_timeout ||
        now - started >= kPromotionWaitFactor * options_.promotion_timeout) {
      break;
    }
    poll.expires_after(std::chrono::milliseconds(5));
    co_await poll.async_wait(kUseTuple);
    if (progressed()) stalled_since = std::chrono::steady_clock::now();
  }
  if (engine_.committed_seq() >= final_seq) {
    logging::Info("promotion: caught up with the old master's final sequence",
                  {{"seq", std::to_string(final_seq)}});
  } else if (still_promoting()) {
    logging::Warn(
        "promotion: the catch-up with the old master stalled for promotion_timeout_ms (or "
        "took " +
            std::to_string(kPromotionWaitFactor) +
            " times that); entries after our position are lost unless the old master is "
            "resynced from us",
        {{"final_seq", std::to_string(final_seq)},
         {"our_seq", std::to_string(engine_.committed_seq())},
         {"waited_ms", std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::steady_clock::now() - started)
                                          .count())}});
  }
}

asio::awaitable<void> ReplicationManager::Promote(std::string old_master) {
  bool need_link = false;
  {
    std::lock_guard lock(mu_);
    role_ = Role::kPromoting;
    failover_state_ = "waiting-for-sync";
    need_link = !old_master.empty() && (!link_ || link_->master_address() != old_master);
  }
  RefuseWrites("READONLY this pod is being promoted to master");
  logging::Info("promotion: fencing the old master and catching up",
                {{"old_master", old_master.empty() ? "(none)" : old_master}});
  // The catch-up runs on a link to the old master (a live promotion has it already).
  if (need_link) StartLink(old_master);
  std::optional<std::uint64_t> final_seq;
  std::string why = "no old master address is known";
  const std::string me =
      options_.ordinal >= 0 ? "ordinal " + std::to_string(options_.ordinal) : "a promoted replica";
  // Tried again until promotion_timeout: after a restart of every pod (a promotion by restart, all
  // pods started at once) the old master may not listen yet, and it holds the writes this pod
  // must catch up with. A pod that answers it is a replica of another master is not the old
  // master any more: the history moved on there (a chain of promotions), so the fence goes to
  // that master instead, a few hops at most.
  const auto deadline = std::chrono::steady_clock::now() + options_.promotion_timeout;
  asio::steady_timer pause(strand_);
  int redirects = 0;
  std::string host, port;
  while (replication_wire::SplitAddress(old_master, &host, &port)) {
    ClientOptions client_options;
    client_options.host = host;
    client_options.port = std::atoi(port.c_str());
    client_options.password = options_.password;
    client_options.timeout = options_.promotion_timeout;
    // Named, not a temporary in the co_await expression: GCC 12 destroys those twice.
    std::function<Result<resp::Value>()> fence = [client_options, me]() -> Result<resp::Value> {
      auto client = Client::Connect(client_options);
      if (!client.ok()) return client.status();
      return (*client)->Call({"REPLFAILOVER", me});
    };
    std::function<void()> nothing_meanwhile;
    auto reply =
        co_await RunOffStrand<Result<resp::Value>>(std::move(fence), std::move(nothing_meanwhile));
    if (reply.ok() && reply->type == resp::Value::Type::kInteger) {
      final_seq = static_cast<std::uint64_t>(reply->integer);
      break;
    }
    why = !reply.ok() ? reply.status().message()
                      : (reply->is_error() ? reply->str : std::string("unexpected reply"));
    auto named_after = [&why](std::string_view label) {
      const auto at = why.find(label);
      if (at == std::string::npos) return std::string();
      std::string name = why.substr(at + label.size());
      return name.substr(0, name.find_first_of("), "));
    };
    std::string next = named_after("last attached to ");
    if (next.empty() || next == old_master) next = named_after("a replica of ");
    if (redirects < 3) {
      if (!next.empty() && next != old_master) {
        logging::Info("promotion: the old master follows another master now; fencing that one",
                      {{"old_master", old_master}, {"its_master", next}});
        old_master = next;
        ++redirects;
        StartLink(old_master);
        continue;
      }
    }
    bool promoting = false;
    {
      std::lock_guard lock(mu_);
      promoting = target_.master && !shut_down_;
    }
    if (!promoting || std::chrono::steady_clock::now() >= deadline) break;
    pause.expires_after(std::chrono::milliseconds(200));
    co_await pause.async_wait(kUseTuple);
  }
  if (final_seq) {
    co_await CatchUpWith(*final_seq);
  } else {
    logging::Warn(
        "promotion: the old master could not be fenced; writes it acknowledged that did not reach "
        "this pod are lost (it will be resynced when it returns)",
        {{"old_master", old_master},
         {"error", why},
         {"our_seq", std::to_string(engine_.committed_seq())}});
  }
  // Nothing of the old master may land after our epoch opens: a full resync it was installing,
  // or applies it had queued, would overwrite or interleave with the writes we take.
  co_await ReplicaLink::AwaitFinished(StopLink());
  bool still_master = false;
  {
    std::lock_guard lock(mu_);
    still_master = target_.master && !shut_down_;
  }
  if (!still_master) {
    RoleTarget target;
    {
      std::lock_guard lock(mu_);
      role_ = Role::kReplica;
      failover_state_ = "no-failover";
      target = target_;
    }
    RefuseWrites(std::string(kReplicaRefusal));
    if (!target.master_address.empty()) StartLink(target.master_address);
    co_return;
  }
  if (!OpenEpoch().ok()) {
    // Stay read-only: taking writes without an epoch would make divergence undetectable. Try
    // the whole promotion again in a second (fence, catch-up, epoch) while the configuration
    // still names this pod; once it names another, follow that one as a replica.
    logging::Error("promotion failed: cannot open an epoch; writes stay refused, trying again");
    pause.expires_after(std::chrono::seconds(1));
    co_await pause.async_wait(kUseTuple);
    RoleTarget target;
    {
      std::lock_guard lock(mu_);
      if (shut_down_) co_return;
      target = target_;
      if (!target.master) role_ = Role::kReplica;
    }
    if (target.master) {
      asio::co_spawn(strand_, Promote(old_master), asio::detached);
    } else {
      RefuseWrites(std::string(kReplicaRefusal));
      if (!target.master_address.empty()) StartLink(target.master_address);
    }
    co_return;
  }
  {
    std::lock_guard lock(mu_);
    role_ = Role::kMaster;
    fenced_ = false;
    failover_state_ = "no-failover";
    master_address_.clear();
  }
  RemoveRecord(options_.data_dir, kFencedRecord);
  TakeWrites();
  logging::Info("promotion: this pod is now the master");
  Announce("master");
}

}  // namespace kvstore
