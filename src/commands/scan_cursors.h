// ScanCursors: SCAN's server-side cursor table. Clients parse SCAN cursors as integers, yet a
// cursor here is a position in the sorted key space (the last key returned), so each cursor
// number names a stored key. Bounded (oldest cursors are forgotten first). Thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace kvstore {

class ScanCursors {
 public:
  explicit ScanCursors(std::size_t capacity = 10000);

  // Stores the position and returns a new non-zero cursor number for it.
  std::uint64_t Save(std::string last_key);
  // The position saved under cursor, or nullopt when unknown or forgotten.
  std::optional<std::string> Find(std::uint64_t cursor) const;

 private:
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::uint64_t next_;                                        // GUARDED_BY(mutex_)
  std::unordered_map<std::uint64_t, std::string> positions_;  // GUARDED_BY(mutex_)
  std::deque<std::uint64_t> order_;                           // GUARDED_BY(mutex_), oldest first
};

}  // namespace kvstore
