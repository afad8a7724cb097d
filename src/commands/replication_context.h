// ReplicationContext: what commands need from replication (may this pod take writes, the state
// INFO / ROLE report, waiting for replica acknowledgements), implemented by the replication
// module so that commands stay free of sockets. All methods are thread-safe; callbacks may run
// on any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace kvstore {

// One replica as its master sees it.
struct ReplicaStatus {
  std::string ip;
  int port = 0;       // the port the replica announced (its own client port)
  int ordinal = -1;   // the pod ordinal it announced, -1 if none
  std::string state;  // "wait_bgsave" (full resync), "send_bulk", "online"
  std::uint64_t ack_seq = 0;
  double ack_age_seconds = 0;  // since its last acknowledgement
};

struct ReplicationStatus {
  enum class Role { kMaster, kReplica };
  Role role = Role::kMaster;
  bool standalone = false;
  std::string mode = "async";  // async | sync
  std::uint64_t epoch = 0;
  std::string epoch_id;  // 16 hex digits, Redis' master_replid
  // The epoch before this one (Redis' master_replid2), and the sequence this one opened at: the
  // previous epoch's history is valid up to just before it (second_repl_offset). Empty and 0
  // when this is the first epoch.
  std::string previous_epoch_id;
  std::uint64_t epoch_first_seq = 0;
  std::uint64_t seq = 0;  // committed sequence here: master_repl_offset
  std::uint64_t log_first_seq = 0;
  std::uint64_t log_bytes = 0;         // held now: repl_backlog_histlen
  std::uint64_t log_retain_bytes = 0;  // kept at least (repl_backlog_bytes): repl_backlog_size
  std::string failover_state = "no-failover";
  // Master side.
  std::vector<ReplicaStatus> replicas;
  // Replica side.
  std::string master_host;
  int master_port = 0;
  std::string link_state;  // "connect", "connecting", "sync", "connected"
  bool link_up = false;
  double last_io_seconds_ago = -1;
  bool sync_in_progress = false;
  std::uint64_t sync_total_bytes = 0;  // a full resync's snapshot: its size, and bytes received
  std::uint64_t sync_read_bytes = 0;
  std::uint64_t master_seq = 0;  // the newest master sequence this replica has heard of
  std::uint64_t full_resyncs = 0;
  std::uint64_t partial_resyncs = 0;
  std::string last_error;  // why the link is down, or why the master refused us
  // The link to this master has attached (a handshake succeeded) since it was made, or the pod
  // stopped cleanly while attached to it and its link has not attached since the restart: the
  // data here follows this master's history, maybe behind it.
  bool link_attached = false;
  // The master answered a full resync that has not been installed yet: the data here is not on
  // its history (a restore on the master, a demoted old master, a replica past the backlog).
  bool full_resync_pending = false;
};

// " (<why the link is down>)", or empty: appended to what is said about a replica's link.
inline std::string LinkErrorNote(const ReplicationStatus& status) {
  return status.last_error.empty() ? "" : " (" + status.last_error + ")";
}

// Why the data of this replica is not confirmed by its master, or nullopt when it is (the link
// attached since start, even if down now: stale but on the master's history) or the pod is a
// master. A replica then is not ready (/readyz) and is not backed up: a backup of it could be
// empty, or hold writes its master dropped, and retention would then delete good backups.
inline std::optional<std::string> UnconfirmedReplicaData(const ReplicationStatus& status) {
  if (status.role == ReplicationStatus::Role::kMaster) return std::nullopt;
  if (status.sync_in_progress || status.full_resync_pending) {
    // What is here is not on the master's history: it may hold writes the master dropped.
    return "full resync in progress" + LinkErrorNote(status);
  }
  if (!status.link_up && (status.seq == 0 || !status.link_attached)) {
    // No data, or data that this master has not yet confirmed as its own (a pod demoted from
    // master, a replica that restarted while its master was away).
    return "master link down" + LinkErrorNote(status) +
           (status.seq == 0 ? ", and no data yet" : ", not attached since start");
  }
  return std::nullopt;
}

class ReplicationContext {
 public:
  virtual ~ReplicationContext() = default;
  // Empty when this pod takes writes now; otherwise the error reply that refuses them (without
  // the leading '-'), e.g. "READONLY You can't write against a read only replica.".
  virtual std::optional<std::string> WriteRefusal() const = 0;
  virtual ReplicationStatus CurrentStatus() const = 0;
  // The status without the fields read from the storage (epochs, log figures), which may wait
  // for it: for health probes.
  virtual ReplicationStatus LiveStatus() const { return CurrentStatus(); }
  // Calls done with the number of replicas that acknowledged seq, as soon as `replicas` have
  // or when timeout passes (0, or one too long for a timer: wait forever, as Redis' WAIT). Runs
  // done exactly once, unless CancelWaits(client) drops the wait first. client: the connection
  // that waits (its session id), 0 for none.
  virtual void WaitForAcks(std::uint64_t seq, int replicas, std::chrono::milliseconds timeout,
                           std::uint64_t client, std::function<void(int acked)> done) = 0;
  // Drops the waits of a client whose connection closed, without running their done (so
  // nothing waits on its behalf any more).
  virtual void CancelWaits(std::uint64_t client) = 0;
  // Clients waiting in WaitForAcks now (WAIT, a sync-mode write): INFO's blocked_clients.
  virtual std::uint64_t BlockedClients() const = 0;
  // Sync mode: how many acknowledgements a write needs and how long to wait (0 in async mode).
  virtual int SyncReplicasRequired() const = 0;
  virtual std::chrono::milliseconds SyncTimeout() const = 0;
  // Sync mode: replicas that can acknowledge a write soon: streaming, and heard from within
  // ResponsiveWindow() (they acknowledge at least every second, idle or busy). A replica cut off
  // by a partition or stopped drops out of the count once the window passes.
  virtual int ResponsiveReplicas() const = 0;
  virtual std::chrono::milliseconds ResponsiveWindow() const = 0;
  // REPLFAILOVER from a replica being promoted: stop taking writes, then call done with the
  // RESP-encoded reply: the final committed sequence as an integer, or an error.
  virtual void Fence(std::string requester, std::function<void(std::string reply)> done) = 0;
};

}  // namespace kvstore
