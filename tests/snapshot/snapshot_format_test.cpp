// Unit tests of the snapshot stream format: round trips in every feed size, and every way a
// damaged, truncated or malformed stream must be refused. No I/O.
#include "snapshot/snapshot_format.h"

#include <zlib.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/coding.h"

namespace kvstore {
namespace {

using Pairs = std::vector<std::pair<std::string, std::string>>;

// Bytes as text: printable ASCII as is, everything else as \xNN; long strings by size and hash
// so that a failure stays readable.
std::string Escape(std::string_view bytes) {
  if (bytes.size() > 64) {
    return "[" + std::to_string(bytes.size()) + " bytes #" +
           std::to_string(std::hash<std::string_view>{}(bytes)) + "]";
  }
  std::string out;
  for (char c : bytes) {
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '=' && c != ';') {
      out.push_back(c);
    } else {
      char buf[5];
      std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned char>(c));
      out.append(buf);
    }
  }
  return out;
}

// Records what the decoder reports as "H:<seq>:<meta>|k=v;k=v;|E:<keys>". Can be told to fail.
class Recorder : public SnapshotVisitor {
 public:
  Status OnHeader(std::uint64_t applied_seq, std::string_view meta) override {
    ++calls;
    if (fail_header) return Status::InvalidArgument("visitor refuses the header");
    out += "H:" + std::to_string(applied_seq) + ":" + Escape(meta) + "|";
    return Status::Ok();
  }
  Status OnPair(std::string_view key, std::string_view value) override {
    ++calls;
    ++pairs;
    if (fail_at_pair != 0 && pairs == fail_at_pair) {
      return Status::StorageFull("visitor is full at " + std::string(key));
    }
    out += Escape(key) + "=" + Escape(value) + ";";
    return Status::Ok();
  }
  Status OnEnd(std::uint64_t keys) override {
    ++calls;
    out += "|E:" + std::to_string(keys);
    return Status::Ok();
  }

  std::string out;
  int calls = 0;
  int pairs = 0;
  int fail_at_pair = 0;  // 1-based; 0: never
  bool fail_header = false;
};

// What a Recorder should show for this content.
std::string Expected(std::uint64_t applied_seq, std::string_view meta, const Pairs& pairs) {
  std::string out = "H:" + std::to_string(applied_seq) + ":" + Escape(meta) + "|";
  for (const auto& [k, v] : pairs) out += Escape(k) + "=" + Escape(v) + ";";
  return out + "|E:" + std::to_string(pairs.size());
}

std::string Encode(std::uint64_t applied_seq, std::string_view meta, const Pairs& pairs,
                   std::size_t frame_bytes = 64) {
  SnapshotEncoder encoder(frame_bytes);
  std::string out;
  encoder.Begin(applied_seq, meta, &out);
  for (const auto& [k, v] : pairs) encoder.Add(k, v, &out);
  encoder.Finish(&out);
  return out;
}

// Feeds bytes in pieces of step bytes (0: all at once); the first error, else Ok.
Status FeedAll(SnapshotDecoder& decoder, std::string_view bytes, std::size_t step,
               SnapshotVisitor& visitor) {
  if (step == 0) step = bytes.size() + 1;
  for (std::size_t pos = 0; pos < bytes.size(); pos += step) {
    if (Status s = decoder.Feed(bytes.substr(pos, step), visitor); !s.ok()) return s;
  }
  return Status::Ok();
}

// Feeds everything and checks the end: the first error, else Ok.
Status Decode(std::string_view bytes, std::size_t step = 0, Recorder* recorder = nullptr,
              std::uint64_t max_frame_bytes = std::uint64_t{1} << 31) {
  Recorder local;
  Recorder& r = recorder ? *recorder : local;
  SnapshotDecoder decoder(max_frame_bytes);
  if (Status s = FeedAll(decoder, bytes, step, r); !s.ok()) return s;
  return decoder.CheckFinished();
}

// One frame as the grammar in snapshot_format.h defines it, written independently of the encoder.
std::string Frame(char kind, std::string_view body) {
  std::string out(1, kind);
  coding::PutFixed32(&out, static_cast<std::uint32_t>(body.size()));
  coding::PutFixed32(&out, static_cast<std::uint32_t>(crc32(
                               crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(body.data()),
                               static_cast<uInt>(body.size()))));
  out.append(body);
  return out;
}

std::string HeaderBody(std::string_view magic, std::uint64_t applied_seq, std::string_view meta) {
  std::string body(magic);
  coding::PutFixed64(&body, applied_seq);
  coding::PutFixed32(&body, static_cast<std::uint32_t>(meta.size()));
  body.append(meta);
  return body;
}

std::string PairsBody(const Pairs& pairs) {
  std::string body;
  for (const auto& [k, v] : pairs) {
    coding::PutFixed32(&body, static_cast<std::uint32_t>(k.size()));
    body.append(k);
    coding::PutFixed32(&body, static_cast<std::uint32_t>(v.size()));
    body.append(v);
  }
  return body;
}

std::string EndBody(std::uint64_t keys, std::uint64_t payload_bytes) {
  std::string body;
  coding::PutFixed64(&body, keys);
  coding::PutFixed64(&body, payload_bytes);
  return body;
}

std::string Contains(const Status& s, std::string_view part) {
  // For CHECKs that print the whole status when the message does not name the problem.
  return s.message().find(part) != std::string::npos ? "yes" : s.ToString();
}

// A content with everything awkward: an empty value, binary bytes (NUL, 0xff, bytes that look
// like frame kinds), a value far larger than the 64-byte frame, many small pairs.
Pairs Awkward() {
  Pairs pairs;
  pairs.emplace_back(std::string("\x00", 1), "nul key");
  pairs.emplace_back("a", "");
  pairs.emplace_back("b", std::string("\x00\xff\x01H D E\r\n", 10));
  pairs.emplace_back("big", std::string(5000, 'x') + "tail");
  for (int i = 0; i < 40; ++i) {
    char key[16];
    std::snprintf(key, sizeof(key), "k%03d", i);
    pairs.emplace_back(
        key, std::string(static_cast<std::size_t>(i % 7), static_cast<char>('a' + i % 26)));
  }
  pairs.emplace_back("\xfe\xff", "high bytes key");
  return pairs;
}

TEST_CASE("a snapshot round trips in every feed size") {
  const Pairs pairs = Awkward();
  const std::string meta("epochs\x00\x01\xff", 9);
  const std::string bytes = Encode(123456789012345ull, meta, pairs);
  const std::size_t step = GENERATE(1, 7, 0);
  INFO("feeding " << (step == 0 ? std::string("everything at once") : std::to_string(step)));
  Recorder recorder;
  SnapshotDecoder decoder;
  REQUIRE(FeedAll(decoder, bytes, step, recorder).ok());
  CHECK(decoder.finished());
  CHECK(decoder.CheckFinished().ok());
  CHECK(decoder.bytes_fed() == bytes.size());
  CHECK(recorder.out == Expected(123456789012345ull, meta, pairs));
}

TEST_CASE("the encoder closes data frames at the frame size and counts keys") {
  const Pairs pairs = Awkward();
  SnapshotEncoder encoder(64);
  std::string out;
  encoder.Begin(7, "", &out);
  std::vector<std::size_t> sizes;  // output size after each Add
  for (const auto& [k, v] : pairs) {
    encoder.Add(k, v, &out);
    sizes.push_back(out.size());
  }
  CHECK(encoder.keys() == pairs.size());
  // Pairs gather until the body reaches 64 bytes; the big value then closes a frame that holds
  // it whole (header 29 bytes, frame header 9, pairs 16 + 9 + 19 + 5015).
  CHECK(sizes[2] == 29);
  CHECK(sizes[3] == 29 + 9 + 16 + 9 + 19 + 5015);
  encoder.Finish(&out);
  // The stream ends with the end frame: keys and payload bytes.
  std::uint64_t payload = 0;
  for (const auto& [k, v] : pairs) payload += k.size() + v.size();
  CHECK(out.substr(out.size() - 25) == Frame('E', EndBody(pairs.size(), payload)));
  // The header is the first frame, exactly as the grammar says.
  CHECK(out.substr(0, 9 + 20) == Frame('H', HeaderBody("KVSNAP01", 7, "")));
}

TEST_CASE("an empty snapshot round trips") {
  const std::string bytes = Encode(0, "", {});
  Recorder recorder;
  REQUIRE(Decode(bytes, 1, &recorder).ok());
  CHECK(recorder.out == "H:0:||E:0");
}

TEST_CASE("a stream written from the grammar decodes") {
  std::string bytes = Frame('H', HeaderBody("KVSNAP01", 42, "m"));
  bytes += Frame('D', PairsBody({{"a", "1"}, {"b", ""}}));
  bytes += Frame('D', PairsBody({{"c", "333"}}));
  bytes += Frame('E', EndBody(3, 1 + 1 + 1 + 0 + 1 + 3));
  Recorder recorder;
  REQUIRE(Decode(bytes, 0, &recorder).ok());
  CHECK(recorder.out == "H:42:m|a=1;b=;c=333;|E:3");
}

TEST_CASE("a bad magic or a missing header is refused") {
  std::string rest = Frame('D', PairsBody({{"a", "1"}})) + Frame('E', EndBody(1, 2));
  SECTION("bad magic with a valid checksum") {
    Status s = Decode(Frame('H', HeaderBody("KVSNAP02", 1, "")) + rest);
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "not a kvstore snapshot") == "yes");
  }
  SECTION("a data frame first") {
    Status s = Decode(rest);
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "bad header") == "yes");
  }
  SECTION("a header whose meta length disagrees with its frame") {
    std::string body = HeaderBody("KVSNAP01", 1, "meta");
    body.pop_back();
    Status s = Decode(Frame('H', body) + rest);
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "malformed header") == "yes");
  }
  SECTION("a header too short for its fields") {
    Status s = Decode(Frame('H', "KVSNAP01\x01") + rest);
    CHECK(s.code() == Status::Code::kCorruption);
  }
}

TEST_CASE("a changed byte anywhere in the stream is detected") {
  const std::string bytes =
      Encode(9, "meta", {{"a", "1"}, {"bb", std::string(100, 'v')}, {"c", ""}, {"d", "\xff"}});
  REQUIRE(Decode(bytes).ok());
  int undetected = 0;
  std::string first_undetected;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    for (unsigned char mask : {0x01, 0x80}) {
      std::string damaged = bytes;
      damaged[i] = static_cast<char>(damaged[i] ^ mask);
      if (Decode(damaged).ok()) {
        if (undetected++ == 0) first_undetected = std::to_string(i) + "^" + std::to_string(mask);
      }
    }
  }
  INFO("first undetected change: byte " << first_undetected);
  CHECK(undetected == 0);
}

TEST_CASE("a checksum mismatch names the end of the damaged frame") {
  // Header frame: 9 + 8 + 8 + 4 = 29 bytes; the first data frame follows.
  const std::string header = Frame('H', HeaderBody("KVSNAP01", 1, ""));
  const std::string data = Frame('D', PairsBody({{"a", "1"}}));
  std::string bytes = header + data + Frame('E', EndBody(1, 2));
  bytes[header.size() + 9 + 4] ^= 0x01;  // the key's byte
  const std::size_t step = GENERATE(1, 7, 0);
  Status s = Decode(bytes, step);
  CHECK(s.code() == Status::Code::kCorruption);
  CHECK(Contains(s, "checksum mismatch in the frame ending at byte " +
                        std::to_string(header.size() + data.size())) == "yes");
}

TEST_CASE("a truncated stream is refused at every cut") {
  const std::string bytes = Encode(3, "m", {{"a", "1"}, {"b", std::string(200, 'v')}, {"c", "3"}});
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    INFO("cut at " << cut << " of " << bytes.size());
    Recorder recorder;
    SnapshotDecoder decoder;
    REQUIRE(FeedAll(decoder, bytes.substr(0, cut), 5, recorder).ok());
    CHECK_FALSE(decoder.finished());
    Status s = decoder.CheckFinished();
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "truncated after " + std::to_string(cut) + " bytes") == "yes");
  }
}

TEST_CASE("an end frame that does not match the stream is refused") {
  const std::string header = Frame('H', HeaderBody("KVSNAP01", 1, ""));
  const std::string d1 = Frame('D', PairsBody({{"a", "1"}}));
  const std::string d2 = Frame('D', PairsBody({{"b", "22"}}));
  SECTION("a lost data frame: fewer keys than counted") {
    Status s = Decode(header + d1 + Frame('E', EndBody(2, 5)));
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "the end frame counts 2 keys (5 bytes), the stream held 1 (2)") == "yes");
  }
  SECTION("more keys than counted") {
    Status s = Decode(header + d1 + d2 + Frame('E', EndBody(1, 5)));
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "incomplete") == "yes");
  }
  SECTION("same key count, different payload size") {
    Status s = Decode(header + d1 + d2 + Frame('E', EndBody(2, 6)));
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "incomplete") == "yes");
  }
  SECTION("a malformed end frame") {
    Status s = Decode(header + d1 + Frame('E', EndBody(1, 2) + "x"));
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "malformed end frame") == "yes");
  }
  SECTION("a data frame dropped from an encoded stream") {
    // Small frames: each pair is a frame of its own. Dropping one keeps every checksum valid.
    const std::string full = Encode(1, "", {{"a", "1"}, {"b", "2"}, {"c", "3"}}, 1);
    const std::size_t frame = 9 + 4 + 1 + 4 + 1;
    const std::string dropped =
        full.substr(0, header.size() + frame) + full.substr(header.size() + 2 * frame);
    REQUIRE(Decode(full).ok());
    Status s = Decode(dropped);
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "the end frame counts 3 keys") == "yes");
  }
}

TEST_CASE("keys out of order or repeated are refused") {
  const std::string header = Frame('H', HeaderBody("KVSNAP01", 1, ""));
  SECTION("descending within a frame") {
    Status s = Decode(header + Frame('D', PairsBody({{"b", "1"}, {"a", "1"}})) +
                      Frame('E', EndBody(2, 4)));
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "keys out of order") == "yes");
  }
  SECTION("descending across frames, from the encoder") {
    Status s = Decode(Encode(1, "", {{"b", "1"}, {"a", "1"}}, 1));
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "keys out of order") == "yes");
  }
  SECTION("a repeated key") {
    Status s = Decode(Encode(1, "", {{"a", "1"}, {"a", "2"}}));
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "keys out of order") == "yes");
  }
  SECTION("a prefix after the longer key") {
    Status s = Decode(Encode(1, "", {{"ab", "1"}, {"a", "2"}}));
    CHECK(s.code() == Status::Code::kCorruption);
  }
  SECTION("an empty key") {
    Status s = Decode(header + Frame('D', PairsBody({{"", "1"}})) + Frame('E', EndBody(1, 1)));
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "malformed pair") == "yes");
  }
}

TEST_CASE("malformed data frames are refused") {
  const std::string header = Frame('H', HeaderBody("KVSNAP01", 1, ""));
  std::string body = PairsBody({{"a", "1"}});
  SECTION("a value running past the frame") {
    body.pop_back();
    Status s = Decode(header + Frame('D', body) + Frame('E', EndBody(1, 2)));
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "malformed pair") == "yes");
  }
  SECTION("stray bytes after the last pair") {
    body += "xy";
    Status s = Decode(header + Frame('D', body) + Frame('E', EndBody(1, 2)));
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "truncated pair") == "yes");
  }
  SECTION("an unknown frame kind") {
    Status s = Decode(header + Frame('X', body) + Frame('E', EndBody(1, 2)));
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "unknown frame kind") == "yes");
  }
  SECTION("a second header") {
    Status s = Decode(header + header + Frame('E', EndBody(0, 0)));
    CHECK(s.code() == Status::Code::kCorruption);
  }
}

TEST_CASE("data after the end frame is refused") {
  const std::string bytes = Encode(1, "", {{"a", "1"}});
  SECTION("in the same piece") {
    Recorder recorder;
    SnapshotDecoder decoder;
    Status s = decoder.Feed(bytes + "x", recorder);
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "data after the end frame") == "yes");
    CHECK(decoder.CheckFinished().code() == Status::Code::kCorruption);
  }
  SECTION("in a later piece") {
    Recorder recorder;
    SnapshotDecoder decoder;
    REQUIRE(decoder.Feed(bytes, recorder).ok());
    REQUIRE(decoder.CheckFinished().ok());
    CHECK(decoder.Feed("", recorder).ok());  // nothing is not data
    Status s = decoder.Feed("x", recorder);
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "data after the end frame") == "yes");
    CHECK(decoder.CheckFinished().code() == Status::Code::kCorruption);
  }
  SECTION("a whole second snapshot, byte by byte") {
    CHECK(Decode(bytes + bytes, 1).code() == Status::Code::kCorruption);
  }
}

TEST_CASE("an oversized frame length is refused before its body arrives") {
  SECTION("a frame past the limit") {
    const std::string bytes = Encode(1, "", {{"a", std::string(2000, 'v')}});
    REQUIRE(Decode(bytes, 0, nullptr, 4096).ok());
    Status s = Decode(bytes, 0, nullptr, 1024);
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "frame of 2009 bytes is too large") == "yes");
  }
  SECTION("a huge length: refused from its 9 header bytes alone") {
    Recorder recorder;
    SnapshotDecoder decoder(1 << 20);
    REQUIRE(decoder.Feed(Frame('H', HeaderBody("KVSNAP01", 1, "")), recorder).ok());
    std::string frame_header(1, 'D');
    coding::PutFixed32(&frame_header, 0xfffffff0u);
    coding::PutFixed32(&frame_header, 0);
    Status s = decoder.Feed(frame_header, recorder);
    CHECK(s.code() == Status::Code::kCorruption);
    CHECK(Contains(s, "too large") == "yes");
  }
  SECTION("the default limit refuses lengths of 2 GiB and more") {
    Recorder recorder;
    SnapshotDecoder decoder;
    std::string frame_header(1, 'H');
    coding::PutFixed32(&frame_header, 0x80000001u);
    coding::PutFixed32(&frame_header, 0);
    CHECK(decoder.Feed(frame_header, recorder).code() == Status::Code::kCorruption);
  }
}

TEST_CASE("a visitor's error is returned and sticks") {
  const Pairs pairs = {{"a", "1"}, {"b", "2"}, {"c", "3"}, {"d", "4"}};
  const std::string bytes = Encode(5, "", pairs, 1);
  SECTION("from a pair") {
    const std::size_t step = GENERATE(1, 0);
    Recorder recorder;
    recorder.fail_at_pair = 2;
    SnapshotDecoder decoder;
    Status s = FeedAll(decoder, bytes, step, recorder);
    CHECK(s.code() == Status::Code::kStorageFull);
    CHECK(s.message() == "visitor is full at b");
    const int calls = recorder.calls;
    CHECK(calls == 3);  // header, a, b: nothing after the failure
    // Every later call returns the same error and reports nothing more.
    Status again = decoder.Feed(bytes.substr(bytes.size() - 1), recorder);
    CHECK(again.ToString() == s.ToString());
    Status finished = decoder.CheckFinished();
    CHECK(finished.ToString() == s.ToString());
    CHECK_FALSE(decoder.finished());
    CHECK(recorder.calls == calls);
    CHECK(recorder.out == "H:5:|a=1;");
  }
  SECTION("from the header") {
    Recorder recorder;
    recorder.fail_header = true;
    SnapshotDecoder decoder;
    Status s = decoder.Feed(bytes, recorder);
    CHECK(s.code() == Status::Code::kInvalidArgument);
    CHECK(recorder.calls == 1);
    CHECK(decoder.Feed("", recorder).code() == Status::Code::kInvalidArgument);
    CHECK(decoder.CheckFinished().code() == Status::Code::kInvalidArgument);
  }
}

}  // namespace
}  // namespace kvstore
