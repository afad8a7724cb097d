// The append-only log: the durability point of every write and (later) the replication stream.
// Threads: Append/Sync/Rollback/Trim are called by the engine's writer thread only; ReadFrom
// may be called by any thread (it opens its own file handles).
//
// Files: <dir>/<first_seq as 20 digits>.log, each a sequence of records, then the end:
//   file    = record* end
//   record  = length:u32le crc:u32le seq:u64le payload      ; length = size of seq + payload
//                                                          ; crc = crc32 (zlib) of seq + payload
//   payload = type:u8 key_len:u32le key value_len:u32le value
//   type    = kind | 0x80 (continued)
//   kind    = 1 (put) | 2 (delete; value empty) | 3 (clear; key and value empty)
//           | 4 (epoch: key empty, value = epoch:u64le id:u64le; see engine/epochs.h)
// "continued" marks a record after which more records of the same atomic write follow (MSET,
// EXEC): a unit is a run of continued records and the one record that ends it. Readers keep
// units whole: Open cuts a torn tail back to the last complete unit, recovery commits only
// where a unit ends, and a replica holds back the records of a unit until its last one has
// arrived (the stream is cut by size, since one unit may be gigabytes), so nobody applies part
// of one. (Logs written before the flag have none: every record is then a unit of its own.)
//   end     = end of file | length:u32le = 0 (zeros to the end of the file)
// Files are created at segment_bytes, full of zeros and synced (preallocated), so the end is
// usually the zero length after the last record; <dir>/next.log.tmp is the next file being
// prepared. Sequence numbers are consecutive across records and files, starting at 1.
// A torn record at the end of the newest file (a crash mid-append) is zeroed at Open, with the
// records of its unit before it; damage anywhere else is Corruption and stops the start.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvstore/status.h"

namespace kvstore {

struct LogEntry {
  enum class Type : std::uint8_t { kPut = 1, kDelete = 2, kClear = 3, kEpoch = 4 };
  Type type = Type::kPut;
  std::string key;
  std::string value;
  bool continued = false;  // more entries of the same atomic write follow (see above)
};

struct LogOptions {
  std::string dir;                            // created if missing
  std::uint64_t segment_bytes = 64ull << 20;  // roll to a new file past this size
  std::uint64_t retain_bytes = 1ull << 30;    // keep at least this much history (replication)
  // Entries pinned by replicas are kept beyond retain_bytes, but only up to this total.
  std::uint64_t max_retain_bytes = 8ull << 30;
};

// The record encoding (record in the grammar above), shared by the log files and the replication
// stream. Encode appends one record to *out (InvalidArgument past the 4 GiB record limit).
Status EncodeLogRecord(std::uint64_t seq, const LogEntry& entry, std::string* out);
Status EncodeLogRecord(std::uint64_t seq, LogEntry::Type type, std::string_view key,
                       std::string_view value, std::string* out, bool continued = false);
// Sets the continued flag of the record EncodeLogRecord wrote at records[offset] (its checksum
// included): the writer learns that a unit goes on only when it encodes the next record.
void MarkLogRecordContinued(std::string* records, std::size_t offset);
// One record decoded in place: views into the bytes it was decoded from.
struct LogRecordView {
  std::uint64_t seq = 0;
  LogEntry::Type type = LogEntry::Type::kPut;
  std::string_view key;
  std::string_view value;
  bool continued = false;
  std::string_view stored;  // the whole record as stored (what EncodeLogRecord wrote)
};
// Decodes consecutive records filling all of data, calling visit for each until it returns
// false. Corruption on a truncated or malformed record, or (if verify) a checksum mismatch.
Status DecodeLogRecordViews(std::string_view data,
                            const std::function<bool(const LogRecordView& record)>& visit,
                            bool verify = true);
// The same, decoding each record into a LogEntry (a copy of its key and value).
Status DecodeLogRecords(std::string_view data,
                        const std::function<bool(std::uint64_t seq, LogEntry& entry)>& visit);

struct LogStats {
  std::uint64_t first_seq = 0;  // oldest sequence still on disk (0 when empty)
  std::uint64_t last_seq = 0;   // newest appended sequence (0 when empty)
  std::uint64_t bytes = 0;      // of records (files are larger: preallocated zeros follow)
  std::uint64_t segments = 0;
};

class LogCursor;

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
  // The same for records already encoded (EncodeLogRecord) with sequences last_seq()+1 ...
  // count of them: the engine encodes a batch as it runs, without keeping LogEntry copies.
  // InvalidArgument if the first record's sequence is not last_seq()+1.
  Status AppendRecords(std::string_view records, std::uint64_t count);
  // fdatasync of the current file (and the directory after a roll). IOError on failure.
  Status Sync();
  // Removes the entries appended by the last Append (used when the storage commit that follows
  // fails) by writing zeros over them. IOError if that write fails.
  Status RollbackLastAppend();

  // Calls visit for every entry with seq >= from_seq in order, until it returns false.
  // NotFound when from_seq is older than the oldest retained entry.
  Status ReadFrom(std::uint64_t from_seq,
                  const std::function<bool(std::uint64_t seq, const LogEntry& entry)>& visit);

  // A cursor positioned at from_seq (see LogCursor). NotFound when from_seq is older than the
  // oldest retained entry. The log must outlive it.
  Result<std::unique_ptr<LogCursor>> OpenCursor(std::uint64_t from_seq);

  // Deletes whole files whose entries are all <= checkpoint_seq, keeping at least
  // retain_bytes of history and always the newest file. Files holding entries >= pinned_seq
  // (the oldest entry a replica still needs; 0 for none) are kept too, while the log is within
  // max_retain_bytes.
  Status Trim(std::uint64_t checkpoint_seq, std::uint64_t pinned_seq = 0);

  // Deletes every file and restarts the log empty, so that the next Append gets sequence
  // next_seq. For the engine's recovery when the storage is ahead of the log (the log was lost),
  // and after a full resync installed another history. Readers asking for older entries get
  // NotFound (a full resync). Writer thread only.
  Status ResetStart(std::uint64_t next_seq);

  LogStats Stats() const;

 private:
  friend class LogCursor;
  struct Impl;
  explicit Log(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Follows the log from a position, keeping its file open and its offset between calls, so a
// replica feed reads only the new bytes of the tail (ReadFrom starts from an index point each
// time). Not thread-safe: one per reader; any thread (it reads through its own descriptor).
class LogCursor {
 public:
  ~LogCursor();
  LogCursor(const LogCursor&) = delete;
  LogCursor& operator=(const LogCursor&) = delete;

  // Visits the entries from next_seq() up to and including limit_seq, in order, stopping after
  // about max_bytes of records (wherever that falls, inside a unit too) or when visit returns
  // false (that entry counts as visited).
  // NotFound when the entries it needs are gone (trimmed, or the log was restarted);
  // Corruption / IOError on damage.
  Status Next(std::uint64_t limit_seq, std::size_t max_bytes,
              const std::function<bool(std::uint64_t seq, const LogEntry& entry)>& visit);
  // The same, appending the records to *records exactly as they are stored, in the format
  // EncodeLogRecord writes: a replica feed ships them without decoding and encoding each entry
  // again. Their framing and sequences are checked, their checksums are not: the replica checks
  // them (DecodeLogRecords), and each feed checking them too cost the master one checksum of
  // every record per replica.
  Status NextRecords(std::uint64_t limit_seq, std::size_t max_bytes, std::string* records);
  std::uint64_t next_seq() const { return next_seq_; }

 private:
  // decode: check each record's checksum and decode its entry for visit (else entry is empty).
  Status Walk(std::uint64_t limit_seq, std::size_t max_bytes, bool decode,
              const std::function<bool(std::uint64_t seq, const LogEntry& entry,
                                       std::string_view record)>& visit);
  friend class Log;
  LogCursor(Log::Impl* log, std::uint64_t next_seq) : log_(log), next_seq_(next_seq) {}
  Status Locate();  // opens the file holding next_seq_

  Log::Impl* log_;
  std::uint64_t next_seq_;
  int fd_ = -1;
  std::uint64_t segment_first_ = 0;  // first_seq of the open file
  std::uint64_t offset_ = 0;         // file offset of the record holding next_seq_ (or before)
  std::string buf_;
};

}  // namespace kvstore
