// The RESP2 codec shared by the server and kvctl: an incremental request parser (server side),
// reply encoders, a command encoder and an incremental reply parser (client side).
// No I/O here, so everything is unit-tested without sockets. Thread-compatible: one parser per
// connection, no shared state.
//
// Request grammar accepted by RequestParser (https://redis.io/docs/reference/protocol-spec/):
//   request   = multibulk | inline
//   multibulk = "*" count CRLF *( "$" length CRLF bytes CRLF )   ; 1 <= count <=
//   max_multibulk_count
//                                                                ; 0 <= length <= max_bulk_bytes
//   inline    = *( SP / TAB ) words ( LF | CRLF )                ; words split like Redis'
//                                                                ; sdssplitargs (quotes, escapes)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvstore::resp {

struct ParserLimits {
  // Largest bulk string a request may carry (the server sets max_value_bytes plus slack).
  std::size_t max_bulk_bytes = 512ull * 1024 * 1024;
  // Largest number of arguments in one multibulk request (Redis uses the same bound).
  std::size_t max_multibulk_count = 1024 * 1024;
  // Largest inline command line, and largest "*<n>" / "$<n>" header line.
  std::size_t max_inline_bytes = 64 * 1024;
};

// Parses requests from bytes as they arrive. Usage:
//   parser.Feed(bytes);
//   while (parser.Next(&args) == ParseStatus::kCommand) { ... }
//   if (status == kError) reply "-ERR " + parser.error() and close.
class RequestParser {
 public:
  enum class ParseStatus {
    kNeedMore,  // no complete request buffered
    kCommand,   // *args holds one request (never empty)
    kError,     // the stream is malformed; error() says why; the parser stays in this state
  };

  explicit RequestParser(ParserLimits limits = {});

  void Feed(std::string_view bytes);
  // Parses the next request into *args (cleared first; capacity reused).
  ParseStatus Next(std::vector<std::string>* args);

  // "Protocol error: <reason>", the text Redis sends before closing the connection.
  const std::string& error() const { return error_; }
  // Bytes received but not yet consumed by Next().
  std::size_t buffered_bytes() const { return buffer_.size() - consumed_; }
  // True when part of a request has arrived but not all of it (used for the frame timeout).
  bool mid_frame() const { return buffered_bytes() > 0; }
  // While a password is required and the client has not given it, requests are held to what
  // AUTH and HELLO need, as in Redis: at most kMaxUnauthenticatedArgs arguments of at most
  // kMaxUnauthenticatedBulkBytes each. A client without the password cannot make the server
  // buffer a large request.
  static constexpr std::size_t kMaxUnauthenticatedArgs = 10;
  static constexpr std::size_t kMaxUnauthenticatedBulkBytes = 16 * 1024;
  void set_unauthenticated(bool unauthenticated) { unauthenticated_ = unauthenticated; }

 private:
  enum class LineEnd { kFound, kNeedMore, kTooLong, kInvalid };

  ParseStatus Fail(std::string reason);
  ParseStatus ParseInline(std::vector<std::string>* args);
  ParseStatus ParseMultibulk(std::vector<std::string>* args);
  LineEnd FindHeaderEnd(std::size_t start, std::size_t* cr);
  LineEnd ParseHeader(std::size_t start, std::int64_t* value, std::size_t* next);
  void Compact();
  void ResetFrame();

  ParserLimits limits_;
  bool unauthenticated_ = false;
  std::string buffer_;
  std::size_t consumed_ = 0;  // bytes of buffer_ already parsed into returned requests
  std::string error_;

  // Progress through the incomplete request at buffer_[consumed_], kept so that a request
  // arriving in many reads is scanned once rather than once per read. Offsets are relative to
  // consumed_ (so compaction does not move them) and are copied out only once it is complete.
  std::size_t frame_pos_ = 0;   // end of the part of the request parsed so far
  std::size_t scan_pos_ = 0;    // where the search for the current line's end resumes
  std::size_t mb_count_ = 0;    // arguments announced by "*<n>"; 0 until it is parsed
  std::int64_t bulk_len_ = -1;  // length announced by the current "$<n>"; -1 until parsed
  std::vector<std::pair<std::size_t, std::size_t>> spans_;  // (offset, length) of full args
};

// Parses a signed 64-bit decimal with the rules of Redis' string2ll: an optional '-', digits, no
// '+', no spaces, no leading zeros ("01" and "-0" are invalid), no overflow. Used for request
// lengths and for integer command arguments, so both accept exactly what Redis accepts.
bool ParseInteger(std::string_view text, std::int64_t* value);

// Reply encoders: each appends one RESP2 value to *out.
void AppendSimpleString(std::string* out, std::string_view s);  // "+s\r\n"; s has no CR/LF
void AppendError(std::string* out, std::string_view message);   // "-message\r\n"; CR/LF -> ' '
void AppendInteger(std::string* out, std::int64_t value);       // ":value\r\n"
void AppendBulkString(std::string* out, std::string_view s);    // "$len\r\ns\r\n"
void AppendNullBulkString(std::string* out);                    // "$-1\r\n"
void AppendArrayHeader(std::string* out, std::size_t count);    // "*count\r\n"
void AppendNullArray(std::string* out);                         // "*-1\r\n"

// Encodes a command as a multibulk request, as clients send it.
std::string EncodeCommand(const std::vector<std::string>& args);

// A decoded reply (client side).
struct Value {
  enum class Type { kSimpleString, kError, kInteger, kBulkString, kNull, kArray };
  Type type = Type::kNull;
  std::string str;              // kSimpleString, kError (without the leading '-'), kBulkString
  std::int64_t integer = 0;     // kInteger
  std::vector<Value> elements;  // kArray

  bool is_error() const { return type == Type::kError; }
  bool is_null() const { return type == Type::kNull; }
};

// Parses replies from bytes as they arrive (RESP2; a null array decodes as kNull).
class ReplyParser {
 public:
  enum class ParseStatus { kNeedMore, kValue, kError };

  explicit ReplyParser(ParserLimits limits = {});
  void Feed(std::string_view bytes);
  ParseStatus Next(Value* value);
  const std::string& error() const { return error_; }

 private:
  // An array whose elements are still arriving.
  struct OpenArray {
    Value array;
    std::size_t remaining = 0;
  };

  ParseStatus Fail(std::string reason);
  void Compact();

  ParserLimits limits_;
  std::string buffer_;
  std::size_t consumed_ = 0;
  std::string error_;
  // Arrays being filled, outermost first: each element is consumed as soon as it is complete,
  // so a large reply arriving in many reads is parsed once.
  std::vector<OpenArray> open_arrays_;
  std::size_t scan_pos_ = 0;  // where the search for the current line's end resumes
};

}  // namespace kvstore::resp
