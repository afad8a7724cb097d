// Epoch history encoding and the lineage check (see epochs.h).
#include "engine/epochs.h"

#include <fmt/format.h>

#include "common/coding.h"

namespace kvstore {

std::string EncodeEpochHistory(const EpochHistory& history) {
  std::string out;
  coding::PutFixed32(&out, static_cast<std::uint32_t>(history.size()));
  for (const Epoch& e : history) {
    coding::PutFixed64(&out, e.number);
    coding::PutFixed64(&out, e.id);
    coding::PutFixed64(&out, e.first_seq);
  }
  return out;
}

Result<EpochHistory> DecodeEpochHistory(std::string_view bytes) {
  if (bytes.empty()) return EpochHistory{};
  if (bytes.size() < 4) return Status::Corruption("epoch history: truncated");
  const std::uint32_t count = coding::DecodeFixed32(bytes.data());
  if (bytes.size() != 4 + std::uint64_t{count} * 24) {
    return Status::Corruption("epoch history: wrong length");
  }
  EpochHistory history(count);
  const char* p = bytes.data() + 4;
  for (Epoch& e : history) {
    e.number = coding::DecodeFixed64(p);
    e.id = coding::DecodeFixed64(p + 8);
    e.first_seq = coding::DecodeFixed64(p + 16);
    p += 24;
  }
  return history;
}

LogEntry MakeEpochEntry(std::uint64_t number, std::uint64_t id) {
  LogEntry entry;
  entry.type = LogEntry::Type::kEpoch;
  coding::PutFixed64(&entry.value, number);
  coding::PutFixed64(&entry.value, id);
  return entry;
}

Result<Epoch> ParseEpochEntry(std::uint64_t seq, const LogEntry& entry) {
  if (entry.type != LogEntry::Type::kEpoch || !entry.key.empty() || entry.value.size() != 16) {
    return Status::InvalidArgument("not an epoch entry");
  }
  return Epoch{coding::DecodeFixed64(entry.value.data()),
               coding::DecodeFixed64(entry.value.data() + 8), seq};
}

std::string EpochName(const Epoch& epoch) {
  return fmt::format("{}:{:016x}", epoch.number, epoch.id);
}

Lineage CompareLineage(const EpochHistory& master, std::uint64_t master_seq,
                       const std::optional<Epoch>& replica_epoch, std::uint64_t replica_seq) {
  if (!replica_epoch) {
    // A replica that never saw an epoch entry holds only entries from before any epoch, which
    // only the first master can have written; anything else is unknown data.
    if (replica_seq == 0) return Lineage::kOnHistory;
    if (!master.empty() && replica_seq < master.front().first_seq) return Lineage::kOnHistory;
    return Lineage::kDiverged;
  }
  if (!master.empty() && replica_epoch->number > master.back().number) return Lineage::kNewerEpoch;
  for (std::size_t i = 0; i < master.size(); ++i) {
    if (master[i] != *replica_epoch) continue;
    // The master's copy of this epoch ends where the next one begins (or at its last entry).
    const std::uint64_t end = i + 1 < master.size() ? master[i + 1].first_seq - 1 : master_seq;
    return replica_seq <= end ? Lineage::kOnHistory : Lineage::kDiverged;
  }
  return Lineage::kDiverged;
}

}  // namespace kvstore
