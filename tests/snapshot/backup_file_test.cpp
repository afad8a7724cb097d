// Unit tests of the backup envelope (snapshot/backup_file.h): round trips in every feed size,
// and every damaged, truncated, wrong-version or padded file refused with a message that names
// what is wrong. No sockets; the file helpers use a temporary directory.
#include "snapshot/backup_file.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>

#include "temp_dir.h"

namespace kvstore {
namespace {

BackupInfo Info(std::uint64_t keys) {
  BackupInfo info;
  info.pod = "kvstore-2";
  info.epoch = "3:00000000000000ab";
  info.seq = 42;
  info.keys = keys;
  info.created = "2026-11-25T15:00:00Z";
  return info;
}

std::string Snapshot(std::uint64_t seq, int keys) {
  SnapshotEncoder encoder(64);  // small frames: several data frames
  std::string out;
  encoder.Begin(seq, "meta", &out);
  for (int i = 0; i < keys; ++i) {
    encoder.Add("key" + std::to_string(1000 + i), std::string(i % 7, 'v'), &out);
  }
  encoder.Finish(&out);
  return out;
}

std::string Backup(BackupInfo info, const std::string& snapshot) {
  info.snapshot_bytes = snapshot.size();
  BackupEncoder encoder;
  auto header = encoder.Header(info);
  REQUIRE(header.ok());
  std::string out = *header;
  encoder.Body(snapshot.substr(0, 10));
  encoder.Body(snapshot.substr(10));
  auto trailer = encoder.Trailer();
  REQUIRE(trailer.ok());
  return out + snapshot + *trailer;
}

// Feeds bytes in pieces of `step`; returns "ok" or the error, and the snapshot bytes sunk.
std::string Read(const std::string& bytes, std::size_t step, std::string* sunk = nullptr) {
  BackupReader reader;
  auto sink = [sunk](std::string_view piece) {
    if (sunk != nullptr) sunk->append(piece);
    return Status::Ok();
  };
  for (std::size_t at = 0; at < bytes.size(); at += step) {
    Status s = reader.Feed(std::string_view(bytes).substr(at, step), sink);
    if (!s.ok()) return s.message();
  }
  Status s = reader.Finish();
  return s.ok() ? "ok" : s.message();
}

TEST_CASE("a backup round-trips in every feed size and describes itself") {
  const std::string snapshot = Snapshot(42, 30);
  const std::string bytes = Backup(Info(30), snapshot);
  REQUIRE(bytes.starts_with(
      "KVSTORE-BACKUP 1\nformat: kvstore snapshot\npod: kvstore-2\nepoch: 3:00000000000000ab\n"
      "seq: 42\nkeys: 30\ncreated: 2026-11-25T15:00:00Z\nsnapshot_bytes: " +
      std::to_string(snapshot.size()) + "\n\n"));
  for (std::size_t step : {std::size_t{1}, std::size_t{7}, std::size_t{100}, bytes.size()}) {
    std::string sunk;
    CHECK(Read(bytes, step, &sunk) == "ok");
    CHECK(sunk == snapshot);
  }
  BackupReader reader;
  REQUIRE(reader.Feed(bytes, nullptr).ok());
  REQUIRE(reader.Finish().ok());
  CHECK(reader.info().pod == "kvstore-2");
  CHECK(reader.info().epoch == "3:00000000000000ab");
  CHECK(reader.info().seq == 42);
  CHECK(reader.info().keys == 30);
  CHECK(reader.info().snapshot_bytes == snapshot.size());
}

TEST_CASE("an empty key space backs up too") {
  CHECK(Read(Backup(Info(0), Snapshot(42, 0)), 3) == "ok");
}

TEST_CASE("every flipped byte is refused") {
  const std::string bytes = Backup(Info(5), Snapshot(42, 5));
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    std::string damaged = bytes;
    damaged[i] = static_cast<char>(damaged[i] ^ 0x20);
    INFO("byte " << i);
    CHECK(Read(damaged, 13) != "ok");
  }
}

TEST_CASE("a flipped byte in the body is named as damage") {
  std::string bytes = Backup(Info(5), Snapshot(42, 5));
  bytes[bytes.size() - 40] ^= 1;
  CHECK_THAT(Read(bytes, 1000), Catch::Contains("damaged") || Catch::Contains("checksum"));
}

TEST_CASE("every truncation is refused and says truncated") {
  const std::string bytes = Backup(Info(5), Snapshot(42, 5));
  CHECK(Read("", 1) == "the backup file is empty");
  for (std::size_t n = 1; n < bytes.size(); ++n) {
    INFO("length " << n);
    const std::string result = Read(bytes.substr(0, n), 11);
    CHECK_THAT(result, Catch::Contains("truncated"));
  }
}

TEST_CASE("appended bytes are refused") {
  CHECK_THAT(Read(Backup(Info(5), Snapshot(42, 5)) + "x", 9),
             Catch::Contains("unexpected bytes after the end"));
}

TEST_CASE("a wrong version, a foreign file and a lying header are refused by name") {
  std::string bytes = Backup(Info(5), Snapshot(42, 5));
  std::string v2 = bytes;
  v2[15] = '2';
  CHECK(Read(v2, 100) == "unsupported backup format version 2 (this build reads version 1)");
  CHECK(Read("GIF89a........................", 100) ==
        "not a kvstore backup file (it does not start with \"KVSTORE-BACKUP\")");
  CHECK(Read("\n\n", 1) != "ok");
  CHECK_THAT(Read(Backup(Info(6), Snapshot(42, 5)), 100),
             Catch::Contains("holds 5 keys but the backup header says 6"));
  BackupInfo wrong_seq = Info(5);
  wrong_seq.seq = 41;
  CHECK_THAT(Read(Backup(wrong_seq, Snapshot(42, 5)), 100),
             Catch::Contains("at sequence 42 but the backup header says 41"));
  CHECK_THAT(Read(std::string("KVSTORE-BACKUP 1\n") + std::string(5000, 'x'), 100),
             Catch::Contains("no end within 4096 bytes"));
}

TEST_CASE("the encoder refuses a body of the wrong size and multi-line fields") {
  BackupInfo info = Info(1);
  info.snapshot_bytes = 10;
  BackupEncoder encoder;
  REQUIRE(encoder.Header(info).ok());
  encoder.Body("12345");
  CHECK_FALSE(encoder.Trailer().ok());
  info.pod = "a\nb";
  CHECK_FALSE(BackupEncoder().Header(info).ok());
}

TEST_CASE("files: extraction writes the snapshot, and a damaged file leaves no output") {
  testing::TempDir dir("kvstore_backup_file_test");
  const std::string snapshot = Snapshot(42, 20);
  const std::string good = dir.path() + "/good.kvbackup";
  const std::string bad = dir.path() + "/bad.kvbackup";
  const std::string out = dir.path() + "/out.kvsnap";
  std::string bytes = Backup(Info(20), snapshot);
  std::ofstream(good, std::ios::binary) << bytes;
  bytes.resize(bytes.size() - 1);
  std::ofstream(bad, std::ios::binary) << bytes;

  BackupInfo info;
  REQUIRE(ExtractBackupSnapshot(good, out, &info).ok());
  std::ifstream in(out, std::ios::binary);
  CHECK(std::string(std::istreambuf_iterator<char>(in), {}) == snapshot);
  CHECK(info.keys == 20);

  Status s = ExtractBackupSnapshot(bad, out, &info);
  CHECK_THAT(s.message(), Catch::Contains("truncated"));
  CHECK_FALSE(std::filesystem::exists(out));
  CHECK(ReadBackupFile(dir.path() + "/missing", nullptr, nullptr).code() == Status::Code::kIOError);
}

}  // namespace
}  // namespace kvstore
