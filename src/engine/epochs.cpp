// Epoch history encoding and the lineage check (see epochs.h).
#include "engine/epochs.h"

#include <fmt/format.h>

#include <charconv>

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

std::string EpochToken(const std::optional<Epoch>& epoch) {
  if (!epoch) return "-";
  return fmt::format("{}:{:016x}:{}", epoch->number, epoch->id, epoch->first_seq);
}

Result<std::optional<Epoch>> ParseEpochToken(std::string_view token) {
  if (token == "-") return std::optional<Epoch>();
  Epoch epoch;
  const auto first = token.find(':');
  const auto second = first == std::string_view::npos ? first : token.find(':', first + 1);
  auto parse = [](std::string_view text, int base, std::uint64_t* out) {
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *out, base);
    return !text.empty() && ec == std::errc() && ptr == text.data() + text.size();
  };
  if (second == std::string_view::npos || !parse(token.substr(0, first), 10, &epoch.number) ||
      !parse(token.substr(first + 1, second - first - 1), 16, &epoch.id) ||
      !parse(token.substr(second + 1), 10, &epoch.first_seq)) {
    return Status::InvalidArgument(fmt::format("malformed epoch \"{}\"", token));
  }
  return std::optional<Epoch>(epoch);
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
