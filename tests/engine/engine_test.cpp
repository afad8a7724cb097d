// Unit tests of the engine: group commit, recovery, full maps, error isolation, shutdown, and the
// replication hooks (epochs, replicated apply, the committed log, snapshot install, retention).
#include "engine/engine.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "snapshot/snapshot_format.h"
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

TEST_CASE("the records one write function logs form one unit of the log") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  WriteFn three = [](WriteContext& ctx) {
    Status s = ctx.Put("a", "1");
    if (s.ok()) s = ctx.Delete("missing").IsNotFound() ? Status::Ok() : Status::IOError("?");
    if (s.ok()) s = ctx.Put("b", "2");
    if (s.ok()) s = ctx.Clear();
    return s;
  };
  auto statuses = Run(*engine, {PutFn("x", "1"), three, PutFn("y", "2")});
  CHECK(Codes(statuses) == "OK,OK,OK,");
  auto cursor = engine->OpenLogCursor(1);
  REQUIRE(cursor.ok());
  std::string log;
  REQUIRE((*cursor)
              ->Next(engine->committed_seq(), 1 << 20,
                     [&](std::uint64_t, const LogEntry& e) {
                       log += (e.key.empty() ? "clear" : e.key) + (e.continued ? "+ " : " ");
                       return true;
                     })
              .ok());
  // Only the last record of a unit is not continued; a missing key's delete logs nothing.
  CHECK(log == "x a+ b+ clear y ");
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
  SECTION("interval: the tail of writes an event loop committed is synced on time too") {
    options.fsync = FsyncMode::kInterval;
    options.fsync_interval = std::chrono::milliseconds(100);
    auto engine = OpenEngine(options);
    for (int i = 0; i < 20; ++i) {
      engine->Enqueue({PutFn("k" + std::to_string(i), "v")}, [](std::vector<Status>, auto) {});
      engine->CommitQueued();
    }
    const std::uint64_t before = engine->Stats().fsyncs;
    // The writer thread slept towards its next checkpoint (a day away); the loop's commit
    // must have moved its deadline to the interval fsync.
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    CHECK(engine->Stats().fsyncs > before);
    CHECK(engine->Stats().fsyncs < 10);  // per interval, not per commit
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

// ---------------------------------------------------------------------------------------------
// Replication hooks.

// The statuses and the committed sequence a submission completes with.
struct Completion {
  std::vector<Status> statuses;
  std::uint64_t committed_seq = 0;
};

Completion RunWithSeq(Engine& engine, std::vector<WriteFn> writes) {
  auto done = std::make_shared<std::promise<Completion>>();
  auto result = done->get_future();
  engine.Submit(std::move(writes), [done](std::vector<Status> statuses, std::uint64_t seq) {
    done->set_value(Completion{std::move(statuses), seq});
  });
  return result.get();
}

WriteFn OpenEpochFn(std::uint64_t id, Epoch* opened) {
  return [id, opened](WriteContext& ctx) { return ctx.OpenEpoch(id, 0, opened); };
}

// An entry as "put:k=v", "delete:k", "clear" or "epoch:<number>:<id hex>".
// Applies entry as a replica does: encoded by the master at the sequence it lands on.
Status ApplyAsLogged(WriteContext& ctx, const LogEntry& entry, std::uint64_t seq = 0) {
  std::string stored;
  if (Status s = EncodeLogRecord(seq != 0 ? seq : ctx.NextSeq(), entry, &stored); !s.ok()) {
    return s;
  }
  return ApplyLoggedRecords(ctx, stored);
}

std::string RenderEntry(const LogEntry& e) {
  switch (e.type) {
    case LogEntry::Type::kPut:
      return "put:" + e.key + "=" + e.value;
    case LogEntry::Type::kDelete:
      return "delete:" + e.key;
    case LogEntry::Type::kClear:
      return "clear";
    case LogEntry::Type::kEpoch: {
      auto epoch = ParseEpochEntry(0, e);
      return epoch.ok() ? "epoch:" + EpochName(*epoch) : "bad epoch entry";
    }
  }
  return "?";
}

// The committed log from from_seq on as "seq:entry;", or the error ReadLog returned.
std::string RenderLog(Engine& engine, std::uint64_t from_seq = 1) {
  std::string out;
  Status s = engine.ReadLog(from_seq, [&](std::uint64_t seq, const LogEntry& e) {
    out += std::to_string(seq) + ":" + RenderEntry(e) + ";";
    return true;
  });
  return s.ok() ? out : s.ToString();
}

// The history as "<number>:<id hex>@<first_seq>,".
std::string RenderEpochs(const EpochHistory& history) {
  std::string out;
  for (const Epoch& e : history) out += EpochName(e) + "@" + std::to_string(e.first_seq) + ",";
  return out;
}

std::string RenderEpochs(Engine& engine) {
  auto history = engine.Epochs();
  if (!history.ok()) return history.status().ToString();
  return RenderEpochs(*history);
}

TEST_CASE("epochs opened by write functions are numbered, logged and kept across reopen") {
  TempDir dir;
  {
    auto engine = OpenEngine(Options(dir.path()));
    CHECK(RenderEpochs(*engine).empty());
    REQUIRE(Put(*engine, "a", "1").ok());  // seq 1
    Epoch first;
    std::uint64_t next_seq = 0;
    auto opened = Run(*engine, {[&](WriteContext& ctx) {
      next_seq = ctx.NextSeq();
      return ctx.OpenEpoch(0xaaa, 0, &first);
    }});
    CHECK(Codes(opened) == "OK,");
    CHECK(next_seq == 2);
    CHECK(EpochName(first) == "1:0000000000000aaa");
    CHECK(first.first_seq == 2);
    // Inside a batch: the epoch entry gets the sequence between its neighbours' entries.
    Epoch second;
    CHECK(Codes(Run(*engine, {PutFn("b", "2"), OpenEpochFn(0xbbb, &second), PutFn("c", "3")})) ==
          "OK,OK,OK,");
    CHECK(EpochName(second) == "2:0000000000000bbb");
    CHECK(second.first_seq == 4);
    CHECK(RenderEpochs(*engine) == "1:0000000000000aaa@2,2:0000000000000bbb@4,");
    CHECK(RenderLog(*engine) ==
          "1:put:a=1;2:epoch:1:0000000000000aaa;3:put:b=2;4:epoch:2:0000000000000bbb;5:put:c=3;");
    CHECK(engine->committed_seq() == 5);
    CHECK(Render(*engine) == "a=1;b=2;c=3;");  // epochs are not keys
    // The history read from a snapshot is the same.
    auto snap = engine->Read();
    REQUIRE(snap.ok());
    auto of_snapshot = Engine::EpochsOf(*snap);
    REQUIRE(of_snapshot.ok());
    CHECK(RenderEpochs(*of_snapshot) == RenderEpochs(*engine));
  }
  auto engine = OpenEngine(Options(dir.path()));
  CHECK(RenderEpochs(*engine) == "1:0000000000000aaa@2,2:0000000000000bbb@4,");
  CHECK(engine->committed_seq() == 5);
  Epoch third;
  REQUIRE(Codes(Run(*engine, {OpenEpochFn(0xccc, &third)})) == "OK,");
  CHECK(EpochName(third) == "3:0000000000000ccc");
  CHECK(third.first_seq == 6);
}

TEST_CASE("two epochs opened in one batch get consecutive numbers") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  Epoch a;
  Epoch b;
  REQUIRE(Codes(Run(*engine, {OpenEpochFn(1, &a), OpenEpochFn(2, &b)})) == "OK,OK,");
  CHECK(RenderEpochs(*engine) == "1:0000000000000001@1,2:0000000000000002@2,");
  CHECK(a.number == 1);
  CHECK(b.number == 2);
}

TEST_CASE("recovery replays epoch entries into the history") {
  TempDir dir;
  {
    // What a crash leaves: LMDB has applied seq 1, the log holds 1..5 with two epoch entries.
    SeedStorage(dir.path(), {{"a", "1"}}, 1);
    LogOptions lo;
    lo.dir = dir.path() + "/log";
    auto log = Log::Open(lo);
    REQUIRE(log.ok());
    REQUIRE((*log)->Append({{LogEntry::Type::kPut, "a", "1"}, MakeEpochEntry(1, 0x11)}).ok());
    REQUIRE((*log)->Append({{LogEntry::Type::kPut, "b", "2"}, MakeEpochEntry(2, 0x22)}).ok());
    REQUIRE((*log)->Append({{LogEntry::Type::kDelete, "a", ""}}).ok());
    REQUIRE((*log)->Sync().ok());
  }
  auto engine = OpenEngine(Options(dir.path()));
  CHECK(Render(*engine) == "b=2;");
  CHECK(RenderEpochs(*engine) == "1:0000000000000011@2,2:0000000000000022@4,");
  CHECK(engine->committed_seq() == 5);
  Epoch next;
  REQUIRE(Codes(Run(*engine, {OpenEpochFn(0x33, &next)})) == "OK,");
  CHECK(EpochName(next) == "3:0000000000000033");
  CHECK(next.first_seq == 6);
}

TEST_CASE("ApplyLogged keeps the master's sequences, even for entries that change nothing") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  REQUIRE(Put(*engine, "x", "1").ok());  // seq 1
  using T = LogEntry::Type;
  std::vector<std::uint64_t> next;
  auto done = RunWithSeq(*engine, {[&](WriteContext& ctx) {
                                     next.push_back(ctx.NextSeq());
                                     Status s = ApplyAsLogged(ctx, {T::kDelete, "missing", ""});
                                     next.push_back(ctx.NextSeq());
                                     if (s.ok()) s = ApplyAsLogged(ctx, {T::kPut, "y", "2"});
                                     if (s.ok()) s = ApplyAsLogged(ctx, {T::kDelete, "x", ""});
                                     if (s.ok()) s = ApplyAsLogged(ctx, MakeEpochEntry(7, 0x77));
                                     next.push_back(ctx.NextSeq());
                                     return s;
                                   },
                                   [&](WriteContext& ctx) {
                                     next.push_back(ctx.NextSeq());
                                     return ApplyAsLogged(ctx, {T::kDelete, "missing2", ""});
                                   }});
  CHECK(Codes(done.statuses) == "OK,OK,");
  CHECK(done.committed_seq == 6);
  CHECK(engine->committed_seq() == 6);
  CHECK(next == std::vector<std::uint64_t>{2, 3, 6, 6});
  CHECK(RenderLog(*engine, 2) ==
        "2:delete:missing;3:put:y=2;4:delete:x;5:epoch:7:0000000000000077;6:delete:missing2;");
  CHECK(Render(*engine) == "y=2;");
  CHECK(RenderEpochs(*engine) == "7:0000000000000077@5,");  // a replicated epoch is recorded too
  CHECK(engine->Stats().storage.applied_seq == 6);

  // A delete of a missing key applied alone still commits and takes a sequence.
  done = RunWithSeq(*engine, {[](WriteContext& ctx) {
    return ApplyAsLogged(ctx, {T::kDelete, "missing3", ""});
  }});
  CHECK(Codes(done.statuses) == "OK,");
  CHECK(done.committed_seq == 7);
  CHECK(RenderLog(*engine, 7) == "7:delete:missing3;");
  // Unlike an ordinary Delete of a missing key, which logs nothing.
  done = RunWithSeq(*engine, {DelFn("missing4")});
  CHECK(Codes(done.statuses) == "OK,");
  CHECK(done.committed_seq == 7);
  CHECK(engine->committed_seq() == 7);

  // A replicated clear.
  done = RunWithSeq(*engine, {[](WriteContext& ctx) {
    return ApplyAsLogged(ctx, {T::kClear, "", ""});
  }});
  CHECK(done.committed_seq == 8);
  CHECK(Render(*engine).empty());
  CHECK(RenderLog(*engine, 8) == "8:clear;");

  // An entry for another position is refused (exactly once: it lands on the sequence it
  // carries), and nothing of its function commits.
  done = RunWithSeq(*engine, {[](WriteContext& ctx) {
    Status s = ApplyAsLogged(ctx, {T::kPut, "z", "1"});
    return s.ok() ? ApplyAsLogged(ctx, {T::kPut, "z", "2"}, ctx.NextSeq() + 1) : s;
  }});
  CHECK(Codes(done.statuses) == "Corruption,");
  CHECK(engine->committed_seq() == 8);
  CHECK(Render(*engine).empty());
}

TEST_CASE("ApplyLogged logs the master's records byte for byte, unit marks included") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  std::string stored;
  LogEntry first{LogEntry::Type::kPut, "a", "1"};
  first.continued = true;
  REQUIRE(EncodeLogRecord(1, first, &stored).ok());
  REQUIRE(EncodeLogRecord(2, {LogEntry::Type::kPut, "b", "2"}, &stored).ok());
  auto done =
      RunWithSeq(*engine, {[&](WriteContext& ctx) { return ApplyLoggedRecords(ctx, stored); }});
  CHECK(Codes(done.statuses) == "OK,");
  CHECK(Render(*engine) == "a=1;b=2;");
  auto cursor = engine->OpenLogCursor(1);
  REQUIRE(cursor.ok());
  std::string logged;
  REQUIRE((*cursor)->NextRecords(2, 1 << 20, &logged).ok());
  CHECK(logged == stored);
}

TEST_CASE("ReadLog returns committed entries in order with their sequences") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  CHECK(RenderLog(*engine).empty());
  REQUIRE(Put(*engine, "a", "1").ok());
  REQUIRE(Codes(Run(*engine, {PutFn("b", "2"), DelFn("a"), PutFn("c", "3")})) == "OK,OK,OK,");
  CHECK(RenderLog(*engine) == "1:put:a=1;2:put:b=2;3:delete:a;4:put:c=3;");
  CHECK(RenderLog(*engine, 3) == "3:delete:a;4:put:c=3;");
  CHECK(RenderLog(*engine, 5).empty());  // nothing committed there yet
  CHECK(RenderLog(*engine, 100).empty());
  std::string first;
  REQUIRE(engine
              ->ReadLog(2,
                        [&](std::uint64_t seq, const LogEntry& e) {
                          first += std::to_string(seq) + ":" + RenderEntry(e) + ";";
                          return false;  // stop
                        })
              .ok());
  CHECK(first == "2:put:b=2;");
}

TEST_CASE("ReadLog never shows an entry before it is committed") {
  // The log holds a batch's entries from its append on, through the fsync, before LMDB commits.
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; i < 200 && !stop.load(); ++i) {
      if (!Put(*engine, "k" + std::to_string(i), "v").ok()) break;
    }
    stop = true;
  });
  int early = 0;
  int gaps = 0;
  int reads = 0;
  std::string first_problem;
  while (!stop.load()) {
    const std::uint64_t committed = engine->committed_seq();
    const std::uint64_t from = committed > 3 ? committed - 3 : 1;
    std::uint64_t expect = from;
    Status s = engine->ReadLog(from, [&](std::uint64_t seq, const LogEntry&) {
      if (seq > engine->committed_seq()) {
        if (early++ == 0) first_problem = "saw " + std::to_string(seq) + " uncommitted";
      }
      if (seq != expect) ++gaps;
      expect = seq + 1;
      return true;
    });
    if (!s.ok() && first_problem.empty()) first_problem = s.ToString();
    ++reads;
  }
  writer.join();
  INFO(first_problem << " after " << reads << " reads");
  CHECK(early == 0);
  CHECK(gaps == 0);
  CHECK(first_problem.empty());
  CHECK(engine->committed_seq() == 200);
}

TEST_CASE("the commit listener sees every committed sequence advance") {
  TempDir dir;
  // Declared before the engine, which may still call the listener while it shuts down.
  std::mutex mu;
  std::vector<std::uint64_t> seen;  // GUARDED_BY(mu)
  int behind = 0;                   // GUARDED_BY(mu): told before committed_seq() shows it
  auto engine = OpenEngine(Options(dir.path()));
  engine->SetCommitListener([&](std::uint64_t seq) {
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(seq);
    if (engine->committed_seq() < seq) ++behind;
  });
  REQUIRE(Put(*engine, "a", "1").ok());
  REQUIRE(Codes(Run(*engine, {PutFn("b", "2"), PutFn("c", "3")})) == "OK,OK,");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) (void)Put(*engine, "t" + std::to_string(t * 100 + i), "v");
    });
  }
  for (auto& t : threads) t.join();
  (void)Run(*engine, {DelFn("never-existed")});  // commits nothing
  REQUIRE(engine->committed_seq() == 103);
  // The listener runs after the completions: wait for the last one.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!seen.empty() && seen.back() == 103) break;
    }
    if (std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::lock_guard<std::mutex> lock(mu);
  REQUIRE_FALSE(seen.empty());
  CHECK(seen.front() == 1);
  CHECK(seen.back() == 103);
  bool increasing = true;
  for (std::size_t i = 1; i < seen.size(); ++i) increasing = increasing && seen[i] > seen[i - 1];
  CHECK(increasing);
  CHECK(seen.size() <= engine->Stats().commits);
  CHECK(behind == 0);
}

// Writes a snapshot file of the given content; frame_bytes small so that a file holds many frames.
void WriteSnapshot(const std::string& path, std::uint64_t applied_seq, std::string_view meta,
                   const std::vector<std::pair<std::string, std::string>>& pairs,
                   std::size_t frame_bytes = 16) {
  SnapshotEncoder encoder(frame_bytes);
  std::string bytes;
  encoder.Begin(applied_seq, meta, &bytes);
  for (const auto& [k, v] : pairs) encoder.Add(k, v, &bytes);
  encoder.Finish(&bytes);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void WriteWholeFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

TEST_CASE("InstallSnapshot replaces the key space, the history and the log position") {
  TempDir dir;
  testing::TempDir files("kvstore_engine_test_snapshot");
  const std::string path = files.path() + "/snapshot";
  const EpochHistory history = {{1, 0x1, 1}, {3, 0x3, 200}};
  WriteSnapshot(path, 500, EncodeEpochHistory(history),
                {{"a", "1"}, {"b", "from snapshot"}, {"c", ""}, {"d", std::string(100, 'd')}});
  {
    std::mutex mu;
    std::string told;  // GUARDED_BY(mu)
    auto engine = OpenEngine(Options(dir.path()));
    engine->SetCommitListener([&](std::uint64_t seq) {
      std::lock_guard<std::mutex> lock(mu);
      told += std::to_string(seq) + ",";
    });
    REQUIRE(Put(*engine, "b", "old").ok());
    REQUIRE(Put(*engine, "old", "x").ok());
    Epoch local;
    REQUIRE(Codes(Run(*engine, {OpenEpochFn(0x99, &local)})) == "OK,");

    Status s = engine->InstallSnapshot(path);
    INFO(s.ToString());
    REQUIRE(s.ok());
    CHECK(Render(*engine) == "a=1;b=from snapshot;c=;d=" + std::string(100, 'd') + ";");
    CHECK(engine->committed_seq() == 500);
    CHECK(engine->Stats().storage.applied_seq == 500);
    CHECK(RenderEpochs(*engine) == RenderEpochs(history));
    // The old log is gone: a replica asking for it needs a full resync.
    CHECK(RenderLog(*engine, 1).rfind("NotFound", 0) == 0);
    CHECK(RenderLog(*engine, 501).empty());

    auto done = RunWithSeq(*engine, {PutFn("e", "5")});
    CHECK(Codes(done.statuses) == "OK,");
    CHECK(done.committed_seq == 501);
    CHECK(RenderLog(*engine, 501) == "501:put:e=5;");
    Epoch next;
    REQUIRE(Codes(Run(*engine, {OpenEpochFn(0x4, &next)})) == "OK,");
    CHECK(EpochName(next) == "4:0000000000000004");
    CHECK(next.first_seq == 502);
    CHECK(engine->Stats().log.last_seq == 502);
    // Told of the installed position, then of the write after it (502 may still be on its way).
    std::lock_guard<std::mutex> lock(mu);
    CHECK(told.substr(0, 14) == "1,2,3,500,501,");
  }
  auto engine = OpenEngine(Options(dir.path()));
  CHECK(Render(*engine) == "a=1;b=from snapshot;c=;d=" + std::string(100, 'd') + ";e=5;");
  CHECK(engine->committed_seq() == 502);
  CHECK(RenderEpochs(*engine) ==
        "1:0000000000000001@1,3:0000000000000003@200,4:0000000000000004@502,");
  CHECK(RenderLog(*engine, 501) == "501:put:e=5;502:epoch:4:0000000000000004;");
}

TEST_CASE("an install only into an empty key space refuses one that got a write") {
  TempDir dir;
  testing::TempDir files("kvstore_engine_test_snapshot");
  const std::string path = files.path() + "/snapshot";
  WriteSnapshot(path, 500, EncodeEpochHistory({{2, 0x2, 40}}), {{"k", "v"}});
  auto engine = OpenEngine(Options(dir.path()));
  // Acknowledged before the install runs: the install must see it and leave it alone.
  REQUIRE(Put(*engine, "mine", "1").ok());
  Status s = engine->InstallSnapshot(path, /*only_into_empty=*/true);
  INFO(s.ToString());
  CHECK(s.code() == Status::Code::kInvalidArgument);
  CHECK(s.message().find("holds 1 keys") != std::string::npos);
  CHECK(Render(*engine) == "mine=1;");
  // Without it (FORCE, a replica's full resync) a non-empty key space is replaced.
  REQUIRE(engine->InstallSnapshot(path).ok());
  CHECK(Render(*engine) == "k=v;");
}

// Puts until more than half of the map is in use, without a growth yet (values of 4 KiB take a
// page each).
void FillPastHalf(Engine& engine) {
  const std::uint64_t map_bytes = engine.Stats().storage.map_bytes;
  for (int i = 0; engine.Stats().storage.used_bytes * 2 <= map_bytes; ++i) {
    REQUIRE(Put(engine, "key" + std::to_string(i), std::string(4096, 'v')).ok());
  }
}

TEST_CASE("a map more than half used grows ahead of a snapshot, a roomier one does not") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  const std::uint64_t initial = engine->Stats().storage.map_bytes;
  REQUIRE(engine->GrowAheadOfSnapshot().ok());
  CHECK(engine->Stats().storage.map_bytes == initial);  // nearly empty: nothing to do
  FillPastHalf(*engine);
  REQUIRE(engine->Stats().storage.map_bytes == initial);
  {
    // Another snapshot is live (a backup being written): no growth, and no wait for it.
    auto live = engine->Read();
    REQUIRE(live.ok());
    REQUIRE(engine->GrowAheadOfSnapshot().ok());
  }
  CHECK(engine->Stats().storage.map_bytes == initial);
  REQUIRE(engine->GrowAheadOfSnapshot().ok());
  CHECK(engine->Stats().storage.map_bytes == 2 * initial);
  // At its limit the map stays as it is, and that is no error.
  TempDir other;
  EngineOptions small = Options(other.path());
  small.initial_map_bytes = small.max_map_bytes = 2 << 20;
  auto limited = OpenEngine(small);
  const std::uint64_t limit = limited->Stats().storage.map_bytes;
  FillPastHalf(*limited);
  CHECK(limited->GrowAheadOfSnapshot().ok());
  CHECK(limited->Stats().storage.map_bytes == limit);
}

TEST_CASE("an installed snapshot survives a reopen before any write") {
  TempDir dir;
  testing::TempDir files("kvstore_engine_test_snapshot");
  const std::string path = files.path() + "/snapshot";
  WriteSnapshot(path, 500, EncodeEpochHistory({{2, 0x2, 40}}), {{"k", "v"}});
  {
    auto engine = OpenEngine(Options(dir.path()));
    for (int i = 0; i < 10; ++i) REQUIRE(Put(*engine, "old" + std::to_string(i), "x").ok());
    REQUIRE(engine->InstallSnapshot(path).ok());
  }
  auto engine = OpenEngine(Options(dir.path()));
  CHECK(Render(*engine) == "k=v;");
  CHECK(engine->committed_seq() == 500);
  CHECK(RenderEpochs(*engine) == "2:0000000000000002@40,");
  auto done = RunWithSeq(*engine, {PutFn("n", "1")});
  CHECK(done.committed_seq == 501);
  CHECK(RenderLog(*engine, 501) == "501:put:n=1;");
}

TEST_CASE("a damaged snapshot is refused and changes nothing") {
  TempDir dir;
  testing::TempDir files("kvstore_engine_test_snapshot");
  const std::string path = files.path() + "/snapshot";
  std::vector<std::pair<std::string, std::string>> pairs;
  for (int i = 0; i < 50; ++i) pairs.emplace_back("s" + std::to_string(100 + i), "value");
  WriteSnapshot(path, 500, EncodeEpochHistory({{1, 0x1, 1}}), pairs);
  const std::string good = ReadWholeFile(path);
  REQUIRE(good.size() > 200);

  auto engine = OpenEngine(Options(dir.path()));
  REQUIRE(Put(*engine, "b", "old").ok());
  REQUIRE(Put(*engine, "old", "x").ok());
  Epoch local;
  REQUIRE(Codes(Run(*engine, {OpenEpochFn(0x99, &local)})) == "OK,");
  const std::string before = Render(*engine);

  Status::Code expected = Status::Code::kCorruption;
  std::string names;  // part of the message
  SECTION("a flipped byte in the last data frame, after many pairs were loaded") {
    std::string bad = good;
    bad[bad.size() - 25 - 3] ^= 0x01;  // the end frame is the last 25 bytes
    WriteWholeFile(path, bad);
    names = "checksum";
  }
  SECTION("truncated in the middle of the data") {
    WriteWholeFile(path, good.substr(0, good.size() / 2));
    names = "truncated";
  }
  SECTION("truncated right before the end frame") {
    WriteWholeFile(path, good.substr(0, good.size() - 25));
    names = "truncated";
  }
  SECTION("a meta that is not an epoch history") {
    WriteSnapshot(path, 500, "not a history", pairs);
    names = "epoch history";
  }
  SECTION("a missing file") {
    std::filesystem::remove(path);
    expected = Status::Code::kIOError;
    names = path;
  }
  Status s = engine->InstallSnapshot(path);
  INFO(s.ToString());
  CHECK(s.code() == expected);
  CHECK(s.message().find(names) != std::string::npos);
  CHECK(Render(*engine) == before);
  CHECK(engine->committed_seq() == 3);
  CHECK(RenderEpochs(*engine) == "1:0000000000000099@3,");
  CHECK(RenderLog(*engine) == "1:put:b=old;2:put:old=x;3:epoch:1:0000000000000099;");
  // The engine goes on from where it was.
  auto done = RunWithSeq(*engine, {PutFn("after", "1")});
  CHECK(Codes(done.statuses) == "OK,");
  CHECK(done.committed_seq == 4);
  CHECK_FALSE(engine->Stats().poisoned);
}

TEST_CASE("a snapshot larger than the map grows it") {
  TempDir dir;
  testing::TempDir files("kvstore_engine_test_snapshot");
  const std::string path = files.path() + "/snapshot";
  std::vector<std::pair<std::string, std::string>> pairs;
  for (int i = 0; i < 300; ++i)
    pairs.emplace_back("k" + std::to_string(1000 + i), std::string(10000, 'v'));
  WriteSnapshot(path, 500, "", pairs, 64 << 10);
  auto engine = OpenEngine(Options(dir.path()));  // a 1 MiB map
  REQUIRE(Put(*engine, "old", "x").ok());
  Status s = engine->InstallSnapshot(path);
  INFO(s.ToString());
  REQUIRE(s.ok());
  EngineStats stats = engine->Stats();
  CHECK(stats.storage.keys == 300);
  CHECK(stats.storage.map_bytes > (3 << 20));
  CHECK(engine->committed_seq() == 500);
  auto snap = engine->Read();
  REQUIRE(snap.ok());
  std::string v;
  CHECK(snap->Get("old", &v).IsNotFound());
  REQUIRE(snap->Get("k1299", &v).ok());
  CHECK(v.size() == 10000);
}

// The storage as a snapshot install leaves it when a crash comes before the install is finished:
// the snapshot's pairs at applied_seq, and the engine's mark that the log must restart after it.
// (The mark's name and encoding are the engine's, see kLogRestartMeta in engine.cpp.)
void SeedInstalledStorage(const std::string& data_dir,
                          const std::vector<std::pair<std::string, std::string>>& pairs,
                          std::uint64_t applied_seq) {
  StorageOptions so;
  so.dir = data_dir + "/db";
  auto storage = Storage::Open(so);
  REQUIRE(storage.ok());
  auto txn = (*storage)->BeginWrite();
  REQUIRE(txn.ok());
  REQUIRE(txn->Clear().ok());
  for (const auto& [key, value] : pairs) REQUIRE(txn->Put(key, value).ok());
  REQUIRE(txn->SetAppliedSeq(applied_seq).ok());
  REQUIRE(txn->PutMeta("epochs", EncodeEpochHistory({{1, 0x1, 1}})).ok());
  std::string restart;
  for (int i = 0; i < 8; ++i)
    restart.push_back(static_cast<char>(((applied_seq + 1) >> (8 * i)) & 0xff));
  REQUIRE(txn->PutMeta("log_restart", restart).ok());
  REQUIRE(txn->Commit().ok());
  REQUIRE((*storage)->Sync().ok());
}

TEST_CASE("a crash after an install's commit, before its log restart, restarts the log at open") {
  TempDir dir;
  {
    auto engine = OpenEngine(Options(dir.path()));
    for (int i = 0; i < 3; ++i) REQUIRE(Put(*engine, "old" + std::to_string(i), "x").ok());
  }
  SeedInstalledStorage(dir.path(), {{"snap", "1"}}, 500);  // the log still holds 1..3
  {
    auto engine = OpenEngine(Options(dir.path()));
    CHECK(Render(*engine) == "snap=1;");
    CHECK(engine->committed_seq() == 500);
    CHECK(RenderEpochs(*engine) == "1:0000000000000001@1,");
    CHECK(RenderLog(*engine, 1).rfind("NotFound", 0) == 0);  // the old log is gone
    auto done = RunWithSeq(*engine, {PutFn("new", "2")});
    CHECK(done.committed_seq == 501);
  }
  auto engine = OpenEngine(Options(dir.path()));
  CHECK(Render(*engine) == "new=2;snap=1;");
  CHECK(RenderLog(*engine, 501) == "501:put:new=2;");
}

// The commit that deletes the log_restart mark may be lost to a power cut while the restarted
// log already holds fsynced, acknowledged writes: Open must then keep that log (it starts at the
// mark's sequence) instead of restarting it again. The test builds that on-disk state directly:
// LMDB as synced by the install (mark set, applied 500), the log restarted at 501 with durable
// entries 501..503.
TEST_CASE("a power loss after an install does not lose the writes logged after it") {
  TempDir dir;
  SeedInstalledStorage(dir.path(), {{"snap", "1"}}, 500);
  {
    LogOptions lo;
    lo.dir = dir.path() + "/log";
    auto log = Log::Open(lo);
    REQUIRE(log.ok());
    REQUIRE((*log)->ResetStart(501).ok());
    REQUIRE((*log)->Append({{LogEntry::Type::kPut, "a", "1"}}).ok());
    REQUIRE((*log)
                ->Append({{LogEntry::Type::kPut, "b", "2"}, {LogEntry::Type::kDelete, "snap", ""}})
                .ok());
    REQUIRE((*log)->Sync().ok());
  }
  auto engine = OpenEngine(Options(dir.path()));
  CHECK(Render(*engine) == "a=1;b=2;");
  CHECK(engine->committed_seq() == 503);
  CHECK(RenderLog(*engine, 501) == "501:put:a=1;502:put:b=2;503:delete:snap;");
}

// Polls until the engine has checkpointed seq; bounded.
bool WaitForCheckpoint(Engine& engine, std::uint64_t seq) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (engine.Stats().last_checkpoint_seq == seq) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// Committed sequences from from_seq on as "first..last", or the error.
std::string LogRange(Engine& engine, std::uint64_t from_seq) {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  bool consecutive = true;
  Status s = engine.ReadLog(from_seq, [&](std::uint64_t seq, const LogEntry&) {
    if (first == 0) first = seq;
    if (last != 0 && seq != last + 1) consecutive = false;
    last = seq;
    return true;
  });
  if (!s.ok()) return std::string(Status::CodeName(s.code()));
  return std::to_string(first) + ".." + std::to_string(last) + (consecutive ? "" : " with gaps");
}

TEST_CASE("the retention pin keeps the log entries a replica still needs") {
  TempDir dir;
  EngineOptions options = Options(dir.path());
  options.checkpoint_interval = std::chrono::milliseconds(10);
  options.log_segment_bytes = 256;  // about two entries per file
  options.log_retain_bytes = 0;
  std::atomic<std::uint64_t> pin{0};
  auto engine = OpenEngine(options);
  SECTION("without a pin, checkpoints trim") {
    for (int i = 0; i < 30; ++i)
      REQUIRE(Put(*engine, "k" + std::to_string(i), std::string(100, 'v')).ok());
    REQUIRE(WaitForCheckpoint(*engine, 30));
    CHECK(LogRange(*engine, 1) == "NotFound");
    CHECK(engine->Stats().log.first_seq > 20);
    CHECK(LogRange(*engine, 30) == "30..30");
  }
  SECTION("with a pin, everything from the pinned sequence stays") {
    pin = 1;
    engine->SetRetentionPin([&pin] { return pin.load(); });
    for (int i = 0; i < 30; ++i)
      REQUIRE(Put(*engine, "k" + std::to_string(i), std::string(100, 'v')).ok());
    REQUIRE(WaitForCheckpoint(*engine, 30));
    CHECK(LogRange(*engine, 1) == "1..30");
    CHECK(engine->Stats().log.first_seq == 1);
    // The replica moves on: what it no longer needs goes at the next checkpoint.
    pin = 20;
    REQUIRE(Put(*engine, "more", "1").ok());
    REQUIRE(WaitForCheckpoint(*engine, 31));
    CHECK(LogRange(*engine, 20) == "20..31");
    CHECK(LogRange(*engine, 1) == "NotFound");
    CHECK(engine->Stats().log.first_seq > 1);
    CHECK(engine->Stats().log.first_seq <= 20);
  }
}

TEST_CASE("stats histogram every log fsync and the size of every group commit") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  const EngineStats before = engine->Stats();
  REQUIRE(Codes(Run(*engine, {PutFn("a", "1"), PutFn("b", "2"), PutFn("c", "3")})) == "OK,OK,OK,");
  REQUIRE(Codes(Run(*engine, {PutFn("d", "4")})) == "OK,");
  const EngineStats after = engine->Stats();
  // fsync: always syncs once per group commit; the histogram counts exactly the fsyncs.
  CHECK(after.fsync_seconds.count() == after.fsyncs);
  CHECK(after.fsyncs - before.fsyncs == 2);
  CHECK(after.fsync_seconds.sum > before.fsync_seconds.sum);
  CHECK(after.batch_writes.count() - before.batch_writes.count() == 2);
  CHECK(after.batch_writes.sum - before.batch_writes.sum == 4.0);
}

TEST_CASE("CommitQueued commits enqueued writes on the calling thread, as one group") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  // A barrier first, and time for the writer thread to finish that pass: it then waits for a
  // wake-up (or its next checkpoint, 10 s away), so it neither holds the writer role nor takes
  // the queue from under this test.
  REQUIRE(Run(*engine, {}).empty());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const std::thread::id caller = std::this_thread::get_id();
  std::vector<std::thread::id> ran_on;  // completions run before CommitQueued returns
  std::string results;
  for (int i = 0; i < 5; ++i) {
    engine->Enqueue({PutFn("k" + std::to_string(i), "v")},
                    [&](std::vector<Status> statuses, std::uint64_t seq) {
                      ran_on.push_back(std::this_thread::get_id());
                      results += Codes(statuses) + std::to_string(seq) + ";";
                    });
  }
  const EngineStats before = engine->Stats();
  engine->CommitQueued();
  REQUIRE(ran_on.size() == 5);
  for (const auto& id : ran_on) CHECK(id == caller);
  CHECK(results == "OK,5;OK,5;OK,5;OK,5;OK,5;");
  const EngineStats after = engine->Stats();
  CHECK(after.commits == before.commits + 1);
  CHECK(after.fsyncs == before.fsyncs + 1);
  CHECK(Render(*engine) == "k0=v;k1=v;k2=v;k3=v;k4=v;");
  engine->CommitQueued();  // nothing queued: returns at once
  CHECK(engine->Stats().commits == after.commits);
}

TEST_CASE("CommitQueued leaves a snapshot install and what follows it to the writer thread") {
  TempDir dir;
  testing::TempDir files("kvstore_engine_test_snapshot");
  const std::string path = files.path() + "/snapshot";
  WriteSnapshot(path, 100, EncodeEpochHistory({{1, 0x1, 1}}), {{"from", "snapshot"}});
  auto engine = OpenEngine(Options(dir.path()));
  // The writer thread is busy with a write function that waits for this test's signal, so the
  // requests queued meanwhile are still in the queue when CommitQueued runs.
  std::promise<void> release;
  auto released = release.get_future().share();
  std::promise<void> started;
  engine->Submit({[&started, released](WriteContext& ctx) {
                   started.set_value();
                   released.wait();
                   return ctx.Put("first", "1");
                 }},
                 [](std::vector<Status>, std::uint64_t) {});
  started.get_future().wait();
  std::string order;
  std::mutex order_mu;
  auto note = [&](std::string what) {
    std::lock_guard<std::mutex> lock(order_mu);
    order += what + ";";
  };
  engine->Enqueue({PutFn("before", "1")},
                  [&](std::vector<Status>, std::uint64_t) { note("before"); });
  auto install = std::async(std::launch::async, [&] { return engine->InstallSnapshot(path); });
  // Wait until the install is queued behind "before".
  for (int i = 0; i < 2000 && engine->Stats().queued_requests < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(engine->Stats().queued_requests == 2);
  engine->Enqueue({PutFn("after", "1")},
                  [&](std::vector<Status>, std::uint64_t) { note("after"); });
  std::thread committer([&] { engine->CommitQueued(); });
  release.set_value();
  committer.join();
  // CommitQueued found the writer thread busy and left the queue to it, or (had it come later)
  // ran "before" and stopped at the install: either way "before", the install, then "after".
  REQUIRE(install.get().ok());
  for (int i = 0; i < 200 && order.find("after") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::lock_guard<std::mutex> lock(order_mu);
  CHECK(order == "before;after;");
  CHECK(Render(*engine) == "after=1;from=snapshot;");
  CHECK(engine->Stats().queued_requests == 0);
}

TEST_CASE("CommitQueued leaves a submitted request and what follows it to the writer thread") {
  // A replica submits a large replicated transaction instead of enqueuing it, so that its event
  // loop, which serves its readers, does not spend seconds applying it.
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  REQUIRE(Run(*engine, {}).empty());  // then the writer thread waits for a wake-up
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const std::thread::id caller = std::this_thread::get_id();
  std::mutex mu;
  std::vector<std::thread::id> ran_on;  // GUARDED_BY(mu)
  std::string order;                    // GUARDED_BY(mu)
  auto put = [&](std::string key) {
    return [&, key](WriteContext& ctx) {
      {
        std::lock_guard<std::mutex> lock(mu);
        ran_on.push_back(std::this_thread::get_id());
        order += key + ";";
      }
      return ctx.Put(key, "1");
    };
  };
  std::atomic<int> completed{0};
  engine->Submit({put("large")}, [&](std::vector<Status>, std::uint64_t) { ++completed; });
  engine->Enqueue({put("small")}, [&](std::vector<Status>, std::uint64_t) { ++completed; });
  engine->CommitQueued();  // what a loop does at the end of its pass
  for (int i = 0; i < 500 && completed < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(completed == 2);
  std::lock_guard<std::mutex> lock(mu);
  CHECK(order == "large;small;");
  for (const auto& id : ran_on) CHECK(id != caller);
  CHECK(Render(*engine) == "large=1;small=1;");
}

TEST_CASE("event loops and the writer thread committing at once keep every request in order") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  // Each appender writes its own key 0..n-1 in order, alternating Enqueue and Submit, while
  // two threads call CommitQueued in a loop: every value read back must be the last one.
  constexpr int kAppenders = 8;
  constexpr int kWrites = 3000;
  std::atomic<bool> done{false};
  std::vector<std::thread> committers;
  for (int c = 0; c < 2; ++c) {
    committers.emplace_back([&] {
      while (!done) engine->CommitQueued();
    });
  }
  std::atomic<int> out_of_order{0};
  std::vector<std::thread> appenders;
  for (int a = 0; a < kAppenders; ++a) {
    appenders.emplace_back([&, a] {
      auto last = std::make_shared<std::atomic<int>>(-1);
      std::vector<std::future<void>> pending;
      for (int i = 0; i < kWrites; ++i) {
        auto finished = std::make_shared<std::promise<void>>();
        pending.push_back(finished->get_future());
        WriteFn fn = [a, i](WriteContext& ctx) {
          return ctx.Put("k" + std::to_string(a), std::to_string(i));
        };
        WriteDone on_done = [last, i, finished, &out_of_order](std::vector<Status> s,
                                                               std::uint64_t) {
          if (!s[0].ok() || last->exchange(i) != i - 1) ++out_of_order;
          finished->set_value();
        };
        if (i % 2 == 0) {
          engine->Enqueue({fn}, on_done);
        } else {
          engine->Submit({fn}, on_done);
        }
      }
      for (auto& f : pending) f.wait();
    });
  }
  for (auto& t : appenders) t.join();
  done = true;
  for (auto& t : committers) t.join();
  CHECK(out_of_order == 0);
  CHECK(Render(*engine) == "k0=2999;k1=2999;k2=2999;k3=2999;k4=2999;k5=2999;k6=2999;k7=2999;");
  CHECK(engine->Stats().log.last_seq == kAppenders * kWrites);
}

TEST_CASE("checkpoints run while event loops commit, across map growth") {
  TempDir dir;
  EngineOptions options = Options(dir.path());
  options.checkpoint_interval = std::chrono::milliseconds(5);
  options.initial_map_bytes = 1 << 20;  // grows several times below
  options.log_segment_bytes = 64 << 10;
  options.log_retain_bytes = 0;
  auto engine = OpenEngine(options);
  constexpr int kBatches = 400;
  constexpr int kPerBatch = 20;
  // Counted on whichever thread commits: the loop, or the writer thread when a checkpoint held
  // the writer role as the loop tried.
  std::atomic<int> acknowledged{0};
  for (int b = 0; b < kBatches; ++b) {
    for (int i = 0; i < kPerBatch; ++i) {
      engine->Enqueue({PutFn(fmt::format("k{:06}", b * kPerBatch + i), std::string(200, 'v'))},
                      [&](std::vector<Status> statuses, std::uint64_t) {
                        if (statuses[0].ok()) ++acknowledged;
                      });
    }
    engine->CommitQueued();
  }
  for (int i = 0; i < 500 && acknowledged < kBatches * kPerBatch; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(acknowledged == kBatches * kPerBatch);
  EngineStats stats;
  for (int i = 0; i < 200; ++i) {
    stats = engine->Stats();
    if (stats.last_checkpoint_seq == kBatches * kPerBatch) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(stats.last_checkpoint_seq == kBatches * kPerBatch);
  CHECK(stats.storage.keys == kBatches * kPerBatch);
  CHECK(stats.storage.map_bytes > (1u << 20));
  // (Trimming is "checkpoints sync LMDB and trim the log"'s: here the log may not even roll,
  // when its next segment is still being prepared on a loaded machine.)
  REQUIRE(engine->Shutdown().ok());
  engine.reset();
  auto reopened = OpenEngine(options);
  CHECK(reopened->Stats().storage.keys == kBatches * kPerBatch);
}

TEST_CASE("CommitQueued does not wait for a busy writer role; what it leaves is committed") {
  TempDir dir;
  auto engine = OpenEngine(Options(dir.path()));
  // Loop A holds the writer role inside a write function until released.
  std::promise<void> release;
  auto released = release.get_future().share();
  std::promise<void> holding;
  std::thread loop_a([&] {
    engine->Enqueue({[&holding, released](WriteContext& ctx) {
                      holding.set_value();
                      released.wait();
                      return ctx.Put("a", "1");
                    }},
                    [](std::vector<Status>, std::uint64_t) {});
    engine->CommitQueued();
  });
  holding.get_future().wait();
  // Loop B: its commit returns at once, leaving its write queued.
  std::promise<std::thread::id> committed_on;
  auto committed = committed_on.get_future();
  engine->Enqueue({PutFn("b", "2")}, [&](std::vector<Status> statuses, std::uint64_t) {
    CHECK(statuses[0].ok());
    committed_on.set_value(std::this_thread::get_id());
  });
  const auto started = std::chrono::steady_clock::now();
  engine->CommitQueued();
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::milliseconds(500));
  CHECK(committed.wait_for(std::chrono::milliseconds(50)) == std::future_status::timeout);
  release.set_value();
  const std::thread::id loop_a_id = loop_a.get_id();
  loop_a.join();
  // Loop A let go of the role and handed B's write to the writer thread, at once (its own timer
  // would only come at the next checkpoint, 10 s away).
  REQUIRE(committed.wait_for(std::chrono::seconds(3)) == std::future_status::ready);
  const std::thread::id by = committed.get();
  CHECK(by != std::this_thread::get_id());
  CHECK(by != loop_a_id);
  CHECK(Render(*engine) == "a=1;b=2;");
}

// A replica's applies, as ReplicaLink enqueues them: one batch per CommitQueued.
struct DeferredApplies {
  std::mutex mu;
  std::vector<std::uint64_t> completed_seqs;  // GUARDED_BY(mu)
  std::vector<std::string> codes;             // GUARDED_BY(mu)

  // Returns once the batch is committed (visible), not acknowledged.
  void Apply(Engine& engine, std::string key) {
    const std::uint64_t before = engine.committed_seq();
    engine.Enqueue(
        {[key](WriteContext& ctx) {
          return ApplyAsLogged(ctx, {LogEntry::Type::kPut, key, "v"});
        }},
        [this](std::vector<Status> statuses, std::uint64_t seq) {
          std::lock_guard lock(mu);
          completed_seqs.push_back(seq);
          codes.push_back(Codes(statuses));
        },
        Engine::Origin::kReplicaApply);
    engine.CommitQueued();
    // CommitQueued leaves the batch to the writer thread when that thread holds the writer role
    // just then (woken by a sync timer; seen under ASan on a loaded machine): it commits it at
    // once, but after CommitQueued returns, and might take it with the next one.
    for (int i = 0; i < 50 && engine.committed_seq() == before; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  std::size_t completed() {
    std::lock_guard lock(mu);
    return completed_seqs.size();
  }
  bool WaitCompleted(std::size_t n, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (completed() < n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return completed() >= n;
  }
};

TEST_CASE("a replica's batches are visible at once and share one fsync, at most the delay later") {
  TempDir dir;
  EngineOptions options = Options(dir.path());
  options.replicated_sync_delay = std::chrono::milliseconds(300);
  auto engine = OpenEngine(options);
  REQUIRE(Run(*engine, {}).empty());  // then the writer thread waits (see the test above)
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const EngineStats before = engine->Stats();
  DeferredApplies applies;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) applies.Apply(*engine, "k" + std::to_string(i));
  // Visible, committed, but neither synced nor acknowledged yet.
  CHECK(Render(*engine) == "k0=v;k1=v;k2=v;");
  CHECK(engine->committed_seq() == 3);
  CHECK(engine->durable_seq() == 0);
  CHECK(engine->Stats().commits == before.commits + 3);
  CHECK(engine->Stats().fsyncs == before.fsyncs);
  CHECK(applies.completed() == 0);
  // The writer thread's timer syncs once for all three.
  REQUIRE(applies.WaitCompleted(3, std::chrono::seconds(5)));
  const auto waited = std::chrono::steady_clock::now() - started;
  CHECK(waited >= std::chrono::milliseconds(250));
  CHECK(engine->Stats().fsyncs == before.fsyncs + 1);
  CHECK(engine->durable_seq() == 3);
  std::lock_guard lock(applies.mu);
  CHECK(applies.completed_seqs == std::vector<std::uint64_t>{3, 3, 3});
  CHECK(applies.codes == std::vector<std::string>{"OK,", "OK,", "OK,"});
}

TEST_CASE("a barrier, a client write or a shutdown syncs a replica's waiting batches at once") {
  TempDir dir;
  EngineOptions options = Options(dir.path());
  options.replicated_sync_delay = std::chrono::milliseconds(1000);
  auto engine = OpenEngine(options);
  REQUIRE(Run(*engine, {}).empty());  // then the writer thread waits (see above)
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  DeferredApplies applies;
  const auto started = std::chrono::steady_clock::now();
  applies.Apply(*engine, "a");
  applies.Apply(*engine, "b");
  CHECK(applies.completed() == 0);

  SECTION("a replication barrier (an acknowledgement request)") {
    std::atomic<std::uint64_t> barrier_seq{0};
    std::atomic<std::size_t> completed_before_barrier{0};
    engine->Enqueue(
        {},
        [&](std::vector<Status>, std::uint64_t seq) {
          completed_before_barrier = applies.completed();
          barrier_seq = seq;
        },
        Engine::Origin::kReplication);
    const std::uint64_t fsyncs = engine->Stats().fsyncs;
    engine->CommitQueued();
    // Usually committed on this thread; by the writer thread if that held the writer role just
    // then (seen under ASan). Either way far sooner than the 1 s delay (checked below).
    for (int i = 0; i < 500 && barrier_seq.load() == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    CHECK(completed_before_barrier.load() == 2);  // the applies complete before the barrier
    CHECK(barrier_seq.load() == 2);
    CHECK(engine->durable_seq() == 2);
    CHECK(engine->Stats().fsyncs == fsyncs + 1);
  }
  SECTION("a client write") {
    CHECK(engine->durable_seq() == 0);
    REQUIRE(Put(*engine, "c", "1").ok());
    CHECK(applies.completed() == 2);
    CHECK(engine->durable_seq() == 3);
  }
  SECTION("shutdown, and the entries survive it") {
    REQUIRE(engine->Shutdown().ok());
    CHECK(applies.completed() == 2);
    engine.reset();
    engine = OpenEngine(options);
    CHECK(Render(*engine) == "a=v;b=v;");
  }
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::milliseconds(900));
  std::lock_guard lock(applies.mu);
  CHECK(applies.codes == std::vector<std::string>{"OK,", "OK,"});
}

TEST_CASE("without a delay, or in fsync interval, a replica's batch completes in its commit") {
  TempDir dir;
  EngineOptions options = Options(dir.path());
  options.replicated_sync_delay = std::chrono::milliseconds(0);
  SECTION("delay 0: one fsync per batch") {}
  SECTION("fsync interval: no deferring") {
    options.fsync = FsyncMode::kInterval;
    options.replicated_sync_delay = std::chrono::milliseconds(1000);
  }
  SECTION("other replication writes (an epoch): no deferring") {
    options.replicated_sync_delay = std::chrono::milliseconds(1000);
    auto engine = OpenEngine(options);
    Epoch opened;
    const auto started = std::chrono::steady_clock::now();
    auto done = std::make_shared<std::promise<std::vector<Status>>>();
    engine->Submit(
        {[&opened](WriteContext& ctx) { return ctx.OpenEpoch(7, 0, &opened); }},
        [done](std::vector<Status> statuses, std::uint64_t) {
          done->set_value(std::move(statuses));
        },
        Engine::Origin::kReplication);
    CHECK(Codes(done->get_future().get()) == "OK,");
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::milliseconds(800));
    CHECK(engine->durable_seq() == 1);
    return;
  }
  auto engine = OpenEngine(options);
  REQUIRE(Run(*engine, {}).empty());  // then the writer thread waits (see above)
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  DeferredApplies applies;
  const std::uint64_t fsyncs = engine->Stats().fsyncs;
  applies.Apply(*engine, "a");
  CHECK(applies.completed() == 1);
  applies.Apply(*engine, "b");
  CHECK(applies.completed() == 2);
  if (options.fsync == FsyncMode::kAlways) CHECK(engine->Stats().fsyncs == fsyncs + 2);
}

// ---- Installs that do not fit beside the data they replace -------------------------------------

// A map of 4 MiB (3.75 MiB for puts); values of 3000 bytes take a page (4 KiB) each.
EngineOptions SmallMapOptions(const std::string& dir) {
  EngineOptions options = Options(dir);
  options.max_map_bytes = 4 << 20;
  return options;
}

std::vector<std::pair<std::string, std::string>> PagePairs(std::string_view prefix, int count) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (int i = 0; i < count; ++i) {
    pairs.emplace_back(fmt::format("{}{:05}", prefix, i), std::string(3000, prefix[0]));
  }
  return pairs;
}

void PutPairs(Engine& engine, const std::vector<std::pair<std::string, std::string>>& pairs) {
  std::vector<WriteFn> writes;
  for (const auto& [k, v] : pairs) writes.push_back(PutFn(k, v));
  for (const Status& s : Run(engine, std::move(writes))) REQUIRE(s.ok());
}

// The key space in brief: "<keys> keys, <first key>..<last key>, <hash of Render>".
std::string Summary(Engine& engine) {
  const std::string all = Render(engine);
  auto snap = engine.Read();
  REQUIRE(snap.ok());
  std::string first;
  std::string last;
  REQUIRE(snap->Scan("", false,
                     [&](std::string_view k, std::string_view) {
                       if (first.empty()) first = k;
                       last = k;
                       return true;
                     })
              .ok());
  return fmt::format("{} keys, {}..{}, {:016x}", snap->KeyCount(), first, last,
                     std::hash<std::string>{}(all));
}

std::string SummaryOf(const std::vector<std::pair<std::string, std::string>>& pairs) {
  std::string all;
  for (const auto& [k, v] : pairs) all.append(k).append("=").append(v).append(";");
  return fmt::format("{} keys, {}..{}, {:016x}", pairs.size(), pairs.front().first,
                     pairs.back().first, std::hash<std::string>{}(all));
}

TEST_CASE("a snapshot that fits only without the data it replaces is installed in chunks") {
  TempDir dir;
  testing::TempDir files("kvstore_engine_test_snapshot");
  const std::string path = files.path() + "/snapshot";
  const auto snapshot = PagePairs("n", 400);  // 1.6 MiB
  WriteSnapshot(path, 500, EncodeEpochHistory({{2, 0x2, 40}}), snapshot, 64 << 10);
  {
    auto engine = OpenEngine(SmallMapOptions(dir.path()));
    PutPairs(*engine, PagePairs("o", 600));  // 2.4 MiB: with the snapshot's, over 3.75 MiB
    REQUIRE(engine->Stats().storage.keys == 600);

    // Readers during the install see the old or the new key space, or are refused: never a
    // part of the new one.
    std::atomic<bool> stop{false};
    std::atomic<int> partial{0};
    std::atomic<int> other_errors{0};
    std::thread reader([&] {  // no Catch2 assertions here: they are not thread-safe
      while (!stop.load()) {
        auto snap = engine->Read();
        if (!snap.ok()) {
          if (snap.status().code() != Status::Code::kUnavailable) other_errors.fetch_add(1);
          continue;
        }
        const std::uint64_t keys = snap->KeyCount();
        if (keys != 600 && keys != 400) partial.fetch_add(1);
      }
    });
    Status s = engine->InstallSnapshot(path);
    stop.store(true);
    reader.join();
    INFO(s.ToString());
    REQUIRE(s.ok());
    CHECK(partial.load() == 0);
    CHECK(other_errors.load() == 0);
    CHECK(Summary(*engine) == SummaryOf(snapshot));
    CHECK(engine->committed_seq() == 500);
    CHECK(RenderEpochs(*engine) == "2:0000000000000002@40,");
    CHECK(RenderLog(*engine, 1).rfind("NotFound", 0) == 0);
    CHECK_FALSE(engine->Stats().poisoned);
    auto done = RunWithSeq(*engine, {PutFn("after", "1")});
    CHECK(Codes(done.statuses) == "OK,");
    CHECK(done.committed_seq == 501);
  }
  auto engine = OpenEngine(SmallMapOptions(dir.path()));
  auto expected = snapshot;
  expected.insert(expected.begin(), {"after", "1"});
  CHECK(Summary(*engine) == SummaryOf(expected));
  CHECK(engine->committed_seq() == 501);
  CHECK(RenderEpochs(*engine) == "2:0000000000000002@40,");
}

TEST_CASE("a chunked install into a non-empty key space is refused when only_into_empty") {
  TempDir dir;
  testing::TempDir files("kvstore_engine_test_snapshot");
  const std::string path = files.path() + "/snapshot";
  WriteSnapshot(path, 500, "", PagePairs("n", 400), 64 << 10);
  auto engine = OpenEngine(SmallMapOptions(dir.path()));
  const auto old = PagePairs("o", 600);
  PutPairs(*engine, old);
  Status s = engine->InstallSnapshot(path, /*only_into_empty=*/true);
  CHECK(s.code() == Status::Code::kInvalidArgument);
  CHECK(Summary(*engine) == SummaryOf(old));
}

TEST_CASE("a snapshot too large for the map even alone leaves an empty store without history") {
  TempDir dir;
  testing::TempDir files("kvstore_engine_test_snapshot");
  const std::string path = files.path() + "/snapshot";
  WriteSnapshot(path, 5000, EncodeEpochHistory({{2, 0x2, 40}}), PagePairs("n", 1100), 64 << 10);
  std::uint64_t seq = 0;
  {
    auto engine = OpenEngine(SmallMapOptions(dir.path()));
    PutPairs(*engine, PagePairs("o", 300));
    Epoch local;
    REQUIRE(Codes(Run(*engine, {OpenEpochFn(0x99, &local)})) == "OK,");
    const std::uint64_t before = engine->committed_seq();
    Status s = engine->InstallSnapshot(path);
    INFO(s.ToString());
    CHECK(s.IsStorageFull());
    CHECK(s.message().find("even alone") != std::string::npos);
    CHECK(s.message().find("empty and without history") != std::string::npos);
    CHECK(Render(*engine).empty());
    CHECK(RenderEpochs(*engine).empty());
    CHECK(engine->committed_seq() > before);  // past the old log: nothing is replayed onto it
    CHECK_FALSE(engine->Stats().poisoned);
    auto done = RunWithSeq(*engine, {PutFn("after", "1")});
    CHECK(Codes(done.statuses) == "OK,");
    seq = done.committed_seq;
  }
  auto engine = OpenEngine(SmallMapOptions(dir.path()));
  CHECK(Render(*engine) == "after=1;");
  CHECK(engine->committed_seq() == seq);
  CHECK(RenderEpochs(*engine).empty());
}

TEST_CASE("a snapshot larger than the whole map is refused before anything changes") {
  TempDir dir;
  testing::TempDir files("kvstore_engine_test_snapshot");
  const std::string path = files.path() + "/snapshot";
  WriteSnapshot(path, 5000, "", PagePairs("n", 1500), 64 << 10);  // 4.5 MB
  auto engine = OpenEngine(SmallMapOptions(dir.path()));
  const auto old = PagePairs("o", 300);
  PutPairs(*engine, old);
  Status s = engine->InstallSnapshot(path);
  INFO(s.ToString());
  CHECK(s.IsStorageFull());
  CHECK(s.message().find("does not fit in max_map_bytes") != std::string::npos);
  CHECK(Summary(*engine) == SummaryOf(old));
}

TEST_CASE("a chunked install waits for the snapshots taken before it") {
  // A live snapshot keeps LMDB from reusing the pages the clear frees: without the wait, the
  // chunks would not fit and the store would end up empty.
  TempDir dir;
  testing::TempDir files("kvstore_engine_test_snapshot");
  const std::string path = files.path() + "/snapshot";
  const auto snapshot = PagePairs("n", 400);
  WriteSnapshot(path, 500, "", snapshot, 64 << 10);
  auto engine = OpenEngine(SmallMapOptions(dir.path()));
  const auto old = PagePairs("o", 600);
  PutPairs(*engine, old);
  std::optional<Storage::Snapshot> backup;
  {
    auto taken = engine->Read();
    REQUIRE(taken.ok());
    backup.emplace(std::move(taken).value());
  }
  auto install = std::async(std::launch::async, [&] { return engine->InstallSnapshot(path); });
  CHECK(install.wait_for(std::chrono::milliseconds(500)) == std::future_status::timeout);
  CHECK(backup->KeyCount() == 600);  // the old data, as of the snapshot
  backup.reset();
  Status s = install.get();
  INFO(s.ToString());
  REQUIRE(s.ok());
  CHECK(Summary(*engine) == SummaryOf(snapshot));
}

// The storage as a chunked install leaves it when a crash comes before its final commit: the
// key space cleared and partly loaded, and the engine's install mark naming the file (the
// mark's name is the engine's, see kInstallMeta in engine.cpp).
void SeedInterruptedInstall(const std::string& data_dir, const std::string& path,
                            const std::vector<std::pair<std::string, std::string>>& loaded) {
  StorageOptions so;
  so.dir = data_dir + "/db";
  so.max_map_bytes = 4 << 20;
  auto storage = Storage::Open(so);
  REQUIRE(storage.ok());
  auto txn = (*storage)->BeginWrite();
  REQUIRE(txn.ok());
  REQUIRE(txn->Clear().ok());
  REQUIRE(txn->PutMeta("install_pending", path).ok());
  for (const auto& [key, value] : loaded) REQUIRE(txn->Put(key, value).ok());
  REQUIRE(txn->Commit().ok());
  REQUIRE((*storage)->Sync().ok());
}

TEST_CASE("a chunked install interrupted by a crash is finished at the next open") {
  TempDir dir;
  testing::TempDir files("kvstore_engine_test_snapshot");
  const std::string path = files.path() + "/snapshot";
  const auto snapshot = PagePairs("n", 400);
  WriteSnapshot(path, 500, EncodeEpochHistory({{2, 0x2, 40}}), snapshot, 64 << 10);
  std::uint64_t old_seq = 0;
  {
    auto engine = OpenEngine(SmallMapOptions(dir.path()));
    PutPairs(*engine, PagePairs("o", 600));
    old_seq = engine->committed_seq();
  }
  SeedInterruptedInstall(dir.path(), path, {snapshot.begin(), snapshot.begin() + 100});

  SECTION("from the snapshot file, still there") {
    auto engine = OpenEngine(SmallMapOptions(dir.path()));
    CHECK(Summary(*engine) == SummaryOf(snapshot));
    CHECK(engine->committed_seq() == 500);
    CHECK(RenderEpochs(*engine) == "2:0000000000000002@40,");
    CHECK(RenderLog(*engine, 1).rfind("NotFound", 0) == 0);
    auto done = RunWithSeq(*engine, {PutFn("after", "1")});
    CHECK(done.committed_seq == 501);
    CHECK(RenderLog(*engine, 501) == "501:put:after=1;");
  }
  SECTION("without the file: an empty store without history, past the old log") {
    fs::remove(path);
    auto engine = OpenEngine(SmallMapOptions(dir.path()));
    CHECK(Render(*engine).empty());
    CHECK(RenderEpochs(*engine).empty());
    CHECK(engine->committed_seq() == old_seq + 1);
    auto done = RunWithSeq(*engine, {PutFn("after", "1")});
    CHECK(done.committed_seq == old_seq + 2);
    CHECK(RenderLog(*engine, old_seq + 2) == fmt::format("{}:put:after=1;", old_seq + 2));
  }
}

}  // namespace
}  // namespace kvstore
