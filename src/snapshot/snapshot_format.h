// The snapshot format: a consistent copy of the whole key space as one byte stream. The same
// bytes travel in a full resync (master to replica), are written by `kvctl backup` and read back
// by `kvctl restore`. Encoding and decoding only, no I/O; not thread-safe (one per stream).
//
// Grammar (integers little endian, crc = crc32 (zlib) of the frame's body):
//   snapshot = header data* end
//   frame    = kind:u8 length:u32 crc:u32 body[length]
//   header   = frame with kind 'H', body = "KVSNAP01" applied_seq:u64 meta_len:u32 meta
//   data     = frame with kind 'D', body = (key_len:u32 key value_len:u32 value)+
//   end      = frame with kind 'E', body = keys:u64 payload_bytes:u64
// applied_seq is the log sequence the copy reflects; meta is opaque to this format (the engine
// stores its epoch history there); keys and payload_bytes (the sum of key and value sizes) let
// the reader verify that nothing was lost. Keys appear in ascending order, each once.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "kvstore/status.h"

namespace kvstore {

// Builds a snapshot stream. Encoded bytes accumulate in the string passed to each call; the
// caller sends or writes them out whenever it likes.
class SnapshotEncoder {
 public:
  // Data frames are closed once their body reaches this size.
  explicit SnapshotEncoder(std::size_t frame_bytes = 256 << 10) : frame_bytes_(frame_bytes) {}

  void Begin(std::uint64_t applied_seq, std::string_view meta, std::string* out);
  // Keys must come in ascending order.
  void Add(std::string_view key, std::string_view value, std::string* out);
  void Finish(std::string* out);

  std::uint64_t keys() const { return keys_; }

 private:
  void FlushData(std::string* out);

  std::size_t frame_bytes_;
  std::string body_;
  std::uint64_t keys_ = 0;
  std::uint64_t payload_bytes_ = 0;
};

// What a decoder reports, in stream order.
class SnapshotVisitor {
 public:
  virtual ~SnapshotVisitor() = default;
  virtual Status OnHeader(std::uint64_t applied_seq, std::string_view meta) = 0;
  virtual Status OnPair(std::string_view key, std::string_view value) = 0;
  virtual Status OnEnd(std::uint64_t keys) = 0;
};

// Checks and decodes a snapshot stream fed in pieces of any size. The first error (a visitor's,
// or Corruption naming what is wrong) is returned by that Feed and every later one.
class SnapshotDecoder {
 public:
  explicit SnapshotDecoder(std::uint64_t max_frame_bytes = std::uint64_t{1} << 31)
      : max_frame_bytes_(max_frame_bytes) {}

  Status Feed(std::string_view data, SnapshotVisitor& visitor);
  // Whether the end frame has been seen (and checked).
  bool finished() const { return finished_; }
  // Corruption when the stream stopped before its end frame.
  Status CheckFinished() const;
  std::uint64_t bytes_fed() const { return bytes_fed_; }

 private:
  Status Frame(char kind, std::string_view body, SnapshotVisitor& visitor);

  std::uint64_t max_frame_bytes_;
  std::string pending_;
  Status error_;
  bool header_seen_ = false;
  bool finished_ = false;
  std::uint64_t keys_ = 0;
  std::uint64_t payload_bytes_ = 0;
  std::uint64_t bytes_fed_ = 0;
  std::string last_key_;
};

}  // namespace kvstore
