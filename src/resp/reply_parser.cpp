// ReplyParser: decodes RESP2 replies as they arrive (client side). Each element is consumed as
// soon as it is complete, with unfinished arrays kept on a stack, so a large reply arriving in
// many reads is parsed once. Thread-compatible: one parser per connection.
//
//   reply  = "+" line CRLF | "-" line CRLF | ":" integer CRLF
//          | "$" length CRLF bytes CRLF | "$-1" CRLF        ; length <= max_bulk_bytes
//          | "*" count CRLF count*reply | "*-1" CRLF        ; count <= max_multibulk_count
//   line   = at most max_inline_bytes bytes, no CR or LF
#include <algorithm>
#include <charconv>
#include <cstring>

#include "kvstore/resp.h"
#include "resp/input_buffer.h"

namespace kvstore::resp {
namespace {

// Deeper nesting than any real reply (Redis' own reply nest a few levels): refusing it bounds
// the recursion of Value's destructor.
constexpr std::size_t kMaxNestingDepth = 64;
// Do not trust an array count for preallocation beyond this many elements.
constexpr std::size_t kMaxReserve = 1024;

bool ParseInt(std::string_view s, std::int64_t* out) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return !s.empty() && ec == std::errc() && ptr == s.data() + s.size();
}

}  // namespace

ReplyParser::ReplyParser(ParserLimits limits) : limits_(limits) {}

void ReplyParser::Feed(std::string_view bytes) {
  if (!error_.empty()) return;
  Compact();
  buffer_.append(bytes.data(), bytes.size());
}

ReplyParser::ParseStatus ReplyParser::Fail(std::string reason) {
  error_ = "Protocol error: " + std::move(reason);
  std::string().swap(buffer_);
  consumed_ = 0;
  open_arrays_.clear();
  return ParseStatus::kError;
}

void ReplyParser::Compact() { CompactInput(&buffer_, &consumed_); }

ReplyParser::ParseStatus ReplyParser::Next(Value* value) {
  if (!error_.empty()) return ParseStatus::kError;
  while (consumed_ < buffer_.size()) {
    const char* item = buffer_.data() + consumed_;
    const std::size_t avail = buffer_.size() - consumed_;
    const char type = item[0];
    if (std::strchr("+-:$*", type) == nullptr || type == '\0') {
      return Fail(std::string("unknown reply type '") + type + "'");
    }

    // Every reply starts with a line; find its CR (searching each byte once across calls).
    const std::size_t window_end = std::min(avail, limits_.max_inline_bytes + 1);
    const std::size_t from = std::max<std::size_t>(1, scan_pos_);
    const void* hit =
        from < window_end ? std::memchr(item + from, '\r', window_end - from) : nullptr;
    if (hit == nullptr) {
      if (avail > limits_.max_inline_bytes) return Fail("reply line too long");
      scan_pos_ = window_end;
      return ParseStatus::kNeedMore;
    }
    const std::size_t cr = static_cast<const char*>(hit) - item;
    if (cr + 1 == avail) {
      scan_pos_ = cr;
      return ParseStatus::kNeedMore;
    }
    if (item[cr + 1] != '\n') return Fail("expected CRLF after reply line");
    scan_pos_ = 0;
    const std::string_view line(item + 1, cr - 1);
    std::size_t size = cr + 2;  // bytes of this element once complete

    Value leaf;
    switch (type) {
      case '+':
        leaf.type = Value::Type::kSimpleString;
        leaf.str.assign(line);
        break;
      case '-':
        leaf.type = Value::Type::kError;
        leaf.str.assign(line);
        break;
      case ':':
        leaf.type = Value::Type::kInteger;
        if (!ParseInt(line, &leaf.integer)) return Fail("invalid integer");
        break;
      case '$': {
        std::int64_t length = 0;
        if (!ParseInt(line, &length) || length < -1 ||
            (length > 0 && static_cast<std::uint64_t>(length) > limits_.max_bulk_bytes)) {
          return Fail("invalid bulk length");
        }
        if (length == -1) break;  // null bulk string: leaf stays kNull
        const std::size_t n = static_cast<std::size_t>(length);
        if (avail - size < n + 2) return ParseStatus::kNeedMore;  // header re-read next time
        if (item[size + n] != '\r' || item[size + n + 1] != '\n') {
          return Fail("expected CRLF after bulk string");
        }
        leaf.type = Value::Type::kBulkString;
        leaf.str.assign(item + size, n);
        size += n + 2;
        break;
      }
      case '*': {
        std::int64_t count = 0;
        if (!ParseInt(line, &count) || count < -1 ||
            (count > 0 && static_cast<std::uint64_t>(count) > limits_.max_multibulk_count)) {
          return Fail("invalid multibulk length");
        }
        if (count == -1) break;  // null array: leaf stays kNull
        leaf.type = Value::Type::kArray;
        if (count == 0) break;
        if (open_arrays_.size() == kMaxNestingDepth) return Fail("reply nested too deeply");
        OpenArray open;
        open.array.type = Value::Type::kArray;
        open.array.elements.reserve(std::min<std::size_t>(count, kMaxReserve));
        open.remaining = static_cast<std::size_t>(count);
        open_arrays_.push_back(std::move(open));
        consumed_ += size;
        continue;  // its elements follow
      }
    }
    consumed_ += size;

    // Attach the complete element to its array, closing every array it completes.
    while (!open_arrays_.empty()) {
      OpenArray& parent = open_arrays_.back();
      parent.array.elements.push_back(std::move(leaf));
      if (--parent.remaining > 0) break;
      leaf = std::move(parent.array);
      open_arrays_.pop_back();
    }
    if (open_arrays_.empty()) {
      *value = std::move(leaf);
      return ParseStatus::kValue;
    }
  }
  return ParseStatus::kNeedMore;
}

}  // namespace kvstore::resp
