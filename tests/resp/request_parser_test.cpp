// Unit tests of RequestParser (server side of the RESP codec): framing, pipelining, chunked
// arrival, inline quoting, limits and every protocol error text. No sockets.
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kvstore/resp.h"

namespace kvstore::resp {
namespace {

using Status = RequestParser::ParseStatus;

// Renders one argument readably: printable ASCII as is, other bytes as \xHH.
std::string RenderArg(const std::string& arg) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : arg) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// Drains the parser: each command as "[arg][arg]" on its own line, then "need-more" or
// "error: <text>".
std::string Drain(RequestParser* parser) {
  std::string out;
  std::vector<std::string> args;
  for (;;) {
    switch (parser->Next(&args)) {
      case Status::kCommand:
        REQUIRE_FALSE(args.empty());
        for (const std::string& arg : args) out += "[" + RenderArg(arg) + "]";
        out += "\n";
        break;
      case Status::kNeedMore:
        CHECK(args.empty());
        return out + "need-more";
      case Status::kError:
        CHECK(args.empty());
        return out + "error: " + parser->error();
    }
  }
}

// Feeds `stream` in chunks of the given sizes (the rest in one last chunk) and renders everything
// parsed. Stops feeding after an error.
std::string ParseChunked(std::string_view stream, const std::vector<std::size_t>& chunk_sizes,
                         ParserLimits limits = {}) {
  RequestParser parser(limits);
  std::string out;
  std::size_t pos = 0;
  for (std::size_t size : chunk_sizes) {
    size = std::min(size, stream.size() - pos);
    parser.Feed(stream.substr(pos, size));
    pos += size;
    std::string part = Drain(&parser);
    if (part.rfind("error: ", 0) == 0 || part.find("\nerror: ") != std::string::npos) {
      return out + part;
    }
    out += part.substr(0, part.size() - std::string("need-more").size());
  }
  parser.Feed(stream.substr(pos));
  return out + Drain(&parser);
}

std::string Parse(std::string_view stream, ParserLimits limits = {}) {
  return ParseChunked(stream, {}, limits);
}

std::string ParseBytewise(std::string_view stream, ParserLimits limits = {}) {
  return ParseChunked(stream, std::vector<std::size_t>(stream.size(), 1), limits);
}

ParserLimits SmallLimits() {
  ParserLimits limits;
  limits.max_bulk_bytes = 8;
  limits.max_multibulk_count = 3;
  limits.max_inline_bytes = 16;
  return limits;
}

TEST_CASE("multibulk request", "[resp][request]") {
  CHECK(Parse("*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n") == "[GET][key]\nneed-more");
  CHECK(Parse("*1\r\n$0\r\n\r\n") == "[]\nneed-more");
}

TEST_CASE("unauthenticated requests are held to what AUTH needs, as in Redis", "[resp][request]") {
  RequestParser parser;
  parser.set_unauthenticated(true);
  parser.Feed("*2\r\n$4\r\nAUTH\r\n$16384\r\n" + std::string(16384, 'p') + "\r\n");
  std::vector<std::string> args;
  REQUIRE(parser.Next(&args) == Status::kCommand);
  CHECK(args[1].size() == 16384);
  // The header alone is refused: nothing of the announced bulk needs to arrive.
  parser.Feed("*1\r\n$16385\r\n");
  CHECK(Drain(&parser) == "error: Protocol error: unauthenticated bulk length");

  RequestParser empty;  // "*-1" and "*0" are ignored as always, not taken for 2^64 - 1
  empty.set_unauthenticated(true);
  empty.Feed("*-1\r\n*0\r\n");
  CHECK(Drain(&empty) == "need-more");

  RequestParser many;
  many.set_unauthenticated(true);
  many.Feed("*11\r\n");
  CHECK(Drain(&many) == "error: Protocol error: unauthenticated multibulk length");

  // Logged in, the usual limits apply again.
  RequestParser after;
  after.set_unauthenticated(true);
  after.Feed("*10\r\n");
  CHECK(Drain(&after) == "need-more");
  after.set_unauthenticated(false);
  after.Feed("$20000\r\n");
  CHECK(Drain(&after) == "need-more");
}

TEST_CASE("pipelined multibulk and inline requests", "[resp][request]") {
  const std::string stream =
      "*1\r\n$4\r\nPING\r\n"
      "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n"
      "GET k\r\n"
      "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
  CHECK(Parse(stream) == "[PING]\n[SET][k][value]\n[GET][k]\n[GET][k]\nneed-more");
}

TEST_CASE("bulk values are binary safe", "[resp][request]") {
  const std::string value("a\r\nb\0c\r\n*1\r\n$", 13);
  const std::string stream = EncodeCommand({"SET", "k", value});
  CHECK(Parse(stream) == "[SET][k][a\\x0d\\x0ab\\x00c\\x0d\\x0a*1\\x0d\\x0a$]\nneed-more");
}

TEST_CASE("every split point of a pipelined stream yields the same commands", "[resp][request]") {
  const std::string stream = EncodeCommand({"SET", "key", std::string("v\r\n\0x", 5)}) +
                             "*0\r\n*-1\r\n" + "set \"a b\" 'c d'\r\n" + "\r\n" + "PING\n" +
                             EncodeCommand({"GET", "key"}) + EncodeCommand({""});
  const std::string expected = Parse(stream);
  CHECK(expected ==
        "[SET][key][v\\x0d\\x0a\\x00x]\n[set][a b][c d]\n[PING]\n[GET][key]\n[]\nneed-more");

  for (std::size_t split = 0; split <= stream.size(); ++split) {
    INFO("split at " << split);
    CHECK(ParseChunked(stream, {split}) == expected);
  }
  CHECK(ParseBytewise(stream) == expected);

  std::mt19937 rng(42);
  for (int round = 0; round < 200; ++round) {
    std::vector<std::size_t> sizes;
    for (std::size_t total = 0; total < stream.size();) {
      sizes.push_back(std::uniform_int_distribution<std::size_t>(0, 9)(rng));
      total += sizes.back();
    }
    INFO("round " << round);
    CHECK(ParseChunked(stream, sizes) == expected);
  }
}

TEST_CASE("empty multibulk requests are skipped like Redis", "[resp][request]") {
  CHECK(Parse("*0\r\n") == "need-more");
  CHECK(Parse("*-1\r\n*0\r\nPING\r\n") == "[PING]\nneed-more");
}

TEST_CASE("a large value arriving in many reads, with compaction", "[resp][request]") {
  const std::string big(300 * 1024, 'x');
  std::string stream;
  for (int i = 0; i < 2000; ++i) stream += EncodeCommand({"GET", "k" + std::to_string(i)});
  stream += EncodeCommand({"SET", "big", big});
  stream += EncodeCommand({"GET", "last"});

  RequestParser parser;
  std::vector<std::string> args;
  std::vector<std::string> seen;
  std::string last_value;
  for (std::size_t pos = 0; pos < stream.size(); pos += 4096) {
    parser.Feed(std::string_view(stream).substr(pos, 4096));
    Status status;
    while ((status = parser.Next(&args)) == Status::kCommand) {
      seen.push_back(args[0] + " " + args[1]);
      if (args.size() == 3) last_value = args[2];
    }
    REQUIRE(status == Status::kNeedMore);
  }
  REQUIRE(seen.size() == 2002);
  CHECK(seen[0] == "GET k0");
  CHECK(seen[1999] == "GET k1999");
  CHECK(seen[2000] == "SET big");
  CHECK(last_value == big);
  CHECK(seen[2001] == "GET last");
  CHECK(parser.buffered_bytes() == 0);
  CHECK_FALSE(parser.mid_frame());
}

TEST_CASE("args capacity is reused and a shorter request shrinks args", "[resp][request]") {
  RequestParser parser;
  parser.Feed(EncodeCommand({"SET", "key", std::string(100, 'v')}) + "*1\r\n$4\r\nPING\r\n");
  std::vector<std::string> args;
  REQUIRE(parser.Next(&args) == Status::kCommand);
  CHECK(args.size() == 3);
  args[0].reserve(1000);  // make reuse observable: a fresh string would not have this buffer
  const char* first_buffer = args[0].data();
  REQUIRE(parser.Next(&args) == Status::kCommand);
  CHECK(args == std::vector<std::string>{"PING"});
  CHECK(args[0].data() == first_buffer);
}

TEST_CASE("mid_frame and buffered_bytes track a partial request", "[resp][request]") {
  RequestParser parser;
  std::vector<std::string> args;
  CHECK_FALSE(parser.mid_frame());
  parser.Feed("*1\r\n$4\r\nPI");
  CHECK(parser.Next(&args) == Status::kNeedMore);
  CHECK(parser.mid_frame());
  CHECK(parser.buffered_bytes() == 10);
  parser.Feed("NG\r\n");
  CHECK(parser.Next(&args) == Status::kCommand);
  CHECK_FALSE(parser.mid_frame());
  CHECK(parser.buffered_bytes() == 0);
}

TEST_CASE("multibulk protocol errors use Redis' texts", "[resp][request]") {
  const std::string kMbulk = "error: Protocol error: invalid multibulk length";
  CHECK(Parse("*abc\r\n") == kMbulk);
  CHECK(Parse("*\r\n") == kMbulk);
  CHECK(Parse("*-2\r\n") == kMbulk);
  CHECK(Parse("*01\r\n") == kMbulk);
  CHECK(Parse("*+1\r\n") == kMbulk);
  CHECK(Parse("* 1\r\n") == kMbulk);
  CHECK(Parse("*1 \r\n") == kMbulk);
  CHECK(Parse("*99999999999999999999999\r\n") == kMbulk);
  CHECK(Parse("*1\rX$1\r\na\r\n") == kMbulk);  // CR must be followed by LF

  CHECK(Parse("*1\r\nX") == "error: Protocol error: expected '$', got 'X'");
  CHECK(Parse("*2\r\n$1\r\na\r\n:1\r\n") == "error: Protocol error: expected '$', got ':'");

  const std::string kBulk = "error: Protocol error: invalid bulk length";
  CHECK(Parse("*1\r\n$abc\r\n") == kBulk);
  CHECK(Parse("*1\r\n$-1\r\n") == kBulk);
  CHECK(Parse("*1\r\n$\r\n") == kBulk);
  CHECK(Parse("*1\r\n$03\r\nabc\r\n") == kBulk);
  CHECK(Parse("*1\r\n$3\rXabc\r\n") == kBulk);

  const std::string kCrlf = "error: Protocol error: expected CRLF after bulk string";
  CHECK(Parse("*1\r\n$3\r\nabcd\r\n") == kCrlf);
  CHECK(Parse("*1\r\n$3\r\nabc\rX") == kCrlf);
  CHECK(Parse("*1\r\n$3\r\nabc\n\r") == kCrlf);
  // Detected as soon as the wrong byte arrives, without waiting for a second one.
  CHECK(Parse("*1\r\n$3\r\nabcX") == kCrlf);
}

TEST_CASE("multibulk limits", "[resp][request]") {
  const ParserLimits limits = SmallLimits();
  // Exactly at the limits: accepted.
  CHECK(Parse(EncodeCommand({"a", "b", "12345678"}), limits) == "[a][b][12345678]\nneed-more");
  // One past: rejected, before the payload arrives.
  CHECK(Parse("*4\r\n", limits) == "error: Protocol error: invalid multibulk length");
  CHECK(Parse("*1\r\n$9\r\n", limits) == "error: Protocol error: invalid bulk length");
  CHECK(Parse("*1\r\n$536870913\r\n") == "error: Protocol error: invalid bulk length");

  // Header lines without CR: waits up to max_inline_bytes, then gives up.
  const std::string long_count = "*" + std::string(16, '1');
  CHECK(Parse(long_count.substr(0, 16), limits) == "need-more");
  CHECK(Parse(long_count, limits) == "error: Protocol error: too big mbulk count string");
  CHECK(ParseBytewise(long_count + "\r\n", limits) ==
        "error: Protocol error: too big mbulk count string");
  const std::string long_len = "*1\r\n$" + std::string(16, '1');
  CHECK(Parse(long_len, limits) == "error: Protocol error: too big bulk count string");
  CHECK(ParseBytewise(long_len, limits) == "error: Protocol error: too big bulk count string");
}

TEST_CASE("inline requests are split like sdssplitargs", "[resp][request]") {
  CHECK(Parse("PING\r\n") == "[PING]\nneed-more");
  CHECK(Parse("PING\n") == "[PING]\nneed-more");
  CHECK(Parse("  SET\tk   v  \r\n") == "[SET][k][v]\nneed-more");
  CHECK(Parse("SET \"a b\" 'c d'\r\n") == "[SET][a b][c d]\nneed-more");
  CHECK(Parse("SET k \"\"\r\n") == "[SET][k][]\nneed-more");
  CHECK(Parse("SET k ''\r\n") == "[SET][k][]\nneed-more");
  CHECK(Parse(R"(ECHO "\x41\x4a\n\r\t\b\a\\\"\q")"
              "\r\n") == "[ECHO][AJ\\x0a\\x0d\\x09\\x08\\x07\\x5c\"q]\nneed-more");
  CHECK(Parse(R"(ECHO "\x4" "\xZZ")"
              "\n") == "[ECHO][x4][xZZ]\nneed-more");
  CHECK(Parse(R"(ECHO "\x00")"
              "\n") == "[ECHO][\\x00]\nneed-more");
  CHECK(Parse(R"(ECHO 'it\'s' 'a\nb')"
              "\n") == "[ECHO][it's][a\\x5cnb]\nneed-more");
  CHECK(Parse("ECHO a\"b c\"\n") == "[ECHO][ab c]\nneed-more");  // a quote may start mid-word
  CHECK(Parse("ECHO \xc3\xa9t\xc3\xa9\n") == "[ECHO][\\xc3\\xa9t\\xc3\\xa9]\nneed-more");
}

TEST_CASE("empty inline lines are skipped", "[resp][request]") {
  CHECK(Parse("\r\n\n   \r\n\t\nPING\r\n") == "[PING]\nneed-more");
  CHECK(Parse("\r\n") == "need-more");
}

TEST_CASE("inline protocol errors use Redis' texts", "[resp][request]") {
  const std::string kQuotes = "error: Protocol error: unbalanced quotes in request";
  CHECK(Parse("SET \"a b\r\n") == kQuotes);
  CHECK(Parse("SET 'a b\r\n") == kQuotes);
  CHECK(Parse("SET \"a\"b\r\n") == kQuotes);
  CHECK(Parse("SET 'a'b\r\n") == kQuotes);
  CHECK(Parse("SET \"a\\\"\r\n") == kQuotes);
  // Requests before the bad one are still delivered.
  CHECK(Parse("PING\r\nSET \"x\r\n") == "[PING]\n" + kQuotes);

  const std::string kInvalid = "error: Protocol error: invalid inline request";
  CHECK(Parse(std::string("GET \0k\r\n", 8)) == kInvalid);
  CHECK(Parse("\x16\x03\x01\x02\x00") == kInvalid);  // a TLS ClientHello
  CHECK(Parse("GET\x7fk\r\n") == kInvalid);
  CHECK(Parse("GET\x1bk\r\n") == kInvalid);
  CHECK(Parse("GET\x0bk\r\n") == kInvalid);
  // Rejected on arrival, without waiting for the end of the line.
  CHECK(Parse(std::string("GET \0", 5)) == kInvalid);
}

TEST_CASE("inline line limit", "[resp][request]") {
  const ParserLimits limits = SmallLimits();
  const std::string at_limit(16, 'a');
  CHECK(Parse(at_limit + "\r\n", limits) == "[" + at_limit + "]\nneed-more");
  CHECK(ParseBytewise(at_limit + "\r\n", limits) == "[" + at_limit + "]\nneed-more");
  CHECK(Parse(at_limit + "\n", limits) == "[" + at_limit + "]\nneed-more");

  const std::string kTooBig = "error: Protocol error: too big inline request";
  CHECK(Parse(at_limit + "a\r\n", limits) == kTooBig);  // even with the LF in the same read
  CHECK(Parse(at_limit + "a\n", limits) == kTooBig);
  CHECK(Parse(at_limit + "\r", limits) == "need-more");  // could still be a full line
  CHECK(Parse(at_limit + "ab", limits) == kTooBig);
  CHECK(ParseBytewise(std::string(100, 'a'), limits) == kTooBig);
}

TEST_CASE("the parser stays in error", "[resp][request]") {
  RequestParser parser;
  std::vector<std::string> args;
  parser.Feed("*x\r\n");
  REQUIRE(parser.Next(&args) == Status::kError);
  const std::string error = parser.error();
  CHECK(error == "Protocol error: invalid multibulk length");
  parser.Feed("*1\r\n$4\r\nPING\r\n");
  CHECK(parser.Next(&args) == Status::kError);
  CHECK(parser.Next(&args) == Status::kError);
  CHECK(args.empty());
  CHECK(parser.error() == error);
}

TEST_CASE("EncodeCommand output parses back to the same arguments", "[resp][request]") {
  const std::vector<std::string> command = {"MSET", "", std::string("\0\r\n", 3),
                                            std::string(70000, 'z')};
  const std::string encoded = EncodeCommand(command);
  CHECK(encoded.substr(0, 20) == "*4\r\n$4\r\nMSET\r\n$0\r\n\r\n");
  RequestParser parser;
  parser.Feed(encoded);
  std::vector<std::string> args;
  REQUIRE(parser.Next(&args) == Status::kCommand);
  CHECK(args == command);
  CHECK(parser.Next(&args) == Status::kNeedMore);
}

}  // namespace
}  // namespace kvstore::resp
