// Unit tests of the engine: group commit, recovery, full maps, error isolation, shutdown.
#include "engine/engine.h"

#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <future>
#include <string>
#include <thread>

#include "temp_dir.h"

namespace kvstore {
namespace {

namespace fs = std::filesystem;

// Each test's own data directory.
class TempDir : public testing::TempDir {
 public:
  TempDir() : testing::TempDir("kvstore_engine_test") {}
};

EngineOptions Options(const std::string& dir) {
  EngineOptions options;
  options.data_dir = dir;
  options.initial_map_bytes = 1 << 20;
  options.max_map_bytes = 256 << 20;
  return options;
}

std::unique_ptr<Engine> OpenEngine(const EngineOptions& options) {
  auto engine = Engine::Open(options);
  INFO(engine.status().ToString());
  REQUIRE(engine.ok());
  return std::move(engine).value();
}

std::vector<Status> Run(Engine& engine, std::vector<WriteFn> writes) {
  // Shared, so the promise outlives set_value even when the waiter returns first.
  auto done = std::make_shared<std::promise<std::vector<Status>>>();
  auto result = done->get_future();
  engine.Submit(std::move(writes), [done](std::vector<Status> statuses, std::uint64_t) {
    done->set_value(std::move(statuses));
  });
  return result.get();
}

WriteFn PutFn(std::string key, std::string value) {
  return [key, value](WriteContext& ctx) { return ctx.Put(key, value); };
}

WriteFn DelFn(std::string key) {
  return [key](WriteContext& ctx) {
    Status s = ctx.Delete(key);
    return s.IsNotFound() ? Status::Ok() : s;
  };
}

Status Put(Engine& engine, std::string key, std::string value) {
  return Run(engine, {PutFn(std::move(key), std::move(value))})[0];
}

// The key space as "k=v;k=v;".
std::string Render(Engine& engine) {
  auto snap = engine.Read();
  REQUIRE(snap.ok());
  std::string out;
  REQUIRE(snap->Scan("", false,
                     [&](std::string_view k, std::string_view v) {
                       out.append(k).append("=").append(v).append(";");
                       return true;
                     })
              .ok());
  return out;
}

std::string Codes(const std::vector<Status>& statuses) {
  std::string out;
  for (const Status& s : statuses) out += std::string(Status::CodeName(s.code())) + ",";
  return out;
}

TEST_CASE("writes are visible, logged and durable across reopen") {
  TempDir dir;
  {
    auto engine = OpenEngine(Options(dir.path()));
    REQUIRE(Put(*engine, "a", "1").ok());
    auto statuses = Run(*engine, {PutFn("b", "2"), PutFn("c", "3"), DelFn("a")});
    CHECK(Codes(statuses) == "OK,OK,OK,");
    CHECK(Render(*engine) == "b=2;c=3;");
    EngineStats stats = engine->Stats();
    CHECK(stats.log.last_seq == 4);
    CHECK(stats.storage.applied_seq == 4);
    CHECK(stats.commits == 2);
    CHECK(stats.committed_writes == 4);
    CHECK(stats.fsyncs >= 2);  // fsync: always, one per batch
    REQUIRE(engine->Shutdown().ok());
    CHECK(engine->Shutdown().ok());  // idempotent
  }
  auto engine = OpenEngine(Options(dir.path()));
  CHECK(Render(*engine) == "b=2;c=3;");
  REQUIRE(Put(*engine, "d", "4").ok());
  CHECK(engine->Stats().log.last_seq == 5);  // numbering continues
}

TEST_CASE("the write context sees the batch's own writes") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  REQUIRE(Put(*engine, "x", "1").ok());
  std::string seen;
  std::uint64_t counts[3] = {0, 0, 0};
  auto statuses = Run(*engine, {PutFn("y", "2"), [&](WriteContext& ctx) {
                                  counts[0] = ctx.KeyCount();
                                  Status s = ctx.Put("z", "3");
                                  counts[1] = ctx.KeyCount();
                                  if (!ctx.Get("y", &seen).ok()) seen = "missing";
                                  if (s.ok()) s = ctx.Clear();
                                  counts[2] = ctx.KeyCount();
                                  return s;
                                }});
  CHECK(Codes(statuses) == "OK,OK,");
  CHECK(seen == "2");
  CHECK(counts[0] == 2);
  CHECK(counts[1] == 3);
  CHECK(counts[2] == 0);
  CHECK(Render(*engine).empty());
  CHECK(engine->Stats().log.last_seq == 4);  // put x, put y, put z, clear
}

TEST_CASE("concurrent submissions are group committed") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  constexpr int kThreads = 16;
  constexpr int kPerThread = 100;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        if (Put(*engine, "k" + std::to_string(t) + "-" + std::to_string(i), "v").ok()) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ok == kThreads * kPerThread);
  EngineStats stats = engine->Stats();
  CHECK(stats.committed_writes == kThreads * kPerThread);
  CHECK(stats.commits < stats.committed_writes);
  CHECK(stats.storage.keys == kThreads * kPerThread);
  CHECK(stats.log.last_seq == kThreads * kPerThread);
}

TEST_CASE("a failing write function does not affect the others in its batch") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  REQUIRE(Put(*engine, "keep", "old").ok());
  std::vector<WriteFn> writes;
  writes.push_back(PutFn("a", "1"));
  writes.push_back([](WriteContext& ctx) {  // half done, then fails: nothing of it stays
    Status s = ctx.Put("b", "2");
    if (s.ok()) s = ctx.Delete("keep");
    if (s.ok()) s = Status::InvalidArgument("ERR wrong kind of value");
    return s;
  });
  writes.push_back(PutFn(std::string(600, 'k'), "too long"));
  writes.push_back([](WriteContext&) -> Status { throw std::runtime_error("boom"); });
  writes.push_back(PutFn("c", "3"));
  auto statuses = Run(*engine, std::move(writes));
  CHECK(Codes(statuses) == "OK,InvalidArgument,InvalidArgument,IOError,OK,");
  CHECK(statuses[1].message() == "ERR wrong kind of value");
  CHECK(statuses[3].message().find("boom") != std::string::npos);
  CHECK(Render(*engine) == "a=1;c=3;keep=old;");
  // Only the surviving mutations were logged, with consecutive sequences.
  CHECK(engine->Stats().log.last_seq == 3);
  CHECK(engine->Stats().storage.applied_seq == 3);
}

TEST_CASE("a batch without mutations commits nothing") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  REQUIRE(Put(*engine, "a", "1").ok());
  std::string got;
  auto statuses = Run(*engine, {[&](WriteContext& ctx) {
    // SET a 2 NX: a exists, so nothing happens
    if (ctx.Get("a", &got).ok()) return Status::Ok();
    return ctx.Put("a", "2");
  }});
  CHECK(Codes(statuses) == "OK,");
  CHECK(got == "1");
  EngineStats stats = engine->Stats();
  CHECK(stats.commits == 1);
  CHECK(stats.log.last_seq == 1);
}

// Writes pairs straight into the engine's LMDB under data_dir, recording applied_seq, as the
// storage would look after a crash (the engine itself never leaves it like this).
void SeedStorage(const std::string& data_dir,
                 const std::vector<std::pair<std::string, std::string>>& pairs,
                 std::uint64_t applied_seq) {
  StorageOptions so;
  so.dir = data_dir + "/db";
  auto storage = Storage::Open(so);
  REQUIRE(storage.ok());
  auto txn = (*storage)->BeginWrite();
  REQUIRE(txn.ok());
  for (const auto& [key, value] : pairs) REQUIRE(txn->Put(key, value).ok());
  REQUIRE(txn->SetAppliedSeq(applied_seq).ok());
  REQUIRE(txn->Commit().ok());
  REQUIRE((*storage)->Sync().ok());
}

TEST_CASE("recovery replays log entries that LMDB does not have") {
  TempDir dir;
  {
    // What a crash leaves: LMDB has applied up to seq 2, the log holds 1..6.
    SeedStorage(dir.path(), {{"a", "1"}, {"gone", "x"}}, 2);

    LogOptions lo;
    lo.dir = dir.path() + "/log";
    lo.segment_bytes = 64;  // several files
    auto log = Log::Open(lo);
    REQUIRE(log.ok());
    using T = LogEntry::Type;
    REQUIRE((*log)->Append({{T::kPut, "a", "1"}, {T::kPut, "gone", "x"}}).ok());
    REQUIRE((*log)->Append({{T::kPut, "b", "2"}, {T::kDelete, "gone", ""}}).ok());
    REQUIRE((*log)->Append({{T::kDelete, "never-existed", ""}}).ok());
    REQUIRE((*log)->Append({{T::kPut, "a", "updated"}}).ok());
    REQUIRE((*log)->Sync().ok());
  }
  {
    auto engine = OpenEngine(Options(dir.path()));
    CHECK(Render(*engine) == "a=updated;b=2;");
    CHECK(engine->Stats().storage.applied_seq == 6);
    REQUIRE(Put(*engine, "c", "3").ok());
    CHECK(engine->Stats().log.last_seq == 7);
  }
  auto engine = OpenEngine(Options(dir.path()));
  CHECK(Render(*engine) == "a=updated;b=2;c=3;");
}

TEST_CASE("recovery replays a clear and many entries in chunks") {
  TempDir dir;
  {
    LogOptions lo;
    lo.dir = dir.path() + "/log";
    auto log = Log::Open(lo);
    REQUIRE(log.ok());
    std::vector<LogEntry> entries;
    entries.push_back({LogEntry::Type::kPut, "early", "1"});
    entries.push_back({LogEntry::Type::kClear, "", ""});
    for (int i = 0; i < 25000; ++i) {
      entries.push_back({LogEntry::Type::kPut, "key" + std::to_string(i), std::string(200, 'v')});
    }
    REQUIRE((*log)->Append(entries).ok());
  }
  EngineOptions options = Options(dir.path());
  options.initial_map_bytes = 1 << 20;  // replay has to grow the map several times
  auto engine = OpenEngine(options);
  EngineStats stats = engine->Stats();
  CHECK(stats.storage.keys == 25000);
  CHECK(stats.storage.applied_seq == 25002);
  CHECK(stats.storage.map_bytes > (1 << 20));
  auto snap = engine->Read();
  REQUIRE(snap.ok());
  std::string v;
  CHECK(snap->Get("early", &v).IsNotFound());
  CHECK(snap->Get("key24999", &v).ok());
}

TEST_CASE("a storage ahead of a lost log continues the numbering after it") {
  TempDir dir;
  SeedStorage(dir.path(), {{"a", "1"}}, 10);
  {
    auto engine = OpenEngine(Options(dir.path()));
    CHECK(Render(*engine) == "a=1;");
    REQUIRE(Put(*engine, "b", "2").ok());
    CHECK(engine->Stats().log.last_seq == 11);
    CHECK(engine->Stats().storage.applied_seq == 11);
  }
  auto engine = OpenEngine(Options(dir.path()));
  CHECK(Render(*engine) == "a=1;b=2;");
  CHECK(engine->Stats().log.last_seq == 11);
}

TEST_CASE("a log that starts after the storage's applied sequence is Corruption") {
  TempDir dir;
  {
    LogOptions lo;
    lo.dir = dir.path() + "/log";
    auto log = Log::Open(lo);
    REQUIRE(log.ok());
    REQUIRE((*log)->ResetStart(10).ok());
    REQUIRE((*log)->Append({{LogEntry::Type::kPut, "a", "1"}}).ok());
  }
  auto engine = Engine::Open(Options(dir.path()));
  REQUIRE_FALSE(engine.ok());
  CHECK(engine.status().code() == Status::Code::kCorruption);
  CHECK(engine.status().message().find("from 1") != std::string::npos);
}

TEST_CASE("a full map fails writes but keeps reads and deletes working") {
  TempDir dir;
  EngineOptions options = Options(dir.path());
  options.initial_map_bytes = 256 << 10;
  options.max_map_bytes = 1 << 20;
  auto engine = OpenEngine(options);
  const std::string value(1024, 'v');
  int stored = 0;
  std::vector<std::string> keys;  // stored; not always a prefix: a smaller put may still fit
  Status failure;
  for (int i = 0; i < 10000 && failure.ok(); i += 8) {
    std::vector<WriteFn> writes;
    for (int j = i; j < i + 8; ++j) writes.push_back(PutFn("key" + std::to_string(j), value));
    auto statuses = Run(*engine, std::move(writes));
    for (int j = i; j < i + 8; ++j) {
      const Status& s = statuses[j - i];
      if (s.ok()) {
        ++stored;
        keys.push_back("key" + std::to_string(j));
      } else if (failure.ok()) {
        failure = s;
      }
    }
  }
  REQUIRE(failure.IsStorageFull());
  CHECK(failure.message().find("max_map_bytes (1048576 bytes") != std::string::npos);
  CHECK(engine->Stats().storage.map_bytes >= (512 << 10));  // it grew before giving up
  CHECK(stored > 100);

  // Reads are fine.
  CHECK(engine->Stats().storage.keys == static_cast<std::uint64_t>(stored));
  {
    auto snap = engine->Read();
    REQUIRE(snap.ok());
    std::string v;
    CHECK(snap->Get("key0", &v).ok());
  }
  // Still full: a mixed batch commits the delete and fails only the put.
  auto mixed = Run(*engine, {DelFn("key0"), PutFn("new", std::string(200 << 10, 'n')),
                             DelFn("key1"), DelFn("key2")});
  CHECK(Codes(mixed) == "OK,StorageFull,OK,OK,");
  {
    auto snap = engine->Read();
    REQUIRE(snap.ok());
    std::string v;
    CHECK(snap->Get("key0", &v).IsNotFound());
    CHECK(snap->Get("key2", &v).IsNotFound());
    CHECK(snap->Get("new", &v).IsNotFound());
  }
  // Deleting everything makes room again.
  for (int i = 0; i < stored; i += 16) {
    std::vector<WriteFn> writes;
    for (int j = i; j < std::min(stored, i + 16); ++j) writes.push_back(DelFn(keys[j]));
    for (const Status& s : Run(*engine, std::move(writes))) REQUIRE(s.ok());
  }
  CHECK(engine->Stats().storage.keys == 0);
  CHECK(Put(*engine, "after", value).ok());
  CHECK(Render(*engine) == "after=" + value + ";");
  CHECK(engine->Stats().storage.map_bytes <= (1 << 20));
}

TEST_CASE("at the maximum map, space freed by deletes is usable by the very next put") {
  // LMDB reuses the pages freed by transaction T only from T+2 on; refused puts abort and do
  // not advance the transaction id, so without help the freed space stayed unusable.
  TempDir dir;
  EngineOptions options = Options(dir.path());
  options.initial_map_bytes = 256 << 10;
  options.max_map_bytes = 1 << 20;
  auto engine = OpenEngine(options);
  const std::string value(4096, 'v');
  std::vector<std::string> stored;
  Status failure;
  for (int i = 0; i < 10000; ++i) {
    std::string key = "key" + std::to_string(i);
    failure = Put(*engine, key, value);
    if (!failure.ok()) break;
    stored.push_back(key);
  }
  REQUIRE(failure.IsStorageFull());
  REQUIRE(stored.size() > 40);
  CHECK(Put(*engine, "still-full", value).IsStorageFull());
  // One DEL of every fourth key, as one write function.
  std::vector<std::string> doomed;
  for (std::size_t i = 0; i < stored.size(); i += 4) doomed.push_back(stored[i]);
  auto del = Run(*engine, {[doomed](WriteContext& ctx) {
    for (const std::string& k : doomed) {
      if (Status s = ctx.Delete(k); !s.ok()) return s;
    }
    return Status::Ok();
  }});
  REQUIRE(Codes(del) == "OK,");
  for (int i = 0; i < 5; ++i) {
    Status s = Put(*engine, "after" + std::to_string(i), value);
    INFO("put " << i << " after deleting " << doomed.size() << " of " << stored.size()
                << " keys: " << s.ToString());
    CHECK(s.ok());
  }
  CHECK(engine->Stats().storage.keys == stored.size() - doomed.size() + 5);
}

TEST_CASE("the batch is re-run after the map grows") {
  TempDir dir;
  EngineOptions options = Options(dir.path());
  options.initial_map_bytes = 64 << 10;
  auto engine = OpenEngine(options);
  int runs = 0;
  auto statuses = Run(*engine, {PutFn("small", "1"), [&](WriteContext& ctx) {
                                  ++runs;
                                  return ctx.Put("big", std::string(1 << 20, 'b'));
                                }});
  CHECK(Codes(statuses) == "OK,OK,");
  CHECK(runs >= 2);  // it ran again after each Grow
  CHECK(engine->Stats().storage.keys == 2);
  CHECK(engine->Stats().log.last_seq == 2);  // only the last run was logged
}

TEST_CASE("reads and stats run concurrently with writes that grow the map") {
  TempDir dir;
  EngineOptions options = Options(dir.path());
  options.initial_map_bytes = 64 << 10;
  auto engine = OpenEngine(options);
  REQUIRE(Put(*engine, "anchor", "a").ok());
  std::atomic<bool> stop{false};
  std::atomic<int> bad_reads{0};
  std::atomic<int> reads{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&, t] {
      while (!stop.load()) {
        if (t == 2) {
          if (engine->Stats().storage.keys == 0) ++bad_reads;
          continue;
        }
        auto snap = engine->Read();
        std::string v;
        if (!snap.ok() || !snap->Get("anchor", &v).ok() || v != "a") ++bad_reads;
        ++reads;
      }
    });
  }
  const std::string value(1024, 'v');
  int failed = 0;
  for (int i = 0; i < 3000; i += 10) {
    std::vector<WriteFn> writes;
    for (int j = i; j < i + 10; ++j) writes.push_back(PutFn("k" + std::to_string(j), value));
    for (const Status& s : Run(*engine, std::move(writes))) failed += s.ok() ? 0 : 1;
  }
  stop = true;
  for (auto& t : readers) t.join();
  CHECK(failed == 0);
  CHECK(bad_reads == 0);
  CHECK(reads > 0);
  EngineStats stats = engine->Stats();
  CHECK(stats.storage.keys == 3001);
  CHECK(stats.storage.map_bytes >= (4 << 20));  // grew many times under the readers
}

TEST_CASE("after Shutdown every submission is Unavailable") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  REQUIRE(Put(*engine, "a", "1").ok());
  REQUIRE(engine->Shutdown().ok());
  auto statuses = Run(*engine, {PutFn("b", "2"), PutFn("c", "3")});
  CHECK(Codes(statuses) == "Unavailable,Unavailable,");
  CHECK(statuses[0].message() == "server is shutting down");
  CHECK(Render(*engine) == "a=1;");  // reads still work
}

TEST_CASE("shutdown completes everything queued") {
  TempDir dir;
  std::atomic<int> ok{0};
  {
    auto engine = OpenEngine(Options(dir.path()));
    for (int i = 0; i < 200; ++i) {
      engine->Submit({PutFn("k" + std::to_string(i), "v")},
                     [&](std::vector<Status> statuses, std::uint64_t) {
                       if (statuses[0].ok()) ++ok;
                     });
    }
  }  // the destructor shuts down
  CHECK(ok == 200);
  auto engine = OpenEngine(Options(dir.path()));
  CHECK(engine->Stats().storage.keys == 200);
}

TEST_CASE("checkpoints sync LMDB and trim the log") {
  TempDir dir;
  EngineOptions options = Options(dir.path());
  options.checkpoint_interval = std::chrono::milliseconds(20);
  options.log_segment_bytes = 1024;
  options.log_retain_bytes = 0;
  auto engine = OpenEngine(options);
  for (int i = 0; i < 50; ++i)
    REQUIRE(Put(*engine, "k" + std::to_string(i), std::string(100, 'v')).ok());
  EngineStats stats;
  for (int i = 0; i < 200; ++i) {
    stats = engine->Stats();
    if (stats.last_checkpoint_seq == 50) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(stats.last_checkpoint_seq == 50);
  CHECK(stats.log.segments == 1);  // everything older than the newest file is trimmed
  CHECK(stats.log.first_seq > 1);
  CHECK(stats.log.last_seq == 50);
}

TEST_CASE("fsync modes interval and never") {
  TempDir dir;
  EngineOptions options = Options(dir.path());
  options.checkpoint_interval = std::chrono::hours(24);
  SECTION("interval: syncs on a timer, not per batch") {
    options.fsync = FsyncMode::kInterval;
    options.fsync_interval = std::chrono::milliseconds(50);
    auto engine = OpenEngine(options);
    for (int i = 0; i < 20; ++i) REQUIRE(Put(*engine, "k" + std::to_string(i), "v").ok());
    CHECK(engine->Stats().fsyncs < 5);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    CHECK(engine->Stats().fsyncs >= 1);  // the idle timer synced the tail
  }
  SECTION("never") {
    options.fsync = FsyncMode::kNever;
    auto engine = OpenEngine(options);
    for (int i = 0; i < 20; ++i) REQUIRE(Put(*engine, "k" + std::to_string(i), "v").ok());
    CHECK(engine->Stats().fsyncs == 0);
  }
  auto engine = OpenEngine(options);  // reopen after the shutdown sync
  CHECK(engine->Stats().storage.keys == 20);
}

}  // namespace
}  // namespace kvstore
