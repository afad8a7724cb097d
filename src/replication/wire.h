// The replication stream's message kinds and the socket helpers both ends share (see the
// handshake grammar in replication.h). Header-only; no state.
#pragma once

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <chrono>
#include <cstdint>
#include <string>

#include "common/coding.h"
#include "kvstore/resp.h"

namespace kvstore::replication_wire {

inline constexpr auto kUseTuple = asio::experimental::as_tuple(asio::use_awaitable);

// First byte of each bulk string the master sends after the handshake.
inline constexpr char kSnapshotChunk = 'S';
inline constexpr char kLogRecords = 'L';
inline constexpr char kHeartbeat = 'H';
inline constexpr char kAckRequest = 'A';

// Bulk strings carry at most about this much (one log record may exceed it).
inline constexpr std::size_t kMessageBytes = 1 << 20;

inline std::string Heartbeat(std::uint64_t committed_seq) {
  std::string payload(1, kHeartbeat);
  coding::PutFixed64(&payload, committed_seq);
  std::string out;
  resp::AppendBulkString(&out, payload);
  return out;
}

// Asks the replica to make what it applied durable now and acknowledge it (WAIT, sync mode).
inline std::string AckRequest() {
  std::string out;
  resp::AppendBulkString(&out, std::string(1, kAckRequest));
  return out;
}

inline std::string Ack(std::uint64_t seq) {
  return resp::EncodeCommand({"REPLCONF", "ACK", std::to_string(seq)});
}

// Splits "host:port" (the last colon; IPv6 in brackets is not supported). False if malformed.
inline bool SplitAddress(const std::string& address, std::string* host, std::string* port) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  return true;
}

}  // namespace kvstore::replication_wire
