// The backup envelope (grammar in backup_file.h): encoder, streaming reader, file helpers.
// Single-threaded per object; the file helpers use only their own locals.
#include "snapshot/backup_file.h"

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <vector>

#include "common/coding.h"

namespace kvstore {
namespace {

constexpr std::string_view kMagic = "KVSTORE-BACKUP ";
constexpr std::string_view kTrailerMagic = "KVBKEND1";
constexpr const char* kFieldNames[] = {"format", "pod",     "epoch",         "seq",
                                       "keys",   "created", "snapshot_bytes"};

std::uint32_t Crc(std::uint32_t crc, std::string_view bytes) {
  while (!bytes.empty()) {  // zlib takes uInt lengths: feed big pieces in parts
    const std::size_t n = std::min<std::size_t>(bytes.size(), 1u << 30);
    crc = static_cast<std::uint32_t>(
        crc32(crc, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(n)));
    bytes.remove_prefix(n);
  }
  return crc;
}

bool ParseU64(std::string_view text, std::uint64_t* value) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *value);
  return ec == std::errc() && end == text.data() + text.size();
}

bool HasLineBreak(std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; }

// Checks the snapshot's own structure; the header and end frame must agree with the envelope.
class Checker : public SnapshotVisitor {
 public:
  explicit Checker(const BackupInfo& info) : info_(info) {}
  Status OnHeader(std::uint64_t applied_seq, std::string_view) override {
    if (applied_seq != info_.seq) {
      return Status::Corruption(fmt::format(
          "the snapshot is at sequence {} but the backup header says {}", applied_seq, info_.seq));
    }
    return Status::Ok();
  }
  Status OnPair(std::string_view, std::string_view) override { return Status::Ok(); }
  Status OnEnd(std::uint64_t keys) override {
    if (keys != info_.keys) {
      return Status::Corruption(fmt::format(
          "the snapshot holds {} keys but the backup header says {}", keys, info_.keys));
    }
    return Status::Ok();
  }

 private:
  const BackupInfo& info_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// BackupEncoder

Result<std::string> BackupEncoder::Header(const BackupInfo& info) {
  for (const std::string* s : {&info.pod, &info.epoch, &info.created}) {
    if (s->empty() || HasLineBreak(*s)) {
      return Status::InvalidArgument("backup header fields must be one non-empty line: \"" + *s +
                                     "\"");
    }
  }
  std::string header = fmt::format(
      "{}{}\nformat: kvstore snapshot\npod: {}\nepoch: {}\nseq: {}\nkeys: {}\ncreated: "
      "{}\nsnapshot_bytes: {}\n\n",
      kMagic, info.version, info.pod, info.epoch, info.seq, info.keys, info.created,
      info.snapshot_bytes);
  if (header.size() > kBackupMaxHeaderBytes) {
    return Status::InvalidArgument("the backup header is longer than 4096 bytes");
  }
  expected_body_ = info.snapshot_bytes;
  Add(header);
  return header;
}

void BackupEncoder::Add(std::string_view bytes) {
  crc_ = Crc(crc_, bytes);
  content_ += bytes.size();
}

void BackupEncoder::Body(std::string_view snapshot_bytes) {
  body_ += snapshot_bytes.size();
  Add(snapshot_bytes);
}

Result<std::string> BackupEncoder::Trailer() {
  if (body_ != expected_body_) {
    return Status::InvalidArgument(fmt::format(
        "the snapshot had {} bytes, the backup header announced {}", body_, expected_body_));
  }
  std::string trailer(kTrailerMagic);
  coding::PutFixed64(&trailer, content_);
  coding::PutFixed32(&trailer, crc_);
  return trailer;
}

// ---------------------------------------------------------------------------------------------
// BackupReader

Status BackupReader::Feed(std::string_view data, const Sink& sink) {
  if (!error_.ok()) return error_;
  bytes_fed_ += data.size();
  error_ = FeedLocked(data, sink);
  return error_;
}

Status BackupReader::FeedLocked(std::string_view data, const Sink& sink) {
  while (!data.empty()) {
    switch (state_) {
      case State::kHeader: {
        // The header ends at the first empty line; gather it (bounded) before parsing.
        const std::size_t before = pending_.size();
        const std::size_t take = std::min(data.size(), kBackupMaxHeaderBytes + 2 - before);
        pending_.append(data.substr(0, take));
        if (pending_.size() >= kMagic.size() && !pending_.starts_with(kMagic)) {
          return Status::InvalidArgument(
              "not a kvstore backup file (it does not start with \"KVSTORE-BACKUP\")");
        }
        const std::size_t end = pending_.find("\n\n");
        if (end == std::string::npos) {
          if (pending_.size() > kBackupMaxHeaderBytes) {
            return Status::Corruption("the backup header has no end within 4096 bytes");
          }
          data.remove_prefix(take);
          break;
        }
        const std::size_t header_bytes = end + 2;
        if (Status s = ParseHeader(std::string_view(pending_).substr(0, header_bytes)); !s.ok()) {
          return s;
        }
        crc_ = Crc(crc_, std::string_view(pending_).substr(0, header_bytes));
        content_ = header_bytes;
        data.remove_prefix(header_bytes - before);
        pending_.clear();
        state_ = info_.snapshot_bytes == 0 ? State::kTrailer : State::kSnapshot;
        break;
      }
      case State::kSnapshot: {
        const std::string_view piece =
            data.substr(0, std::min<std::uint64_t>(data.size(), info_.snapshot_bytes - body_));
        Checker checker(info_);
        if (Status s = decoder_.Feed(piece, checker); !s.ok()) {
          return Status::Corruption("the snapshot is damaged: " + s.message());
        }
        crc_ = Crc(crc_, piece);
        content_ += piece.size();
        body_ += piece.size();
        if (sink) {
          if (Status s = sink(piece); !s.ok()) return s;
        }
        data.remove_prefix(piece.size());
        if (body_ == info_.snapshot_bytes) {
          if (!decoder_.finished()) {
            return Status::Corruption(
                "the snapshot does not end where the backup header says it does");
          }
          state_ = State::kTrailer;
        } else if (decoder_.finished()) {
          return Status::Corruption("the snapshot ends before the size the backup header says");
        }
        break;
      }
      case State::kTrailer: {
        const std::size_t take = std::min(data.size(), kBackupTrailerBytes - pending_.size());
        pending_.append(data.substr(0, take));
        data.remove_prefix(take);
        if (pending_.size() == kBackupTrailerBytes) {
          if (Status s = CheckTrailer(); !s.ok()) return s;
          state_ = State::kDone;
        }
        break;
      }
      case State::kDone:
        return Status::Corruption(
            fmt::format("unexpected bytes after the end of the backup (at offset {})",
                        bytes_fed_ - data.size()));
    }
  }
  return Status::Ok();
}

Status BackupReader::ParseHeader(std::string_view text) {
  // First line: "KVSTORE-BACKUP <version>".
  if (!text.starts_with(kMagic)) {
    return Status::InvalidArgument(
        "not a kvstore backup file (it does not start with \"KVSTORE-BACKUP\")");
  }
  std::size_t eol = text.find('\n');
  std::uint64_t version = 0;
  if (!ParseU64(text.substr(kMagic.size(), eol - kMagic.size()), &version)) {
    return Status::Corruption("the backup header's version line is malformed");
  }
  if (version != static_cast<std::uint64_t>(kBackupFormatVersion)) {
    return Status::InvalidArgument(
        fmt::format("unsupported backup format version {} (this build reads version {})", version,
                    kBackupFormatVersion));
  }
  info_.version = static_cast<int>(version);
  text.remove_prefix(eol + 1);
  std::vector<std::string_view> values;
  for (const char* name : kFieldNames) {
    eol = text.find('\n');
    const std::string_view line = text.substr(0, eol);
    const std::string prefix = std::string(name) + ": ";
    if (eol == std::string_view::npos || !line.starts_with(prefix)) {
      return Status::Corruption(fmt::format("the backup header lacks its \"{}\" field", name));
    }
    values.push_back(line.substr(prefix.size()));
    text.remove_prefix(eol + 1);
  }
  if (text != "\n") return Status::Corruption("the backup header has unexpected fields");
  if (values[0] != "kvstore snapshot") {
    return Status::InvalidArgument("unsupported backup content \"" + std::string(values[0]) + "\"");
  }
  info_.pod = values[1];
  info_.epoch = values[2];
  info_.created = values[5];
  if (!ParseU64(values[3], &info_.seq) || !ParseU64(values[4], &info_.keys) ||
      !ParseU64(values[6], &info_.snapshot_bytes)) {
    return Status::Corruption("the backup header holds a malformed number");
  }
  return Status::Ok();
}

Status BackupReader::CheckTrailer() {
  if (!std::string_view(pending_).starts_with(kTrailerMagic)) {
    return Status::Corruption("the backup trailer is missing or damaged");
  }
  const std::uint64_t content = coding::DecodeFixed64(pending_.data() + kTrailerMagic.size());
  const std::uint32_t crc = coding::DecodeFixed32(pending_.data() + kTrailerMagic.size() + 8);
  if (content != content_) {
    return Status::Corruption(
        fmt::format("the backup trailer counts {} bytes, the file holds {}", content, content_));
  }
  if (crc != crc_) {
    return Status::Corruption(
        fmt::format("checksum mismatch: the file is corrupted (crc32 stored {:08x}, computed "
                    "{:08x})",
                    crc, crc_));
  }
  return Status::Ok();
}

Status BackupReader::Finish() {
  if (!error_.ok()) return error_;
  switch (state_) {
    case State::kDone:
      return Status::Ok();
    case State::kHeader:
      error_ = bytes_fed_ == 0 ? Status::Corruption("the backup file is empty")
                               : Status::Corruption("truncated: the file ends inside its header");
      break;
    case State::kSnapshot:
      error_ = Status::Corruption(fmt::format(
          "truncated: the file ends after {} of {} snapshot bytes", body_, info_.snapshot_bytes));
      break;
    case State::kTrailer:
      error_ = Status::Corruption("truncated: the file ends before its trailer (checksum)");
      break;
  }
  return error_;
}

// ---------------------------------------------------------------------------------------------
// Files

Status ReadBackupFile(const std::string& path, BackupInfo* info, const BackupReader::Sink& sink,
                      const std::function<void(std::uint64_t)>& on_progress) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IOError("cannot open " + path);
  BackupReader reader;
  std::string chunk(1 << 20, '\0');
  for (;;) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    const auto n = static_cast<std::size_t>(in.gcount());
    if (n == 0) break;
    if (Status s = reader.Feed(std::string_view(chunk.data(), n), sink); !s.ok()) return s;
    if (on_progress) on_progress(reader.bytes_fed());
  }
  if (in.bad()) return Status::IOError("cannot read " + path);
  if (Status s = reader.Finish(); !s.ok()) return s;
  if (info != nullptr) *info = reader.info();
  return Status::Ok();
}

Status ExtractBackupSnapshot(const std::string& path, const std::string& snapshot_path,
                             BackupInfo* info) {
  Status status;
  {
    std::ofstream out(snapshot_path, std::ios::binary | std::ios::trunc);
    if (!out) return Status::IOError("cannot create " + snapshot_path);
    status = ReadBackupFile(path, info, [&](std::string_view bytes) {
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      return out ? Status::Ok()
                 : Status::IOError("cannot write " + snapshot_path + " (disk full?)");
    });
    out.flush();
    if (status.ok() && !out) status = Status::IOError("cannot write " + snapshot_path);
  }
  if (!status.ok()) {
    std::error_code ignored;
    std::filesystem::remove(snapshot_path, ignored);
  }
  return status;
}

std::string BackupTimestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace kvstore
