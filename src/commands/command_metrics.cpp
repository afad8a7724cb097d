// CommandMetrics (see command_metrics.h).
#include "commands/command_metrics.h"

namespace kvstore {

std::string_view CommandMetrics::FamilyName(Family family) {
  switch (family) {
    case Family::kRead:
      return "read";
    case Family::kWrite:
      return "write";
    case Family::kAdmin:
      return "admin";
  }
  return "admin";
}

CommandMetrics::Family CommandMetrics::FamilyOf(const CommandSpec* spec) {
  if (spec == nullptr) return Family::kAdmin;
  if (spec->flags & kFlagWrite) return Family::kWrite;
  if (spec->flags & kFlagRead) return Family::kRead;
  return Family::kAdmin;
}

CommandMetrics::CommandMetrics(std::span<const CommandSpec* const> commands) {
  for (const CommandSpec* spec : commands) {
    index_.emplace(spec, names_.size());
    names_.push_back(spec->name);
  }
  names_.push_back("unknown");
  slots_ = std::make_unique<Slot[]>(names_.size());
}

void CommandMetrics::Record(const CommandSpec* spec, bool ok, double seconds) {
  std::size_t slot = names_.size() - 1;
  if (spec != nullptr) {
    if (auto it = index_.find(spec); it != index_.end()) slot = it->second;
  }
  (ok ? slots_[slot].ok : slots_[slot].errors).fetch_add(1, std::memory_order_relaxed);
  slots_[slot].microseconds.fetch_add(static_cast<std::uint64_t>(seconds * 1e6),
                                      std::memory_order_relaxed);
  latency_[static_cast<int>(FamilyOf(spec))].Observe(seconds);
}

std::vector<CommandMetrics::CommandCounts> CommandMetrics::Counts() const {
  std::vector<CommandCounts> counts(names_.size());
  for (std::size_t i = 0; i < names_.size(); ++i) {
    counts[i].name = names_[i];
    counts[i].ok = slots_[i].ok.load(std::memory_order_relaxed);
    counts[i].errors = slots_[i].errors.load(std::memory_order_relaxed);
    counts[i].microseconds = slots_[i].microseconds.load(std::memory_order_relaxed);
  }
  return counts;
}

metrics::HistogramSnapshot CommandMetrics::Latency(Family family) const {
  return latency_[static_cast<int>(family)].Snapshot();
}

std::uint64_t CommandMetrics::total_errors() const {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < names_.size(); ++i) {
    total += slots_[i].errors.load(std::memory_order_relaxed);
  }
  return total;
}

}  // namespace kvstore
