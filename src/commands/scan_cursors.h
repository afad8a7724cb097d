// ScanCursors: SCAN's server-side cursor table. Clients parse SCAN cursors as integers, yet a
// cursor here is a position in the sorted key space (the last key returned), so each cursor
// number names a stored key. Bounded: when full, cursors a scan has already moved past go first,
// then the least recently used, so one client's long scan cannot evict another's live cursor.
// Thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace kvstore {

class ScanCursors {
 public:
  // capacity: how many cursors are remembered, which is also how many scans can be in progress
  // at once without one forgetting another's cursor.
  explicit ScanCursors(std::size_t capacity = 10000);

  // Stores the position reached from cursor `from` (0: a new scan) and returns a new non-zero
  // cursor number for it. `from` stays valid, so a client may retry a call whose reply it
  // lost, but it is superseded: forgotten before any cursor a scan may continue from.
  std::uint64_t Save(std::string last_key, std::uint64_t from);
  // The position saved under cursor, or nullopt when unknown or forgotten. Marks it used.
  std::optional<std::string> Find(std::uint64_t cursor);

 private:
  using Order = std::list<std::uint64_t>;
  struct Entry {
    std::string position;
    bool superseded = false;
    Order::iterator in_order;  // its place in live_ or superseded_
  };

  Order& OrderOf(const Entry& entry) { return entry.superseded ? superseded_ : live_; }

  const std::size_t capacity_;
  std::mutex mutex_;
  std::uint64_t next_;                                // GUARDED_BY(mutex_)
  std::unordered_map<std::uint64_t, Entry> entries_;  // GUARDED_BY(mutex_)
  Order live_;        // GUARDED_BY(mutex_): not yet continued, least recently used first
  Order superseded_;  // GUARDED_BY(mutex_): continued already, least recently used first
};

}  // namespace kvstore
