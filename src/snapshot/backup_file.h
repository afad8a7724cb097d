// The backup file: a snapshot stream (snapshot_format.h) in a self-describing envelope, written
// by `kvctl backup` and read by `kvctl backup verify`, `kvctl restore` and `kvstore restore`.
// Encoding, streaming verification and file helpers; not thread-safe (one object per file).
//
// Grammar (integers little endian):
//   backup   = header snapshot trailer
//   header   = "KVSTORE-BACKUP " version LF field* LF        ; text, at most 4096 bytes
//   field    = name ": " value LF                              ; in this order:
//              format, pod, epoch, seq, keys, created, snapshot_bytes
//   snapshot = snapshot_bytes bytes of the snapshot format (its own per-frame crc32)
//   trailer  = "KVBKEND1" content_bytes:u64 crc32:u32          ; 20 bytes
// content_bytes counts header + snapshot, and crc32 (zlib) covers exactly those bytes, so a
// flipped bit anywhere, a truncation or a file with bytes appended is refused. epoch is
// "<number>:<id as 16 hex digits>" or "-"; seq is the snapshot's applied sequence; created is
// UTC ISO 8601.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "kvstore/status.h"
#include "snapshot/snapshot_format.h"

namespace kvstore {

constexpr int kBackupFormatVersion = 1;
constexpr std::size_t kBackupMaxHeaderBytes = 4096;
constexpr std::size_t kBackupTrailerBytes = 20;

struct BackupInfo {
  int version = kBackupFormatVersion;
  std::string pod;    // the pod the snapshot was taken from ("-" if unknown)
  std::string epoch;  // "<number>:<id hex>" or "-"
  std::uint64_t seq = 0;
  std::uint64_t keys = 0;
  std::string created;  // e.g. 2026-11-25T15:00:00Z
  std::uint64_t snapshot_bytes = 0;
};

// Writes a backup: Header(), then the snapshot bytes through Body() in any pieces, then
// Trailer(). Each returns (or passes through) the bytes to write; the checksum is kept here.
class BackupEncoder {
 public:
  // InvalidArgument when a text field holds a line break or the header would be too long.
  Result<std::string> Header(const BackupInfo& info);
  void Body(std::string_view snapshot_bytes);
  // InvalidArgument when Body() did not receive exactly info.snapshot_bytes bytes.
  Result<std::string> Trailer();

 private:
  void Add(std::string_view bytes);
  std::uint64_t expected_body_ = 0;
  std::uint64_t body_ = 0;
  std::uint64_t content_ = 0;
  std::uint32_t crc_ = 0;
};

// Checks a backup fed in pieces of any size: the header, every snapshot frame (and that the
// snapshot agrees with the header), the size and the whole-content checksum. Snapshot bytes go
// to the sink as soon as their frames were checked; the checksum is known only at Finish(), so
// a sink must not make them take effect before. The first error (Corruption or InvalidArgument,
// naming what is wrong) is returned by that call and every later one.
class BackupReader {
 public:
  using Sink = std::function<Status(std::string_view snapshot_bytes)>;

  Status Feed(std::string_view data, const Sink& sink);
  // Ok when a complete, intact backup was fed; Corruption naming what is missing otherwise.
  Status Finish();
  bool header_done() const { return state_ != State::kHeader; }
  const BackupInfo& info() const { return info_; }  // valid once header_done()
  std::uint64_t bytes_fed() const { return bytes_fed_; }

 private:
  enum class State { kHeader, kSnapshot, kTrailer, kDone };
  Status FeedLocked(std::string_view data, const Sink& sink);
  Status ParseHeader(std::string_view text);
  Status CheckTrailer();

  State state_ = State::kHeader;
  Status error_;
  std::string pending_;  // header or trailer bytes gathered so far
  BackupInfo info_;
  SnapshotDecoder decoder_;
  std::uint64_t body_ = 0;
  std::uint64_t content_ = 0;
  std::uint64_t bytes_fed_ = 0;
  std::uint32_t crc_ = 0;
};

// Reads and checks a whole backup file (see BackupReader); sink may be null. on_progress, if
// set, is called with the bytes read so far after each chunk. IOError when it cannot be read.
Status ReadBackupFile(const std::string& path, BackupInfo* info, const BackupReader::Sink& sink,
                      const std::function<void(std::uint64_t)>& on_progress = nullptr);

// Checks the backup at path and extracts its snapshot to snapshot_path (replaced), ready for
// Engine::InstallSnapshot. On any error the output is removed.
Status ExtractBackupSnapshot(const std::string& path, const std::string& snapshot_path,
                             BackupInfo* info);

// The current UTC time as the header's `created` (and file names use): 2026-11-25T15:00:00Z.
std::string BackupTimestamp();

}  // namespace kvstore
