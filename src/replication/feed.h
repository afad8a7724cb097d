// ReplicaFeed: the master's side of one replica's connection, after REPLSYNC. Streams a full
// resync if needed, then the log as it grows, heartbeats when idle, and reads the replica's
// acknowledgements. Threads: everything runs on the connection's strand; Wake() and Close() may
// be called from any thread (they post to it).
#pragma once

#include <asio.hpp>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace kvstore {

class ReplicationManager;
struct FullSyncFile;

class ReplicaFeed : public std::enable_shared_from_this<ReplicaFeed> {
 public:
  ReplicaFeed(std::uint64_t id, asio::ip::tcp::socket socket, ReplicationManager& manager);

  asio::awaitable<void> Run(std::vector<std::string> args);
  // New committed entries may be ready to send.
  void Wake();
  void Close();

  std::uint64_t id() const { return id_; }

 private:
  asio::awaitable<bool> Send(std::string bytes);
  asio::awaitable<bool> SendFullSync(std::uint64_t* next_seq);
  asio::awaitable<void> ReadAcks();
  asio::awaitable<void> Stream(std::uint64_t next_seq);
  void SetState(const char* state);

  const std::uint64_t id_;
  asio::ip::tcp::socket socket_;
  asio::steady_timer wake_;
  ReplicationManager& manager_;
  bool wake_pending_ = false;  // strand only
  bool closed_ = false;        // strand only
  // The AckRequests() count the last acknowledgement request answered. Strand only.
  std::uint64_t ack_requests_sent_ = 0;
  // The last sequence sent to the replica (its position at attach, the snapshot's, then the
  // stream's): acknowledgements are capped to it. Written by the sender, read by ReadAcks.
  std::atomic<std::uint64_t> sent_through_{0};
  std::string peer_ip_;
};

}  // namespace kvstore
