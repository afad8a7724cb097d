// Replication: a master streams its log to replicas on the client port; replicas apply it with
// the master's sequence numbers. The ReplicationManager owns this pod's role and everything that
// depends on it. Threads: the manager's own state is guarded by mu_ and may be read from any
// thread; the replica link runs as a coroutine on link_strand_, each replica feed on the strand
// of the connection it arrived on; the engine's commit listener only posts wake-ups.
//
// Design, in the spirit of Redis' replication.c:
//
// 1. One log. Every write is a log entry with a sequence number (the engine's durable log, not a
//    second one). A replica applies entries with the same numbers through Engine::ApplyLogged,
//    so "the replica's position" is simply its committed sequence, made durable in the same step
//    as the data (exactly once: after a crash it resumes from there, never applies twice).
//
// 2. Epochs. Every start or promotion of a master appends an epoch entry (number, random id) to
//    the log, so the history (epoch, id, first sequence) is replicated with the data. A replica's
//    position is (its newest epoch, its last sequence); the master accepts it when that epoch is
//    in its own history and the sequence is not beyond where the master's copy of that epoch
//    ends (engine/epochs.h, CompareLineage). Anything else is divergence.
//
// 3. The handshake (after AUTH; replica -> master):
//      REPLSYNC <ordinal> <port> <epoch token> <seq>
//    and the master answers one of:
//      +CONTINUE <from>          the log still holds from = seq + 1 and the lineage matches;
//      +FULLRESYNC <seq> <bytes> a snapshot of <bytes> bytes at <seq> follows, then the log;
//      -STALEMASTER ...          the replica's epoch is newer: it must not follow this master;
//      -NOTMASTER ...            this pod is not a master (yet): try again later.
//    Then the master sends RESP bulk strings whose first byte says what they carry:
//      'S' snapshot bytes (snapshot/snapshot_format.h), until the snapshot's end frame;
//      'L' log records (log/log.h record encoding), consecutive sequences;
//      'H' heartbeat: u64 master committed sequence, once a second when idle.
//      'A' acknowledgement request: a client waits for acknowledgements (WAIT, sync mode) of
//          entries sent before it (as Redis' REPLCONF GETACK).
//    The replica answers with REPLCONF ACK <seq> once applied entries are durable on it, after
//    each heartbeat, and at once after an 'A'. A replica's fsync may wait a few milliseconds to
//    cover several batches (replica_sync_delay_ms); an 'A' makes it sync at once.
//
// 4. Full resync. The master writes one snapshot file (a read transaction while writes go on)
//    that every replica asking meanwhile shares, and pins its log from the snapshot's sequence
//    until the replicas caught up. The replica stores the stream in a file aside, checks it, and
//    only then installs it (Engine::InstallSnapshot): a master dying mid-sync leaves the
//    replica's old data intact. The install is one atomic transaction, or, when the new data
//    fits the map only without the old, chunks under an install mark that the next start
//    resumes from the same file.
//
// 5. Promotion. When MASTER_ORDINAL names this pod, a replica asks its master to fence
//    (REPLFAILOVER: stop taking writes, report the final sequence), catches up to it, then opens
//    a new epoch. When it names another pod, a master fences itself and follows the new one.
//
// 6. Sync mode: a write is answered once sync_replicas replicas acknowledged it, or with
//    -NOREPLICAS after sync_timeout_ms (the write stays, and replicates later).
#pragma once

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "commands/replication_context.h"
#include "engine/engine.h"

namespace kvstore {

// What this pod should be, as decided from POD_NAME and MASTER_ORDINAL (config/role.h builds it).
struct RoleTarget {
  bool master = true;
  bool standalone = false;
  std::string master_address;  // host:port when !master
  std::string reason;
};

struct ReplicationOptions {
  std::string data_dir;  // full-resync files go to <data_dir>/replication
  std::string password;  // sent with AUTH to the master
  int ordinal = -1;
  int announce_port = 5555;
  std::string mode = "async";  // async | sync
  int sync_replicas = 1;
  std::chrono::milliseconds sync_timeout{1000};
  int min_replicas_to_write = 0;
  std::chrono::seconds min_replicas_max_lag{10};
  std::chrono::milliseconds promotion_timeout{10000};
  // A master that starts with an empty data directory waits this long for a replica to report
  // what it holds before it opens its epoch (see Start); 0: it opens at once.
  std::chrono::milliseconds empty_master_wait{15000};
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{5000};
  std::chrono::milliseconds heartbeat{1000};
  // Re-decides the role (for example from the mounted ConfigMap); polled every role_poll.
  // Null: the role never changes while running.
  std::function<std::optional<RoleTarget>()> reread_role;
  std::chrono::milliseconds role_poll{1000};
  // Told about every role taken (for the pod's role label): "master" or "replica".
  std::function<void(const std::string& role)> on_role;
};

class ReplicaFeed;
class ReplicaLink;
struct LinkStatus;
class FullSyncSource;

class ReplicationManager final : public ReplicationContext {
 public:
  ReplicationManager(asio::io_context& io, Engine& engine, ReplicationOptions options);
  ~ReplicationManager() override;

  // Removes the role records of the pod whose data directory this is (what it was last, a
  // fence, a clean stop): after an offline restore they describe a history the store no longer
  // has, and a start as master would catch up with its old master over the restored data.
  static void ForgetRoleHistory(const std::string& data_dir);

  // Takes the initial role: a master opens a new epoch (blocking until durable), a replica
  // starts following. Then starts watching for role changes. IOError if the epoch cannot open.
  Status Start(const RoleTarget& role);
  // Stops the link, closes every feed, answers every waiter. Thread-safe, idempotent.
  void Shutdown();
  // Graceful shutdown of a master: refuse writes, then wait up to `wait` for every connected
  // replica to acknowledge everything. Blocking; call from a thread that is not running io.
  void DrainReplicas(std::chrono::milliseconds wait);

  // Online restore (RESTORE-SNAPSHOT) on a master: closes every replica feed, replaces the key
  // space with the snapshot file (Engine::InstallSnapshot), opens a new epoch numbered above
  // both the epoch before and every epoch of the restored history, and closes the feeds again.
  // Replicas reconnect, find their position off the new history and full-resync.
  // ReadOnly when this pod is not an unfenced master; the install's error otherwise (nothing
  // changed then). Blocking: call from a thread that is not running io.
  Status InstallRestoredSnapshot(const std::string& path, bool only_into_empty);

  // Serves a replica that sent REPLSYNC on this connection (args: the command). Runs on the
  // socket's executor until the replica goes away or the feed is closed.
  asio::awaitable<void> ServeReplica(asio::ip::tcp::socket socket, std::vector<std::string> args);

  // ReplicationContext
  std::optional<std::string> WriteRefusal() const override;
  ReplicationStatus CurrentStatus() const override;
  // CurrentStatus without what the storage holds (epochs, log and map figures): never waits for
  // the storage, so the admin port's probes answer while a map growth waits for a long snapshot.
  ReplicationStatus LiveStatus() const override;
  void WaitForAcks(std::uint64_t seq, int replicas, std::chrono::milliseconds timeout,
                   std::uint64_t client, std::function<void(int acked)> done) override;
  void CancelWaits(std::uint64_t client) override;
  std::uint64_t BlockedClients() const override;
  int SyncReplicasRequired() const override;
  std::chrono::milliseconds SyncTimeout() const override;
  int ResponsiveReplicas() const override;
  std::chrono::milliseconds ResponsiveWindow() const override;
  void Fence(std::string requester, std::function<void(std::string reply)> done) override;

 private:
  friend class ReplicaFeed;
  friend class ReplicaLink;

  enum class Role {
    kMaster,     // takes writes (unless fenced) and feeds replicas
    kPromoting,  // was a replica, catching up with the old master before opening an epoch
    kReplica,    // follows master_address_
  };

  // Called by feeds (any strand).
  std::optional<std::string> FeedRefusal() const;  // why this pod cannot serve a replica now
  // REQUIRES: mu_ held, and the pod not serving history. Why, naming its master and the one it
  // last attached to (FeedRefusal, and Fence's refusal, which Promote follows).
  std::string NotMasterLocked() const;
  bool RegisterFeed(std::shared_ptr<ReplicaFeed> feed, const std::string& ip, int port, int ordinal,
                    std::uint64_t needed_from, std::uint64_t acked);
  void SetFeedState(std::uint64_t id, const char* state);
  void SetFeedNeeded(std::uint64_t id, std::uint64_t needed_from);
  std::chrono::steady_clock::duration FeedAckAge(std::uint64_t id) const;
  // A fenced master never opens an epoch for a replica's sake: that would erase what the pod it
  // handed over to took since (CatchUpWithNewerReplica instead).
  bool IsUnfencedMaster() const {
    std::lock_guard lock(mu_);
    return role_ == Role::kMaster && !fenced_;
  }
  void UnregisterFeed(std::uint64_t id);
  // Called by the link (its strand) once a handshake succeeded.
  void OnLinkAttached();
  // Called by a feed when a replica with a newer epoch than ours asks to attach. A fenced
  // master (it handed the role over, and its configuration names it again) then catches up with
  // that replica as a promotion does, and returns true; otherwise false.
  bool CatchUpWithNewerReplica(const std::string& address);
  // A master that could not open its start-up epoch on a full volume tries again every second
  // (on the strand) and takes writes once it could.
  void OpenEpochWhenSpaceIsFreed();
  // A master's start-up epoch, given OpenEpoch's result: takes writes, or (a full volume)
  // starts read-only and retries. IOError otherwise.
  Status TakeStartEpoch(const Status& opened);
  // No epoch history and nothing committed: a data directory that never held anything.
  bool StoreIsEmpty() const;
  // A master that started with an empty data directory and waits for its replicas (Start).
  // Feeds ask before they compare histories: they have none to compare with yet.
  bool AwaitingReplicas() const;
  // Ends that wait when no replica with data asked within empty_master_wait: opens the epoch,
  // unless held, fenced, demoted or restored meanwhile. On the strand; blocking until durable.
  void EndEmptyStart();
  // A replica with data attached during the wait: the pod stays read-only, serving no replica,
  // until the configuration makes it a replica. Returns the error for that replica.
  std::string HoldEmptyStart(const std::string& replica, const std::string& position);

  struct FeedInfo {
    std::shared_ptr<ReplicaFeed> feed;
    ReplicaStatus status;
    std::chrono::steady_clock::time_point last_ack;
    std::uint64_t needed_from = 0;  // oldest log sequence it still needs
  };

  struct Waiter {
    std::uint64_t seq;
    int replicas;
    std::uint64_t client;  // for CancelWaits; 0: none
    std::function<void(int)> done;
    std::unique_ptr<asio::steady_timer> timer;
  };

  void OnCommit(std::uint64_t seq);
  void RequestAcks();
  void OnAck(std::uint64_t feed_id, std::uint64_t seq);
  // How many times a client started waiting for acknowledgements (WAIT, a sync-mode write). A
  // feed that sees it grow asks its replica for one ('A') once it has sent what was committed
  // when it read the count: everything such a client waits for. Any thread.
  std::uint64_t AckRequests() const { return ack_requests_.load(); }
  // REQUIRES: mu_ held. Replicas whose acknowledgement reached seq.
  int AckedLocked(std::uint64_t seq) const;
  // Completes satisfied waiters (all of them when `all`); call without mu_.
  void SettleWaiters(bool all);
  std::uint64_t RetentionPin() const;
  void RefuseWrites(std::optional<std::string> refusal);
  // Opens a new epoch (numbered above min_number at least), blocking until it is durable.
  Status OpenEpoch(std::uint64_t min_number = 0);
  // Replaces the link, if any: the new one starts once the old one has finished.
  void StartLink(const std::string& address);
  // Returns the stopped link (or null), for ReplicaLink::AwaitFinished.
  std::shared_ptr<ReplicaLink> StopLink();
  void CloseFeeds();
  void PollRole();
  void ApplyRole(const RoleTarget& target);
  // A replica that stops cleanly while attached to its master (and not in a full resync) records
  // so in its data directory; the next start, following the same master, counts as attached
  // until its link attaches again. So a replica restarted while its master is away (a node
  // failure) stays ready and serves its stale reads, as it did before the restart. A kill -9
  // leaves no record: that replica waits for its master, as a demoted master does.
  struct CleanStop {
    std::string master_address;
    std::uint64_t master_seq = 0;  // the newest master sequence it had heard of
  };
  void RecordCleanStop(const LinkStatus& last);
  void ResumeCleanStop(const std::string& master_address);
  // Fences old_master (trying for promotion_timeout, following "a replica of X" answers),
  // catches up with it, then opens an epoch; again in a second if the epoch cannot open.
  asio::awaitable<void> Promote(std::string old_master);
  // A master whose epoch is open: records the role (with replication on) and takes writes.
  void TakeWrites();
  asio::awaitable<void> CatchUpWith(std::uint64_t final_seq);
  void Announce(const std::string& role);
  // REQUIRES: mu_ held. Whether this pod's log may be served to replicas.
  bool ServesHistoryLocked() const { return role_ == Role::kMaster || demoted_unattached_; }

  asio::io_context& io_;
  Engine& engine_;
  const ReplicationOptions options_;
  asio::strand<asio::io_context::executor_type> strand_;  // role changes, the link, waiters
  asio::steady_timer role_timer_;
  std::unique_ptr<asio::steady_timer> epoch_retry_;  // OpenEpochWhenSpaceIsFreed
  std::unique_ptr<asio::steady_timer> empty_wait_;   // empty_master_wait (Start)
  std::unique_ptr<FullSyncSource> full_sync_;

  mutable std::mutex mu_;
  Role role_ = Role::kMaster;  // GUARDED_BY(mu_)
  bool standalone_ = false;    // GUARDED_BY(mu_)
  bool fenced_ = false;        // GUARDED_BY(mu_) (REPLFAILOVER received)
  bool restoring_ = false;     // GUARDED_BY(mu_) (InstallRestoredSnapshot)
  // An empty start (Start): waiting for the replicas; held_by_ names a replica with data.
  bool awaiting_replicas_ = false;  // GUARDED_BY(mu_)
  std::string held_by_;             // GUARDED_BY(mu_)
  // A demoted master whose link has not attached yet: its log is still its own history, so it
  // keeps serving replicas and answering REPLFAILOVER (the new master catches up from it).
  bool demoted_unattached_ = false;             // GUARDED_BY(mu_)
  RoleTarget target_;                           // GUARDED_BY(mu_) what the config says
  bool shut_down_ = false;                      // GUARDED_BY(mu_)
  std::optional<std::string> refusal_;          // GUARDED_BY(mu_)
  std::string failover_state_ = "no-failover";  // GUARDED_BY(mu_)
  std::string master_address_;                  // GUARDED_BY(mu_)
  std::string attached_master_;              // GUARDED_BY(mu_) the master a link last attached to
  std::shared_ptr<ReplicaLink> link_;        // GUARDED_BY(mu_)
  std::optional<CleanStop> resumed_;         // GUARDED_BY(mu_) (ResumeCleanStop)
  std::map<std::uint64_t, FeedInfo> feeds_;  // GUARDED_BY(mu_)
  std::uint64_t next_feed_id_ = 1;           // GUARDED_BY(mu_)
  std::vector<std::shared_ptr<Waiter>> waiters_;  // GUARDED_BY(mu_)
  Epoch epoch_;                                   // GUARDED_BY(mu_)
  std::atomic<bool> writes_open_{true};           // fast path of WriteRefusal
  std::atomic<std::uint64_t> ack_requests_{0};    // see AckRequests()
};

}  // namespace kvstore
