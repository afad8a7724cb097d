// The append-only log: the durability point of every write and (later) the replication stream.
// Threads: Append/Sync/Rollback/Trim are called by the engine's writer thread only; ReadFrom
// may be called by any thread (it opens its own file handles).
//
// Files: <dir>/<first_seq as 20 digits>.log, each a sequence of records, then the end:
//   file    = record* end
//   record  = length:u32le crc:u32le seq:u64le payload      ; length = size of seq + payload
//                                                          ; crc = crc32 (zlib) of seq + payload
//   payload = type:u8 key_len:u32le key value_len:u32le value
//   type    = 1 (put) | 2 (delete; value empty) | 3 (clear; key and value empty)
//   end     = end of file | length:u32le = 0 (zeros to the end of the file)
// Files are created at segment_bytes, full of zeros and synced (preallocated), so the end is
// usually the zero length after the last record; <dir>/next.log.tmp is the next file being
// prepared. Sequence numbers are consecutive across records and files, starting at 1.
// A torn record at the end of the newest file (a crash mid-append) is zeroed at Open; damage
// anywhere else is Corruption and stops the start.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kvstore/status.h"

namespace kvstore {

struct LogEntry {
  enum class Type : std::uint8_t { kPut = 1, kDelete = 2, kClear = 3 };
  Type type = Type::kPut;
  std::string key;
  std::string value;
};

struct LogOptions {
  std::string dir;                            // created if missing
  std::uint64_t segment_bytes = 64ull << 20;  // roll to a new file past this size
  std::uint64_t retain_bytes = 1ull << 30;    // keep at least this much history (replication)
};

struct LogStats {
  std::uint64_t first_seq = 0;  // oldest sequence still on disk (0 when empty)
  std::uint64_t last_seq = 0;   // newest appended sequence (0 when empty)
  std::uint64_t bytes = 0;      // of records (files are larger: preallocated zeros follow)
  std::uint64_t segments = 0;
};

class Log {
 public:
  // Opens the log, validating every file and cutting a torn tail off the newest one.
  static Result<std::unique_ptr<Log>> Open(const LogOptions& options);
  ~Log();

  std::uint64_t last_seq() const;
  // True after an append failed and could not be undone: the file's content is unknown, and every
  // later Append fails.
  bool broken() const;

  // Writes entries with sequences last_seq()+1 ... (not yet durable: call Sync). On failure
  // nothing of this call stays in the file (it is zeroed again) and last_seq() is unchanged:
  // StorageFull for ENOSPC / EDQUOT (also when no new segment can be preallocated; the next
  // Append tries again), IOError otherwise.
  Status Append(const std::vector<LogEntry>& entries);
  // fdatasync of the current file (and the directory after a roll). IOError on failure.
  Status Sync();
  // Removes the entries appended by the last Append (used when the storage commit that follows
  // fails) by writing zeros over them. IOError if that write fails.
  Status RollbackLastAppend();

  // Calls visit for every entry with seq >= from_seq in order, until it returns false.
  // NotFound when from_seq is older than the oldest retained entry.
  Status ReadFrom(std::uint64_t from_seq,
                  const std::function<bool(std::uint64_t seq, const LogEntry& entry)>& visit);

  // Deletes whole files whose entries are all <= checkpoint_seq, keeping at least
  // retain_bytes of history and always the newest file.
  Status Trim(std::uint64_t checkpoint_seq);

  // Deletes every file and restarts the log empty, so that the next Append gets sequence
  // next_seq (which must be > last_seq()). For the engine's recovery when the storage is
  // ahead of the log (the log was lost): sequences never go backwards. Readers asking for older
  // entries get NotFound (a full resync). Writer thread only.
  Status ResetStart(std::uint64_t next_seq);

  LogStats Stats() const;

 private:
  struct Impl;
  explicit Log(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvstore
