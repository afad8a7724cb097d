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

// Appends the line type + decimal number + CRLF with one append(pointer, length) (no allocation,
// one capacity check): the header of every bulk reply, the whole of an integer reply.
template <typename Int>
void AppendNumberLine(std::string* out, char type, Int value) {
  char line[1 + 24 + 2];
  line[0] = type;
  auto [end, ec] = std::to_chars(line + 1, line + 1 + 24, value);
  (void)ec;  // 24 bytes hold any 64-bit value
  end[0] = '\r';
  end[1] = '\n';
  out->append(line, static_cast<std::size_t>(end + 2 - line));
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

void AppendInteger(std::string* out, std::int64_t value) { AppendNumberLine(out, ':', value); }

void AppendBulkString(std::string* out, std::string_view s) {
  AppendNumberLine(out, '$', s.size());
  out->append(s);
  out->append("\r\n", 2);
}

void AppendNullBulkString(std::string* out) { out->append("$-1\r\n"); }

void AppendArrayHeader(std::string* out, std::size_t count) { AppendNumberLine(out, '*', count); }

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
