// ReplicaLink: a replica's connection to its master. Connects, authenticates, sends REPLSYNC
// with this pod's position, then applies what the master streams (a full resync first if the
// master says so) and acknowledges each durable apply. Reconnects with capped exponential
// backoff. Threads: runs on its own strand; Stop() and Snapshot() may be called from any thread.
#pragma once

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kvstore/resp.h"
#include "kvstore/status.h"
#include "log/log.h"

namespace kvstore {

class ReplicationManager;

// The replica state machine, one comment per state, as Redis' repl_state.
enum class LinkState {
  kConnect,     // waiting to (re)connect, after a backoff
  kConnecting,  // resolving, connecting, authenticating, handshaking
  kSync,        // receiving or installing a full-resync snapshot
  kConnected,   // streaming: applying the master's log as it grows
};

// Where a replica stores a full resync's snapshot while it arrives, until it is installed.
std::string IncomingSnapshotPath(const std::string& data_dir);

struct LinkStatus {
  LinkState state = LinkState::kConnect;
  std::string master_address;
  bool up = false;
  std::chrono::steady_clock::time_point last_io;
  bool ever_io = false;
  std::uint64_t master_seq = 0;    // newest master sequence heard of
  std::uint64_t received_seq = 0;  // newest sequence received (applied or held back)
  std::uint64_t full_resyncs = 0;
  std::uint64_t partial_resyncs = 0;
  std::string last_error;
  bool attached = false;  // a handshake succeeded at least once
  // The master answered FULLRESYNC, and no snapshot from it is installed yet.
  bool full_resync_pending = false;
  // A full resync's snapshot (state kSync): announced size and bytes received so far.
  std::uint64_t sync_total_bytes = 0;
  std::uint64_t sync_read_bytes = 0;
};

class ReplicaLink : public std::enable_shared_from_this<ReplicaLink> {
 public:
  // `predecessor` (may be null) is the link this one replaces, already stopped: this one starts
  // its first session only once that one has finished, so that a snapshot it is still
  // installing, or applies it still has queued, never land on top of this link's data (or
  // share its incoming snapshot file). Its resync counters carry over.
  ReplicaLink(asio::io_context& io, ReplicationManager& manager, std::string master_address,
              std::shared_ptr<ReplicaLink> predecessor = nullptr);

  void Start();
  void Stop();
  LinkStatus Snapshot() const;
  const std::string& master_address() const { return master_address_; }
  // Resolves once `link` (may be null), stopped, will hand nothing more to the engine: its
  // session is over, including an install in progress, and its applies have committed.
  static asio::awaitable<void> AwaitFinished(std::shared_ptr<ReplicaLink> link);

 private:
  asio::awaitable<void> Run();
  asio::awaitable<void> RunSessions();
  // One connection, from connect to loss. Returns once it is over.
  asio::awaitable<void> Session();
  asio::awaitable<std::optional<resp::Value>> ReadValue(const char* what);
  asio::awaitable<bool> ReceiveFullSync(std::uint64_t seq, std::uint64_t bytes);
  asio::awaitable<bool> Apply(std::string_view records);
  asio::awaitable<void> WaitForApplies();
  // Answers the master's acknowledgement request ('A'): syncs what is applied, then acks it.
  void RequestDurableAck();
  // Acknowledges seq (once; a keepalive sends even when nothing new was applied).
  void SendAck(std::uint64_t seq, bool keepalive = false);
  // At most once a second, a keepalive acknowledgement of what is durable: while the stream
  // busily carries a transaction's records, or waits for applies, nothing else tells the master
  // (its 60 s acknowledgement timeout, min_replicas_max_lag) that this replica is alive.
  void KeepAlive();
  void Fail(std::string why);
  void Heard();

  asio::io_context& io_;
  ReplicationManager& manager_;
  const std::string master_address_;
  std::shared_ptr<ReplicaLink> predecessor_;  // strand only; released once it has finished
  // The predecessor while this link waits for it (guarded by mu_): Snapshot() reports its
  // install, which is this pod's sync in progress meanwhile.
  std::shared_ptr<const ReplicaLink> waiting_for_;
  std::atomic<bool> finished_{false};
  std::uint64_t inherited_full_resyncs_ = 0;  // the predecessor's counters when this one began
  std::uint64_t inherited_partial_resyncs_ = 0;
  asio::strand<asio::io_context::executor_type> strand_;
  asio::ip::tcp::socket socket_;
  asio::steady_timer timer_;

  // Strand only.
  bool stopped_ = false;
  resp::ReplyParser parser_;
  std::uint64_t expected_seq_ = 0;  // next sequence the stream must carry
  // Received records (as stored) of a unit whose last record has not arrived yet (see Apply).
  std::string unit_so_far_;
  std::chrono::steady_clock::time_point next_keepalive_;  // see KeepAlive
  std::uint64_t acked_ = 0;
  bool ack_writing_ = false;
  std::uint64_t ack_wanted_ = 0;
  std::string ack_buffer_;
  std::uint64_t connection_ = 0;  // counts sessions, so a late completion knows its own
  std::atomic<int> applies_in_flight_{0};
  std::atomic<bool> apply_failed_{false};
  bool stream_damaged_ = false;  // strand only: this session got damaged or missing records

  mutable std::mutex mu_;
  LinkStatus status_;  // GUARDED_BY(mu_)
};

}  // namespace kvstore
