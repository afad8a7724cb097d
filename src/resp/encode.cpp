// RESP2 encoders: reply values (server side) and multibulk commands (client side).
// Thread-safe: pure functions appending to a caller-owned string.
//
//   simple-string = "+" line CRLF        error = "-" line CRLF        integer = ":" number CRLF
//   bulk-string   = "$" length CRLF bytes CRLF | "$-1" CRLF
//   array         = "*" count CRLF *value | "*-1" CRLF
#include <charconv>

#include "kvstore/resp.h"

namespace kvstore::resp {
namespace {

// Appends a decimal number (no allocation: the hot path of every bulk reply).
template <typename Int>
void AppendNumber(std::string* out, Int value) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), value);
  (void)ec;  // 24 bytes hold any 64-bit value
  out->append(digits, end);
}

// Appends s + CRLF with any CR or LF in s turned into a space: a line-based value may not
// contain them, or the peer would read the rest of the message as another reply.
void AppendLine(std::string* out, std::string_view s) {
  const std::size_t start = out->size();
  out->append(s);
  for (std::size_t i = start; i < out->size(); ++i) {
    if ((*out)[i] == '\r' || (*out)[i] == '\n') (*out)[i] = ' ';
  }
  out->append("\r\n");
}

}  // namespace

void AppendSimpleString(std::string* out, std::string_view s) {
  out->push_back('+');
  AppendLine(out, s);
}

void AppendError(std::string* out, std::string_view message) {
  out->push_back('-');
  AppendLine(out, message);
}

void AppendInteger(std::string* out, std::int64_t value) {
  out->push_back(':');
  AppendNumber(out, value);
  out->append("\r\n");
}

void AppendBulkString(std::string* out, std::string_view s) {
  out->push_back('$');
  AppendNumber(out, s.size());
  out->append("\r\n");
  out->append(s);
  out->append("\r\n");
}

void AppendNullBulkString(std::string* out) { out->append("$-1\r\n"); }

void AppendArrayHeader(std::string* out, std::size_t count) {
  out->push_back('*');
  AppendNumber(out, count);
  out->append("\r\n");
}

void AppendNullArray(std::string* out) { out->append("*-1\r\n"); }

std::string EncodeCommand(const std::vector<std::string>& args) {
  // Header and per-argument framing take at most 32 bytes each: one allocation.
  std::size_t size = 32;
  for (const std::string& arg : args) size += arg.size() + 32;
  std::string out;
  out.reserve(size);
  AppendArrayHeader(&out, args.size());
  for (const std::string& arg : args) AppendBulkString(&out, arg);
  return out;
}

}  // namespace kvstore::resp
