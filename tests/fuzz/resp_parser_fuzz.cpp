// libFuzzer target for the RESP parsers: arbitrary bytes, fed whole and in pseudo-random chunks,
// to RequestParser and to ReplyParser. Besides crashes, leaks and hangs (ASan/UBSan), it traps
// when chunking changes the result, when a parser leaves the error state, or when a parsed
// command does not survive EncodeCommand. Single-threaded.
//
// Input layout: byte 0 selects the limits (default or tiny ones, so that every limit is hit),
// byte 1 the max_inline_bytes of tiny limits, byte 2 seeds the chunk sizes; the rest is the stream.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kvstore/resp.h"

namespace {

using kvstore::resp::ParserLimits;
using kvstore::resp::ReplyParser;
using kvstore::resp::RequestParser;
using kvstore::resp::Value;

void Check(bool condition) {
  if (!condition) __builtin_trap();
}

// Chunk sizes from a small LCG: mostly tiny reads, so that every parser state is interrupted.
class Chunker {
 public:
  explicit Chunker(std::uint8_t seed) : state_(seed * 2654435761u + 1), max_(seed & 1 ? 7 : 300) {}
  std::size_t NextSize() {
    state_ = state_ * 1103515245u + 12345u;
    return 1 + (state_ >> 16) % max_;
  }

 private:
  std::uint32_t state_;
  std::uint32_t max_;
};

void AppendSized(std::string* out, std::string_view s) {
  *out += std::to_string(s.size());
  *out += ':';
  *out += s;
}

// Renders what a RequestParser yields, as an unambiguous string; checks the invariants on the way.
std::string DrainRequests(RequestParser* parser, bool* failed) {
  std::string out;
  std::vector<std::string> args;
  for (;;) {
    switch (parser->Next(&args)) {
      case RequestParser::ParseStatus::kCommand: {
        Check(!args.empty());
        out += 'C';
        for (const std::string& arg : args) AppendSized(&out, arg);
        // A command must survive re-encoding exactly (binary safety of the multibulk path).
        RequestParser again;
        again.Feed(kvstore::resp::EncodeCommand(args));
        std::vector<std::string> reparsed;
        Check(again.Next(&reparsed) == RequestParser::ParseStatus::kCommand);
        Check(reparsed == args);
        break;
      }
      case RequestParser::ParseStatus::kNeedMore:
        Check(args.empty());
        return out;
      case RequestParser::ParseStatus::kError: {
        Check(args.empty());
        const std::string error = parser->error();
        Check(error.rfind("Protocol error: ", 0) == 0);
        Check(parser->Next(&args) == RequestParser::ParseStatus::kError);
        Check(parser->error() == error);
        *failed = true;
        return out + "E" + error;
      }
    }
  }
}

std::string ParseRequests(std::string_view stream, const ParserLimits& limits, Chunker* chunker) {
  RequestParser parser(limits);
  std::string out;
  bool failed = false;
  std::size_t pos = 0;
  while (!failed && pos < stream.size()) {
    const std::size_t size = chunker != nullptr ? chunker->NextSize() : stream.size();
    parser.Feed(stream.substr(pos, size));
    pos += std::min(size, stream.size() - pos);
    out += DrainRequests(&parser, &failed);
  }
  return out;
}

void RenderValue(const Value& value, int depth, std::string* out) {
  Check(depth <= 64);
  switch (value.type) {
    case Value::Type::kSimpleString:
      *out += '+';
      AppendSized(out, value.str);
      break;
    case Value::Type::kError:
      *out += '-';
      AppendSized(out, value.str);
      break;
    case Value::Type::kBulkString:
      *out += '$';
      AppendSized(out, value.str);
      break;
    case Value::Type::kInteger:
      *out += ':' + std::to_string(value.integer) + ';';
      break;
    case Value::Type::kNull:
      *out += '_';
      break;
    case Value::Type::kArray:
      *out += '*' + std::to_string(value.elements.size()) + ';';
      for (const Value& element : value.elements) RenderValue(element, depth + 1, out);
      break;
  }
}

std::string ParseReplies(std::string_view stream, const ParserLimits& limits, Chunker* chunker) {
  ReplyParser parser(limits);
  std::string out;
  std::size_t pos = 0;
  Value value;
  while (pos < stream.size()) {
    const std::size_t size = chunker != nullptr ? chunker->NextSize() : stream.size();
    parser.Feed(stream.substr(pos, size));
    pos += std::min(size, stream.size() - pos);
    ReplyParser::ParseStatus status;
    while ((status = parser.Next(&value)) == ReplyParser::ParseStatus::kValue) {
      RenderValue(value, 0, &out);
    }
    if (status == ReplyParser::ParseStatus::kError) {
      const std::string error = parser.error();
      Check(parser.Next(&value) == ReplyParser::ParseStatus::kError);
      Check(parser.error() == error);
      return out + "E" + error;
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  ParserLimits limits;
  if (data[0] & 0x80) {
    limits.max_bulk_bytes = data[0] & 0x1f;
    limits.max_multibulk_count = ((data[0] >> 5) & 3) + 1;
    limits.max_inline_bytes = data[1] % 48 + 1;
  }
  const std::string_view stream(reinterpret_cast<const char*>(data) + 3, size - 3);

  const std::string whole_requests = ParseRequests(stream, limits, nullptr);
  Chunker request_chunks(data[2]);
  Check(ParseRequests(stream, limits, &request_chunks) == whole_requests);

  const std::string whole_replies = ParseReplies(stream, limits, nullptr);
  Chunker reply_chunks(data[2]);
  Check(ParseReplies(stream, limits, &reply_chunks) == whole_replies);
  return 0;
}
