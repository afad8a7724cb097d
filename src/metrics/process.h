// ProcessStats: this process's CPU time, resident memory, open file descriptors and start time,
// read from /proc (Linux), for the standard process_* metrics. Thread-safe (no shared state).
#pragma once

#include <cstdint>

namespace kvstore::metrics {

struct ProcessStats {
  double cpu_seconds = 0;  // user + system
  std::uint64_t resident_bytes = 0;
  std::uint64_t virtual_bytes = 0;
  std::uint64_t open_fds = 0;
  std::uint64_t max_fds = 0;
  double start_time_seconds = 0;  // Unix time
};

// Reads /proc/self. Fields that cannot be read stay 0.
ProcessStats ReadProcessStats();

}  // namespace kvstore::metrics
