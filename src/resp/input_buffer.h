// The compaction policy both RESP parsers apply to their input buffer. Pure function on the
// caller's buffer; thread-compatible.
#pragma once

#include <cstddef>
#include <string>

namespace kvstore::resp {

// Drops the parsed prefix buffer[0, *consumed) when that is worth a memmove: only when at least
// 16 KiB and at least as many bytes as remain unparsed, so the copy is paid for by bytes already
// parsed. A drained buffer bigger than 1 MiB is freed, so one huge request or reply does not pin
// its memory for the life of the connection.
inline void CompactInput(std::string* buffer, std::size_t* consumed) {
  constexpr std::size_t kCompactMinBytes = 16 * 1024;
  constexpr std::size_t kIdleBufferMaxCapacity = 1024 * 1024;
  if (*consumed == buffer->size()) {
    if (buffer->capacity() > kIdleBufferMaxCapacity) {
      std::string().swap(*buffer);
    } else {
      buffer->clear();
    }
    *consumed = 0;
  } else if (*consumed >= kCompactMinBytes && *consumed >= buffer->size() - *consumed) {
    buffer->erase(0, *consumed);
    *consumed = 0;
  }
}

}  // namespace kvstore::resp
