// Unit tests of the epoch history: its encoding, epoch log entries and the lineage check that
// decides between a partial and a full resync. Pure functions, no I/O.
#include "engine/epochs.h"

#include <catch2/catch.hpp>
#include <optional>
#include <string>

#include "common/coding.h"

namespace kvstore {
namespace {

// The history as "number:id@first_seq,...".
std::string Render(const EpochHistory& history) {
  std::string out;
  for (const Epoch& e : history) {
    out += std::to_string(e.number) + ":" + std::to_string(e.id) + "@" +
           std::to_string(e.first_seq) + ",";
  }
  return out;
}

std::string Name(Lineage lineage) {
  switch (lineage) {
    case Lineage::kOnHistory:
      return "OnHistory";
    case Lineage::kDiverged:
      return "Diverged";
    case Lineage::kNewerEpoch:
      return "NewerEpoch";
  }
  return "?";
}

TEST_CASE("the epoch history round trips through its encoding") {
  const EpochHistory history = {{1, 0x1111, 1}, {2, 0xfedcba9876543210ull, 57}, {7, 0, 1ull << 40}};
  const std::string bytes = EncodeEpochHistory(history);
  CHECK(bytes.size() == 4 + 3 * 24);
  CHECK(coding::DecodeFixed32(bytes.data()) == 3);
  CHECK(coding::DecodeFixed64(bytes.data() + 4 + 24) == 2);  // the second epoch's number
  auto decoded = DecodeEpochHistory(bytes);
  REQUIRE(decoded.ok());
  CHECK(Render(*decoded) == "1:4369@1,2:18364758544493064720@57,7:0@1099511627776,");
  CHECK(*decoded == history);

  SECTION("an empty history is encoded as a zero count") {
    CHECK(EncodeEpochHistory({}) == std::string(4, '\0'));
    auto empty = DecodeEpochHistory(EncodeEpochHistory({}));
    REQUIRE(empty.ok());
    CHECK(empty->empty());
  }
  SECTION("no bytes at all is an empty history (storage without the meta)") {
    auto empty = DecodeEpochHistory("");
    REQUIRE(empty.ok());
    CHECK(empty->empty());
  }
}

TEST_CASE("a damaged epoch history is Corruption") {
  const std::string bytes = EncodeEpochHistory({{1, 5, 1}, {2, 6, 10}});
  auto code = [](std::string_view b) { return DecodeEpochHistory(b).status().code(); };
  CHECK(code(bytes.substr(0, 3)) == Status::Code::kCorruption);  // shorter than the count
  CHECK(code(bytes.substr(0, bytes.size() - 1)) == Status::Code::kCorruption);
  CHECK(code(bytes + "x") == Status::Code::kCorruption);
  std::string more = bytes;
  more[0] = 3;  // counts one more epoch than it holds
  CHECK(code(more) == Status::Code::kCorruption);
  std::string huge = bytes;
  huge[3] = '\xff';  // a count near 2^32: must not allocate or read past the end
  CHECK(code(huge) == Status::Code::kCorruption);
}

TEST_CASE("epoch entries are made and parsed") {
  const LogEntry entry = MakeEpochEntry(3, 0xabcdef0123456789ull);
  CHECK(entry.type == LogEntry::Type::kEpoch);
  CHECK(entry.key.empty());
  CHECK(entry.value.size() == 16);
  CHECK(coding::DecodeFixed64(entry.value.data()) == 3);
  auto epoch = ParseEpochEntry(77, entry);
  REQUIRE(epoch.ok());
  CHECK(Render({*epoch}) == "3:12379813738877118345@77,");
  CHECK(EpochName(*epoch) == "3:abcdef0123456789");
  CHECK(EpochName(Epoch{12, 1, 5}) == "12:0000000000000001");

  auto refused = [](LogEntry e) { return ParseEpochEntry(1, e).status().code(); };
  LogEntry wrong_type = entry;
  wrong_type.type = LogEntry::Type::kPut;
  CHECK(refused(wrong_type) == Status::Code::kInvalidArgument);
  LogEntry with_key = entry;
  with_key.key = "k";
  CHECK(refused(with_key) == Status::Code::kInvalidArgument);
  LogEntry short_value = entry;
  short_value.value.pop_back();
  CHECK(refused(short_value) == Status::Code::kInvalidArgument);
  LogEntry long_value = entry;
  long_value.value.push_back('x');
  CHECK(refused(long_value) == Status::Code::kInvalidArgument);
}

TEST_CASE("lineage of a replica against the master's history") {
  // Epoch 1 (id A) opened at 1 by the first master; epoch 2 (id B) at 11 by the next one. The
  // master's log ends at 20.
  const Epoch e1{1, 0xa, 1};
  const Epoch e2{2, 0xb, 11};
  const EpochHistory master = {e1, e2};
  auto lineage = [&](std::optional<Epoch> replica_epoch, std::uint64_t replica_seq) {
    return Name(CompareLineage(master, 20, replica_epoch, replica_seq));
  };

  SECTION("an empty replica is on history") {
    CHECK(lineage(std::nullopt, 0) == "OnHistory");
    CHECK(Name(CompareLineage({}, 0, std::nullopt, 0)) == "OnHistory");
  }
  SECTION("in the master's current epoch") {
    CHECK(lineage(e2, 11) == "OnHistory");
    CHECK(lineage(e2, 15) == "OnHistory");
    CHECK(lineage(e2, 20) == "OnHistory");
    CHECK(lineage(e2, 21) == "Diverged");  // entries the master never had
  }
  SECTION("in an older epoch: on history up to where the next epoch began") {
    CHECK(lineage(e1, 1) == "OnHistory");
    CHECK(lineage(e1, 10) == "OnHistory");
    // The old master wrote 11 before it was replaced: the new master's 11 is its epoch entry.
    CHECK(lineage(e1, 11) == "Diverged");
    CHECK(lineage(e1, 25) == "Diverged");
  }
  SECTION("an epoch of a middle master") {
    const EpochHistory three = {e1, e2, Epoch{3, 0xc, 30}};
    CHECK(Name(CompareLineage(three, 40, e2, 29)) == "OnHistory");
    CHECK(Name(CompareLineage(three, 40, e2, 30)) == "Diverged");
  }
  SECTION("the same number with another id is another epoch") {
    CHECK(lineage(Epoch{2, 0xbad, 11}, 11) == "Diverged");
    CHECK(lineage(Epoch{1, 0xbad, 1}, 5) == "Diverged");
  }
  SECTION("an epoch the master never saw, older than its newest") {
    const EpochHistory gap = {e1, Epoch{3, 0xc, 11}};
    CHECK(Name(CompareLineage(gap, 20, Epoch{2, 0xb, 8}, 9)) == "Diverged");
  }
  SECTION("a replica with a newer epoch: the master is stale") {
    CHECK(lineage(Epoch{3, 0xc, 21}, 21) == "NewerEpoch");
    CHECK(lineage(Epoch{3, 0xc, 5}, 5) == "NewerEpoch");
  }
  SECTION("a replica without an epoch but with entries") {
    // Entries from before any epoch: only the first master wrote those, up to its epoch entry.
    const EpochHistory late = {Epoch{1, 0xa, 6}, e2};
    CHECK(Name(CompareLineage(late, 20, std::nullopt, 5)) == "OnHistory");
    CHECK(Name(CompareLineage(late, 20, std::nullopt, 6)) == "Diverged");
    CHECK(lineage(std::nullopt, 1) == "Diverged");  // the master's history starts at 1
  }
}

}  // namespace
}  // namespace kvstore
