// Unit tests of the reply encoders and ReplyParser (client side of the RESP codec): exact encoder
// bytes, round trips, nesting, chunked arrival, limits and malformed replies. No sockets.
#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kvstore/resp.h"

namespace kvstore::resp {
namespace {

using Status = ReplyParser::ParseStatus;

// Renders a value compactly: +simple -error :int "bulk" nil [a, b]. Bulk bytes outside printable
// ASCII are shown as \xHH.
std::string Render(const Value& value) {
  static const char kHex[] = "0123456789abcdef";
  switch (value.type) {
    case Value::Type::kSimpleString:
      return "+" + value.str;
    case Value::Type::kError:
      return "-" + value.str;
    case Value::Type::kInteger:
      return ":" + std::to_string(value.integer);
    case Value::Type::kNull:
      return "nil";
    case Value::Type::kBulkString: {
      std::string out = "\"";
      for (unsigned char c : value.str) {
        if (c >= 0x20 && c < 0x7f && c != '\\') {
          out += static_cast<char>(c);
        } else {
          out += "\\x";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        }
      }
      return out + "\"";
    }
    case Value::Type::kArray: {
      std::string out = "[";
      for (std::size_t i = 0; i < value.elements.size(); ++i) {
        if (i > 0) out += ", ";
        out += Render(value.elements[i]);
      }
      return out + "]";
    }
  }
  return "?";
}

// Feeds `stream` in pieces of `chunk` bytes (0: all at once) and renders every reply, one per
// line, then "need-more" or "error: <text>".
std::string Parse(std::string_view stream, std::size_t chunk = 0, ParserLimits limits = {}) {
  ReplyParser parser(limits);
  if (chunk == 0) chunk = std::max<std::size_t>(stream.size(), 1);
  std::string out;
  Value value;
  for (std::size_t pos = 0;; pos += chunk) {
    if (pos < stream.size()) parser.Feed(stream.substr(pos, chunk));
    Status status;
    while ((status = parser.Next(&value)) == Status::kValue) out += Render(value) + "\n";
    if (status == Status::kError) return out + "error: " + parser.error();
    if (pos + chunk >= stream.size()) return out + "need-more";
  }
}

TEST_CASE("encoders produce exact RESP2 bytes", "[resp][encode]") {
  std::string out;
  AppendSimpleString(&out, "OK");
  AppendError(&out, "ERR bad\r\nthing");
  AppendInteger(&out, -42);
  AppendInteger(&out, std::numeric_limits<std::int64_t>::min());
  AppendBulkString(&out, std::string("a\r\n\0", 4));
  AppendBulkString(&out, "");
  AppendNullBulkString(&out);
  AppendArrayHeader(&out, 2);
  AppendNullArray(&out);
  AppendSimpleString(&out, "a\nb");
  CHECK(out == std::string("+OK\r\n-ERR bad  thing\r\n:-42\r\n:-9223372036854775808\r\n"
                           "$4\r\na\r\n\0\r\n$0\r\n\r\n$-1\r\n*2\r\n*-1\r\n+a b\r\n",
                           87));
  CHECK(EncodeCommand({"SET", "k", ""}) == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
  CHECK(EncodeCommand({}) == "*0\r\n");
}

TEST_CASE("encoded replies parse back", "[resp][reply]") {
  std::string stream;
  AppendSimpleString(&stream, "PONG");
  AppendError(&stream, "WRONGPASS invalid password");
  AppendInteger(&stream, 0);
  AppendInteger(&stream, std::numeric_limits<std::int64_t>::max());
  AppendBulkString(&stream, std::string("x\r\ny\0", 5));
  AppendBulkString(&stream, "");
  AppendNullBulkString(&stream);
  AppendNullArray(&stream);
  AppendArrayHeader(&stream, 0);
  // SCAN-shaped reply: [cursor, [keys]], and a deeper nesting with mixed types.
  AppendArrayHeader(&stream, 2);
  AppendBulkString(&stream, "17");
  AppendArrayHeader(&stream, 2);
  AppendBulkString(&stream, "k1");
  AppendBulkString(&stream, "k2");
  AppendArrayHeader(&stream, 3);
  AppendArrayHeader(&stream, 1);
  AppendArrayHeader(&stream, 1);
  AppendInteger(&stream, 7);
  AppendNullBulkString(&stream);
  AppendArrayHeader(&stream, 0);

  const std::string expected =
      "+PONG\n"
      "-WRONGPASS invalid password\n"
      ":0\n"
      ":9223372036854775807\n"
      "\"x\\x0d\\x0ay\\x00\"\n"
      "\"\"\n"
      "nil\n"
      "nil\n"
      "[]\n"
      "[\"17\", [\"k1\", \"k2\"]]\n"
      "[[[:7]], nil, []]\n"
      "need-more";
  CHECK(Parse(stream) == expected);
  for (std::size_t chunk = 1; chunk <= 8; ++chunk) {
    INFO("chunk " << chunk);
    CHECK(Parse(stream, chunk) == expected);
  }
  // Every split point into two reads.
  for (std::size_t split = 0; split <= stream.size(); ++split) {
    INFO("split at " << split);
    ReplyParser parser;
    std::string out;
    Value value;
    parser.Feed(std::string_view(stream).substr(0, split));
    while (parser.Next(&value) == Status::kValue) out += Render(value) + "\n";
    parser.Feed(std::string_view(stream).substr(split));
    while (parser.Next(&value) == Status::kValue) out += Render(value) + "\n";
    CHECK(out + "need-more" == expected);
  }
}

TEST_CASE("Value helpers", "[resp][reply]") {
  ReplyParser parser;
  parser.Feed("-ERR x\r\n$-1\r\n+OK\r\n");
  Value value;
  REQUIRE(parser.Next(&value) == Status::kValue);
  CHECK(value.is_error());
  CHECK(value.str == "ERR x");
  REQUIRE(parser.Next(&value) == Status::kValue);
  CHECK(value.is_null());
  REQUIRE(parser.Next(&value) == Status::kValue);
  CHECK_FALSE(value.is_error());
  CHECK_FALSE(value.is_null());
}

TEST_CASE("a large bulk reply arriving in many reads", "[resp][reply]") {
  std::string big(2 * 1024 * 1024 + 3, 'q');
  big[12345] = '\r';
  std::string stream;
  AppendBulkString(&stream, big);
  AppendSimpleString(&stream, "OK");
  ReplyParser parser;
  Value value;
  std::vector<std::string> got;
  for (std::size_t pos = 0; pos < stream.size(); pos += 65536) {
    parser.Feed(std::string_view(stream).substr(pos, 65536));
    while (parser.Next(&value) == Status::kValue) got.push_back(value.str);
  }
  REQUIRE(got.size() == 2);
  CHECK(got[0] == big);
  CHECK(got[1] == "OK");
}

TEST_CASE("malformed replies", "[resp][reply]") {
  CHECK(Parse("?\r\n") == "error: Protocol error: unknown reply type '?'");
  CHECK(Parse("+OK\r\nX") == "+OK\nerror: Protocol error: unknown reply type 'X'");
  CHECK(Parse(":12a\r\n") == "error: Protocol error: invalid integer");
  CHECK(Parse(":\r\n") == "error: Protocol error: invalid integer");
  CHECK(Parse(":99999999999999999999\r\n") == "error: Protocol error: invalid integer");
  CHECK(Parse("$-2\r\n") == "error: Protocol error: invalid bulk length");
  CHECK(Parse("$x\r\n") == "error: Protocol error: invalid bulk length");
  CHECK(Parse("*-2\r\n") == "error: Protocol error: invalid multibulk length");
  CHECK(Parse("*\r\n") == "error: Protocol error: invalid multibulk length");
  CHECK(Parse("$3\r\nabcd\r\n") == "error: Protocol error: expected CRLF after bulk string");
  CHECK(Parse("+O\rK\r\n") == "error: Protocol error: expected CRLF after reply line");
  // Incomplete but valid so far: waits.
  CHECK(Parse("*2\r\n$3\r\nabc\r\n") == "need-more");
  CHECK(Parse("+OK\r") == "need-more");
}

TEST_CASE("reply limits", "[resp][reply]") {
  ParserLimits limits;
  limits.max_bulk_bytes = 4;
  limits.max_multibulk_count = 2;
  limits.max_inline_bytes = 8;
  CHECK(Parse("$4\r\nabcd\r\n*2\r\n:1\r\n:2\r\n", 0, limits) == "\"abcd\"\n[:1, :2]\nneed-more");
  CHECK(Parse("$5\r\n", 0, limits) == "error: Protocol error: invalid bulk length");
  CHECK(Parse("*3\r\n", 0, limits) == "error: Protocol error: invalid multibulk length");
  CHECK(Parse("+1234567\r\n", 0, limits) == "+1234567\nneed-more");
  CHECK(Parse("+12345678", 0, limits) == "error: Protocol error: reply line too long");
  CHECK(Parse("+12345678", 1, limits) == "error: Protocol error: reply line too long");

  std::string deep;
  for (int i = 0; i < 64; ++i) deep += "*1\r\n";
  CHECK(Parse(deep + ":1\r\n") ==
        std::string(64, '[') + ":1" + std::string(64, ']') + "\nneed-more");
  CHECK(Parse(deep + "*1\r\n:1\r\n") == "error: Protocol error: reply nested too deeply");
}

TEST_CASE("the reply parser stays in error", "[resp][reply]") {
  ReplyParser parser;
  parser.Feed("!\r\n");
  Value value;
  REQUIRE(parser.Next(&value) == Status::kError);
  parser.Feed("+OK\r\n");
  CHECK(parser.Next(&value) == Status::kError);
  CHECK(parser.error() == "Protocol error: unknown reply type '!'");
}

}  // namespace
}  // namespace kvstore::resp
