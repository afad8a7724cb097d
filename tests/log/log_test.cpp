// Unit tests of the log on real files in a temporary directory.
#include "log/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "temp_dir.h"

namespace kvstore {
namespace {

namespace fs = std::filesystem;

// Each test's own data directory.
class TempDir : public testing::TempDir {
 public:
  TempDir() : testing::TempDir("kvstore_log_test") {}
};

std::unique_ptr<Log> OpenLog(const std::string& dir, std::uint64_t segment_bytes = 64 << 20,
                             std::uint64_t retain_bytes = 0) {
  LogOptions options;
  options.dir = dir;
  options.segment_bytes = segment_bytes;
  options.retain_bytes = retain_bytes;
  auto log = Log::Open(options);
  INFO(log.status().ToString());
  REQUIRE(log.ok());
  return std::move(log).value();
}

LogEntry Put(std::string key, std::string value) {
  return LogEntry{LogEntry::Type::kPut, std::move(key), std::move(value)};
}

// Every entry from from_seq on, as "seq:type:key=value;".
std::string Render(Log& log, std::uint64_t from_seq = 1) {
  std::string out;
  Status s = log.ReadFrom(from_seq, [&](std::uint64_t seq, const LogEntry& e) {
    out += std::to_string(seq) + ":" + std::to_string(static_cast<int>(e.type)) + ":" + e.key +
           "=" + e.value + ";";
    return true;
  });
  INFO(s.ToString());
  REQUIRE(s.ok());
  return out;
}

std::vector<std::string> Files(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

void AppendBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out << bytes;
}

TEST_CASE("append and read back") {
  TempDir dir;
  {
    auto log = OpenLog(dir.path());
    CHECK(log->last_seq() == 0);
    CHECK(Render(*log).empty());
    REQUIRE(log->Append({Put("a", "1"), Put("b", "")}).ok());
    REQUIRE(log->Append({LogEntry{LogEntry::Type::kDelete, "a", ""},
                         LogEntry{LogEntry::Type::kClear, "", ""}})
                .ok());
    REQUIRE(log->Append({}).ok());  // nothing
    REQUIRE(log->Sync().ok());
    CHECK(log->last_seq() == 4);
    CHECK(Render(*log) == "1:1:a=1;2:1:b=;3:2:a=;4:3:=;");
    CHECK(Render(*log, 3) == "3:2:a=;4:3:=;");
    CHECK(Render(*log, 5).empty());
    LogStats stats = log->Stats();
    CHECK(stats.first_seq == 1);
    CHECK(stats.last_seq == 4);
    CHECK(stats.segments == 1);
    // Logical bytes: the records, not the preallocated file.
    CHECK(stats.bytes == 4 * (8 + 8 + 1 + 4 + 4) + 1 + 1 + 1 + 1);
    CHECK(fs::file_size(dir.path() + "/00000000000000000001.log") == 64 << 20);
  }
  // Reopen: same content, appends continue the numbering.
  auto log = OpenLog(dir.path());
  CHECK(log->last_seq() == 4);
  REQUIRE(log->Append({Put("c", std::string(100000, 'z'))}).ok());
  CHECK(log->last_seq() == 5);
  std::string out;
  REQUIRE(log->ReadFrom(5,
                        [&](std::uint64_t seq, const LogEntry& e) {
                          out = std::to_string(seq) + e.key + std::to_string(e.value.size());
                          return true;
                        })
              .ok());
  CHECK(out == "5c100000");
}

TEST_CASE("records encoded by the caller append like entries, and only at the log's end") {
  TempDir dir;
  auto log = OpenLog(dir.path());
  REQUIRE(log->Append({Put("a", "1")}).ok());
  std::string records;
  REQUIRE(EncodeLogRecord(2, LogEntry::Type::kPut, "b", "2", &records).ok());
  REQUIRE(EncodeLogRecord(3, LogEntry::Type::kDelete, "a", "", &records).ok());
  std::string stale;
  REQUIRE(EncodeLogRecord(2, LogEntry::Type::kPut, "x", "y", &stale).ok());
  // Encoded for the wrong position: refused, and nothing changes.
  std::string ahead;
  REQUIRE(EncodeLogRecord(9, LogEntry::Type::kPut, "x", "y", &ahead).ok());
  CHECK(log->AppendRecords(ahead, 1).code() == Status::Code::kInvalidArgument);
  CHECK(log->last_seq() == 1);
  REQUIRE(log->AppendRecords(records, 2).ok());
  CHECK(log->last_seq() == 3);
  CHECK(log->AppendRecords(stale, 1).code() == Status::Code::kInvalidArgument);
  CHECK(Render(*log) == "1:1:a=1;2:1:b=2;3:2:a=;");
  // The record form of an entry is the same either way.
  std::string from_entry;
  REQUIRE(EncodeLogRecord(2, Put("b", "2"), &from_entry).ok());
  CHECK(records.substr(0, from_entry.size()) == from_entry);
}

TEST_CASE("the record format is the one documented in log.h") {
  TempDir dir;
  auto log = OpenLog(dir.path());
  REQUIRE(log->Append({Put("k", "vv")}).ok());
  std::ifstream in(dir.path() + "/00000000000000000001.log", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // length(4) crc(4) seq(8) type(1) key_len(4) "k" value_len(4) "vv", then the end: zeros to
  // the preallocated size.
  REQUIRE(bytes.size() == 64 << 20);
  CHECK(bytes.find_first_not_of('\0', 28) == std::string::npos);
  bytes.resize(28);
  CHECK(bytes.substr(0, 4) == std::string("\x14\0\0\0", 4));  // 8 + 1 + 4 + 1 + 4 + 2 = 20
  CHECK(bytes.substr(8, 8) == std::string("\x01\0\0\0\0\0\0\0", 8));
  CHECK(bytes.substr(16) == std::string("\x01\x01\0\0\0k\x02\0\0\0vv", 12));
}

TEST_CASE("sequences stay consecutive across segment rolls and reopen") {
  TempDir dir;
  {
    auto log = OpenLog(dir.path(), 200);
    for (int i = 0; i < 20; ++i) {
      REQUIRE(log->Append({Put("key" + std::to_string(i), std::string(50, 'v'))}).ok());
    }
    REQUIRE(log->Append({Put("x", "1"), Put("y", "2"), Put("z", "3")}).ok());
    REQUIRE(log->Sync().ok());
    CHECK(log->Stats().segments > 3);
  }
  auto files = Files(dir.path());
  CHECK(files.front() == "00000000000000000001.log");
  auto log = OpenLog(dir.path(), 200);
  CHECK(log->last_seq() == 23);
  std::uint64_t expect = 1;
  bool consecutive = true;
  REQUIRE(log->ReadFrom(1,
                        [&](std::uint64_t seq, const LogEntry&) {
                          consecutive = consecutive && seq == expect++;
                          return true;
                        })
              .ok());
  CHECK(consecutive);
  CHECK(expect == 24);
  CHECK(Render(*log, 22) == "22:1:y=2;23:1:z=3;");
  // Each file is named by its first sequence.
  for (const auto& name : Files(dir.path())) {
    std::uint64_t first = std::stoull(name.substr(0, 20));
    std::string got;
    REQUIRE(log->ReadFrom(first,
                          [&](std::uint64_t seq, const LogEntry&) {
                            got = std::to_string(seq);
                            return false;
                          })
                .ok());
    CHECK(got == std::to_string(first));
  }
}

TEST_CASE("ReadFrom seeks into big segments and sees concurrent appends up to its start") {
  TempDir dir;
  auto log = OpenLog(dir.path());
  const std::string value(1000, 'v');
  for (int i = 0; i < 2000; ++i) REQUIRE(log->Append({Put("k" + std::to_string(i), value)}).ok());
  CHECK(Render(*log, 1999) == "1999:1:k1998=" + value + ";2000:1:k1999=" + value + ";");
  std::uint64_t visited = 0;
  std::atomic<int> appended{0};
  std::thread writer([&] {
    for (int i = 0; i < 500; ++i) appended += log->Append({Put("w", "x")}).ok() ? 1 : 0;
  });
  REQUIRE(log->ReadFrom(1,
                        [&](std::uint64_t seq, const LogEntry&) {
                          visited = seq;
                          return true;
                        })
              .ok());
  writer.join();
  CHECK(appended == 500);
  CHECK(visited >= 2000);
  CHECK(visited <= 2500);
  CHECK(log->last_seq() == 2500);
}

void WriteAt(const std::string& path, std::uint64_t offset, const std::string& bytes) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST_CASE("reopen after appends into a preallocated segment finds exactly the appended entries") {
  TempDir dir;
  const std::string file = dir.path() + "/00000000000000000001.log";
  {
    auto log = OpenLog(dir.path(), 1 << 20);
    for (int i = 0; i < 10; ++i) REQUIRE(log->Append({Put("k" + std::to_string(i), "v")}).ok());
    REQUIRE(log->Sync().ok());
    CHECK(fs::file_size(file) == 1 << 20);
  }
  auto log = OpenLog(dir.path(), 1 << 20);
  CHECK(log->last_seq() == 10);
  CHECK(log->Stats().bytes == 10 * (8 + 8 + 1 + 4 + 2 + 4 + 1));
  CHECK(Render(*log, 9) == "9:1:k8=v;10:1:k9=v;");
  CHECK(fs::file_size(file) == 1 << 20);  // nothing was cut
}

TEST_CASE("the next segment is prepared in the background and used at the roll") {
  TempDir dir;
  auto log = OpenLog(dir.path(), 4096);
  for (int i = 0; i < 100; ++i) REQUIRE(log->Append({Put("key", std::string(100, 'v'))}).ok());
  REQUIRE(log->Sync().ok());
  CHECK(log->Stats().segments > 2);
  for (const auto& name : Files(dir.path())) {
    if (name.ends_with(".log")) CHECK(fs::file_size(dir.path() + "/" + name) == 4096);
  }
  log.reset();
  log = OpenLog(dir.path(), 4096);  // a leftover next.log.tmp is removed, not taken for a segment
  CHECK(log->last_seq() == 100);
  for (const auto& name : Files(dir.path())) CHECK(name.ends_with(".log"));
}

TEST_CASE("a torn tail of the newest file is zeroed at open") {
  TempDir dir;
  const std::string file = dir.path() + "/00000000000000000001.log";
  std::uint64_t good = 0;  // logical size with two records
  {
    auto log = OpenLog(dir.path(), 1 << 20);
    REQUIRE(log->Append({Put("a", "1"), Put("b", "2")}).ok());
    REQUIRE(log->Sync().ok());
    good = log->Stats().bytes;
  }
  std::uint64_t file_size = 1 << 20;
  SECTION("partial record followed by the preallocated zeros") {
    // The first 11 bytes of a record for seq 3.
    WriteAt(file, good, std::string("\x20\0\0\0\x12\x34\x56\x78\x03\0\0", 11));
  }
  SECTION("garbage") { WriteAt(file, good, std::string(64, '\xab')); }
  SECTION("a record whose first block never reached the disk (data behind a zero gap)") {
    WriteAt(file, good + 4096, std::string(100, '\x42'));
  }
  SECTION("a complete record with a bad checksum") {
    {
      auto log = OpenLog(dir.path(), 1 << 20);
      REQUIRE(log->Append({Put("c", "3")}).ok());
      WriteAt(file, log->Stats().bytes - 1, "X");
    }
  }
  SECTION("a file that is not preallocated (written by an older version)") {
    fs::resize_file(file, good);
    AppendBytes(file, std::string("\x20\0\0\0\x12\x34\x56\x78\x03\0\0", 11));
    file_size = good + 11;
  }
  auto log = OpenLog(dir.path(), 1 << 20);
  CHECK(log->last_seq() == 2);
  CHECK(log->Stats().bytes == good);
  CHECK(Render(*log) == "1:1:a=1;2:1:b=2;");
  std::string bytes = ReadFile(file);
  CHECK(bytes.size() == file_size);
  CHECK(bytes.find_first_not_of('\0', good) == std::string::npos);
  REQUIRE(log->Append({Put("c", "new")}).ok());
  CHECK(Render(*log) == "1:1:a=1;2:1:b=2;3:1:c=new;");
  log.reset();
  log = OpenLog(dir.path(), 1 << 20);
  CHECK(Render(*log) == "1:1:a=1;2:1:b=2;3:1:c=new;");
}

TEST_CASE("damage in an older file is Corruption naming file and offset") {
  TempDir dir;
  {
    auto log = OpenLog(dir.path(), 50);  // one 88-byte record per file
    for (int i = 0; i < 6; ++i) REQUIRE(log->Append({Put("key", std::string(60, 'v'))}).ok());
    REQUIRE(log->Sync().ok());
  }
  auto files = Files(dir.path());
  REQUIRE(files.size() >= 3);
  const std::string victim = dir.path() + "/" + files[1];
  SECTION("flipped byte") {
    std::fstream f(victim, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(30);
    f.put('X');
  }
  SECTION("truncated") { fs::resize_file(victim, fs::file_size(victim) - 3); }
  LogOptions options;
  options.dir = dir.path();
  options.segment_bytes = 100;
  auto log = Log::Open(options);
  REQUIRE_FALSE(log.ok());
  CHECK(log.status().code() == Status::Code::kCorruption);
  CHECK(log.status().message().find(victim) != std::string::npos);
  CHECK(log.status().message().find("offset 0") != std::string::npos);
}

TEST_CASE("a missing middle file is Corruption") {
  TempDir dir;
  {
    auto log = OpenLog(dir.path(), 100);
    for (int i = 0; i < 6; ++i) REQUIRE(log->Append({Put("key", std::string(60, 'v'))}).ok());
  }
  auto files = Files(dir.path());
  REQUIRE(files.size() >= 3);
  fs::remove(dir.path() + "/" + files[1]);
  LogOptions options;
  options.dir = dir.path();
  auto log = Log::Open(options);
  REQUIRE_FALSE(log.ok());
  CHECK(log.status().code() == Status::Code::kCorruption);
  CHECK(log.status().message().find("missing") != std::string::npos);
}

TEST_CASE("rollback of the last append") {
  TempDir dir;
  const std::string file = dir.path() + "/00000000000000000001.log";
  auto log = OpenLog(dir.path(), 1 << 20);
  REQUIRE(log->Append({Put("a", "1")}).ok());
  const std::uint64_t size = log->Stats().bytes;
  REQUIRE(log->Append({Put("b", "2"), Put("c", "3")}).ok());
  REQUIRE(log->RollbackLastAppend().ok());
  CHECK(log->last_seq() == 1);
  CHECK(log->Stats().bytes == size);
  std::string bytes = ReadFile(file);
  CHECK(bytes.size() == 1 << 20);  // zeroed, not truncated: the space stays allocated
  CHECK(bytes.find_first_not_of('\0', size) == std::string::npos);
  CHECK(log->RollbackLastAppend().code() == Status::Code::kInvalidArgument);  // only once
  REQUIRE(log->Append({Put("d", "4")}).ok());
  CHECK(Render(*log) == "1:1:a=1;2:1:d=4;");
  REQUIRE(log->Append({Put("e", "5")}).ok());
  REQUIRE(log->RollbackLastAppend().ok());
  REQUIRE(log->Sync().ok());
  log.reset();
  // Reopen: exactly the entries that were not rolled back.
  log = OpenLog(dir.path(), 1 << 20);
  CHECK(log->last_seq() == 2);
  CHECK(Render(*log) == "1:1:a=1;2:1:d=4;");
}

TEST_CASE("rollback right after a roll leaves an empty newest file that reopens") {
  TempDir dir;
  {
    auto log = OpenLog(dir.path(), 10);
    REQUIRE(log->Append({Put("a", "1")}).ok());
    REQUIRE(log->Append({Put("b", "2")}).ok());  // rolls to file 2
    REQUIRE(log->RollbackLastAppend().ok());
    REQUIRE(log->Sync().ok());
    CHECK(log->last_seq() == 1);
  }
  auto log = OpenLog(dir.path(), 10);
  CHECK(log->last_seq() == 1);
  REQUIRE(log->Append({Put("c", "3")}).ok());
  CHECK(Render(*log) == "1:1:a=1;2:1:c=3;");
}

TEST_CASE("trim deletes whole old files, keeps the newest and the retention") {
  TempDir dir;
  // Each record is 8 + 8 + 1 + 4 + 3 + 4 + 60 = 88 bytes; one record per file.
  auto log = OpenLog(dir.path(), 50, 0);
  for (int i = 0; i < 10; ++i) REQUIRE(log->Append({Put("key", std::string(60, 'v'))}).ok());
  REQUIRE(log->Stats().segments == 10);

  SECTION("only files entirely at or below the checkpoint") {
    REQUIRE(log->Trim(4).ok());
    CHECK(log->Stats().first_seq == 5);
    CHECK(Files(dir.path()).front() == "00000000000000000005.log");
    Status old = log->ReadFrom(2, [](std::uint64_t, const LogEntry&) { return true; });
    CHECK(old.IsNotFound());
    CHECK(Render(*log, 5).substr(0, 2) == "5:");
  }
  SECTION("always the newest file") {
    REQUIRE(log->Trim(100).ok());
    CHECK(log->Stats().segments == 1);
    CHECK(log->Stats().first_seq == 10);
    CHECK(log->last_seq() == 10);
    REQUIRE(log->Append({Put("next", "1")}).ok());
    CHECK(log->last_seq() == 11);
  }
  SECTION("at least retain_bytes of history") {
    auto retained = [&](std::uint64_t retain) {
      TempDir d;
      auto l = OpenLog(d.path(), 50, retain);
      for (int i = 0; i < 10; ++i) REQUIRE(l->Append({Put("key", std::string(60, 'v'))}).ok());
      REQUIRE(l->Trim(100).ok());
      return l->Stats();
    };
    CHECK(retained(3 * 88).segments == 3);
    CHECK(retained(3 * 88 + 1).segments == 4);
    CHECK(retained(3 * 88).first_seq == 8);
  }
  SECTION("what a replica still needs, up to max_retain_bytes") {
    auto pinned = [&](std::uint64_t max_retain, std::uint64_t pin) {
      TempDir d;
      LogOptions options;
      options.dir = d.path();
      options.segment_bytes = 50;
      options.retain_bytes = 0;
      options.max_retain_bytes = max_retain;
      auto l = Log::Open(options);
      REQUIRE(l.ok());
      for (int i = 0; i < 10; ++i) REQUIRE((*l)->Append({Put("key", std::string(60, 'v'))}).ok());
      REQUIRE((*l)->Trim(100, pin).ok());
      return (*l)->Stats().first_seq;
    };
    CHECK(pinned(1 << 20, 4) == 4);   // entries 4.. are needed
    CHECK(pinned(1 << 20, 0) == 10);  // no pin
    CHECK(pinned(5 * 88, 4) == 6);    // the bound wins: only 5 files may stay
  }
}

// Reads everything a cursor gives up to limit, max_bytes per call, as "seq=key;".
std::string Drain(LogCursor& cursor, std::uint64_t limit, std::size_t max_bytes = 1 << 20) {
  std::string out;
  for (int calls = 0; calls < 10000 && cursor.next_seq() <= limit; ++calls) {
    const std::uint64_t before = cursor.next_seq();
    Status s = cursor.Next(limit, max_bytes, [&](std::uint64_t seq, const LogEntry& e) {
      out += std::to_string(seq) + "=" + e.key + ";";
      return true;
    });
    INFO(s.ToString());
    REQUIRE(s.ok());
    if (cursor.next_seq() == before) break;
  }
  return out;
}

TEST_CASE("a cursor hands out the records exactly as stored, across files") {
  TempDir dir;
  auto log = OpenLog(dir.path(), 200, 0);  // two or three records per file
  std::vector<LogEntry> written;
  for (int i = 1; i <= 7; ++i) {
    written.push_back(Put("k" + std::to_string(i), std::string(static_cast<std::size_t>(i), 'v')));
    REQUIRE(log->Append({written.back()}).ok());
  }
  std::string expected;
  for (std::size_t i = 1; i < written.size(); ++i) {  // from sequence 2
    REQUIRE(EncodeLogRecord(i + 1, written[i], &expected).ok());
  }
  auto cursor = log->OpenCursor(2);
  REQUIRE(cursor.ok());
  std::string records;
  for (int calls = 0; calls < 100 && (*cursor)->next_seq() <= 7; ++calls) {
    REQUIRE((*cursor)->NextRecords(7, 1, &records).ok());  // one record per call
  }
  CHECK((*cursor)->next_seq() == 8);
  CHECK(records == expected);
  std::string decoded;
  REQUIRE(DecodeLogRecords(records, [&](std::uint64_t seq, const LogEntry& e) {
            decoded += std::to_string(seq) + "=" + e.key + ";";
            return true;
          }).ok());
  CHECK(decoded == "2=k2;3=k3;4=k4;5=k5;6=k6;7=k7;");
}

TEST_CASE("a cursor follows the tail across files, up to a limit") {
  TempDir dir;
  auto log = OpenLog(dir.path(), 200, 0);  // two or three records per file
  for (int i = 1; i <= 5; ++i) REQUIRE(log->Append({Put("k" + std::to_string(i), "v")}).ok());
  auto cursor = log->OpenCursor(2);
  REQUIRE(cursor.ok());
  CHECK(Drain(**cursor, 3) == "2=k2;3=k3;");  // stops at the limit (uncommitted beyond)
  CHECK(Drain(**cursor, 5) == "4=k4;5=k5;");
  CHECK(Drain(**cursor, 5).empty());  // caught up
  for (int i = 6; i <= 9; ++i) REQUIRE(log->Append({Put("k" + std::to_string(i), "v")}).ok());
  CHECK(Drain(**cursor, 9, 1) == "6=k6;7=k7;8=k8;9=k9;");  // one record per call
  CHECK((*cursor)->next_seq() == 10);

  SECTION("a cursor opened ahead of the log waits for it") {
    auto ahead = log->OpenCursor(10);
    REQUIRE(ahead.ok());
    CHECK(Drain(**ahead, 9).empty());
    REQUIRE(log->Append({Put("k10", "v")}).ok());
    CHECK(Drain(**ahead, 10) == "10=k10;");
  }
  SECTION("a record larger than max_bytes is still read whole") {
    REQUIRE(log->Append({Put("big", std::string(100000, 'x'))}).ok());
    CHECK(Drain(**cursor, 10, 16) == "10=big;");
  }
  SECTION("trimmed entries are NotFound") {
    REQUIRE(log->Trim(100).ok());
    auto old = log->OpenCursor(1);
    CHECK(old.status().IsNotFound());
  }
}

// An atomic write of n puts, as the engine logs it: every record but the last is continued.
std::vector<LogEntry> Unit(const std::string& prefix, int n) {
  std::vector<LogEntry> unit;
  for (int i = 1; i <= n; ++i) {
    unit.push_back(Put(prefix + std::to_string(i), "v"));
    unit.back().continued = i < n;
  }
  return unit;
}

TEST_CASE("the continued flag marks a unit's records, and decodes back") {
  std::string records;
  REQUIRE(EncodeLogRecord(1, LogEntry::Type::kPut, "a", "1", &records).ok());
  const std::size_t second = records.size();
  REQUIRE(EncodeLogRecord(2, LogEntry::Type::kDelete, "b", "", &records).ok());
  REQUIRE(EncodeLogRecord(3, LogEntry::Type::kPut, "c", "3", &records).ok());
  // The writer learns that a unit goes on only as it encodes the next record.
  MarkLogRecordContinued(&records, 0);
  MarkLogRecordContinued(&records, second);
  CHECK(static_cast<unsigned char>(records[16]) == 0x81);  // type byte: put | continued
  std::string decoded;
  REQUIRE(DecodeLogRecords(records, [&](std::uint64_t seq, const LogEntry& e) {
            decoded += std::to_string(seq) + ":" + std::to_string(static_cast<int>(e.type)) +
                       (e.continued ? "+;" : ";");
            return true;
          }).ok());
  CHECK(decoded == "1:1+;2:2+;3:1;");
}

TEST_CASE("a cursor cuts by size, inside a unit too, and keeps the records' flags") {
  TempDir dir;
  auto log = OpenLog(dir.path());
  REQUIRE(log->Append(Unit("a", 3)).ok());     // 1..3
  REQUIRE(log->Append({Put("b", "v")}).ok());  // 4
  auto cursor = log->OpenCursor(1);
  REQUIRE(cursor.ok());
  std::vector<std::string> reads;
  for (int calls = 0; calls < 10 && (*cursor)->next_seq() <= 4; ++calls) {
    std::string read;
    REQUIRE((*cursor)
                ->Next(4, 1,
                       [&](std::uint64_t, const LogEntry& e) {
                         read += e.key + (e.continued ? "+" : "");
                         return true;
                       })
                .ok());
    reads.push_back(read);
  }
  // A unit may be gigabytes: the replica, not the stream, keeps it whole (ReplicaLink::Apply).
  CHECK(reads == std::vector<std::string>{"a1+", "a2+", "a3", "b"});
}

TEST_CASE("a torn tail cuts back to the last whole unit") {
  TempDir dir;
  const std::string file = dir.path() + "/00000000000000000001.log";
  std::uint64_t good = 0;
  {
    auto log = OpenLog(dir.path(), 1 << 20);
    REQUIRE(log->Append({Put("a", "1")}).ok());
    good = log->Stats().bytes;
    REQUIRE(log->Append(Unit("u", 3)).ok());  // 2..4, in one append as the engine does
    REQUIRE(log->Sync().ok());
    // The crash left the unit's first two records on disk, not its last.
    WriteAt(file, log->Stats().bytes - 1, "X");
  }
  auto log = OpenLog(dir.path(), 1 << 20);
  CHECK(log->last_seq() == 1);
  CHECK(log->Stats().bytes == good);
  CHECK(Render(*log) == "1:1:a=1;");
  CHECK(ReadFile(file).find_first_not_of('\0', good) == std::string::npos);
  REQUIRE(log->Append({Put("b", "2")}).ok());
  log.reset();
  log = OpenLog(dir.path(), 1 << 20);
  CHECK(Render(*log) == "1:1:a=1;2:1:b=2;");
}

TEST_CASE("records encode and decode for the replication stream") {
  LogEntry put = Put("k", "v");
  LogEntry epoch;
  epoch.type = LogEntry::Type::kEpoch;
  epoch.value = std::string(16, '\x01');
  std::string wire;
  REQUIRE(EncodeLogRecord(7, put, &wire).ok());
  REQUIRE(EncodeLogRecord(8, epoch, &wire).ok());
  std::string seen;
  REQUIRE(DecodeLogRecords(wire, [&](std::uint64_t seq, LogEntry& e) {
            seen += std::to_string(seq) + ":" + std::to_string(static_cast<int>(e.type)) + ":" +
                    e.key + ";";
            return true;
          }).ok());
  CHECK(seen == "7:1:k;8:4:;");
  std::string damaged = wire;
  damaged[20] ^= 1;
  CHECK(DecodeLogRecords(damaged, [](std::uint64_t, LogEntry&) { return true; }).code() ==
        Status::Code::kCorruption);
  CHECK(DecodeLogRecords(wire.substr(0, wire.size() - 1), [](std::uint64_t, LogEntry&) {
          return true;
        }).code() == Status::Code::kCorruption);
}

TEST_CASE("ResetStart restarts numbering after a lost log") {
  TempDir dir;
  {
    auto log = OpenLog(dir.path());
    REQUIRE(log->Append({Put("a", "1")}).ok());
    CHECK(log->ResetStart(0).code() == Status::Code::kInvalidArgument);
    REQUIRE(log->ResetStart(100).ok());
    CHECK(log->last_seq() == 99);
    CHECK(log->Stats().first_seq == 0);  // empty
    CHECK(log->ReadFrom(50, [](std::uint64_t, const LogEntry&) { return true; }).IsNotFound());
  }
  auto log = OpenLog(dir.path());
  CHECK(log->last_seq() == 99);  // the numbering survives a reopen
  REQUIRE(log->Append({Put("b", "2")}).ok());
  CHECK(Render(*log, 100) == "100:1:b=2;");
}

TEST_CASE("a second process on the same directory is refused") {
  TempDir dir;
  auto log = OpenLog(dir.path());
  // flock locks are per open file description, so a second Open in this process is refused too.
  LogOptions options;
  options.dir = dir.path();
  auto second = Log::Open(options);
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().message().find("in use") != std::string::npos);
}

}  // namespace
}  // namespace kvstore
