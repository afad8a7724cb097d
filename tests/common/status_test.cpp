// Tests of Status (codes, predicates, ToString, CodeName) and Result<T> (value or error).
#include "kvstore/status.h"

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

namespace kvstore {
namespace {

Result<int> ParsePositive(int value) {
  if (value <= 0) return Status::InvalidArgument("expected a positive number");
  return value;
}

}  // namespace

TEST_CASE("a default Status is ok, without a message", "[status]") {
  const Status status;
  CHECK(status.ok());
  CHECK(status.code() == Status::Code::kOk);
  CHECK(status.message().empty());
  CHECK(status.ToString() == "OK");
  CHECK(Status::Ok().ok());
  CHECK(Status::Ok().ToString() == "OK");
}

TEST_CASE("each factory sets its code and message, and ToString names the code", "[status]") {
  struct Case {
    Status status;
    Status::Code code;
    std::string to_string;
  };
  const std::vector<Case> cases = {
      {Status::NotFound("key k"), Status::Code::kNotFound, "NotFound: key k"},
      {Status::InvalidArgument("bad port"), Status::Code::kInvalidArgument,
       "InvalidArgument: bad port"},
      {Status::Corruption("crc mismatch"), Status::Code::kCorruption, "Corruption: crc mismatch"},
      {Status::IOError("fsync: EIO"), Status::Code::kIOError, "IOError: fsync: EIO"},
      {Status::StorageFull("map full"), Status::Code::kStorageFull, "StorageFull: map full"},
      {Status::ReadOnly("replica"), Status::Code::kReadOnly, "ReadOnly: replica"},
      {Status::Unavailable("shutting down"), Status::Code::kUnavailable,
       "Unavailable: shutting down"},
  };
  for (const Case& c : cases) {
    INFO(c.to_string);
    CHECK_FALSE(c.status.ok());
    CHECK(c.status.code() == c.code);
    CHECK(c.status.ToString() == c.to_string);
    CHECK(c.status.IsNotFound() == (c.code == Status::Code::kNotFound));
    CHECK(c.status.IsStorageFull() == (c.code == Status::Code::kStorageFull));
  }
  CHECK(Status::NotFound("x").message() == "x");
}

TEST_CASE("CodeName spells every code", "[status]") {
  CHECK(Status::CodeName(Status::Code::kOk) == "OK");
  CHECK(Status::CodeName(Status::Code::kNotFound) == "NotFound");
  CHECK(Status::CodeName(Status::Code::kInvalidArgument) == "InvalidArgument");
  CHECK(Status::CodeName(Status::Code::kCorruption) == "Corruption");
  CHECK(Status::CodeName(Status::Code::kIOError) == "IOError");
  CHECK(Status::CodeName(Status::Code::kStorageFull) == "StorageFull");
  CHECK(Status::CodeName(Status::Code::kReadOnly) == "ReadOnly");
  CHECK(Status::CodeName(Status::Code::kUnavailable) == "Unavailable");
}

TEST_CASE("an error with an empty message still names its code", "[status]") {
  const Status status = Status::IOError("");
  CHECK_FALSE(status.ok());
  CHECK(status.ToString() == "IOError: ");
}

TEST_CASE("Status is a value: copies are independent", "[status]") {
  Status original = Status::Corruption("segment 3");
  const Status copy = original;
  original = Status::Ok();
  CHECK(original.ok());
  CHECK(copy.code() == Status::Code::kCorruption);
  CHECK(copy.message() == "segment 3");
}

TEST_CASE("Result holds a value or an error status", "[status]") {
  const Result<int> good = ParsePositive(7);
  REQUIRE(good.ok());
  CHECK(good.status().ok());
  CHECK(good.value() == 7);
  CHECK(*good == 7);

  const Result<int> bad = ParsePositive(-1);
  CHECK_FALSE(bad.ok());
  CHECK(bad.status().code() == Status::Code::kInvalidArgument);
  CHECK(bad.status().ToString() == "InvalidArgument: expected a positive number");
}

TEST_CASE("Result gives access through ->, * and moves move-only values out", "[status]") {
  Result<std::string> text = std::string("hello");
  REQUIRE(text.ok());
  CHECK(text->size() == 5);
  *text += " world";
  CHECK(text.value() == "hello world");

  Result<std::unique_ptr<int>> owned = std::make_unique<int>(42);
  REQUIRE(owned.ok());
  std::unique_ptr<int> taken = std::move(owned).value();
  REQUIRE(taken != nullptr);
  CHECK(*taken == 42);

  Result<std::unique_ptr<int>> missing = Status::NotFound("no value");
  CHECK_FALSE(missing.ok());
  CHECK(missing.status().IsNotFound());
}

}  // namespace kvstore
