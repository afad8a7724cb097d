// Snapshot stream encoder and decoder (grammar in snapshot_format.h).
#include "snapshot/snapshot_format.h"

#include <fmt/format.h>
#include <zlib.h>

#include "common/coding.h"

namespace kvstore {
namespace {

constexpr std::string_view kMagic = "KVSNAP01";
constexpr std::size_t kFrameHeaderBytes = 1 + 4 + 4;

std::uint32_t Crc(std::string_view data) {
  return static_cast<std::uint32_t>(crc32(crc32(0L, Z_NULL, 0),
                                          reinterpret_cast<const Bytef*>(data.data()),
                                          static_cast<uInt>(data.size())));
}

void AppendFrame(char kind, std::string_view body, std::string* out) {
  out->push_back(kind);
  coding::PutFixed32(out, static_cast<std::uint32_t>(body.size()));
  coding::PutFixed32(out, Crc(body));
  out->append(body);
}

}  // namespace

void SnapshotEncoder::Begin(std::uint64_t applied_seq, std::string_view meta, std::string* out) {
  std::string body(kMagic);
  coding::PutFixed64(&body, applied_seq);
  coding::PutFixed32(&body, static_cast<std::uint32_t>(meta.size()));
  body.append(meta);
  AppendFrame('H', body, out);
}

void SnapshotEncoder::Add(std::string_view key, std::string_view value, std::string* out) {
  coding::PutFixed32(&body_, static_cast<std::uint32_t>(key.size()));
  body_.append(key);
  coding::PutFixed32(&body_, static_cast<std::uint32_t>(value.size()));
  body_.append(value);
  ++keys_;
  payload_bytes_ += key.size() + value.size();
  if (body_.size() >= frame_bytes_) FlushData(out);
}

void SnapshotEncoder::FlushData(std::string* out) {
  if (body_.empty()) return;
  AppendFrame('D', body_, out);
  body_.clear();
}

void SnapshotEncoder::Finish(std::string* out) {
  FlushData(out);
  std::string body;
  coding::PutFixed64(&body, keys_);
  coding::PutFixed64(&body, payload_bytes_);
  AppendFrame('E', body, out);
}

Status SnapshotDecoder::Feed(std::string_view data, SnapshotVisitor& visitor) {
  if (!error_.ok()) return error_;
  bytes_fed_ += data.size();
  if (finished_ && !data.empty()) {
    error_ = Status::Corruption("snapshot: data after the end frame");
    return error_;
  }
  pending_.append(data);
  std::size_t pos = 0;
  while (pending_.size() - pos >= kFrameHeaderBytes) {
    const char kind = pending_[pos];
    const std::uint32_t length = coding::DecodeFixed32(pending_.data() + pos + 1);
    const std::uint32_t crc = coding::DecodeFixed32(pending_.data() + pos + 5);
    if (length > max_frame_bytes_) {
      error_ = Status::Corruption(fmt::format("snapshot: frame of {} bytes is too large", length));
      return error_;
    }
    if (pending_.size() - pos - kFrameHeaderBytes < length) break;
    std::string_view body(pending_.data() + pos + kFrameHeaderBytes, length);
    if (Crc(body) != crc) {
      error_ = Status::Corruption(
          fmt::format("snapshot: checksum mismatch in the frame ending at byte {}",
                      bytes_fed_ - (pending_.size() - pos - kFrameHeaderBytes - length)));
      return error_;
    }
    if (Status s = Frame(kind, body, visitor); !s.ok()) {
      error_ = s;
      return error_;
    }
    pos += kFrameHeaderBytes + length;
    if (finished_ && pos != pending_.size()) {
      error_ = Status::Corruption("snapshot: data after the end frame");
      return error_;
    }
  }
  pending_.erase(0, pos);
  return Status::Ok();
}

Status SnapshotDecoder::Frame(char kind, std::string_view body, SnapshotVisitor& visitor) {
  if (!header_seen_) {
    if (kind != 'H' || body.size() < kMagic.size() + 12 ||
        body.substr(0, kMagic.size()) != kMagic) {
      return Status::Corruption("snapshot: not a kvstore snapshot (bad header)");
    }
    const char* p = body.data() + kMagic.size();
    const std::uint64_t applied_seq = coding::DecodeFixed64(p);
    const std::uint32_t meta_len = coding::DecodeFixed32(p + 8);
    if (meta_len != body.size() - kMagic.size() - 12) {
      return Status::Corruption("snapshot: malformed header");
    }
    header_seen_ = true;
    return visitor.OnHeader(applied_seq, body.substr(kMagic.size() + 12));
  }
  if (kind == 'D') {
    while (!body.empty()) {
      if (body.size() < 4) return Status::Corruption("snapshot: truncated pair");
      const std::uint32_t key_len = coding::DecodeFixed32(body.data());
      if (key_len == 0 || body.size() - 4 < std::uint64_t{key_len} + 4) {
        return Status::Corruption("snapshot: malformed pair");
      }
      std::string_view key = body.substr(4, key_len);
      const std::uint32_t value_len = coding::DecodeFixed32(body.data() + 4 + key_len);
      if (body.size() - 8 - key_len < value_len)
        return Status::Corruption("snapshot: malformed pair");
      std::string_view value = body.substr(8 + key_len, value_len);
      if (keys_ > 0 && key <= std::string_view(last_key_)) {
        return Status::Corruption("snapshot: keys out of order");
      }
      last_key_.assign(key);
      ++keys_;
      payload_bytes_ += key.size() + value.size();
      if (Status s = visitor.OnPair(key, value); !s.ok()) return s;
      body.remove_prefix(8 + key_len + value_len);
    }
    return Status::Ok();
  }
  if (kind == 'E') {
    if (body.size() != 16) return Status::Corruption("snapshot: malformed end frame");
    const std::uint64_t keys = coding::DecodeFixed64(body.data());
    const std::uint64_t payload = coding::DecodeFixed64(body.data() + 8);
    if (keys != keys_ || payload != payload_bytes_) {
      return Status::Corruption(fmt::format(
          "snapshot: incomplete: the end frame counts {} keys ({} bytes), the stream held {} ({})",
          keys, payload, keys_, payload_bytes_));
    }
    finished_ = true;
    return visitor.OnEnd(keys);
  }
  return Status::Corruption(fmt::format("snapshot: unknown frame kind {}", static_cast<int>(kind)));
}

Status SnapshotDecoder::CheckFinished() const {
  if (!error_.ok()) return error_;
  if (!finished_) {
    return Status::Corruption(
        fmt::format("snapshot: truncated after {} bytes ({} keys): the end frame is missing",
                    bytes_fed_, keys_));
  }
  return Status::Ok();
}

}  // namespace kvstore
