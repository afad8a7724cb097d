// CommandMetrics: calls per command and result (ok / error), time spent per command, and a
// latency histogram per command family, for /metrics and INFO commandstats. Thread-safe and
// lock-free on the hot path: Record() is an index lookup in a read-only table plus relaxed
// atomic adds; the readers take no locks either.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "commands/command.h"
#include "metrics/histogram.h"

namespace kvstore {

class CommandMetrics {
 public:
  // read: kFlagRead commands; write: kFlagWrite commands; admin: everything else (connection,
  // server and replication commands, unknown commands).
  enum class Family { kRead, kWrite, kAdmin };
  static constexpr Family kFamilies[] = {Family::kRead, Family::kWrite, Family::kAdmin};
  static std::string_view FamilyName(Family family);
  static Family FamilyOf(const CommandSpec* spec);

  explicit CommandMetrics(std::span<const CommandSpec* const> commands = AllCommands());
  CommandMetrics(const CommandMetrics&) = delete;
  CommandMetrics& operator=(const CommandMetrics&) = delete;

  // One finished command: spec null for an unknown command (counted as "unknown"); ok when its
  // reply is not an error; seconds from its parse to its reply being ready.
  void Record(const CommandSpec* spec, bool ok, double seconds);

  struct CommandCounts {
    std::string_view name;  // "unknown" for unknown commands
    std::uint64_t ok = 0;
    std::uint64_t errors = 0;
    std::uint64_t microseconds = 0;
  };
  // Every command of the table, then "unknown", in table order (also those never called).
  std::vector<CommandCounts> Counts() const;
  metrics::HistogramSnapshot Latency(Family family) const;
  std::uint64_t total_errors() const;

 private:
  struct Slot {
    std::atomic<std::uint64_t> ok{0};
    std::atomic<std::uint64_t> errors{0};
    std::atomic<std::uint64_t> microseconds{0};
  };
  std::vector<std::string_view> names_;                        // per slot; last: "unknown"
  std::unordered_map<const CommandSpec*, std::size_t> index_;  // read-only after construction
  std::unique_ptr<Slot[]> slots_;                              // names_.size()
  metrics::Histogram latency_[3] = {metrics::Histogram(metrics::Histogram::LatencyBounds()),
                                    metrics::Histogram(metrics::Histogram::LatencyBounds()),
                                    metrics::Histogram(metrics::Histogram::LatencyBounds())};
};

}  // namespace kvstore
