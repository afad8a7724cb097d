// Epochs: every start or promotion of a master opens a new epoch, recorded in the log as an
// epoch entry, so the history travels to replicas with the data. The history decides whether a
// replica's position lies on the master's history (continue) or not (full resync).
// Pure values and functions, thread-safe.
//
// Encoding of the history (storage meta "epochs", the snapshot header's meta):
//   history = count:u32 (number:u64 id:u64 first_seq:u64)*      ; oldest first
// Epoch entry (log type 4): key empty, value = number:u64 id:u64.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kvstore/status.h"
#include "log/log.h"

namespace kvstore {

struct Epoch {
  std::uint64_t number = 0;     // grows by one at each new epoch anywhere in the cluster
  std::uint64_t id = 0;         // random: two pods that open the same number differ here
  std::uint64_t first_seq = 0;  // sequence of the epoch entry that opened it
  bool operator==(const Epoch&) const = default;
};

using EpochHistory = std::vector<Epoch>;

std::string EncodeEpochHistory(const EpochHistory& history);
Result<EpochHistory> DecodeEpochHistory(std::string_view bytes);

LogEntry MakeEpochEntry(std::uint64_t number, std::uint64_t id);
// InvalidArgument when entry is not a well-formed epoch entry.
Result<Epoch> ParseEpochEntry(std::uint64_t seq, const LogEntry& entry);

// "<number>:<id as 16 hex digits>", as shown by INFO and logs.
std::string EpochName(const Epoch& epoch);
// "<number>:<id as 16 hex digits>:<first_seq>", the replication handshake's form; "-" for none.
std::string EpochToken(const std::optional<Epoch>& epoch);
// InvalidArgument when token is malformed; nullopt for "-".
Result<std::optional<Epoch>> ParseEpochToken(std::string_view token);

// Where a replica whose newest epoch is `replica_epoch` and whose log ends at `replica_seq`
// stands against the master's history (master's log ends at master_seq):
enum class Lineage {
  kOnHistory,   // its log is a prefix of the master's: continue from replica_seq + 1
  kDiverged,    // it holds entries the master's history does not: full resync
  kNewerEpoch,  // its epoch is newer than the master's: the master is stale, do not follow
};
Lineage CompareLineage(const EpochHistory& master, std::uint64_t master_seq,
                       const std::optional<Epoch>& replica_epoch, std::uint64_t replica_seq);

}  // namespace kvstore
