// ScanCursors implementation. Cursor numbers start at a random point so a cursor from before a
// restart is very unlikely to name a position saved after it.
#include "commands/scan_cursors.h"

#include <random>

namespace kvstore {

ScanCursors::ScanCursors(std::size_t capacity) : capacity_(capacity) {
  std::random_device random;
  next_ = (static_cast<std::uint64_t>(random()) << 20) + 1;
}

std::uint64_t ScanCursors::Save(std::string last_key) {
  std::lock_guard lock(mutex_);
  const std::uint64_t cursor = next_++;
  positions_.emplace(cursor, std::move(last_key));
  order_.push_back(cursor);
  while (order_.size() > capacity_) {
    positions_.erase(order_.front());
    order_.pop_front();
  }
  return cursor;
}

std::optional<std::string> ScanCursors::Find(std::uint64_t cursor) const {
  std::lock_guard lock(mutex_);
  auto it = positions_.find(cursor);
  if (it == positions_.end()) return std::nullopt;
  return it->second;
}

}  // namespace kvstore
