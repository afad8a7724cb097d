// Unit tests of Storage on a real LMDB environment in a temporary directory.
#include "storage/storage.h"

#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <thread>

#include "temp_dir.h"

namespace kvstore {
namespace {

// Each test's own data directory.
class TempDir : public testing::TempDir {
 public:
  TempDir() : testing::TempDir("kvstore_storage_test") {}
};

std::unique_ptr<Storage> OpenStorage(const std::string& dir, std::uint64_t initial = 1 << 20,
                                     std::uint64_t max = 64 << 20) {
  StorageOptions options;
  options.dir = dir;
  options.initial_map_bytes = initial;
  options.max_map_bytes = max;
  options.no_sync = false;
  auto storage = Storage::Open(options);
  REQUIRE(storage.ok());
  return std::move(storage).value();
}

// The whole key space as "k=v;k=v;" in scan order.
std::string Render(Storage& storage) {
  auto snap = storage.Read();
  REQUIRE(snap.ok());
  std::string out;
  Status s = snap->Scan("", false, [&](std::string_view k, std::string_view v) {
    out.append(k).append("=").append(v).append(";");
    return true;
  });
  REQUIRE(s.ok());
  return out;
}

void Write(Storage& storage, std::initializer_list<std::pair<std::string, std::string>> kvs) {
  auto txn = storage.BeginWrite();
  REQUIRE(txn.ok());
  for (const auto& [k, v] : kvs) REQUIRE(txn->Put(k, v).ok());
  REQUIRE(txn->Commit().ok());
}

TEST_CASE("put, get, delete and clear") {
  TempDir dir;
  auto storage = OpenStorage(dir.path());
  Write(*storage, {{"b", "2"}, {"a", "1"}, {"c", "3"}});
  CHECK(Render(*storage) == "a=1;b=2;c=3;");
  {
    auto snap = storage->Read();
    REQUIRE(snap.ok());
    std::string v;
    REQUIRE(snap->Get("b", &v).ok());
    CHECK(v == "2");
    CHECK(snap->Get("zz", &v).IsNotFound());
    CHECK(snap->KeyCount() == 3);
  }
  {
    auto txn = storage->BeginWrite();
    REQUIRE(txn.ok());
    CHECK(txn->Delete("b").ok());
    CHECK(txn->Delete("b").IsNotFound());
    CHECK(txn->Put("a", "one").ok());
    std::string v;
    REQUIRE(txn->Get("a", &v).ok());
    CHECK(v == "one");  // the transaction sees its own writes
    CHECK(txn->KeyCount() == 2);
    REQUIRE(txn->Commit().ok());
  }
  CHECK(Render(*storage) == "a=one;c=3;");
  {
    auto txn = storage->BeginWrite();
    REQUIRE(txn.ok());
    REQUIRE(txn->Clear().ok());
    CHECK(txn->KeyCount() == 0);
    REQUIRE(txn->Put("d", "4").ok());
    REQUIRE(txn->Commit().ok());
  }
  CHECK(Render(*storage) == "d=4;");
}

TEST_CASE("an aborted or dropped write transaction leaves nothing") {
  TempDir dir;
  auto storage = OpenStorage(dir.path());
  Write(*storage, {{"a", "1"}});
  {
    auto txn = storage->BeginWrite();
    REQUIRE(txn.ok());
    REQUIRE(txn->Put("b", "2").ok());
    txn->Abort();
  }
  {
    auto txn = storage->BeginWrite();
    REQUIRE(txn.ok());
    REQUIRE(txn->Put("c", "3").ok());
  }  // destroyed without Commit
  CHECK(Render(*storage) == "a=1;");
}

TEST_CASE("scan order and exclusive start") {
  TempDir dir;
  auto storage = OpenStorage(dir.path());
  Write(*storage, {{"k3", "c"}, {"k1", "a"}, {"k2", "b"}, {"k10", "x"}, {"\xff", "hi"}});
  auto snap = storage->Read();
  REQUIRE(snap.ok());
  auto scan = [&](std::string_view start, bool exclusive, int limit) {
    std::string out;
    int n = 0;
    REQUIRE(snap->Scan(start, exclusive,
                       [&](std::string_view k, std::string_view) {
                         out.append(k).append(",");
                         return ++n < limit;
                       })
                .ok());
    return out;
  };
  CHECK(scan("", false, 100) == "k1,k10,k2,k3,\xff,");
  CHECK(scan("k10", false, 100) == "k10,k2,k3,\xff,");
  CHECK(scan("k10", true, 100) == "k2,k3,\xff,");
  CHECK(scan("k100", false, 100) == "k2,k3,\xff,");           // start between keys
  CHECK(scan("k1", true, 2) == "k10,k2,");                    // visit stops the scan
  CHECK(scan("zzz", false, 100) == "\xff,");                  // bytes compare unsigned
  CHECK(scan(std::string(600, 'k'), false, 100) == "\xff,");  // start longer than any key
}

TEST_CASE("key limits") {
  TempDir dir;
  auto storage = OpenStorage(dir.path());
  auto txn = storage->BeginWrite();
  REQUIRE(txn.ok());
  Status empty = txn->Put("", "v");
  CHECK(empty.code() == Status::Code::kInvalidArgument);
  CHECK(empty.message().find("empty key") != std::string::npos);
  Status long_key = txn->Put(std::string(512, 'x'), "v");
  CHECK(long_key.code() == Status::Code::kInvalidArgument);
  CHECK(long_key.message().find("512 bytes") != std::string::npos);
  CHECK(txn->Put(std::string(511, 'x'), "v").ok());  // the limit itself fits
  CHECK(txn->Delete(std::string(600, 'x')).IsNotFound());
  REQUIRE(txn->Commit().ok());
  auto snap = storage->Read();
  REQUIRE(snap.ok());
  std::string v;
  CHECK(snap->Get(std::string(511, 'x'), &v).ok());
  CHECK(snap->Get("", &v).IsNotFound());
}

TEST_CASE("a snapshot does not see later commits") {
  TempDir dir;
  auto storage = OpenStorage(dir.path());
  Write(*storage, {{"a", "old"}});
  auto snap = storage->Read();
  REQUIRE(snap.ok());
  Write(*storage, {{"a", "new"}, {"b", "x"}});
  std::string v;
  REQUIRE(snap->Get("a", &v).ok());
  CHECK(v == "old");
  CHECK(snap->Get("b", &v).IsNotFound());
  CHECK(snap->KeyCount() == 1);
  auto fresh = storage->Read();
  REQUIRE(fresh.ok());
  REQUIRE(fresh->Get("a", &v).ok());
  CHECK(v == "new");
}

TEST_CASE("snapshots are pooled and usable from many threads") {
  TempDir dir;
  auto storage = OpenStorage(dir.path());
  Write(*storage, {{"a", "1"}});
  std::atomic<int> found{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        auto snap = storage->Read();
        std::string v;
        if (snap.ok() && snap->Get("a", &v).ok() && v == "1") ++found;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(found == 8 * 500);
}

TEST_CASE("applied_seq persists across reopen") {
  TempDir dir;
  {
    auto storage = OpenStorage(dir.path());
    CHECK(storage->Stats().applied_seq == 0);
    auto txn = storage->BeginWrite();
    REQUIRE(txn.ok());
    REQUIRE(txn->Put("k", "v").ok());
    REQUIRE(txn->SetAppliedSeq(0x0102030405060708ull).ok());
    REQUIRE(txn->Commit().ok());
    REQUIRE(storage->Sync().ok());
  }
  auto storage = OpenStorage(dir.path());
  auto snap = storage->Read();
  REQUIRE(snap.ok());
  CHECK(snap->AppliedSeq() == 0x0102030405060708ull);
  StorageStats stats = storage->Stats();
  CHECK(stats.keys == 1);
  CHECK(stats.applied_seq == 0x0102030405060708ull);
  CHECK(stats.used_bytes > 0);
  CHECK(stats.used_bytes <= stats.map_bytes);
}

// Fills the map with 1 KiB values until a Put fails; returns how many keys were committed.
int FillUntilFull(Storage& storage, int start, Status* failure) {
  const std::string value(1024, 'v');
  int i = start;
  for (;;) {
    auto txn = storage.BeginWrite();
    REQUIRE(txn.ok());
    Status s;
    for (int j = 0; j < 16 && s.ok(); ++j) s = txn->Put("key" + std::to_string(i + j), value);
    if (s.ok()) s = txn->Commit();
    if (!s.ok()) {
      *failure = s;
      return i - start;
    }
    i += 16;
  }
}

TEST_CASE("a full map reports StorageFull, grows, and stays readable at the maximum") {
  TempDir dir;
  // max 1 MiB keeps a 256 KiB reserve for deletes, so puts may grow the map to 768 KiB.
  auto storage = OpenStorage(dir.path(), 256 << 10, 1 << 20);
  Status failure;
  int first = FillUntilFull(*storage, 0, &failure);
  CHECK(failure.IsStorageFull());
  CHECK(first > 0);
  CHECK(storage->Stats().map_bytes == (256 << 10));

  // Grow doubles the map, so more writes fit.
  REQUIRE(storage->Grow().ok());
  CHECK(storage->Stats().map_bytes == (512 << 10));
  int second = FillUntilFull(*storage, first, &failure);
  CHECK(second > 0);
  REQUIRE(storage->Grow().ok());
  CHECK(storage->Stats().map_bytes == (768 << 10));
  int third = FillUntilFull(*storage, first + second, &failure);
  CHECK(failure.IsStorageFull());

  // At the limit Grow refuses with a message naming the fix.
  Status grow = storage->Grow();
  CHECK(grow.IsStorageFull());
  CHECK(grow.message().find("max_map_bytes (1048576 bytes") != std::string::npos);
  CHECK(grow.message().find("raise max_map_bytes") != std::string::npos);
  // A failed put leaves the map usable: a small put in a fresh transaction still fails cleanly.
  {
    auto txn = storage->BeginWrite();
    REQUIRE(txn.ok());
    CHECK(txn->Put("big", std::string(300 << 10, 'b')).IsStorageFull());
  }

  // Reads still work and see everything committed.
  const int total = first + second + third;
  {
    auto snap = storage->Read();
    REQUIRE(snap.ok());
    CHECK(snap->KeyCount() == static_cast<std::uint64_t>(total));
    std::string v;
    CHECK(snap->Get("key0", &v).ok());
  }

  // Deletes work with the reserve open, and free room for new writes.
  REQUIRE(storage->OpenReserve().ok());
  CHECK(storage->Stats().map_bytes == (1 << 20));
  for (int i = 0; i < total; i += 8) {
    auto txn = storage->BeginWrite();
    REQUIRE(txn.ok());
    for (int j = i; j < std::min(total, i + 8); ++j) {
      Status del = txn->Delete("key" + std::to_string(j));
      INFO("key" << j << ": " << del.ToString());
      REQUIRE(del.ok());
    }
    REQUIRE(txn->Commit().ok());
  }
  REQUIRE(storage->CloseReserve().ok());
  CHECK(storage->Stats().keys == 0);
  CHECK(storage->Stats().map_bytes <= (1 << 20));
  Write(*storage, {{"again", std::string(1024, 'x')}});
  CHECK(storage->Stats().keys == 1);
  CHECK(storage->Stats().max_map_bytes == (1 << 20));
}

TEST_CASE("a reopened storage keeps its grown map") {
  TempDir dir;
  Status failure;
  int n = 0;
  {
    auto storage = OpenStorage(dir.path(), 256 << 10, 4 << 20);
    n = FillUntilFull(*storage, 0, &failure);
    REQUIRE(storage->Grow().ok());
    n += FillUntilFull(*storage, n, &failure);
  }
  auto storage = OpenStorage(dir.path(), 256 << 10, 4 << 20);
  CHECK(storage->Stats().map_bytes >= (512 << 10));
  CHECK(storage->Stats().keys == static_cast<std::uint64_t>(n));
  REQUIRE(storage->Grow().ok());  // it grows on from there
  CHECK(storage->Stats().map_bytes >= (1 << 20));
  Write(*storage, {{"one-more", "v"}});
}

TEST_CASE("Grow waits for live snapshots and they stay valid") {
  TempDir dir;
  auto storage = OpenStorage(dir.path(), 256 << 10, 1 << 20);
  Write(*storage, {{"a", "1"}});
  std::atomic<bool> grown{false};
  std::thread grower;
  {
    auto snap = storage->Read();
    REQUIRE(snap.ok());
    grower = std::thread([&] { grown = storage->Grow().ok(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK_FALSE(grown.load());  // blocked by the snapshot
    std::string v;
    REQUIRE(snap->Get("a", &v).ok());
    CHECK(v == "1");
    // A second snapshot on the same thread does not deadlock behind the waiting Grow.
    auto nested = storage->Read();
    REQUIRE(nested.ok());
  }
  grower.join();
  CHECK(grown.load());
  CHECK(storage->Stats().map_bytes == (512 << 10));
  CHECK(Render(*storage) == "a=1;");
}

TEST_CASE("open fails with IOError naming the directory") {
  StorageOptions options;
  options.dir = "/proc/kvstore-cannot-exist/db";
  auto storage = Storage::Open(options);
  REQUIRE_FALSE(storage.ok());
  CHECK(storage.status().code() == Status::Code::kIOError);
  CHECK(storage.status().message().find("/proc/kvstore-cannot-exist/db") != std::string::npos);
}

}  // namespace
}  // namespace kvstore
