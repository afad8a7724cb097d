// The append-only log: segment files of CRC-checked records (grammar in log.h).
// Threads: Append/Sync/RollbackLastAppend/Trim/ResetStart run on the engine's writer thread.
// ReadFrom, Stats and last_seq may run on any thread: they copy what they need of the segment
// list under mu and read the files through their own descriptors. One short-lived background
// thread at a time zero-fills the next segment (Impl::MaybePrepare); it touches only its own file.
//
// Encoding (all integers little endian):
//   file    = record* end
//   record  = length:u32 crc:u32 seq:u64 payload       ; length = 8 + payload size
//   payload = type:u8 key_len:u32 key value_len:u32 value   ; type = kind | 0x80 (continued)
//   crc     = crc32 (zlib) over seq and payload
//   end     = end of file | length 0 (the zeros of the preallocated, not yet written space)
//
// Preallocation: a new segment is created at segment_bytes, written full of zeros and
// fdatasync'ed before it is used (as "next.log.tmp", renamed at the roll), so appends overwrite
// allocated blocks and the per-batch fdatasync has no file-system metadata to journal. The next
// segment is prepared on a background thread once the current one is half full, so the writer
// normally never waits for the zero-fill. Undoing bytes (rollback, torn tail) writes zeros over
// them instead of truncating.
#include "log/log.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "common/coding.h"
#include "common/logging.h"

namespace kvstore {

namespace {

constexpr std::size_t kHeaderBytes = 8;                  // length + crc
constexpr std::size_t kMinRecordLength = 8 + 1 + 4 + 4;  // seq + type + key_len + value_len
constexpr std::uint64_t kMaxRecordLength = 0xffffffffull;
constexpr std::uint8_t kContinuedFlag = 0x80;  // in the type byte: the unit goes on (log.h)
constexpr std::size_t kReadChunk = 1 << 20;
// ReadFrom seeks to the nearest indexed record; one index point per this many bytes.
constexpr std::uint64_t kIndexStride = 256 << 10;

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

using coding::DecodeFixed32;
using coding::DecodeFixed64;

std::uint32_t Crc(const char* data, std::size_t n) {
  // 0 is zlib's initial crc (what crc32(0, Z_NULL, 0) returns), without a call to ask for it.
  return static_cast<std::uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(data), static_cast<uInt>(n)));
}

std::string SegmentName(std::uint64_t first_seq) { return fmt::format("{:020d}.log", first_seq); }

bool ParseSegmentName(std::string_view name, std::uint64_t* first_seq) {
  if (name.size() != 24 || name.substr(20) != ".log") return false;
  std::uint64_t v = 0;
  for (char c : name.substr(0, 20)) {
    if (c < '0' || c > '9') return false;
    if (v > (UINT64_MAX - 9) / 10) return false;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  *first_seq = v;
  return true;
}

Status ErrnoStatus(std::string_view what, int err) {
  if (err == ENOSPC || err == EDQUOT) {
    return Status::StorageFull(fmt::format("storage full: {}: no space left on device", what));
  }
  return Status::IOError(fmt::format("{}: {}", what, ErrnoText(err)));
}

constexpr std::size_t kZeroChunk = 1 << 20;

const std::string& Zeros() {
  static const std::string zeros(kZeroChunk, '\0');
  return zeros;
}

// Writes zeros over [offset, offset + n). 0 or an errno.
int WriteZeros(int fd, std::uint64_t offset, std::uint64_t n) {
  while (n > 0) {
    std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(n, kZeroChunk));
    ssize_t w = ::pwrite(fd, Zeros().data(), chunk, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    offset += static_cast<std::uint64_t>(w);
    n -= static_cast<std::uint64_t>(w);
  }
  return 0;
}

// Creates path (replacing any old file) as bytes zeros, fdatasync'ed. StorageFull on ENOSPC /
// EDQUOT, IOError otherwise; nothing is left behind on failure.
Status CreateZeroFilled(const std::string& path, std::uint64_t bytes) {
  ::unlink(path.c_str());
  int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(fmt::format("cannot create log file {}", path), errno);
  int err = WriteZeros(fd, 0, bytes);
  if (err == 0 && ::fdatasync(fd) != 0) err = errno;
  ::close(fd);
  if (err != 0) {
    ::unlink(path.c_str());
    return ErrnoStatus(fmt::format("cannot preallocate log file {} ({} bytes)", path, bytes), err);
  }
  return Status::Ok();
}

// The offset just past the last non-zero byte of the file at or after from (from when none).
// -1 (errno set) on a read error.
std::int64_t EndOfNonZero(int fd, std::uint64_t from) {
  std::string buf(kZeroChunk, '\0');
  std::uint64_t end = from;
  std::uint64_t offset = from;
  for (;;) {
    ssize_t r = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    if (std::memcmp(buf.data(), Zeros().data(), static_cast<std::size_t>(r)) == 0) {
      offset += static_cast<std::uint64_t>(r);
      continue;
    }
    for (ssize_t i = r; i > 0; --i) {
      if (buf[static_cast<std::size_t>(i - 1)] != '\0') {
        end = offset + static_cast<std::uint64_t>(i);
        break;
      }
    }
    offset += static_cast<std::uint64_t>(r);
  }
  return static_cast<std::int64_t>(end);
}

// Writes all of data at offset, retrying short writes and EINTR.
int WriteAll(int fd, const char* data, std::size_t n, std::uint64_t offset) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, data, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    data += w;
    n -= static_cast<std::size_t>(w);
    offset += static_cast<std::uint64_t>(w);
  }
  return 0;
}

// Decodes one record's body (seq + payload, length bytes) in place into *record (all but its
// stored field), checking it against crc if verify. On failure says why in *why.
bool ParseRecordBody(const char* body, std::uint32_t length, std::uint32_t crc, bool verify,
                     LogRecordView* record, std::string* why) {
  if (verify && Crc(body, length) != crc) {
    *why = "checksum mismatch";
    return false;
  }
  const char* p = body + 8;
  const char* limit = body + length;
  auto type = static_cast<std::uint8_t>(*p++);
  const bool more = (type & kContinuedFlag) != 0;
  type &= static_cast<std::uint8_t>(~kContinuedFlag);
  std::uint64_t key_len = DecodeFixed32(p);
  p += 4;
  if (type < 1 || type > 4 || key_len > static_cast<std::uint64_t>(limit - p) - 4) {
    *why = "malformed payload";
    return false;
  }
  const char* key = p;
  p += key_len;
  std::uint64_t value_len = DecodeFixed32(p);
  p += 4;
  if (value_len != static_cast<std::uint64_t>(limit - p)) {
    *why = "malformed payload";
    return false;
  }
  record->seq = DecodeFixed64(body);
  record->type = static_cast<LogEntry::Type>(type);
  record->key = std::string_view(key, key_len);
  record->value = std::string_view(p, value_len);
  record->continued = more;
  return true;
}

void CopyToEntry(const LogRecordView& record, LogEntry* entry) {
  entry->type = record.type;
  entry->key.assign(record.key);
  entry->value.assign(record.value);
  entry->continued = record.continued;
}

// Sequential reader of the records of one file, from a given offset.
class RecordReader {
 public:
  enum class Next { kRecord, kEnd, kBad, kError };

  RecordReader(int fd, std::uint64_t offset) : fd_(fd), offset_(offset), read_offset_(offset) {
    struct stat st;
    file_bytes_ = ::fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  }

  // kRecord: *seq, (if given) *entry and *continued are set and offset() moves past the record.
  // kEnd: clean end of the records at offset() (end of file or a zero length). kBad: the record at
  // offset() is torn or corrupt
  // (*why says how). kError: read failure (*why).
  Next Read(std::uint64_t* seq, LogEntry* entry, std::string* why, bool* continued = nullptr) {
    int have = Ensure(kHeaderBytes, why);
    if (have < 0) return Next::kError;
    if (end_ == pos_) return Next::kEnd;
    if (have == 0) {
      *why = fmt::format("truncated record header ({} of {} bytes)", end_ - pos_, kHeaderBytes);
      return Next::kBad;
    }
    const char* h = buf_.data() + pos_;
    std::uint32_t length = DecodeFixed32(h);
    std::uint32_t crc = DecodeFixed32(h + 4);
    if (length == 0) return Next::kEnd;  // the preallocated zeros after the last record
    if (length < kMinRecordLength) {
      *why = fmt::format("invalid record length {}", length);
      return Next::kBad;
    }
    // Judge the length against the file size first: a garbage length must not become a
    // multi-gigabyte buffer.
    if (offset_ + kHeaderBytes + length > std::max(file_bytes_, read_offset_)) {
      *why = fmt::format("truncated record (length {}, only {} bytes left in the file)", length,
                         std::max(file_bytes_, read_offset_) - offset_ - kHeaderBytes);
      return Next::kBad;
    }
    have = Ensure(kHeaderBytes + length, why);
    if (have < 0) return Next::kError;
    if (have == 0) {
      *why = fmt::format("truncated record (length {}, only {} bytes left in the file)", length,
                         end_ - pos_ - kHeaderBytes);
      return Next::kBad;
    }
    const char* body = buf_.data() + pos_ + kHeaderBytes;
    LogRecordView record;
    if (!ParseRecordBody(body, length, crc, /*verify=*/true, &record, why)) return Next::kBad;
    *seq = record.seq;
    if (entry != nullptr) CopyToEntry(record, entry);
    if (continued != nullptr) *continued = record.continued;
    pos_ += kHeaderBytes + length;
    offset_ += kHeaderBytes + length;
    return Next::kRecord;
  }

  std::uint64_t offset() const { return offset_; }

 private:
  // 1 when n unread bytes are buffered, 0 at end of file before that, -1 on a read error.
  int Ensure(std::size_t n, std::string* why) {
    if (end_ - pos_ >= n) return 1;
    if (pos_ > 0) {
      std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
      end_ -= pos_;
      pos_ = 0;
    }
    if (buf_.size() < std::max(n, kReadChunk)) buf_.resize(std::max(n, kReadChunk));
    while (end_ < n) {
      ssize_t r =
          ::pread(fd_, buf_.data() + end_, buf_.size() - end_, static_cast<off_t>(read_offset_));
      if (r < 0) {
        if (errno == EINTR) continue;
        *why = ErrnoText(errno);
        return -1;
      }
      if (r == 0) return 0;
      end_ += static_cast<std::size_t>(r);
      read_offset_ += static_cast<std::uint64_t>(r);
    }
    return 1;
  }

  int fd_;
  std::uint64_t file_bytes_;   // file size when the reader was created
  std::uint64_t offset_;       // file offset of buf_[pos_]
  std::uint64_t read_offset_;  // file offset of buf_[end_]
  std::string buf_;
  std::size_t pos_ = 0;
  std::size_t end_ = 0;
};

class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

}  // namespace

Status EncodeLogRecord(std::uint64_t seq, const LogEntry& entry, std::string* out) {
  return EncodeLogRecord(seq, entry.type, entry.key, entry.value, out, entry.continued);
}

void MarkLogRecordContinued(std::string* records, std::size_t offset) {
  char* record = records->data() + offset;
  const std::uint32_t length = DecodeFixed32(record);
  record[kHeaderBytes + 8] = static_cast<char>(record[kHeaderBytes + 8] | kContinuedFlag);
  coding::EncodeFixed32(record + 4, Crc(record + kHeaderBytes, length));
}

Status EncodeLogRecord(std::uint64_t seq, LogEntry::Type type, std::string_view key,
                       std::string_view value, std::string* out, bool continued) {
  const std::uint64_t length = 8 + 1 + 4 + key.size() + 4 + value.size();
  if (length > kMaxRecordLength) {
    return Status::InvalidArgument(
        fmt::format("log entry of {} bytes exceeds the record limit of 4 GiB", length));
  }
  const std::size_t start = out->size();
  // The fields before the key, and the value's length, are encoded on the stack and appended
  // whole: four appends per record instead of nine (one record per write).
  char head[kHeaderBytes + 8 + 1 + 4];
  coding::EncodeFixed32(head, static_cast<std::uint32_t>(length));
  coding::EncodeFixed32(head + 4, 0);  // crc, filled in below
  coding::EncodeFixed64(head + 8, seq);
  head[16] = static_cast<char>(static_cast<std::uint8_t>(type) | (continued ? kContinuedFlag : 0));
  coding::EncodeFixed32(head + 17, static_cast<std::uint32_t>(key.size()));
  char value_size[4];
  coding::EncodeFixed32(value_size, static_cast<std::uint32_t>(value.size()));
  out->append(head, sizeof(head));
  out->append(key);
  out->append(value_size, sizeof(value_size));
  out->append(value);
  coding::EncodeFixed32(out->data() + start + 4, Crc(out->data() + start + kHeaderBytes, length));
  return Status::Ok();
}

Status DecodeLogRecordViews(std::string_view data,
                            const std::function<bool(const LogRecordView& record)>& visit,
                            bool verify) {
  LogRecordView record;
  while (!data.empty()) {
    if (data.size() < kHeaderBytes) return Status::Corruption("truncated log record header");
    const std::uint32_t length = DecodeFixed32(data.data());
    const std::uint32_t crc = DecodeFixed32(data.data() + 4);
    if (length < kMinRecordLength || length > data.size() - kHeaderBytes) {
      return Status::Corruption(fmt::format("invalid log record length {}", length));
    }
    std::string why;
    if (!ParseRecordBody(data.data() + kHeaderBytes, length, crc, verify, &record, &why)) {
      return Status::Corruption("bad log record: " + why);
    }
    record.stored = data.substr(0, kHeaderBytes + length);
    if (!visit(record)) break;
    data.remove_prefix(kHeaderBytes + length);
  }
  return Status::Ok();
}

Status DecodeLogRecords(std::string_view data,
                        const std::function<bool(std::uint64_t seq, LogEntry& entry)>& visit) {
  LogEntry entry;
  return DecodeLogRecordViews(data, [&](const LogRecordView& record) {
    CopyToEntry(record, &entry);
    return visit(record.seq, entry);
  });
}

struct Log::Impl {
  struct Segment {
    std::uint64_t first_seq = 0;
    std::uint64_t bytes = 0;  // logical: up to the end of the last record
    std::string path;
    // (seq, offset) of some record starts, ascending, at least kIndexStride apart.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> index;
  };

  LogOptions options;
  std::string prepared_path;  // the next segment, zero-filled ahead of the roll
  int dir_fd = -1;
  int fd = -1;             // newest segment, open for writing
  bool dir_dirty = false;  // a file was created since the last directory fsync
  std::string broken;      // set when a failed undo or fsync left unknown bytes on disk
  std::string buf;         // Append's encoding buffer, reused
  bool have_last_append = false;
  std::uint64_t last_append_offset = 0;
  std::uint64_t last_append_count = 0;

  // The background zero-fill of prepared_path. Started and joined by the writer thread;
  // prepare_status is written by the preparing thread and read only after the join.
  std::thread prepare_thread;
  Status prepare_status;
  bool prepared = false;  // prepared_path holds a complete zero-filled segment

  mutable std::mutex mu;
  std::vector<Segment> segments;  // GUARDED_BY(mu) for writes; oldest first
  std::uint64_t total_bytes = 0;  // GUARDED_BY(mu)
  std::atomic<std::uint64_t> last_seq{0};

  ~Impl() {
    if (prepare_thread.joinable()) prepare_thread.join();
    if (fd >= 0) ::close(fd);
    if (dir_fd >= 0) ::close(dir_fd);
  }

  // Starts zero-filling the next segment in the background once the newest is half full.
  void MaybePrepare() {
    if (prepared || prepare_thread.joinable() || segments.empty()) return;
    if (segments.back().bytes < options.segment_bytes / 2) return;
    prepare_thread = std::thread(
        [this] { prepare_status = CreateZeroFilled(prepared_path, options.segment_bytes); });
  }

  // Starts a new, empty newest segment whose first record will be last_seq+1: the prepared
  // file if there is one, else one zero-filled now. StorageFull when the disk has no room for
  // it (nothing changes then; the next call tries again).
  //
  // The segment rolled away from is synced first, so only the newest segment can ever end in a
  // torn tail (Open cuts that off; anywhere else a bad record is corruption). Without this, a
  // power loss under fsync: interval, or on a replica deferring its fsync, could leave an older
  // segment torn behind records that did reach the newer one, and the pod would not start.
  // It costs one fdatasync per segment (64 MiB of log by default).
  Status Roll() {
    if (fd >= 0 && ::fdatasync(fd) != 0) {
      // What of this segment is on disk is unknown now (as after any failed log fsync).
      broken = fmt::format("fdatasync of log file {} failed before rolling to a new one: {}",
                           segments.back().path, ErrnoText(errno));
      return Status::IOError(broken);
    }
    if (prepare_thread.joinable()) {
      prepare_thread.join();
      prepared = prepare_status.ok();
      if (!prepared) {
        logging::Warn(
            fmt::format("log: preparing the next segment failed: {}", prepare_status.ToString()));
      }
    }
    if (!prepared) {
      if (Status s = CreateZeroFilled(prepared_path, options.segment_bytes); !s.ok()) return s;
    }
    prepared = false;
    std::uint64_t first = last_seq.load() + 1;
    std::string path = options.dir + "/" + SegmentName(first);
    if (::rename(prepared_path.c_str(), path.c_str()) != 0) {
      return ErrnoStatus(fmt::format("cannot rename {} to {}", prepared_path, path), errno);
    }
    int nfd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (nfd < 0) {
      int err = errno;
      ::unlink(path.c_str());
      return ErrnoStatus(fmt::format("cannot open log file {}", path), err);
    }
    if (fd >= 0) ::close(fd);
    fd = nfd;
    dir_dirty = true;
    std::lock_guard<std::mutex> lock(mu);
    segments.push_back(Segment{first, 0, std::move(path), {}});
    return Status::Ok();
  }

  static void MaybeIndex(Segment* seg, std::uint64_t seq, std::uint64_t offset) {
    if (seg->index.empty() || offset - seg->index.back().second >= kIndexStride) {
      seg->index.emplace_back(seq, offset);
    }
  }
};

Log::Log(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Log::~Log() = default;

bool Log::broken() const { return !impl_->broken.empty(); }

std::uint64_t Log::last_seq() const { return impl_->last_seq.load(std::memory_order_acquire); }

Result<std::unique_ptr<Log>> Log::Open(const LogOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) {
    return Status::IOError(
        fmt::format("cannot create log directory {}: {}", options.dir, ec.message()));
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->prepared_path = options.dir + "/next.log.tmp";
  ::unlink(impl->prepared_path.c_str());  // possibly incomplete: a crash during the zero-fill
  impl->dir_fd = ::open(options.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (impl->dir_fd < 0) {
    return Status::IOError(
        fmt::format("cannot open log directory {}: {}", options.dir, ErrnoText(errno)));
  }
  if (::flock(impl->dir_fd, LOCK_EX | LOCK_NB) != 0) {
    return Status::IOError(
        fmt::format("log directory {} is in use by another process (flock: {}); stop it first",
                    options.dir, ErrnoText(errno)));
  }

  std::vector<std::uint64_t> firsts;
  DIR* dir = ::opendir(options.dir.c_str());
  if (dir == nullptr) {
    return Status::IOError(
        fmt::format("cannot list log directory {}: {}", options.dir, ErrnoText(errno)));
  }
  while (struct dirent* de = ::readdir(dir)) {
    std::uint64_t first = 0;
    if (ParseSegmentName(de->d_name, &first)) firsts.push_back(first);
  }
  ::closedir(dir);
  std::sort(firsts.begin(), firsts.end());

  std::uint64_t next_seq = 0;  // expected first sequence of the next file (0: any)
  for (std::size_t i = 0; i < firsts.size(); ++i) {
    const bool newest = i + 1 == firsts.size();
    Impl::Segment seg;
    seg.first_seq = firsts[i];
    seg.path = options.dir + "/" + SegmentName(firsts[i]);
    if (seg.first_seq == 0) {
      return Status::Corruption(
          fmt::format("log file {} has first sequence 0; sequences start at 1", seg.path));
    }
    if (next_seq != 0 && seg.first_seq != next_seq) {
      return Status::Corruption(fmt::format(
          "log file {} starts at sequence {} but the previous file ends at {}: entries are "
          "missing; restore the data directory from a backup or resync from the master",
          seg.path, seg.first_seq, next_seq - 1));
    }
    int rfd = ::open(seg.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (rfd < 0) {
      return Status::IOError(
          fmt::format("cannot open log file {}: {}", seg.path, ErrnoText(errno)));
    }
    FdCloser closer(rfd);
    RecordReader reader(rfd, 0);
    std::uint64_t expect = seg.first_seq;
    std::string newest_torn;  // why the record after the last good one is bad
    // Where the unit that is still open (a continued record read, not yet its last) begins.
    bool unit_open = false;
    std::uint64_t unit_offset = 0;
    std::uint64_t unit_seq = 0;
    for (;;) {
      std::uint64_t seq = 0;
      std::string why;
      std::uint64_t at = reader.offset();
      bool continued = false;
      RecordReader::Next r = reader.Read(&seq, nullptr, &why, &continued);
      if (r == RecordReader::Next::kRecord && seq != expect) {
        return Status::Corruption(
            fmt::format("log file {} is corrupt at offset {}: sequence {} where {} was expected; "
                        "restore the data directory from a backup or resync from the master",
                        seg.path, at, seq, expect));
      }
      if (r == RecordReader::Next::kRecord) {
        Impl::MaybeIndex(&seg, seq, at);
        if (continued && !unit_open) {
          unit_open = true;
          unit_offset = at;
          unit_seq = seq;
        } else if (!continued) {
          unit_open = false;
        }
        ++expect;
        continue;
      }
      if (r == RecordReader::Next::kError) {
        return Status::IOError(fmt::format("cannot read log file {}: {}", seg.path, why));
      }
      if (r == RecordReader::Next::kBad) {
        if (!newest) {
          return Status::Corruption(fmt::format(
              "log file {} is corrupt at offset {}: {}; restore the data directory from a "
              "backup or resync from the master",
              seg.path, at, why));
        }
        newest_torn = why;
      }
      if (newest && unit_open) {
        // The records of an atomic write whose last record is missing: they were appended with
        // it, so never acknowledged, and applying them would apply part of the write.
        if (newest_torn.empty()) newest_torn = "an atomic write's records without its last one";
        at = unit_offset;
        expect = unit_seq;
        while (!seg.index.empty() && seg.index.back().second >= at) seg.index.pop_back();
      }
      if (newest) {
        // A crash in the middle of an append: zero the torn tail (a partial record, or records
        // whose blocks reached the disk out of order behind a zero gap), so the space after
        // the last record is zeros again, as appends expect.
        std::int64_t end = EndOfNonZero(rfd, at);
        if (end < 0) {
          return Status::IOError(
              fmt::format("cannot read log file {}: {}", seg.path, ErrnoText(errno)));
        }
        if (static_cast<std::uint64_t>(end) > at) {
          int wfd = ::open(seg.path.c_str(), O_WRONLY | O_CLOEXEC);
          int err = wfd < 0 ? errno : WriteZeros(wfd, at, static_cast<std::uint64_t>(end) - at);
          if (err == 0 && ::fdatasync(wfd) != 0) err = errno;
          if (wfd >= 0) ::close(wfd);
          if (err != 0) {
            return Status::IOError(fmt::format("cannot zero the torn tail of log file {}: {}",
                                               seg.path, ErrnoText(err)));
          }
          logging::Warn(fmt::format(
              "log: cut a torn tail off {} at offset {} ({} bytes zeroed: {}); last sequence is "
              "now {}",
              seg.path, at, static_cast<std::uint64_t>(end) - at,
              newest_torn.empty() ? "data after the end of the records" : newest_torn, expect - 1));
        }
      }
      seg.bytes = at;
      break;
    }
    next_seq = expect;
    impl->total_bytes += seg.bytes;
    impl->segments.push_back(std::move(seg));
  }
  if (!impl->segments.empty()) {
    impl->last_seq.store(next_seq - 1);
    const std::string& path = impl->segments.back().path;
    impl->fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (impl->fd < 0) {
      return Status::IOError(fmt::format("cannot open log file {}: {}", path, ErrnoText(errno)));
    }
  }
  return std::unique_ptr<Log>(new Log(std::move(impl)));
}

Status Log::Append(const std::vector<LogEntry>& entries) {
  std::string& buf = impl_->buf;
  buf.clear();
  std::uint64_t seq = last_seq() + 1;
  for (const LogEntry& e : entries) {
    if (Status st = EncodeLogRecord(seq++, e, &buf); !st.ok()) return st;
  }
  return AppendRecords(buf, entries.size());
}

Status Log::AppendRecords(std::string_view records, std::uint64_t count) {
  Impl& impl = *impl_;
  if (!impl.broken.empty()) return Status::IOError(impl.broken);
  if (count == 0) return Status::Ok();
  // The records must continue the log: check the first one's sequence (a cheap guard against a
  // caller that encoded them for another position).
  if (records.size() < kHeaderBytes + 8 ||
      DecodeFixed64(records.data() + 8) != impl.last_seq.load() + 1) {
    return Status::InvalidArgument(
        fmt::format("log records to append must start at sequence {}", impl.last_seq.load() + 1));
  }
  if (impl.fd < 0 || (impl.segments.back().bytes >= impl.options.segment_bytes &&
                      impl.segments.back().bytes > 0)) {
    if (Status s = impl.Roll(); !s.ok()) return s;
  }
  const std::string_view buf = records;

  const std::uint64_t offset = impl.segments.back().bytes;
  if (int err = WriteAll(impl.fd, buf.data(), buf.size(), offset); err != 0) {
    // Zero what part of the append reached the file (only up to its size: a write past the
    // preallocated end may have failed for want of space).
    struct stat st;
    int undo = ::fstat(impl.fd, &st) != 0 ? errno : 0;
    if (undo == 0 && static_cast<std::uint64_t>(st.st_size) > offset) {
      undo = WriteZeros(impl.fd, offset, std::min<std::uint64_t>(buf.size(), st.st_size - offset));
    }
    if (undo != 0) {
      impl.broken = fmt::format(
          "log file {} holds a partial append that could not be undone ({}); restart the "
          "server",
          impl.segments.back().path, ErrnoText(undo));
      return Status::IOError(impl.broken);
    }
    return ErrnoStatus(fmt::format("log append to {} failed", impl.segments.back().path), err);
  }
  {
    std::lock_guard<std::mutex> lock(impl.mu);
    Impl::Segment& seg = impl.segments.back();
    Impl::MaybeIndex(&seg, impl.last_seq.load() + 1, offset);
    seg.bytes += buf.size();
    impl.total_bytes += buf.size();
    impl.last_seq.fetch_add(count, std::memory_order_release);
  }
  impl.have_last_append = true;
  impl.last_append_offset = offset;
  impl.last_append_count = count;
  impl.MaybePrepare();
  return Status::Ok();
}

Status Log::Sync() {
  Impl& impl = *impl_;
  if (impl.fd >= 0 && ::fdatasync(impl.fd) != 0) {
    return Status::IOError(fmt::format("fdatasync of log file {} failed: {}",
                                       impl.segments.back().path, ErrnoText(errno)));
  }
  if (impl.dir_dirty) {
    if (::fsync(impl.dir_fd) != 0) {
      return Status::IOError(
          fmt::format("fsync of log directory {} failed: {}", impl.options.dir, ErrnoText(errno)));
    }
    impl.dir_dirty = false;
  }
  return Status::Ok();
}

Status Log::RollbackLastAppend() {
  Impl& impl = *impl_;
  if (!impl.have_last_append) return Status::InvalidArgument("no log append to roll back");
  const std::uint64_t end = impl.segments.back().bytes;
  if (int err = WriteZeros(impl.fd, impl.last_append_offset, end - impl.last_append_offset);
      err != 0) {
    impl.broken = fmt::format("log file {} could not be rolled back ({}); restart the server",
                              impl.segments.back().path, ErrnoText(err));
    return Status::IOError(
        fmt::format("log rollback of {} failed: {}", impl.segments.back().path, ErrnoText(err)));
  }
  {
    std::lock_guard<std::mutex> lock(impl.mu);
    Impl::Segment& seg = impl.segments.back();
    impl.total_bytes -= seg.bytes - impl.last_append_offset;
    seg.bytes = impl.last_append_offset;
    while (!seg.index.empty() && seg.index.back().second >= seg.bytes) seg.index.pop_back();
    impl.last_seq.fetch_sub(impl.last_append_count, std::memory_order_release);
  }
  impl.have_last_append = false;
  return Status::Ok();
}

Status Log::ReadFrom(std::uint64_t from_seq,
                     const std::function<bool(std::uint64_t seq, const LogEntry& entry)>& visit) {
  Impl& impl = *impl_;
  from_seq = std::max<std::uint64_t>(from_seq, 1);
  struct Part {
    std::string path;
    std::uint64_t offset;
  };
  std::vector<Part> parts;
  std::uint64_t limit = 0;
  {
    std::lock_guard<std::mutex> lock(impl.mu);
    limit = impl.last_seq.load();
    if (from_seq > limit) return Status::Ok();
    if (impl.segments.empty() || from_seq < impl.segments.front().first_seq) {
      return Status::NotFound(
          fmt::format("log entry {} is no longer retained (oldest retained: {})", from_seq,
                      impl.segments.empty() ? limit + 1 : impl.segments.front().first_seq));
    }
    auto it = std::upper_bound(
        impl.segments.begin(), impl.segments.end(), from_seq,
        [](std::uint64_t seq, const Impl::Segment& seg) { return seq < seg.first_seq; });
    --it;
    std::uint64_t offset = 0;
    auto idx =
        std::upper_bound(it->index.begin(), it->index.end(), from_seq,
                         [](std::uint64_t seq, const std::pair<std::uint64_t, std::uint64_t>& p) {
                           return seq < p.first;
                         });
    if (idx != it->index.begin()) offset = std::prev(idx)->second;
    for (; it != impl.segments.end(); ++it) {
      parts.push_back(Part{it->path, offset});
      offset = 0;
    }
  }

  LogEntry entry;
  for (const Part& part : parts) {
    int rfd = ::open(part.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (rfd < 0) {
      if (errno == ENOENT) {
        return Status::NotFound(fmt::format("log file {} was trimmed while being read", part.path));
      }
      return Status::IOError(
          fmt::format("cannot open log file {}: {}", part.path, ErrnoText(errno)));
    }
    FdCloser closer(rfd);
    RecordReader reader(rfd, part.offset);
    for (;;) {
      std::uint64_t seq = 0;
      std::string why;
      std::uint64_t at = reader.offset();
      RecordReader::Next r = reader.Read(&seq, &entry, &why);
      if (r == RecordReader::Next::kEnd) break;
      if (r == RecordReader::Next::kError) {
        return Status::IOError(fmt::format("cannot read log file {}: {}", part.path, why));
      }
      if (r == RecordReader::Next::kBad) {
        return Status::Corruption(
            fmt::format("log file {} is corrupt at offset {}: {}", part.path, at, why));
      }
      if (seq > limit) return Status::Ok();
      if (seq < from_seq) continue;
      if (!visit(seq, entry)) return Status::Ok();
      if (seq == limit) return Status::Ok();
    }
  }
  return Status::Ok();
}

Status Log::Trim(std::uint64_t checkpoint_seq, std::uint64_t pinned_seq) {
  Impl& impl = *impl_;
  for (;;) {
    std::string path;
    {
      std::lock_guard<std::mutex> lock(impl.mu);
      if (impl.segments.size() < 2) break;
      const Impl::Segment& oldest = impl.segments[0];
      std::uint64_t oldest_last = impl.segments[1].first_seq - 1;
      if (oldest_last > checkpoint_seq) break;
      if (impl.total_bytes - oldest.bytes < impl.options.retain_bytes) break;
      // A replica still needs these entries, unless keeping them would pass the hard bound
      // (that replica then gets a full resync instead).
      const bool pinned = pinned_seq != 0 && oldest_last >= pinned_seq;
      if (pinned && impl.total_bytes <= impl.options.max_retain_bytes) break;
      path = oldest.path;
      impl.total_bytes -= oldest.bytes;
      impl.segments.erase(impl.segments.begin());
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Status::IOError(fmt::format("cannot delete log file {}: {}", path, ErrnoText(errno)));
    }
    // Persist each removal before the next, so a crash never leaves a gap at the start.
    if (::fsync(impl.dir_fd) != 0) {
      return Status::IOError(
          fmt::format("fsync of log directory {} failed: {}", impl.options.dir, ErrnoText(errno)));
    }
  }
  return Status::Ok();
}

Status Log::ResetStart(std::uint64_t next_seq) {
  Impl& impl = *impl_;
  if (next_seq == 0) return Status::InvalidArgument("the log cannot restart at sequence 0");
  if (impl.fd >= 0) ::close(impl.fd);
  impl.fd = -1;
  impl.have_last_append = false;
  std::vector<Impl::Segment> old;
  {
    std::lock_guard<std::mutex> lock(impl.mu);
    old.swap(impl.segments);
    impl.total_bytes = 0;
    impl.last_seq.store(next_seq - 1);
  }
  for (const Impl::Segment& seg : old) {
    if (::unlink(seg.path.c_str()) != 0 && errno != ENOENT) {
      return Status::IOError(
          fmt::format("cannot delete log file {}: {}", seg.path, ErrnoText(errno)));
    }
  }
  if (Status s = impl.Roll(); !s.ok()) return s;
  return Sync();
}

Result<std::unique_ptr<LogCursor>> Log::OpenCursor(std::uint64_t from_seq) {
  std::unique_ptr<LogCursor> cursor(
      new LogCursor(impl_.get(), std::max<std::uint64_t>(from_seq, 1)));
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    const std::uint64_t last = impl_->last_seq.load();
    if (cursor->next_seq_ > last) return cursor;  // nothing to read yet: locate lazily
  }
  if (Status s = cursor->Locate(); !s.ok()) return s;
  return cursor;
}

LogCursor::~LogCursor() {
  if (fd_ >= 0) ::close(fd_);
}

Status LogCursor::Locate() {
  std::string path;
  {
    std::lock_guard<std::mutex> lock(log_->mu);
    const auto& segments = log_->segments;
    if (segments.empty() || next_seq_ < segments.front().first_seq) {
      return Status::NotFound(
          fmt::format("log entry {} is no longer retained (oldest retained: {})", next_seq_,
                      segments.empty() ? log_->last_seq.load() + 1 : segments.front().first_seq));
    }
    auto it = std::upper_bound(
        segments.begin(), segments.end(), next_seq_,
        [](std::uint64_t seq, const Log::Impl::Segment& seg) { return seq < seg.first_seq; });
    --it;
    auto idx =
        std::upper_bound(it->index.begin(), it->index.end(), next_seq_,
                         [](std::uint64_t seq, const std::pair<std::uint64_t, std::uint64_t>& p) {
                           return seq < p.first;
                         });
    offset_ = idx != it->index.begin() ? std::prev(idx)->second : 0;
    segment_first_ = it->first_seq;
    path = it->path;
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    if (errno == ENOENT) return Status::NotFound(fmt::format("log file {} was trimmed", path));
    return Status::IOError(fmt::format("cannot open log file {}: {}", path, ErrnoText(errno)));
  }
  return Status::Ok();
}

// Reads [offset, offset + n) of fd into *buf (resized to what was read). errno or 0.
static int ReadAt(int fd, std::uint64_t offset, std::size_t n, std::string* buf) {
  buf->resize(n);
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, buf->data() + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  buf->resize(got);
  return 0;
}

Status LogCursor::Next(std::uint64_t limit_seq, std::size_t max_bytes,
                       const std::function<bool(std::uint64_t, const LogEntry&)>& visit) {
  return Walk(limit_seq, max_bytes, /*decode=*/true,
              [&](std::uint64_t seq, const LogEntry& entry, std::string_view) {
                return visit(seq, entry);
              });
}

Status LogCursor::NextRecords(std::uint64_t limit_seq, std::size_t max_bytes,
                              std::string* records) {
  return Walk(limit_seq, max_bytes, /*decode=*/false,
              [&](std::uint64_t, const LogEntry&, std::string_view record) {
                records->append(record);
                return true;
              });
}

Status LogCursor::Walk(
    std::uint64_t limit_seq, std::size_t max_bytes, bool decode,
    const std::function<bool(std::uint64_t, const LogEntry&, std::string_view)>& visit) {
  std::size_t consumed = 0;
  LogEntry entry;
  while (next_seq_ <= limit_seq && consumed < max_bytes) {
    if (fd_ < 0) {
      if (Status s = Locate(); !s.ok()) return s;
    }
    // The open file's records end at its logical size; once it is consumed, the next file
    // starts exactly at next_seq_.
    std::uint64_t end = 0;
    bool newer_exists = false;
    {
      std::lock_guard<std::mutex> lock(log_->mu);
      const auto& segments = log_->segments;
      auto it = std::find_if(segments.begin(), segments.end(), [&](const Log::Impl::Segment& seg) {
        return seg.first_seq == segment_first_;
      });
      if (it == segments.end()) {
        return Status::NotFound(fmt::format(
            "the log file holding entry {} is gone (trimmed, or the log restarted)", next_seq_));
      }
      end = it->bytes;
      newer_exists = std::next(it) != segments.end();
    }
    if (offset_ >= end) {
      if (!newer_exists) return Status::Ok();  // caught up with the newest file
      ::close(fd_);
      fd_ = -1;
      continue;
    }
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(
        end - offset_, std::max<std::size_t>(max_bytes - consumed, 64 << 10)));
    if (int err = ReadAt(fd_, offset_, want, &buf_); err != 0) {
      return Status::IOError(fmt::format("cannot read the log: {}", ErrnoText(err)));
    }
    std::size_t pos = 0;
    while (next_seq_ <= limit_seq) {
      if (buf_.size() - pos < kHeaderBytes) {
        if (pos == 0) return Status::Corruption("log file shorter than its records");
        break;  // the rest of this record comes with the next read
      }
      const std::uint32_t length = DecodeFixed32(buf_.data() + pos);
      const std::uint32_t crc = DecodeFixed32(buf_.data() + pos + 4);
      const std::size_t record = kHeaderBytes + length;
      if (length < kMinRecordLength || offset_ + pos + record > end) {
        return Status::Corruption(
            fmt::format("log record at offset {} has an invalid length {}", offset_ + pos, length));
      }
      if (buf_.size() - pos < record) {
        if (pos > 0) break;  // read it from its start next round
        // One record larger than the read: read it whole.
        if (int err = ReadAt(fd_, offset_, record, &buf_); err != 0 || buf_.size() < record) {
          return Status::IOError("cannot read a large log record");
        }
      }
      std::uint64_t seq = DecodeFixed64(buf_.data() + pos + kHeaderBytes);
      if (decode) {
        LogRecordView view;
        std::string why;
        if (!ParseRecordBody(buf_.data() + pos + kHeaderBytes, length, crc, /*verify=*/true, &view,
                             &why)) {
          return Status::Corruption(fmt::format("log record at offset {}: {}", offset_ + pos, why));
        }
        CopyToEntry(view, &entry);
      }
      if (seq > limit_seq) break;  // not committed yet
      const std::string_view stored(buf_.data() + pos, record);
      pos += record;
      if (seq < next_seq_) continue;  // before the position: the index points a little earlier
      if (seq != next_seq_) {
        return Status::Corruption(
            fmt::format("log sequence gap: expected {}, found {}", next_seq_, seq));
      }
      ++next_seq_;
      consumed += record;
      if (!visit(seq, entry, stored) || consumed >= max_bytes) {
        offset_ += pos;
        return Status::Ok();
      }
    }
    offset_ += pos;
    if (next_seq_ <= limit_seq && pos == 0) return Status::Ok();  // next entry not there yet
  }
  return Status::Ok();
}

LogStats Log::Stats() const {
  LogStats stats;
  std::lock_guard<std::mutex> lock(impl_->mu);
  stats.last_seq = impl_->last_seq.load();
  if (!impl_->segments.empty() && stats.last_seq >= impl_->segments.front().first_seq) {
    stats.first_seq = impl_->segments.front().first_seq;
  }
  stats.bytes = impl_->total_bytes;
  stats.segments = impl_->segments.size();
  return stats;
}

}  // namespace kvstore
