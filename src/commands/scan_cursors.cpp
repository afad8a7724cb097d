// ScanCursors implementation. Cursor numbers start at a random point so a cursor from before a
// restart is very unlikely to name a position saved after it.
#include "commands/scan_cursors.h"

#include <random>

namespace kvstore {

ScanCursors::ScanCursors(std::size_t capacity) : capacity_(capacity) {
  std::random_device random;
  next_ = (static_cast<std::uint64_t>(random()) << 20) + 1;
}

std::uint64_t ScanCursors::Save(std::string last_key, std::uint64_t from) {
  std::lock_guard lock(mutex_);
  if (auto it = entries_.find(from); it != entries_.end() && !it->second.superseded) {
    superseded_.splice(superseded_.end(), live_, it->second.in_order);
    it->second.superseded = true;
  }
  const std::uint64_t cursor = next_++;
  live_.push_back(cursor);
  entries_.emplace(cursor, Entry{std::move(last_key), false, std::prev(live_.end())});
  while (entries_.size() > capacity_) {
    Order& victims = superseded_.empty() ? live_ : superseded_;
    entries_.erase(victims.front());
    victims.pop_front();
  }
  return cursor;
}

std::optional<std::string> ScanCursors::Find(std::uint64_t cursor) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(cursor);
  if (it == entries_.end()) return std::nullopt;
  Order& order = OrderOf(it->second);
  order.splice(order.end(), order, it->second.in_order);
  return it->second.position;
}

}  // namespace kvstore
