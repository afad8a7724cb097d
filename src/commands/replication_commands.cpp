// Replication commands on the client port: ROLE, WAIT, DIGEST, and the wire commands replicas
// send (REPLSYNC, REPLCONF, REPLFAILOVER; the protocol is described in
// src/replication/replication.h). INFO's "# Replication" section is rendered here too.
#include <fmt/format.h>

#include "commands/command.h"
#include "commands/info_field.h"
#include "kvstore/resp.h"

namespace kvstore {
namespace {

ReplicationStatus StatusOf(CommandContext& c) {
  if (c.replication != nullptr) return c.replication->CurrentStatus();
  ReplicationStatus status;
  status.standalone = true;
  status.seq = c.engine.committed_seq();
  return status;
}

// ROLE
//   master:  ["master", offset, [[ip, port, acked offset], ...]]
//   replica: ["slave", master host, master port, link state, offset]
// as Redis replies, so tools that parse ROLE work unchanged.
Outcome Role(CommandContext& c) {
  const ReplicationStatus status = StatusOf(c);
  if (status.role == ReplicationStatus::Role::kMaster) {
    resp::AppendArrayHeader(c.out, 3);
    resp::AppendBulkString(c.out, "master");
    resp::AppendInteger(c.out, static_cast<std::int64_t>(status.seq));
    resp::AppendArrayHeader(c.out, status.replicas.size());
    for (const ReplicaStatus& r : status.replicas) {
      resp::AppendArrayHeader(c.out, 3);
      resp::AppendBulkString(c.out, r.ip);
      resp::AppendBulkString(c.out, std::to_string(r.port));
      resp::AppendBulkString(c.out, std::to_string(r.ack_seq));
    }
    return Outcome::Replied();
  }
  resp::AppendArrayHeader(c.out, 5);
  resp::AppendBulkString(c.out, "slave");
  resp::AppendBulkString(c.out, status.master_host);
  resp::AppendInteger(c.out, status.master_port);
  resp::AppendBulkString(c.out, status.link_state);
  resp::AppendInteger(c.out, static_cast<std::int64_t>(status.seq));
  return Outcome::Replied();
}

// WAIT numreplicas timeout_ms -> the number of replicas that acknowledged this client's last
// write, once numreplicas have or the timeout passed, as in Redis: 0 waits forever, and so does
// a timeout too long for a timer (Redis' deadline overflows). The client is blocked meanwhile;
// when its connection closes, its session cancels the wait (ReplicationContext::CancelWaits).
Outcome Wait(CommandContext& c) {
  std::int64_t replicas = 0, timeout = 0;
  if (!resp::ParseInteger(c.args[1], &replicas)) {
    ReplyNotInteger(c.out);
    return Outcome::Replied();
  }
  if (!resp::ParseInteger(c.args[2], &timeout)) {
    resp::AppendError(c.out, "ERR timeout is not an integer or out of range");
    return Outcome::Replied();
  }
  if (timeout < 0) {
    resp::AppendError(c.out, "ERR timeout is negative");
    return Outcome::Replied();
  }
  const ReplicationStatus status = StatusOf(c);
  if (status.role == ReplicationStatus::Role::kReplica) {
    resp::AppendError(c.out, "ERR WAIT cannot be used with replica instances.");
    return Outcome::Replied();
  }
  if (c.replication == nullptr) {  // standalone: no replica can acknowledge anything
    resp::AppendInteger(c.out, 0);
    return Outcome::Replied();
  }
  Outcome outcome;
  outcome.kind = Outcome::Kind::kDeferred;
  ReplicationContext* replication = c.replication;
  const std::uint64_t seq = c.client.last_write_seq;
  const std::uint64_t client = c.client.info.id;
  const int wanted =
      static_cast<int>(std::min<std::int64_t>(std::max<std::int64_t>(replicas, 0), 1 << 20));
  const auto wait = std::chrono::milliseconds(timeout);
  outcome.deferred = [replication, seq, wanted, wait,
                      client](std::function<void(std::string)> deliver) {
    replication->WaitForAcks(seq, wanted, wait, client, [deliver = std::move(deliver)](int acked) {
      std::string reply;
      resp::AppendInteger(&reply, acked);
      deliver(std::move(reply));
    });
  };
  return outcome;
}

// DIGEST -> 16 hex digits: FNV-1a (64 bit) over every key and value in key order, each
// length-prefixed, so two pods hold the same key space exactly when their digests match.
// "0000000000000000" for an empty key space, like Redis' DEBUG DIGEST.
Outcome Digest(CommandContext& c) {
  Storage::Snapshot* snapshot = c.reads.Borrow(c.out);
  if (snapshot == nullptr) return Outcome::Replied();
  std::uint64_t hash = 14695981039346656037ull;
  auto mix = [&hash](std::string_view bytes) {
    for (unsigned char b : bytes) {
      hash ^= b;
      hash *= 1099511628211ull;
    }
  };
  auto mix_length = [&mix](std::size_t n) {
    char buf[8];
    for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    mix(std::string_view(buf, 8));
  };
  std::uint64_t keys = 0;
  Status s = snapshot->Scan("", false, [&](std::string_view key, std::string_view value) {
    mix_length(key.size());
    mix(key);
    mix_length(value.size());
    mix(value);
    ++keys;
    return true;
  });
  if (!s.ok()) {
    resp::AppendError(c.out, "ERR " + s.message());
    return Outcome::Replied();
  }
  resp::AppendBulkString(c.out, keys == 0 ? std::string(16, '0') : fmt::format("{:016x}", hash));
  return Outcome::Replied();
}

// REPLSYNC <ordinal> <announced port> <epoch> <seq>
//   Sent by a replica (after AUTH) to attach: its pod ordinal (-1 if none), the client port it
//   serves on, the newest epoch it holds ("<number>:<id hex>", or "-" for none) and the last
//   sequence it applied. Checked here; the replication module takes the connection over and
//   answers +CONTINUE or +FULLRESYNC (see src/replication/replication.h).
Outcome ReplSync(CommandContext& c) {
  std::int64_t ordinal = 0, port = 0, seq = 0;
  if (!resp::ParseInteger(c.args[1], &ordinal) || !resp::ParseInteger(c.args[2], &port) ||
      !resp::ParseInteger(c.args[4], &seq) || ordinal < -1 || ordinal > 1000000 || port < 0 ||
      port > 65535 || seq < 0) {
    resp::AppendError(c.out, "ERR REPLSYNC expects <ordinal> <port> <epoch> <seq>");
    return Outcome::Replied();
  }
  if (c.replication == nullptr) {
    resp::AppendError(c.out, "ERR replication is disabled on this server");
    return Outcome::Replied();
  }
  Outcome outcome;
  outcome.kind = Outcome::Kind::kHandoff;
  return outcome;
}

// REPLCONF <option> <value> ...
//   Accepted with +OK for compatibility (Redis replicas send listening-port and capa). The
//   acknowledgements of a kvstore replica (REPLCONF ACK <seq>) travel on its replication stream,
//   where the replication module reads them; outside one they are ignored, as in Redis.
Outcome ReplConf(CommandContext& c) {
  if (EqualsIgnoreCase(c.args[1], "ack")) return Outcome::Replied();
  resp::AppendSimpleString(c.out, "OK");
  return Outcome::Replied();
}

// REPLFAILOVER <requester>
//   Sent by a replica that is being promoted to the master it follows. The master stops taking
//   writes (every later write gets -READONLY), lets the writes in flight finish, and replies
//   with its final committed sequence: the requester catches up to it before it opens its own
//   epoch, so a planned promotion loses no acknowledged write.
Outcome ReplFailover(CommandContext& c) {
  if (c.replication == nullptr) {
    resp::AppendError(c.out, "ERR replication is disabled on this server");
    return Outcome::Replied();
  }
  Outcome outcome;
  outcome.kind = Outcome::Kind::kDeferred;
  ReplicationContext* replication = c.replication;
  std::string requester = c.args[1];
  outcome.deferred = [replication, requester](std::function<void(std::string)> deliver) {
    replication->Fence(requester, std::move(deliver));
  };
  return outcome;
}

constexpr CommandSpec kCommands[] = {
    {"role", 1, kFlagFast, Role, 0, 0, 0},
    {"wait", 3, 0, Wait, 0, 0, 0},
    {"digest", 1, kFlagRead, Digest, 0, 0, 0},
    {"replsync", 5, kFlagAdmin, ReplSync, 0, 0, 0},
    {"replconf", -2, kFlagAdmin, ReplConf, 0, 0, 0},
    {"replfailover", 2, kFlagAdmin, ReplFailover, 0, 0, 0},
};

}  // namespace

std::span<const CommandSpec> ReplicationCommands() { return kCommands; }

void AppendReplicationInfo(const ReplicationStatus& status, std::string* text) {
  const bool master = status.role == ReplicationStatus::Role::kMaster;
  text->append("# Replication\r\n");
  Field(text, "role", master ? "master" : "slave");
  if (!master) {
    Field(text, "master_host", status.master_host);
    Field(text, "master_port", std::to_string(status.master_port));
    Field(text, "master_link_status", status.link_up ? "up" : "down");
    Field(text, "master_last_io_seconds_ago",
          std::to_string(static_cast<std::int64_t>(status.last_io_seconds_ago)));
    Field(text, "master_sync_in_progress", status.sync_in_progress ? "1" : "0");
    if (status.sync_in_progress) {
      // As Redis during a transfer; here they stay (left 0) while the copy is installed.
      const std::uint64_t total = status.sync_total_bytes, read = status.sync_read_bytes;
      Field(text, "master_sync_total_bytes", total);
      Field(text, "master_sync_read_bytes", read);
      Field(text, "master_sync_left_bytes", total > read ? total - read : 0);
      Field(text, "master_sync_perc",
            fmt::format("{:.2f}", total == 0 ? 100.0
                                             : 100.0 * static_cast<double>(read) /
                                                   static_cast<double>(total)));
      Field(text, "master_sync_last_io_seconds_ago",
            std::to_string(static_cast<std::int64_t>(status.last_io_seconds_ago)));
    }
    Field(text, "slave_read_repl_offset", status.seq);
    Field(text, "slave_repl_offset", status.seq);
    Field(text, "slave_priority", "100");
    Field(text, "slave_read_only", "1");
    Field(text, "replica_announced", "1");
  }
  Field(text, "connected_slaves", status.replicas.size());
  for (std::size_t i = 0; i < status.replicas.size(); ++i) {
    const ReplicaStatus& r = status.replicas[i];
    Field(text, "slave" + std::to_string(i),
          fmt::format("ip={},port={},state={},offset={},lag={}", r.ip, r.port, r.state, r.ack_seq,
                      static_cast<std::int64_t>(r.ack_age_seconds)));
  }
  Field(text, "master_failover_state", status.failover_state);
  Field(text, "master_replid", status.epoch_id.empty() ? std::string(40, '0') : status.epoch_id);
  Field(text, "master_replid2",
        status.previous_epoch_id.empty() ? std::string(40, '0') : status.previous_epoch_id);
  Field(text, "master_repl_offset", status.seq);
  Field(text, "second_repl_offset",
        status.previous_epoch_id.empty() ? std::string("-1")
                                         : std::to_string(status.epoch_first_seq));
  Field(text, "repl_backlog_active", "1");
  // As Redis: the configured size, then the bytes held (here the log's retained segments).
  Field(text, "repl_backlog_size", status.log_retain_bytes);
  Field(text, "repl_backlog_first_byte_offset", status.log_first_seq);
  Field(text, "repl_backlog_histlen", status.log_bytes);
  Field(text, "kvstore_replication_mode", status.standalone ? "standalone" : status.mode);
  Field(text, "kvstore_epoch", status.epoch);
  if (!master) {
    Field(text, "kvstore_master_seq", status.master_seq);
    Field(text, "kvstore_lag_entries",
          status.master_seq > status.seq ? status.master_seq - status.seq : 0);
    Field(text, "kvstore_full_resyncs", status.full_resyncs);
    Field(text, "kvstore_partial_resyncs", status.partial_resyncs);
    if (!status.last_error.empty()) Field(text, "kvstore_link_error", status.last_error);
  }
  text->append("\r\n");
}

}  // namespace kvstore
