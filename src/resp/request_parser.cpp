// RequestParser: turns the bytes a client sends into commands the way Redis does (same accepted
// grammar, same error texts), copying each argument once, when its request is complete.
// Thread-compatible: one parser per connection, no shared state.
//
// Differences from Redis' processMultibulkBuffer/processInlineBuffer, all stricter:
//   - "*<n>" with n < -1 is an error (Redis skips every n <= 0), and n is capped by
//     max_multibulk_count rather than INT_MAX.
//   - Header lines and bulk payloads must end in CRLF (Redis skips two bytes unchecked).
//   - An inline line may not contain NUL or ASCII control bytes other than TAB, CR and LF, and
//     may not exceed max_inline_bytes even when its LF arrived in the same read.
//   - A multibulk argument not starting with '$' is rejected at its first byte instead of when
//     its line is complete.
#include <algorithm>
#include <charconv>
#include <cstring>

#include "kvstore/resp.h"
#include "resp/input_buffer.h"

namespace kvstore::resp {
namespace {

// Bytes an inline request may not contain: a telnet user never types them, so they mean that
// a binary protocol (TLS, HTTP/2, garbage) is talking to us.
bool IsForbiddenInlineByte(unsigned char c) {
  return (c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f;
}

// Word separators of sdssplitargs (NUL cannot occur: inline lines containing it are rejected).
bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Splits an inline request into words like Redis' sdssplitargs(): blanks separate words;
// "double quotes" understand \n \r \t \b \a \xHH and \<any char>; 'single quotes' understand \';
// a quote may start mid-word; a closing quote must be followed by a blank or the end of the line.
// Reuses the strings already in *args. Returns false on unbalanced quotes.
bool SplitInline(std::string_view line, std::vector<std::string>* args) {
  const std::size_t n = line.size();
  // Byte at i, or NUL past the end: the C original relies on the terminating NUL the same way.
  auto at = [&](std::size_t i) { return i < n ? line[i] : '\0'; };
  std::size_t argc = 0;
  std::size_t p = 0;
  for (;;) {
    while (p < n && IsBlank(line[p])) ++p;
    if (p == n) break;
    if (argc == args->size()) args->emplace_back();
    std::string& word = (*args)[argc++];
    word.clear();
    bool in_double = false;
    bool in_single = false;
    bool done = false;
    while (!done) {
      const char c = at(p);
      if (in_double) {
        if (c == '\\' && at(p + 1) == 'x' && HexValue(at(p + 2)) >= 0 && HexValue(at(p + 3)) >= 0) {
          word += static_cast<char>(HexValue(at(p + 2)) * 16 + HexValue(at(p + 3)));
          p += 3;
        } else if (c == '\\' && p + 1 < n) {
          ++p;
          switch (line[p]) {
            case 'n':
              word += '\n';
              break;
            case 'r':
              word += '\r';
              break;
            case 't':
              word += '\t';
              break;
            case 'b':
              word += '\b';
              break;
            case 'a':
              word += '\a';
              break;
            default:
              word += line[p];
              break;
          }
        } else if (c == '"') {
          if (p + 1 < n && !IsBlank(line[p + 1])) return false;
          done = true;
        } else if (p >= n) {
          return false;
        } else {
          word += c;
        }
      } else if (in_single) {
        if (c == '\\' && at(p + 1) == '\'') {
          ++p;
          word += '\'';
        } else if (c == '\'') {
          if (p + 1 < n && !IsBlank(line[p + 1])) return false;
          done = true;
        } else if (p >= n) {
          return false;
        } else {
          word += c;
        }
      } else if (p >= n || IsBlank(c)) {
        done = true;
      } else if (c == '"') {
        in_double = true;
      } else if (c == '\'') {
        in_single = true;
      } else {
        word += c;
      }
      if (p < n) ++p;
    }
  }
  args->resize(argc);
  return true;
}

}  // namespace

bool ParseInteger(std::string_view text, std::int64_t* value) {
  // Fast path for what every request header and most arguments hold: 1 to 18 digits without a
  // leading zero, which cannot overflow. Anything else takes the general path below.
  if (!text.empty() && text.size() <= 18 && text[0] >= '1' && text[0] <= '9') {
    std::int64_t n = 0;
    std::size_t i = 0;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) n = n * 10 + (text[i] - '0');
    if (i == text.size()) {
      *value = n;
      return true;
    }
  }
  if (text.size() > 1 && (text[0] == '0' || (text[0] == '-' && text[1] == '0'))) return false;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *value);
  return !text.empty() && ec == std::errc() && ptr == text.data() + text.size();
}

RequestParser::RequestParser(ParserLimits limits) : limits_(limits) {}

void RequestParser::Feed(std::string_view bytes) {
  if (!error_.empty()) return;  // the connection is being closed; nothing more will be parsed
  Compact();
  buffer_.append(bytes.data(), bytes.size());
}

RequestParser::ParseStatus RequestParser::Next(std::vector<std::string>* args) {
  while (error_.empty() && consumed_ < buffer_.size()) {
    const std::size_t before = consumed_;
    const ParseStatus status =
        (mb_count_ > 0 || buffer_[consumed_] == '*') ? ParseMultibulk(args) : ParseInline(args);
    if (status == ParseStatus::kCommand) return status;
    // kNeedMore with progress means an empty request ("*0", a blank line) was skipped.
    if (status == ParseStatus::kError || consumed_ == before) break;
  }
  args->clear();
  return error_.empty() ? ParseStatus::kNeedMore : ParseStatus::kError;
}

RequestParser::ParseStatus RequestParser::Fail(std::string reason) {
  error_ = "Protocol error: " + std::move(reason);
  // The caller closes the connection after replying; the buffered bytes will never be used.
  std::string().swap(buffer_);
  consumed_ = 0;
  ResetFrame();
  return ParseStatus::kError;
}

void RequestParser::ResetFrame() {
  frame_pos_ = 0;
  scan_pos_ = 0;
  mb_count_ = 0;
  bulk_len_ = -1;
  spans_.clear();
}

void RequestParser::Compact() { CompactInput(&buffer_, &consumed_); }

// Finds the CR ending the header line ("*<n>" or "$<n>") that starts at frame offset `start`.
// kFound: *cr is its offset and the byte after it has arrived. kTooLong: no CR within
// max_inline_bytes. Only bytes not searched by an earlier call are searched.
RequestParser::LineEnd RequestParser::FindHeaderEnd(std::size_t start, std::size_t* cr) {
  const char* frame = buffer_.data() + consumed_;
  const std::size_t avail = buffer_.size() - consumed_;
  const std::size_t window_end = std::min(avail, start + limits_.max_inline_bytes + 1);
  const std::size_t from = std::max(start, scan_pos_);
  const void* hit =
      from < window_end ? std::memchr(frame + from, '\r', window_end - from) : nullptr;
  if (hit == nullptr) {
    if (avail - start > limits_.max_inline_bytes) return LineEnd::kTooLong;
    scan_pos_ = window_end;
    return LineEnd::kNeedMore;
  }
  *cr = static_cast<const char*>(hit) - frame;
  if (*cr + 1 == avail) {
    scan_pos_ = *cr;  // the LF has not arrived yet
    return LineEnd::kNeedMore;
  }
  scan_pos_ = 0;
  return LineEnd::kFound;
}

// Reads the header line ("*<n>" or "$<n>") that starts at frame offset `start`. kFound: *value
// is its number and *next the offset after its CRLF. kInvalid: the line is not a number
// (ParseInteger) followed by CRLF. kTooLong and kNeedMore as FindHeaderEnd.
RequestParser::LineEnd RequestParser::ParseHeader(std::size_t start, std::int64_t* value,
                                                  std::size_t* next) {
  const char* frame = buffer_.data() + consumed_;
  const std::size_t avail = buffer_.size() - consumed_;
  // Fast path for the usual line, all buffered: 1 to 18 digits without a leading zero (which
  // ParseInteger accepts and which cannot overflow), then CRLF, within max_inline_bytes. One
  // pass over a few bytes instead of memchr and a second parse. Any other line takes the
  // general path, which decides as it always did.
  std::size_t i = start + 1;
  const std::size_t digits_end = std::min(avail, start + 1 + 18);
  if (i < digits_end && frame[i] >= '1' && frame[i] <= '9') {
    std::int64_t n = 0;
    for (; i < digits_end && frame[i] >= '0' && frame[i] <= '9'; ++i) n = n * 10 + (frame[i] - '0');
    if (i + 1 < avail && frame[i] == '\r' && frame[i + 1] == '\n' &&
        i - start <= limits_.max_inline_bytes) {
      *value = n;
      *next = i + 2;
      scan_pos_ = 0;
      return LineEnd::kFound;
    }
  }
  std::size_t cr = 0;
  const LineEnd end = FindHeaderEnd(start, &cr);
  if (end != LineEnd::kFound) return end;
  if (!ParseInteger(std::string_view(frame + start + 1, cr - start - 1), value) ||
      frame[cr + 1] != '\n') {
    return LineEnd::kInvalid;
  }
  *next = cr + 2;
  return LineEnd::kFound;
}

// multibulk = "*" count CRLF *( "$" length CRLF bytes CRLF )
RequestParser::ParseStatus RequestParser::ParseMultibulk(std::vector<std::string>* args) {
  const char* frame = buffer_.data() + consumed_;
  const std::size_t avail = buffer_.size() - consumed_;

  if (mb_count_ == 0) {
    std::int64_t count = 0;
    std::size_t next = 0;
    switch (ParseHeader(0, &count, &next)) {
      case LineEnd::kNeedMore:
        return ParseStatus::kNeedMore;
      case LineEnd::kTooLong:
        return Fail("too big mbulk count string");
      case LineEnd::kInvalid:
        return Fail("invalid multibulk length");
      case LineEnd::kFound:
        break;
    }
    if (count < -1 || static_cast<std::uint64_t>(std::max<std::int64_t>(count, 0)) >
                          limits_.max_multibulk_count) {
      return Fail("invalid multibulk length");
    }
    if (unauthenticated_ && count > static_cast<std::int64_t>(kMaxUnauthenticatedArgs)) {
      return Fail("unauthenticated multibulk length");
    }
    if (count <= 0) {  // Redis ignores "*0" and "*-1" without replying
      consumed_ += next;
      return ParseStatus::kNeedMore;
    }
    mb_count_ = static_cast<std::size_t>(count);
    frame_pos_ = next;
    spans_.clear();
  }

  while (spans_.size() < mb_count_) {
    if (bulk_len_ < 0) {
      if (frame_pos_ == avail) return ParseStatus::kNeedMore;
      if (frame[frame_pos_] != '$') {
        return Fail(std::string("expected '$', got '") + frame[frame_pos_] + "'");
      }
      std::int64_t length = 0;
      std::size_t next = 0;
      switch (ParseHeader(frame_pos_, &length, &next)) {
        case LineEnd::kNeedMore:
          return ParseStatus::kNeedMore;
        case LineEnd::kTooLong:
          return Fail("too big bulk count string");
        case LineEnd::kInvalid:
          return Fail("invalid bulk length");
        case LineEnd::kFound:
          break;
      }
      if (length < 0 || static_cast<std::uint64_t>(length) > limits_.max_bulk_bytes) {
        return Fail("invalid bulk length");
      }
      if (unauthenticated_ && static_cast<std::uint64_t>(length) > kMaxUnauthenticatedBulkBytes) {
        return Fail("unauthenticated bulk length");
      }
      bulk_len_ = length;
      frame_pos_ = next;
    }
    const std::size_t length = static_cast<std::size_t>(bulk_len_);
    const std::size_t have = avail - frame_pos_;
    // Check the CRLF bytes as soon as each one arrives rather than after both.
    if (have > length && frame[frame_pos_ + length] != '\r') {
      return Fail("expected CRLF after bulk string");
    }
    if (have > length + 1 && frame[frame_pos_ + length + 1] != '\n') {
      return Fail("expected CRLF after bulk string");
    }
    if (have < length + 2) return ParseStatus::kNeedMore;
    spans_.emplace_back(frame_pos_, length);
    frame_pos_ += length + 2;
    bulk_len_ = -1;
  }

  // resize() rather than clear() keeps the strings of the previous request and their capacity.
  // clear() + append() rather than assign(): assign takes std::string's general replace path,
  // which checks for aliasing, at about twice the instructions.
  args->resize(mb_count_);
  for (std::size_t i = 0; i < mb_count_; ++i) {
    (*args)[i].clear();
    (*args)[i].append(frame + spans_[i].first, spans_[i].second);
  }
  consumed_ += frame_pos_;
  ResetFrame();
  return ParseStatus::kCommand;
}

// inline = line ( LF | CRLF ), split into words by SplitInline.
RequestParser::ParseStatus RequestParser::ParseInline(std::vector<std::string>* args) {
  const char* frame = buffer_.data() + consumed_;
  const std::size_t avail = buffer_.size() - consumed_;
  // A line of max_inline_bytes may be followed by CR LF, hence + 2.
  const std::size_t window_end = std::min(avail, limits_.max_inline_bytes + 2);
  std::size_t lf = scan_pos_;
  for (; lf < window_end; ++lf) {
    const unsigned char c = static_cast<unsigned char>(frame[lf]);
    if (c == '\n') break;
    if (IsForbiddenInlineByte(c)) return Fail("invalid inline request");
  }
  if (lf == window_end) {
    if (window_end == limits_.max_inline_bytes + 2) return Fail("too big inline request");
    scan_pos_ = lf;
    return ParseStatus::kNeedMore;
  }
  const std::size_t line_size = (lf > 0 && frame[lf - 1] == '\r') ? lf - 1 : lf;
  if (line_size > limits_.max_inline_bytes) return Fail("too big inline request");
  scan_pos_ = 0;
  if (!SplitInline(std::string_view(frame, line_size), args)) {
    return Fail("unbalanced quotes in request");
  }
  consumed_ += lf + 1;
  // An empty line yields no words and is skipped (kNeedMore with progress), as in Redis.
  return args->empty() ? ParseStatus::kNeedMore : ParseStatus::kCommand;
}

}  // namespace kvstore::resp
