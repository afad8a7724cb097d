// Engine: recovery at Open, then one writer at a time group-commits every write.
// Threads: Submit(), Enqueue(), CommitQueued(), Read(), Stats() and Shutdown() on any thread.
// Everything named "writer only" below (the batch, the log append and sync, the LMDB write
// transaction, the checkpoint) runs while writer_mu is held: on the writer thread started by
// Open(), or on an event loop inside CommitQueued(). Whoever holds writer_mu takes the queue
// under it, so requests commit in the order they were queued.
//
// One group commit, as in LevelDB's DBImpl::Write:
//   1. take every queued request (the queue lock is held only for the swap);
//   2. run all their write functions in one LMDB write transaction, collecting log entries.
//      A function that fails after changing something (no nested LMDB transactions, which
//      MDB_WRITEMAP would not allow, to undo just its part) gets its error, and the batch is
//      aborted and run again without it; at most once per function;
//   3. set applied_seq, append the entries to the log, fdatasync it once (fsync: always),
//      commit LMDB (MDB_NOSYNC: LMDB is flushed at checkpoints);
//   4. complete every request, outside the queue lock.
// A full map aborts the batch, grows the map and runs the batch again; at max_map_bytes every
// function runs alone, so deletes still commit and only what does not fit fails.
// A failed log fsync (or a failed undo of an append) poisons the engine: every later write
// fails until restart, because the state of the log on disk is no longer known.
#include "engine/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "common/coding.h"
#include "common/logging.h"
#include "snapshot/snapshot_format.h"

namespace kvstore {

namespace {

using Clock = std::chrono::steady_clock;

// Replay commits LMDB every this many log entries.
constexpr std::uint64_t kReplayChunk = 10000;

// Storage meta names owned by the engine.
constexpr std::string_view kEpochsMeta = "epochs";
// Set, in the same transaction, by a snapshot install: the log must restart at this sequence.
// Cleared once it has; found at Open, the restart is done then (a crash in between).
constexpr std::string_view kLogRestartMeta = "log_restart";
// Set by a chunked snapshot install (Engine::Impl::Install) in the transaction that clears the
// key space, to the snapshot file's path; deleted by its final commit. While it is present the
// key space is partial: Open installs the file again (or, without it, starts empty and without
// history) before anything reads the store.
constexpr std::string_view kInstallMeta = "install_pending";
// A chunked install commits about this many bytes of pairs at a time (less on a small map).
constexpr std::uint64_t kInstallChunkBytes = 4 << 20;

Result<EpochHistory> ReadEpochs(const Storage::WriteTxn& txn) {
  std::string bytes;
  Status s = txn.GetMeta(kEpochsMeta, &bytes);
  if (s.IsNotFound()) return EpochHistory{};
  if (!s.ok()) return s;
  return DecodeEpochHistory(bytes);
}

// Appends the epoch opened by entry (at seq) to the history stored in txn.
Status RecordEpoch(Storage::WriteTxn& txn, std::uint64_t seq, const LogEntry& entry) {
  auto epoch = ParseEpochEntry(seq, entry);
  if (!epoch.ok())
    return Status::Corruption("malformed epoch entry at sequence " + std::to_string(seq));
  auto history = ReadEpochs(txn);
  if (!history.ok()) return history.status();
  history->push_back(*epoch);
  return txn.PutMeta(kEpochsMeta, EncodeEpochHistory(*history));
}

Clock::time_point SaturatingAdd(Clock::time_point t, std::chrono::milliseconds d) {
  if (d.count() < 0) return t;
  auto limit = Clock::time_point::max() - t;
  if (std::chrono::duration_cast<std::chrono::milliseconds>(limit) <= d) {
    return Clock::time_point::max();
  }
  return t + d;
}

// Applies one logged entry (at seq) to txn. A delete of a missing key is fine: replay and
// replication apply what was logged, and the effect is the same.
Status ApplyEntry(Storage::WriteTxn& txn, std::uint64_t seq, LogEntry::Type type,
                  std::string_view key, std::string_view value) {
  switch (type) {
    case LogEntry::Type::kPut:
      return txn.Put(key, value);
    case LogEntry::Type::kDelete: {
      Status s = txn.Delete(key);
      return s.IsNotFound() ? Status::Ok() : s;
    }
    case LogEntry::Type::kClear:
      return txn.Clear();
    case LogEntry::Type::kEpoch:
      return RecordEpoch(txn, seq, LogEntry{type, std::string(key), std::string(value)});
  }
  return Status::Corruption("unknown log entry type");
}

// The log records of a batch, encoded as the write functions run (no LogEntry copies: a
// replica's catch-up applies hundreds of thousands of entries per second through here).
struct BatchRecords {
  // Up to this much capacity is kept for the next batch; a huge transaction's is given back.
  static constexpr std::size_t kKeptCapacity = 16 << 20;
  std::string bytes;
  std::uint64_t count = 0;
  void Clear() {
    if (bytes.capacity() > kKeptCapacity) {
      std::string().swap(bytes);
    } else {
      bytes.clear();
    }
    count = 0;
  }
};

// A WriteContext over the batch's write transaction that records every mutation for the log.
// One per write function: the records one function logs form one unit (log.h), so a reader
// never applies part of an MSET or an EXEC.
class BatchContext : public WriteContext {
 public:
  // first_seq: the sequence the batch's first log entry gets.
  BatchContext(Storage::WriteTxn* txn, BatchRecords* records, std::uint64_t first_seq)
      : txn_(txn), records_(records), first_seq_(first_seq) {}

  Status Get(std::string_view key, std::string* value) override { return txn_->Get(key, value); }

  Status Put(std::string_view key, std::string_view value) override {
    put_attempted_ = true;
    Status s = txn_->Put(key, value);
    if (s.ok()) s = Record(LogEntry::Type::kPut, key, value);
    if (!s.ok() && s.code() != Status::Code::kInvalidArgument) txn_failed_ = true;
    return s;
  }

  Status Delete(std::string_view key) override {
    Status s = txn_->Delete(key);
    if (s.ok()) s = Record(LogEntry::Type::kDelete, key, {});
    if (!s.ok() && !s.IsNotFound()) txn_failed_ = true;
    return s;
  }

  Status Clear() override {
    Status s = txn_->Clear();
    if (s.ok()) s = Record(LogEntry::Type::kClear, {}, {});
    if (!s.ok()) txn_failed_ = true;
    return s;
  }

  std::uint64_t KeyCount() override { return txn_->KeyCount(); }

  Storage::Snapshot View() override { return txn_->View(); }

  std::uint64_t NextSeq() override { return first_seq_ + records_->count; }

  Status ApplyLogged(const LogRecordView& record) override {
    if (record.seq != NextSeq()) {
      // Seen after an earlier apply of the same stream failed (a full map, say): the applies
      // queued behind it no longer follow on. The link reconnects and resumes from what was
      // applied; nothing stored is damaged.
      return Status::Corruption(fmt::format(
          "replicated entry {} does not follow this pod's last entry (the next here is {}; an "
          "earlier apply failed?)",
          record.seq, NextSeq()));
    }
    if (record.type == LogEntry::Type::kPut) put_attempted_ = true;
    Status s = ApplyEntry(*txn_, record.seq, record.type, record.key, record.value);
    if (s.ok()) {
      // As stored, so with the master's unit marks (a replica applies many units in one
      // function).
      records_->bytes.append(record.stored);
      ++records_->count;
    } else {
      txn_failed_ = true;
    }
    return s;
  }

  Status OpenEpoch(std::uint64_t id, std::uint64_t min_number, Epoch* opened) override {
    auto history = ReadEpochs(*txn_);
    if (!history.ok()) return history.status();
    const std::uint64_t number =
        std::max(history->empty() ? 1 : history->back().number + 1, min_number);
    *opened = Epoch{number, id, NextSeq()};
    const LogEntry entry = MakeEpochEntry(number, id);
    Status s = RecordEpoch(*txn_, NextSeq(), entry);
    if (s.ok()) s = Record(entry.type, entry.key, entry.value);
    if (!s.ok()) txn_failed_ = true;
    return s;
  }

  // Whether any Put was tried: a write function without one may use the storage's reserve.
  bool put_attempted() const { return put_attempted_; }
  // Whether an LMDB operation failed (the transaction may be unusable then).
  bool txn_failed() const { return txn_failed_; }

 private:
  // Logs one of this function's own entries, continuing the unit of its previous one. The
  // transaction already holds the change, so a failure here (a record past 4 GiB, which
  // max_value_bytes rules out) makes the caller undo the batch (txn_failed_).
  Status Record(LogEntry::Type type, std::string_view key, std::string_view value) {
    const std::size_t offset = records_->bytes.size();
    Status s = EncodeLogRecord(NextSeq(), type, key, value, &records_->bytes);
    if (!s.ok()) return s;
    if (own_last_record_) MarkLogRecordContinued(&records_->bytes, *own_last_record_);
    own_last_record_ = offset;
    ++records_->count;
    return s;
  }

  Storage::WriteTxn* txn_;
  BatchRecords* records_;
  std::uint64_t first_seq_;
  std::optional<std::size_t> own_last_record_;  // offset of this function's last own record
  bool put_attempted_ = false;
  bool txn_failed_ = false;
};

Status CallWrite(const WriteFn& fn, WriteContext& ctx) {
  try {
    return fn(ctx);
  } catch (const std::exception& e) {
    return Status::IOError(fmt::format("write function threw: {}", e.what()));
  } catch (...) {
    return Status::IOError("write function threw a non-standard exception");
  }
}

// Replays log entries newer than the storage's applied_seq into LMDB, then syncs LMDB.
Status Recover(Storage& storage, Log& log) {
  std::uint64_t applied = 0;
  {
    auto snapshot = storage.Read();
    if (!snapshot.ok()) return snapshot.status();
    applied = snapshot->AppliedSeq();
  }
  const std::uint64_t last = log.last_seq();
  if (applied > last) {
    logging::Error(fmt::format(
        "engine: the storage has applied sequence {} but the log ends at {}: the log lost "
        "entries; continuing from sequence {} (replicas will need a full resync)",
        applied, last, applied + 1));
    return log.ResetStart(applied + 1);
  }
  if (applied == last) return Status::Ok();

  logging::Info(fmt::format("engine: replaying log entries {} to {}", applied + 1, last));
  std::uint64_t from = applied + 1;
  while (from <= last) {
    auto begun = storage.BeginWrite();
    if (!begun.ok()) return begun.status();
    std::optional<Storage::WriteTxn> txn(std::move(begun).value());
    std::uint64_t in_txn = 0;
    std::uint64_t txn_last = 0;
    Status apply;
    auto commit = [&]() {
      Status s = txn->SetAppliedSeq(txn_last);
      if (s.ok()) s = txn->Commit();
      if (s.ok()) {
        from = txn_last + 1;
        in_txn = 0;
      }
      return s;
    };
    Status read = log.ReadFrom(from, [&](std::uint64_t seq, const LogEntry& e) {
      apply = ApplyEntry(*txn, seq, e.type, e.key, e.value);
      if (!apply.ok()) return false;
      txn_last = seq;
      // Commit only where a unit ends (log.h), so applied_seq never stops inside an atomic write.
      if (++in_txn < kReplayChunk || e.continued) return true;
      apply = commit();
      if (!apply.ok()) return false;
      auto next = storage.BeginWrite();
      if (!next.ok()) {
        apply = next.status();
        return false;
      }
      txn.reset();
      txn.emplace(std::move(next).value());
      return true;
    });
    if (read.IsNotFound()) {
      return Status::Corruption(fmt::format(
          "the storage needs log entries from {} but the log no longer has them ({}); restore "
          "the data directory from a backup or resync from the master",
          from, read.message()));
    }
    if (!read.ok()) return read;
    if (apply.ok() && in_txn > 0) apply = commit();
    if (apply.IsStorageFull()) {
      txn.reset();  // abort the failed chunk, grow, replay it again
      if (Status g = storage.Grow(); !g.ok()) {
        return Status::StorageFull(
            fmt::format("recovery cannot replay the log: {}; raise max_map_bytes", g.message()));
      }
      continue;
    }
    if (!apply.ok()) return apply;
    if (from <= last) {
      return Status::Corruption(
          fmt::format("the log ended at sequence {} during replay, expected {}", from - 1, last));
    }
  }
  if (Status s = storage.Sync(); !s.ok()) return s;
  logging::Info(fmt::format("engine: replay done, applied sequence {}", last));
  return Status::Ok();
}

// Completes a snapshot install that a crash interrupted between its storage commit and its log
// restart (see Engine::Impl::Install).
Status FinishLogRestart(Storage& storage, Log& log) {
  std::uint64_t next_seq = 0;
  {
    auto snapshot = storage.Read();
    if (!snapshot.ok()) return snapshot.status();
    std::string value;
    Status s = snapshot->GetMeta(kLogRestartMeta, &value);
    if (s.IsNotFound()) return Status::Ok();
    if (!s.ok()) return s;
    if (value.size() != 8) return Status::Corruption("malformed log_restart mark in storage");
    next_seq = coding::DecodeFixed64(value.data());
  }
  // The log may already have restarted there (and taken new writes since): only the mark's
  // deletion was lost then, and the log must stay.
  const LogStats log_stats = log.Stats();
  const bool restarted = log_stats.first_seq == next_seq ||
                         (log_stats.first_seq == 0 && log.last_seq() + 1 == next_seq);
  if (!restarted) {
    logging::Warn(fmt::format(
        "engine: finishing an interrupted snapshot install: the log restarts at {}", next_seq));
    if (Status s = log.ResetStart(next_seq); !s.ok()) return s;
  }
  auto begun = storage.BeginWrite();
  if (!begun.ok()) return begun.status();
  Storage::WriteTxn txn = std::move(begun).value();
  if (Status s = txn.DeleteMeta(kLogRestartMeta); !s.ok()) return s;
  if (Status s = txn.Commit(); !s.ok()) return s;
  return storage.Sync();
}

using FillTxn = std::function<Status(Storage::WriteTxn&)>;

// A restore without FORCE installs only into an empty key space, checked in the transaction that
// clears it: a write acknowledged meanwhile is never wiped (the restore is refused instead).
Status RefuseIfNotEmpty(Storage::WriteTxn& txn, bool only_into_empty) {
  if (const std::uint64_t keys = txn.KeyCount(); only_into_empty && keys > 0) {
    return Status::InvalidArgument(fmt::format(
        "the target received writes during the restore and holds {} keys now; restore only into "
        "an empty master, or add FORCE to replace them",
        keys));
  }
  return Status::Ok();
}

// Feeds the whole snapshot file to visitor through a decoder, checking that it ends properly.
Status FeedSnapshotFile(std::ifstream& file, const std::string& path, SnapshotVisitor& visitor) {
  SnapshotDecoder decoder;
  std::string chunk(1 << 20, '\0');
  Status s;
  while (s.ok() && file) {
    file.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    s = decoder.Feed(std::string_view(chunk.data(), static_cast<std::size_t>(file.gcount())),
                     visitor);
  }
  if (s.ok() && file.bad()) s = Status::IOError(fmt::format("cannot read snapshot file {}", path));
  if (s.ok()) s = decoder.CheckFinished();
  return s;
}

// The end of an install, in its last transaction: the store is at applied (with that history;
// none when epochs is null), the log restarts just after it, and no chunked install is pending.
Status SetInstalledPosition(Storage::WriteTxn& txn, std::uint64_t applied,
                            const std::string* epochs) {
  Status s = txn.SetAppliedSeq(applied);
  if (s.ok())
    s = epochs != nullptr ? txn.PutMeta(kEpochsMeta, *epochs) : txn.DeleteMeta(kEpochsMeta);
  std::string restart;
  coding::PutFixed64(&restart, applied + 1);
  if (s.ok()) s = txn.PutMeta(kLogRestartMeta, restart);
  if (s.ok()) s = txn.DeleteMeta(kInstallMeta);
  return s;
}

// Runs fill in a write transaction and commits it; a transaction that fill or the commit finds
// full is aborted and runs once more in the storage's reserve (for small bookkeeping commits).
Status CommitSmall(Storage& storage, const FillTxn& fill) {
  auto once = [&]() {
    auto begun = storage.BeginWrite();
    if (!begun.ok()) return begun.status();
    Storage::WriteTxn txn = std::move(begun).value();
    Status s = fill(txn);
    return s.ok() ? txn.Commit() : s;
  };
  Status s = once();
  if (!s.IsStorageFull()) return s;
  if (Status open = storage.OpenReserve(); open.ok()) s = once();
  if (Status close = storage.CloseReserve(); !close.ok()) {
    logging::Warn(
        fmt::format("engine: cannot shrink the map back to its limit: {}", close.ToString()));
  }
  return s;
}

// Runs fill in a write transaction and commits it. A full map is grown; at its limit, two
// commits of touch first make the pages freed by earlier commits reusable (LMDB reuses what
// transaction T freed only from T+2 on), and fill runs once more. Bounded: the map grows a
// few times at most, and the freed pages are made reusable once.
Status CommitWithRoom(Storage& storage, const FillTxn& fill, const FillTxn& touch) {
  bool advanced = false;
  for (;;) {
    Status s;
    {
      auto begun = storage.BeginWrite();
      if (!begun.ok()) return begun.status();
      Storage::WriteTxn txn = std::move(begun).value();
      s = fill(txn);
      if (s.ok()) s = txn.Commit();
    }
    if (!s.IsStorageFull()) return s;
    Status g = storage.Grow();
    if (g.ok()) continue;
    if (!g.IsStorageFull()) return g;
    if (advanced) return g;
    for (int i = 0; i < 2; ++i) {
      if (Status t = CommitSmall(storage, touch); !t.ok()) return t;
    }
    advanced = true;
  }
}

// Streams a snapshot's pairs into the storage in commits of about chunk_bytes (see
// LoadSnapshotChunked). The pairs of the current chunk are kept until it commits, so that a
// chunk that meets a full map runs again after a growth.
class ChunkedInstallVisitor : public SnapshotVisitor {
 public:
  ChunkedInstallVisitor(Storage* storage, FillTxn touch, std::uint64_t chunk_bytes)
      : storage_(storage), touch_(std::move(touch)), chunk_bytes_(chunk_bytes) {}
  Status OnHeader(std::uint64_t applied_seq, std::string_view meta) override {
    applied_seq_ = applied_seq;
    meta_.assign(meta);
    if (auto history = DecodeEpochHistory(meta); !history.ok()) return history.status();
    return Status::Ok();
  }
  Status OnPair(std::string_view key, std::string_view value) override {
    coding::PutFixed64(&pending_, key.size());
    coding::PutFixed64(&pending_, value.size());
    pending_.append(key);
    pending_.append(value);
    return pending_.size() >= chunk_bytes_ ? Flush() : Status::Ok();
  }
  Status OnEnd(std::uint64_t) override { return Status::Ok(); }

  // Commits the pairs not committed yet.
  Status Flush() {
    if (pending_.empty()) return Status::Ok();
    Status s = CommitWithRoom(
        *storage_,
        [this](Storage::WriteTxn& txn) {
          std::string_view rest(pending_);
          while (!rest.empty()) {
            const std::uint64_t key_size = coding::DecodeFixed64(rest.data());
            const std::uint64_t value_size = coding::DecodeFixed64(rest.data() + 8);
            rest.remove_prefix(16);
            Status put = txn.Put(rest.substr(0, key_size), rest.substr(key_size, value_size));
            if (!put.ok()) return put;
            rest.remove_prefix(key_size + value_size);
          }
          return Status::Ok();
        },
        touch_);
    if (s.ok()) pending_.clear();
    return s;
  }

  std::uint64_t applied_seq() const { return applied_seq_; }
  const std::string& meta() const { return meta_; }

 private:
  Storage* storage_;
  FillTxn touch_;
  std::uint64_t chunk_bytes_;
  std::string pending_;  // (fixed64 key size, fixed64 value size, key, value)*
  std::uint64_t applied_seq_ = 0;
  std::string meta_;
};

// The install for a snapshot that does not fit beside the data it replaces: one commit clears
// the key space and sets the install mark (kInstallMeta: the path), commits of about
// kInstallChunkBytes load the pairs (reusing the pages the clear freed), and the final commit
// sets applied_seq, the epochs and the log restart mark and deletes the install mark. Until
// that commit the store is partial, and only the install mark says so (Engine::Read refuses
// meanwhile; Open installs again). *cleared: whether the clear committed (if not, nothing
// changed: only_into_empty refused, or the clear itself failed). Ok: *applied is the
// snapshot's sequence and the log restart is left to the caller (as for the one-transaction
// install).
Status LoadSnapshotChunked(Storage& storage, const std::string& path, bool only_into_empty,
                           std::uint64_t* applied, bool* cleared) {
  *cleared = false;
  std::ifstream file(path, std::ios::binary);
  if (!file) return Status::IOError(fmt::format("cannot open snapshot file {}", path));
  const FillTxn touch = [&path](Storage::WriteTxn& txn) { return txn.PutMeta(kInstallMeta, path); };
  Status s = CommitSmall(storage, [&](Storage::WriteTxn& txn) {
    Status c = RefuseIfNotEmpty(txn, only_into_empty);
    if (c.ok()) c = txn.Clear();
    return c.ok() ? touch(txn) : c;
  });
  if (!s.ok()) return s;
  *cleared = true;
  logging::Info(fmt::format(
      "engine: the old key space is cleared; loading the snapshot in chunks (after a crash, the "
      "next start installs {} again)",
      path));
  // So that the first chunk may use the pages the clear freed.
  for (int i = 0; i < 2 && s.ok(); ++i) s = CommitSmall(storage, touch);
  if (!s.ok()) return s;

  const std::uint64_t max_map = storage.Stats().max_map_bytes;
  ChunkedInstallVisitor visitor(
      &storage, touch, std::clamp<std::uint64_t>(max_map / 16, 256 << 10, kInstallChunkBytes));
  s = FeedSnapshotFile(file, path, visitor);
  if (s.ok()) s = visitor.Flush();
  if (!s.ok()) return s;
  s = CommitWithRoom(
      storage,
      [&visitor](Storage::WriteTxn& txn) {
        return SetInstalledPosition(txn, visitor.applied_seq(), &visitor.meta());
      },
      touch);
  if (s.ok()) *applied = visitor.applied_seq();
  return s;
}

// After a chunked install that cannot complete: an empty key space without epoch history at a
// sequence past everything the storage and the log have seen (so that nothing is replayed onto
// it, and a replica's handshake, without an epoch, gets a full resync), with the log restart
// mark set for just after it. *applied: that sequence.
Status ResetToEmpty(Storage& storage, const Log& log, std::uint64_t* applied) {
  std::uint64_t seq = log.last_seq();
  {
    auto snapshot = storage.Read();
    if (!snapshot.ok()) return snapshot.status();
    seq = std::max(seq, snapshot->AppliedSeq()) + 1;
  }
  Status s = CommitSmall(storage, [seq](Storage::WriteTxn& txn) {
    Status f = txn.Clear();
    return f.ok() ? SetInstalledPosition(txn, seq, /*epochs=*/nullptr) : f;
  });
  if (s.ok()) *applied = seq;
  return s;
}

// At Open, before FinishLogRestart: completes a chunked install that a crash interrupted, from
// its snapshot file (still present: nothing removes it before the engine is open). Without a
// usable file, the store becomes empty and without history (ResetToEmpty) rather than serve
// the partial key space or refuse to start for good.
Status ResumeInstall(Storage& storage, const Log& log) {
  std::string path;
  {
    auto snapshot = storage.Read();
    if (!snapshot.ok()) return snapshot.status();
    Status s = snapshot->GetMeta(kInstallMeta, &path);
    if (s.IsNotFound()) return Status::Ok();
    if (!s.ok()) return s;
  }
  logging::Warn(
      fmt::format("engine: a snapshot install was interrupted; installing {} again", path));
  std::uint64_t applied = 0;
  bool cleared = false;
  Status s = LoadSnapshotChunked(storage, path, /*only_into_empty=*/false, &applied, &cleared);
  if (!s.ok()) {
    logging::Error(fmt::format(
        "engine: cannot finish the interrupted snapshot install from {}: {}; starting with an "
        "empty store without history instead (a replica full-resyncs; on a master, restore the "
        "backup again)",
        path, s.ToString()));
    s = ResetToEmpty(storage, log, &applied);
  }
  if (!s.ok()) return s;
  return storage.Sync();
}

}  // namespace

Status ApplyLoggedRecords(WriteContext& db, std::string_view records) {
  Status applied;
  Status decoded = DecodeLogRecordViews(
      records,
      [&](const LogRecordView& record) {
        applied = db.ApplyLogged(record);
        return applied.ok();
      },
      /*verify=*/false);
  return decoded.ok() ? applied : decoded;
}

struct Engine::Impl {
  struct Request {
    std::vector<WriteFn> writes;
    WriteDone done;
    // One per write. A write whose status is not ok failed (on its own, or refused): it is left
    // out of the batch's further attempts.
    std::vector<Status> statuses;
    // Set for work that must run alone on the writer thread, between batches (an install).
    std::function<void()> exclusive;
    Origin origin = Origin::kClient;
    // Submitted: the writer thread commits it (an event loop leaves it, and what follows it).
    bool writer_thread = false;
  };

  // How one attempt at a group commit ended.
  enum class Attempt { kDone, kRetry, kFull };

  Impl(const EngineOptions& opts, Storage* s, Log* l) : options(opts), storage(s), log(l) {}

  EngineOptions options;
  Storage* storage;
  Log* log;

  std::mutex mu;
  std::condition_variable cv;
  std::vector<Request> queue;  // GUARDED_BY(mu)
  // An event loop found the writer role taken and left its requests queued (CommitQueued).
  bool left_queued = false;  // GUARDED_BY(mu)
  // The writer thread waits for the role: loops leave their requests to it meanwhile, so that
  // an unfair mutex cannot starve it (its checkpoints, interval fsyncs and installs).
  bool writer_waiting = false;  // GUARDED_BY(mu)
  // When the writer thread next runs its timers. Computed by the writer role's holder from the
  // writer-only clocks below, and moved earlier (with a wake-up) by a loop's commit that leaves
  // the log unsynced in fsync: interval.
  Clock::time_point timers_due;                     // GUARDED_BY(mu)
  bool stopping = false;                            // GUARDED_BY(mu)
  std::optional<std::string> client_write_refusal;  // GUARDED_BY(mu)

  std::thread writer;
  // Held by whoever runs the writer's work: the writer thread or an event loop in
  // CommitQueued(). LMDB's write transaction begins and commits under it, on one thread.
  std::mutex writer_mu;
  std::mutex shutdown_mu;
  bool shut_down = false;  // GUARDED_BY(shutdown_mu)
  Status final_status;     // set by the writer thread before it exits

  // Writer only (writer_mu held).
  std::vector<Request> batch;
  BatchRecords records;
  // Every request of the batch is a replica's apply (Origin::kReplicaApply): see Persist.
  bool replicated_batch = false;
  // The batch is replicated applies only and its fsync may wait (replicated_sync_delay): see
  // DeferCompletion.
  bool deferring_sync = false;
  // Committed (visible) replicated batches whose fsync has not run yet, oldest first, and when
  // the first of them was committed. SyncLog completes them.
  std::vector<Request> awaiting_sync;
  Clock::time_point awaiting_since;
  std::uint64_t committed_seq = 0;  // last sequence committed to LMDB
  std::uint64_t published_seq = 0;  // last sequence given to the commit listener
  bool log_unsynced = false;        // appends since the last log fsync
  Clock::time_point last_log_sync;
  Clock::time_point next_checkpoint;
  Clock::time_point next_storage_full_log;

  // Stats, readable from any thread.
  mutable std::mutex stats_mu;
  std::uint64_t commits = 0;              // GUARDED_BY(stats_mu)
  std::uint64_t committed_writes = 0;     // GUARDED_BY(stats_mu)
  std::uint64_t fsyncs = 0;               // GUARDED_BY(stats_mu)
  std::uint64_t last_checkpoint_seq = 0;  // GUARDED_BY(stats_mu)
  std::string poison_message;             // GUARDED_BY(stats_mu)
  std::atomic<bool> poisoned{false};
  std::atomic<std::uint64_t> visible_seq{0};  // committed_seq, for other threads
  std::atomic<std::uint64_t> durable_seq{0};  // see Engine::durable_seq()
  // A chunked snapshot install has begun and not ended: the key space is partial, reads are
  // refused (Engine::Read).
  std::atomic<bool> installing{false};
  // Lock-free: observed by the writer role's holder, read by Stats() from any thread.
  metrics::Histogram fsync_seconds{metrics::Histogram::LatencyBounds()};
  metrics::Histogram batch_writes{metrics::Histogram::SizeBounds()};

  std::mutex hooks_mu;
  std::function<void(std::uint64_t)> commit_listener;  // GUARDED_BY(hooks_mu)
  std::function<std::uint64_t()> retention_pin;        // GUARDED_BY(hooks_mu)

  void Run();
  void RunRequests(std::vector<Request>& taken);
  void HandOverLeftQueued();
  void ProcessBatch();
  void Complete(std::vector<Request>& requests);
  void CompleteBatch();
  void DeferCompletion();
  void CompleteAwaiting(const Status& synced);
  void SyncAwaiting();
  void PublishCommitted();
  Status Install(const std::string& path, bool only_into_empty);
  Status InstallInOneTxn(const std::string& path, bool only_into_empty, std::uint64_t* applied);
  Status FinishInstall(std::uint64_t applied);
  Attempt TryGroup();
  Status RunOne(const WriteFn& fn, bool* put_attempted);
  void RunAlone(const Status& full_status);
  Status AdvanceTxnId();
  Status Persist(Storage::WriteTxn& txn, bool* full);
  Status SyncLog();
  void Checkpoint(std::unique_lock<std::mutex>& writing);
  void RunTimers(std::unique_lock<std::mutex>& writing);
  Clock::time_point NextDeadline() const;
  void PublishTimersDue(bool wake_if_earlier);
  void LockWriterRole(std::unique_lock<std::mutex>& writing);
  void Poison(std::string_view what, const Status& cause);
  Status PoisonStatus();
  void FailOk(const Status& s);
};

void Engine::Impl::Poison(std::string_view what, const Status& cause) {
  std::lock_guard<std::mutex> lock(stats_mu);
  if (poisoned.load()) return;
  poison_message =
      fmt::format("writes disabled after {}: {}; restart the server", what, cause.message());
  poisoned.store(true);
  logging::Error(fmt::format("engine: {}", poison_message));
}

Status Engine::Impl::PoisonStatus() {
  std::lock_guard<std::mutex> lock(stats_mu);
  return Status::IOError(poison_message);
}

// Gives s to every write function of the batch that has not failed on its own.
void Engine::Impl::FailOk(const Status& s) {
  for (Request& r : batch) {
    for (std::size_t i = 0; i < r.statuses.size(); ++i) {
      if (r.statuses[i].ok()) r.statuses[i] = s;
    }
  }
}

Status Engine::Impl::SyncLog() {
  const auto started = Clock::now();
  Status s = log->Sync();
  last_log_sync = Clock::now();
  fsync_seconds.Observe(std::chrono::duration<double>(last_log_sync - started).count());
  {
    std::lock_guard<std::mutex> lock(stats_mu);
    ++fsyncs;
  }
  if (!s.ok()) {
    Poison("a failed fsync", s);
    CompleteAwaiting(PoisonStatus());
    return s;
  }
  log_unsynced = false;
  CompleteAwaiting(s);
  return s;
}

// Makes the transaction's entries durable (per the fsync mode) and commits it. On failure the
// log is back where it was, or the engine is poisoned. *full: the failure was a full map.
//
// Client writes are committed (made visible) only after the log fsync, so no reader ever sees a
// write that a crash could still take back. A replica's batch is committed before its fsync:
// those entries are already durable on the master (it ships nothing else), so showing them
// early is safe, and a replica's reads then lag the master by the transfer and apply, not by
// its own fsync as well. The replica still acknowledges only after the fsync (the completion
// runs after it), which is what sync mode and WAIT count on. With replicated_sync_delay that
// fsync is not here but up to the delay later, shared with the batches that follow
// (DeferCompletion). After a power loss LMDB may then be ahead of the replica's log; Recover
// restarts the log after LMDB's position, and the replica continues from there.
Status Engine::Impl::Persist(Storage::WriteTxn& txn, bool* full) {
  *full = false;
  const std::uint64_t last = log->last_seq() + records.count;
  if (Status s = txn.SetAppliedSeq(last); !s.ok()) {
    *full = s.IsStorageFull();
    return s;
  }
  if (Status s = log->AppendRecords(records.bytes, records.count); !s.ok()) {
    // Usually the log undid its partial append and the batch just fails; when it could not,
    // the log's state on disk is unknown.
    if (!log->broken()) return s;
    Poison("a failed log append", s);
    return PoisonStatus();
  }
  log_unsynced = true;
  const bool sync_now =
      !deferring_sync && (options.fsync == FsyncMode::kAlways ||
                          (options.fsync == FsyncMode::kInterval &&
                           Clock::now() - last_log_sync >= options.fsync_interval));
  if (sync_now && !replicated_batch) {
    if (Status s = SyncLog(); !s.ok()) {
      (void)log->RollbackLastAppend();  // best effort: the engine is poisoned anyway
      return PoisonStatus();
    }
  }
  Status commit = txn.Commit();
  if (!commit.ok()) {
    Status undo = log->RollbackLastAppend();
    // Sync the undo in every fsync mode: the kernel may already have written the entries.
    if (undo.ok()) undo = log->Sync();
    if (!undo.ok()) {
      Poison("a failed log rollback", undo);
      return PoisonStatus();
    }
    *full = commit.IsStorageFull();
    return commit;
  }
  if (sync_now && replicated_batch && !SyncLog().ok()) {
    // Visible but not durable here: the entries are on the master, the engine is poisoned.
    return PoisonStatus();
  }
  committed_seq = last;
  visible_seq.store(last, std::memory_order_release);
  if (!deferring_sync) durable_seq.store(last, std::memory_order_release);
  return Status::Ok();
}

// One attempt at the batch, leaving out the functions that failed in earlier attempts.
// kRetry: a function failed after changing the transaction; it is now marked failed and the
// transaction aborted, so the caller runs the batch again.
Engine::Impl::Attempt Engine::Impl::TryGroup() {
  auto begun = storage->BeginWrite();
  if (!begun.ok()) {
    FailOk(begun.status());
    return Attempt::kDone;
  }
  Storage::WriteTxn txn = std::move(begun).value();
  records.Clear();
  std::uint64_t ok_writes = 0;
  for (Request& r : batch) {
    for (std::size_t i = 0; i < r.writes.size(); ++i) {
      if (!r.statuses[i].ok()) continue;
      const std::uint64_t mark = records.count;
      BatchContext ctx(&txn, &records, log->last_seq() + 1);
      Status s = CallWrite(r.writes[i], ctx);
      if (s.IsStorageFull()) return Attempt::kFull;  // txn aborts on return
      if (!s.ok()) {
        r.statuses[i] = std::move(s);
        // A failure that changed nothing (the usual case: a wrong type, a bad argument) needs
        // no undo; otherwise run the batch again without this function.
        if (records.count != mark || ctx.txn_failed()) return Attempt::kRetry;
        continue;
      }
      r.statuses[i] = Status::Ok();
      ++ok_writes;
    }
  }
  if (records.count == 0) return Attempt::kDone;  // nothing to log or commit: txn aborts

  bool full = false;
  Status s = Persist(txn, &full);
  if (full) return Attempt::kFull;
  if (!s.ok()) {
    FailOk(s);
    return Attempt::kDone;
  }
  batch_writes.Observe(static_cast<double>(ok_writes));
  std::lock_guard<std::mutex> lock(stats_mu);
  ++commits;
  committed_writes += ok_writes;
  return Attempt::kDone;
}

// Runs one write function in its own transaction and group commit.
Status Engine::Impl::RunOne(const WriteFn& fn, bool* put_attempted) {
  auto begun = storage->BeginWrite();
  if (!begun.ok()) return begun.status();
  Storage::WriteTxn txn = std::move(begun).value();
  records.Clear();
  BatchContext ctx(&txn, &records, log->last_seq() + 1);
  Status s = CallWrite(fn, ctx);
  *put_attempted = ctx.put_attempted();
  if (!s.ok() || records.count == 0) return s;  // the transaction aborts
  bool full = false;
  s = Persist(txn, &full);
  if (s.ok()) {
    batch_writes.Observe(1);
    std::lock_guard<std::mutex> lock(stats_mu);
    ++commits;
    ++committed_writes;
  }
  return s;
}

// Commits two transactions that only rewrite applied_seq (no log entry: the value does not
// change). LMDB reuses the pages freed by transaction T only from transaction T+2 on, and puts
// refused at the full map abort without advancing the id, so pages freed by deletes would stay
// unusable until some other write commits. Uses the delete reserve if it must.
Status Engine::Impl::AdvanceTxnId() {
  auto commit_trivial = [this]() {
    auto begun = storage->BeginWrite();
    if (!begun.ok()) return begun.status();
    Storage::WriteTxn txn = std::move(begun).value();
    if (Status s = txn.SetAppliedSeq(committed_seq); !s.ok()) return s;
    return txn.Commit();
  };
  for (int i = 0; i < 2; ++i) {
    Status s = commit_trivial();
    if (s.IsStorageFull()) {
      if (Status open = storage->OpenReserve(); open.ok()) s = commit_trivial();
      if (Status close = storage->CloseReserve(); !close.ok()) {
        logging::Warn(
            fmt::format("engine: cannot shrink the map back to its limit: {}", close.ToString()));
      }
    }
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

// At the map limit: every write function alone, so that only the writes that do not fit fail.
// A function that tried no Put (a delete) may use the storage's reserve when it needs it; one
// whose put does not fit gets a second try after AdvanceTxnId() made freed pages reusable.
void Engine::Impl::RunAlone(const Status& full_status) {
  for (Request& r : batch) {
    for (std::size_t i = 0; i < r.writes.size(); ++i) {
      if (!r.statuses[i].ok()) continue;  // failed on its own in the group attempt
      if (poisoned.load()) {
        r.statuses[i] = PoisonStatus();
        continue;
      }
      bool put_attempted = false;
      Status s = RunOne(r.writes[i], &put_attempted);
      if (s.IsStorageFull() && put_attempted && AdvanceTxnId().ok()) {
        s = RunOne(r.writes[i], &put_attempted);
      }
      if (s.IsStorageFull() && !put_attempted) {
        if (Status open = storage->OpenReserve(); open.ok()) {
          s = RunOne(r.writes[i], &put_attempted);
        }
        if (Status close = storage->CloseReserve(); !close.ok()) {
          logging::Warn(
              fmt::format("engine: cannot shrink the map back to its limit: {}", close.ToString()));
        }
      }
      if (s.IsStorageFull()) s = full_status;
      r.statuses[i] = std::move(s);
    }
  }
}

void Engine::Impl::ProcessBatch() {
  replicated_batch = std::all_of(batch.begin(), batch.end(), [](const Request& r) {
    return r.origin == Origin::kReplicaApply;
  });
  // A barrier in the batch asks for everything before it to be durable: no deferring then.
  deferring_sync =
      replicated_batch && options.fsync == FsyncMode::kAlways &&
      options.replicated_sync_delay.count() > 0 &&
      std::none_of(batch.begin(), batch.end(), [](const Request& r) { return r.writes.empty(); });
  std::optional<std::string> refusal;
  {
    std::lock_guard<std::mutex> lock(mu);
    refusal = client_write_refusal;
  }
  for (Request& r : batch) {
    r.statuses.assign(r.writes.size(), Status::Ok());
    if (refusal && r.origin == Origin::kClient) {
      r.statuses.assign(r.writes.size(), Status::ReadOnly(*refusal));
    }
  }
  if (poisoned.load()) {
    FailOk(PoisonStatus());
    return;
  }
  for (;;) {
    switch (TryGroup()) {
      case Attempt::kDone:
        return;
      case Attempt::kRetry:
        break;  // bounded: each retry leaves out one more function
      case Attempt::kFull: {
        Status g = storage->Grow();
        if (g.ok()) break;
        if (g.IsStorageFull()) {
          // Once a minute at most: a full store refuses every put, and a client may retry fast.
          if (const auto now = Clock::now(); now >= next_storage_full_log) {
            next_storage_full_log = now + std::chrono::minutes(1);
            logging::Info(fmt::format("engine: storage full: {}", g.message()));
          }
          RunAlone(g);
        } else {
          FailOk(g);
        }
        return;
      }
    }
  }
}

// Flushes LMDB up to the last committed sequence and trims the log behind it. The log is
// synced first so that the log on disk always reaches at least as far as the storage.
// writing holds writer_mu; it is released while LMDB syncs: that writes every page dirtied since
// the previous checkpoint (with random keys, up to the whole tree: tens of milliseconds), and
// the event loops keep committing meanwhile. What was committed up to seq is in the map already,
// so a sync that starts after it covers it; later commits it may catch as well are in the log.
void Engine::Impl::Checkpoint(std::unique_lock<std::mutex>& writing) {
  if (poisoned.load()) return;
  const std::uint64_t seq = committed_seq;
  {
    std::lock_guard<std::mutex> lock(stats_mu);
    if (seq == last_checkpoint_seq) return;
  }
  if (log_unsynced && !SyncLog().ok()) return;
  writing.unlock();
  Status synced = storage->Sync();
  LockWriterRole(writing);
  if (!synced.ok()) {
    Poison("a failed checkpoint fsync", synced);
    return;
  }
  std::uint64_t pinned = 0;
  {
    std::lock_guard<std::mutex> lock(hooks_mu);
    if (retention_pin) pinned = retention_pin();
  }
  if (Status s = log->Trim(seq, pinned); !s.ok()) {
    logging::Warn(fmt::format("engine: log trim failed: {}", s.ToString()));
  }
  std::lock_guard<std::mutex> lock(stats_mu);
  last_checkpoint_seq = std::max(last_checkpoint_seq, seq);
}

namespace {

// Loads a snapshot stream into an open write transaction (after clearing it).
class InstallVisitor : public SnapshotVisitor {
 public:
  explicit InstallVisitor(Storage::WriteTxn* txn) : txn_(txn) {}
  Status OnHeader(std::uint64_t applied_seq, std::string_view meta) override {
    applied_seq_ = applied_seq;
    meta_.assign(meta);
    if (auto history = DecodeEpochHistory(meta); !history.ok()) return history.status();
    return txn_->Clear();
  }
  Status OnPair(std::string_view key, std::string_view value) override {
    return txn_->Put(key, value);
  }
  Status OnEnd(std::uint64_t) override { return Status::Ok(); }

  std::uint64_t applied_seq() const { return applied_seq_; }
  const std::string& meta() const { return meta_; }

 private:
  Storage::WriteTxn* txn_;
  std::uint64_t applied_seq_ = 0;
  std::string meta_;
};

}  // namespace

// Writer thread only, between batches. The storage commit (with the new applied_seq, epochs and
// the log restart mark) is the atomic switch; the log restart follows, and Open redoes it if a
// crash comes in between. A snapshot that does not fit in the map beside the data it replaces
// (LMDB does not reuse the pages a transaction frees within that transaction) is installed in
// chunks instead (LoadSnapshotChunked): no longer atomic, so reads are refused until it ends,
// and a crash meanwhile makes Open install the file again.
Status Engine::Impl::Install(const std::string& path, bool only_into_empty) {
  if (poisoned.load()) return PoisonStatus();
  std::uint64_t applied = 0;
  Status s = InstallInOneTxn(path, only_into_empty, &applied);
  if (!s.IsStorageFull()) {
    if (!s.ok()) return s;
    return FinishInstall(applied);
  }
  // Hopeless (the pairs alone exceed the map): refused while nothing has changed yet.
  std::error_code ec;
  const std::uint64_t file_bytes = std::filesystem::file_size(path, ec);
  if (const std::uint64_t max_map = storage->Stats().max_map_bytes; !ec && file_bytes > max_map) {
    return Status::StorageFull(fmt::format(
        "storage full: the snapshot ({} bytes) does not fit in max_map_bytes ({} bytes); raise "
        "max_map_bytes",
        file_bytes, max_map));
  }
  logging::Info(fmt::format(
      "engine: the snapshot does not fit beside the data it replaces ({}); installing it in "
      "chunks",
      s.message()));
  // Set before anything is cleared: readers are refused from now on. The snapshots taken
  // before (a backup's, a full resync's) are waited for: while one is live LMDB cannot reuse
  // the pages the clear frees, and the chunks would not fit.
  installing.store(true);
  if (Status w = storage->WaitForSnapshots(); !w.ok()) {
    installing.store(false);
    return w;
  }
  bool cleared = false;
  s = LoadSnapshotChunked(*storage, path, only_into_empty, &applied, &cleared);
  if (!s.ok() && !cleared) {
    installing.store(false);
    return s;  // nothing changed
  }
  if (!s.ok()) {
    // The old data is gone and the new one does not fit (or the file failed now): an empty
    // store, never a partial one.
    logging::Error(fmt::format(
        "engine: the snapshot install failed after the old data was cleared: {}; the store is "
        "now empty and without history",
        s.ToString()));
    if (Status r = ResetToEmpty(*storage, *log, &applied); !r.ok()) {
      Poison("a failed snapshot install", r);  // reads stay refused too (installing)
      return PoisonStatus();
    }
    if (Status f = FinishInstall(applied); !f.ok()) return f;
    installing.store(false);
    const std::string after =
        "; the old data was cleared first, and the store is now empty and without history";
    if (s.IsStorageFull()) {
      return Status::StorageFull(fmt::format(
          "storage full: the snapshot does not fit in max_map_bytes even alone{} (raise "
          "max_map_bytes and install again)",
          after));
    }
    return Status::IOError(s.message() + after);
  }
  s = FinishInstall(applied);
  if (s.ok()) installing.store(false);
  return s;
}

// Writer thread only. The install in one transaction: atomic, and on any error nothing changes.
// StorageFull when the snapshot and the data it replaces do not fit in the map together.
Status Engine::Impl::InstallInOneTxn(const std::string& path, bool only_into_empty,
                                     std::uint64_t* applied) {
  for (;;) {
    std::ifstream file(path, std::ios::binary);
    if (!file) return Status::IOError(fmt::format("cannot open snapshot file {}", path));
    auto begun = storage->BeginWrite();
    if (!begun.ok()) return begun.status();
    Storage::WriteTxn txn = std::move(begun).value();
    // Every write acknowledged so far is committed (installs run between batches), so this
    // transaction sees it; nothing else commits until this one ends.
    if (Status refused = RefuseIfNotEmpty(txn, only_into_empty); !refused.ok()) return refused;
    InstallVisitor visitor(&txn);
    Status s = FeedSnapshotFile(file, path, visitor);
    if (s.ok()) s = SetInstalledPosition(txn, visitor.applied_seq(), &visitor.meta());
    if (s.ok()) s = txn.Commit();
    if (s.IsStorageFull()) {
      txn.Abort();
      Status g = storage->Grow();
      if (g.ok()) continue;
      return Status::StorageFull(
          fmt::format("storage full: the snapshot does not fit: {}", g.message()));
    }
    if (!s.ok()) return s;
    *applied = visitor.applied_seq();
    return Status::Ok();
  }
}

// Writer thread only, once an install's storage commit (with the log restart mark) is done:
// syncs it, restarts the log after applied and deletes the mark.
Status Engine::Impl::FinishInstall(std::uint64_t applied) {
  if (Status s = storage->Sync(); !s.ok()) {
    Poison("a failed fsync after a snapshot install", s);
    return PoisonStatus();
  }
  if (Status s = log->ResetStart(applied + 1); !s.ok()) {
    Poison("a failed log restart after a snapshot install", s);
    return PoisonStatus();
  }
  log_unsynced = false;
  {
    auto begun = storage->BeginWrite();
    if (!begun.ok()) return begun.status();
    Storage::WriteTxn txn = std::move(begun).value();
    Status s = txn.DeleteMeta(kLogRestartMeta);
    if (s.ok()) s = txn.Commit();
    // Synced, so no later crash finds the mark again (FinishLogRestart copes if one does).
    if (s.ok()) s = storage->Sync();
    if (!s.ok()) {
      // The install has taken effect; only the mark's cleanup failed. Open finishes it.
      Poison("a failed cleanup after a snapshot install", s);
    }
  }
  committed_seq = applied;
  visible_seq.store(applied, std::memory_order_release);
  durable_seq.store(applied, std::memory_order_release);
  std::lock_guard<std::mutex> lock(stats_mu);
  last_checkpoint_seq = applied;
  return Status::Ok();
}

void Engine::Impl::RunTimers(std::unique_lock<std::mutex>& writing) {
  Clock::time_point now = Clock::now();
  if (options.fsync == FsyncMode::kInterval && log_unsynced && !poisoned.load() &&
      now - last_log_sync >= options.fsync_interval) {
    (void)SyncLog();
  }
  if (!awaiting_sync.empty() && now - awaiting_since >= options.replicated_sync_delay) {
    SyncAwaiting();
  }
  if (now >= next_checkpoint) {
    Checkpoint(writing);
    next_checkpoint = SaturatingAdd(Clock::now(), options.checkpoint_interval);
  }
}

Clock::time_point Engine::Impl::NextDeadline() const {
  // Wake at least once a minute, so no wait is ever computed from a saturated time point.
  Clock::time_point deadline = std::min(next_checkpoint, Clock::now() + std::chrono::minutes(1));
  if (options.fsync == FsyncMode::kInterval && log_unsynced) {
    deadline = std::min(deadline, SaturatingAdd(last_log_sync, options.fsync_interval));
  }
  if (!awaiting_sync.empty()) {
    deadline = std::min(deadline, SaturatingAdd(awaiting_since, options.replicated_sync_delay));
  }
  return deadline;
}

// Runs the completions of requests (writer only), in order, and empties it.
void Engine::Impl::Complete(std::vector<Request>& requests) {
  for (Request& r : requests) {
    try {
      r.done(std::move(r.statuses), committed_seq);
    } catch (const std::exception& e) {
      logging::Error(fmt::format("engine: a write completion callback threw: {}", e.what()));
    }
  }
  requests.clear();
}

void Engine::Impl::CompleteBatch() { Complete(batch); }

// Writer only, after ProcessBatch of a batch with deferring_sync: its entries are visible, and
// its completion joins the ones waiting for the next fsync, which runs now if the oldest of
// them has waited replicated_sync_delay (else a later batch, a barrier or the timer runs it).
// Why: a replica's batch is already durable on the master, so its own fsync only decides when
// it may acknowledge; with two replicas on the master's disk, one fsync per master batch on
// each tripled the disk's syncs and slowed the master's own (docs/PERFORMANCE.md).
void Engine::Impl::DeferCompletion() {
  const Clock::time_point now = Clock::now();
  if (awaiting_sync.empty()) awaiting_since = now;
  for (Request& r : batch) awaiting_sync.push_back(std::move(r));
  batch.clear();
  if (poisoned.load() || now - awaiting_since >= options.replicated_sync_delay) SyncAwaiting();
}

// Writer only. Makes the waiting batches durable and completes them.
void Engine::Impl::SyncAwaiting() {
  if (awaiting_sync.empty()) return;
  if (poisoned.load()) {
    CompleteAwaiting(PoisonStatus());
  } else if (log_unsynced) {
    (void)SyncLog();  // completes them, with its failure if it fails
  } else {
    CompleteAwaiting(Status::Ok());
  }
}

// Writer only, once the log is synced (or the sync failed: synced says how): the waiting
// batches' entries are durable, and committed_seq covers them.
void Engine::Impl::CompleteAwaiting(const Status& synced) {
  if (awaiting_sync.empty()) return;
  std::vector<Request> completing;
  completing.swap(awaiting_sync);
  if (synced.ok()) {
    durable_seq.store(committed_seq, std::memory_order_release);
  } else {
    for (Request& r : completing) {
      for (Status& status : r.statuses) {
        if (status.ok()) status = synced;
      }
    }
  }
  Complete(completing);
}

void Engine::Impl::PublishCommitted() {
  if (committed_seq == published_seq) return;
  published_seq = committed_seq;
  std::lock_guard<std::mutex> lock(hooks_mu);
  if (commit_listener) commit_listener(committed_seq);
}

// Writer only. Group-commits the requests up to each exclusive one; that one runs alone, in
// order. Empties taken.
void Engine::Impl::RunRequests(std::vector<Request>& taken) {
  for (std::size_t i = 0; i <= taken.size(); ++i) {
    if (i < taken.size() && !taken[i].exclusive) {
      batch.push_back(std::move(taken[i]));
      continue;
    }
    if (!batch.empty()) {
      ProcessBatch();
      if (deferring_sync) {
        DeferCompletion();
      } else {
        SyncAwaiting();  // a barrier's or a client's batch: what came before is durable first
        CompleteBatch();
      }
    }
    if (i < taken.size()) {
      SyncAwaiting();
      taken[i].exclusive();
    }
  }
  taken.clear();
  PublishCommitted();
}

// After an event loop let go of the writer role: requests other loops left queued meanwhile
// go to the writer thread (the one wake-up of this path, and only under contention). The writer
// thread itself needs none: it looks at the queue again before it waits.
void Engine::Impl::HandOverLeftQueued() {
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!left_queued) return;
    left_queued = false;
    if (queue.empty()) return;
  }
  cv.notify_one();
}

// Writer role only. Publishes NextDeadline() for the writer thread's wait; a loop's commit
// wakes the writer thread when that brings the deadline forward (an interval fsync now due).
void Engine::Impl::PublishTimersDue(bool wake_if_earlier) {
  const Clock::time_point due = NextDeadline();
  {
    std::lock_guard<std::mutex> lock(mu);
    const bool earlier = due < timers_due;
    timers_due = due;
    if (!wake_if_earlier || !earlier) return;
  }
  cv.notify_one();
}

// The writer thread's (blocking) way to the role, flagged so that loops do not take it first.
void Engine::Impl::LockWriterRole(std::unique_lock<std::mutex>& writing) {
  {
    std::lock_guard<std::mutex> lock(mu);
    writer_waiting = true;
  }
  writing.lock();
  std::lock_guard<std::mutex> lock(mu);
  writer_waiting = false;
}

void Engine::Impl::Run() {
  std::vector<Request> taken;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu);
      while (queue.empty() && !stopping) {
        // timers_due may move while this waits (PublishTimersDue): waiting again re-reads it.
        if (cv.wait_until(lock, timers_due) == std::cv_status::timeout &&
            Clock::now() >= timers_due) {
          break;
        }
      }
    }
    // The queue is taken under writer_mu, so that an event loop's CommitQueued() that took
    // requests earlier commits them before these.
    std::unique_lock<std::mutex> writing(writer_mu, std::defer_lock);
    LockWriterRole(writing);
    bool stop = false;
    {
      std::lock_guard<std::mutex> lock(mu);
      taken.swap(queue);
      left_queued = false;
      stop = stopping && taken.empty();
    }
    RunRequests(taken);
    RunTimers(writing);
    PublishTimersDue(/*wake_if_earlier=*/false);
    if (stop) break;
  }
  // Drained: make everything durable.
  std::unique_lock<std::mutex> writing(writer_mu, std::defer_lock);
  LockWriterRole(writing);
  SyncAwaiting();
  if (poisoned.load()) {
    final_status = PoisonStatus();
    return;
  }
  if (log_unsynced && !SyncLog().ok()) {
    final_status = PoisonStatus();
    return;
  }
  Checkpoint(writing);
  final_status = poisoned.load() ? PoisonStatus() : Status::Ok();
}

// ---------------------------------------------------------------------------------------------

Engine::Engine(std::unique_ptr<Storage> storage, std::unique_ptr<Log> log,
               std::unique_ptr<Impl> impl)
    : storage_(std::move(storage)), log_(std::move(log)), impl_(std::move(impl)) {}

Engine::~Engine() { (void)Shutdown(); }

Result<std::unique_ptr<Engine>> Engine::Open(const EngineOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) {
    return Status::IOError(
        fmt::format("cannot create data directory {}: {}", options.data_dir, ec.message()));
  }
  StorageOptions storage_options;
  storage_options.dir = options.data_dir + "/db";
  storage_options.initial_map_bytes = options.initial_map_bytes;
  storage_options.max_map_bytes = options.max_map_bytes;
  storage_options.no_sync = true;
  auto storage = Storage::Open(storage_options);
  if (!storage.ok()) return storage.status();

  LogOptions log_options;
  log_options.dir = options.data_dir + "/log";
  log_options.segment_bytes = options.log_segment_bytes;
  log_options.retain_bytes = options.log_retain_bytes;
  log_options.max_retain_bytes = std::max(options.log_max_retain_bytes, options.log_retain_bytes);
  auto log = Log::Open(log_options);
  if (!log.ok()) return log.status();

  if (Status s = ResumeInstall(**storage, **log); !s.ok()) return s;
  if (Status s = FinishLogRestart(**storage, **log); !s.ok()) return s;
  if (Status s = Recover(**storage, **log); !s.ok()) return s;

  auto impl = std::make_unique<Impl>(options, storage->get(), log->get());
  {
    auto snapshot = (*storage)->Read();
    if (!snapshot.ok()) return snapshot.status();
    impl->committed_seq = snapshot->AppliedSeq();
  }
  impl->visible_seq.store(impl->committed_seq);
  impl->durable_seq.store(impl->committed_seq);
  impl->published_seq = impl->committed_seq;
  impl->last_checkpoint_seq = impl->committed_seq;  // recovery synced the storage
  impl->last_log_sync = Clock::now();
  impl->next_checkpoint = SaturatingAdd(impl->last_log_sync, options.checkpoint_interval);
  impl->timers_due = impl->NextDeadline();
  Impl* raw = impl.get();
  std::unique_ptr<Engine> engine(
      new Engine(std::move(storage).value(), std::move(log).value(), std::move(impl)));
  raw->writer = std::thread([raw] { raw->Run(); });
  return engine;
}

void Engine::SetClientWriteRefusal(std::optional<std::string> refusal) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->client_write_refusal = std::move(refusal);
}

void Engine::Submit(std::vector<WriteFn> writes, WriteDone done, Origin origin) {
  Queue(std::move(writes), std::move(done), origin, /*wake_writer=*/true);
}

void Engine::Enqueue(std::vector<WriteFn> writes, WriteDone done, Origin origin) {
  Queue(std::move(writes), std::move(done), origin, /*wake_writer=*/false);
}

void Engine::Queue(std::vector<WriteFn> writes, WriteDone done, Origin origin, bool wake_writer) {
  Impl& impl = *impl_;
  {
    std::lock_guard<std::mutex> lock(impl.mu);
    if (!impl.stopping) {
      impl.queue.push_back(
          Impl::Request{std::move(writes), std::move(done), {}, {}, origin, wake_writer});
      if (!wake_writer) return;
      // Cheap when the writer is busy: glibc makes no system call without a waiter.
      impl.cv.notify_one();
      return;
    }
  }
  if (done) {
    done(std::vector<Status>(writes.size(), Status::Unavailable("server is shutting down")),
         impl.visible_seq.load());
  }
}

void Engine::CommitQueued() {
  Impl& impl = *impl_;
  {
    std::lock_guard<std::mutex> lock(impl.mu);
    if (impl.queue.empty()) return;
    if (impl.writer_waiting) {
      impl.left_queued = true;  // the writer thread takes the queue as soon as it has the role
      return;
    }
  }
  // An event loop does not wait for the writer role: while another loop (or the writer thread)
  // fsyncs, this one keeps serving. It leaves its requests queued and says so (left_queued);
  // whoever holds the role looks at that after letting go of it, so the requests never wait for
  // this loop's next pass, which may not come (its clients wait for these very replies). The
  // second try closes the race with a holder that let go between the first try and the flag.
  std::unique_lock<std::mutex> writing(impl.writer_mu, std::try_to_lock);
  if (!writing.owns_lock()) {
    {
      std::lock_guard<std::mutex> lock(impl.mu);
      impl.left_queued = true;
    }
    if (!writing.try_lock()) return;
  }
  std::vector<Impl::Request> taken;
  {
    std::lock_guard<std::mutex> lock(impl.mu);
    // Up to the first request for the writer thread (a snapshot install, or anything submitted
    // rather than enqueued, such as a large replicated transaction): that one and what follows
    // it are the writer thread's, which the submission woke.
    auto end = std::find_if(impl.queue.begin(), impl.queue.end(), [](const Impl::Request& r) {
      return r.writer_thread || bool(r.exclusive);
    });
    taken.assign(std::make_move_iterator(impl.queue.begin()), std::make_move_iterator(end));
    impl.queue.erase(impl.queue.begin(), end);
    impl.left_queued = false;
  }
  impl.RunRequests(taken);
  impl.PublishTimersDue(/*wake_if_earlier=*/true);
  writing.unlock();
  impl.HandOverLeftQueued();
}

std::uint64_t Engine::committed_seq() const {
  return impl_->visible_seq.load(std::memory_order_acquire);
}

const EngineOptions& Engine::options() const { return impl_->options; }

std::uint64_t Engine::durable_seq() const {
  return impl_->durable_seq.load(std::memory_order_acquire);
}

Status Engine::ReadLog(std::uint64_t from_seq,
                       const std::function<bool(std::uint64_t, const LogEntry&)>& visit) {
  // Only committed entries: a later entry may still be rolled back.
  const std::uint64_t limit = committed_seq();
  if (from_seq > limit) return Status::Ok();
  return log_->ReadFrom(from_seq, [&](std::uint64_t seq, const LogEntry& entry) {
    if (seq > limit) return false;
    return visit(seq, entry) && seq < limit;
  });
}

Result<EpochHistory> Engine::EpochsOf(const Storage::Snapshot& snapshot) {
  std::string bytes;
  Status s = snapshot.GetMeta(kEpochsMeta, &bytes);
  if (s.IsNotFound()) return EpochHistory{};
  if (!s.ok()) return s;
  return DecodeEpochHistory(bytes);
}

Result<Storage::Snapshot> Engine::Read() {
  // Checked after the snapshot is taken: a snapshot taken before a chunked install cleared the
  // key space holds the old data, one taken after it sees installing set (it is set first).
  auto snapshot = storage_->Read();
  if (snapshot.ok() && impl_->installing.load()) {
    return Status::Unavailable(
        "a snapshot install is in progress (a full resync or a restore); try again when it is "
        "done");
  }
  return snapshot;
}

Result<EpochHistory> Engine::Epochs() {
  // Not refused during a chunked install: the history is only replaced by its final commit.
  auto snapshot = storage_->Read();
  if (!snapshot.ok()) return snapshot.status();
  return EpochsOf(*snapshot);
}

// Runs work on the writer thread, alone between batches, and waits for its status.
Status Engine::RunExclusive(std::function<Status()> work) {
  Impl& impl = *impl_;
  auto result = std::make_shared<std::promise<Status>>();
  auto future = result->get_future();
  {
    std::lock_guard<std::mutex> lock(impl.mu);
    if (impl.stopping) return Status::Unavailable("server is shutting down");
    Impl::Request request;
    request.exclusive = [work = std::move(work), result] { result->set_value(work()); };
    impl.queue.push_back(std::move(request));
  }
  impl.cv.notify_one();
  return future.get();
}

Status Engine::InstallSnapshot(const std::string& path, bool only_into_empty) {
  return RunExclusive(
      [&impl = *impl_, path, only_into_empty] { return impl.Install(path, only_into_empty); });
}

Status Engine::GrowAheadOfSnapshot() {
  return RunExclusive([&impl = *impl_] {
    const StorageStats stats = impl.storage->Stats();
    Status s;
    // Not past live snapshots (another backup, a full resync): waiting for them would hold up
    // every reader and writer, the very stall this growth is meant to avoid.
    if (stats.used_bytes * 2 > stats.map_bytes) s = impl.storage->Grow(false);
    return s.IsStorageFull() || s.code() == Status::Code::kUnavailable ? Status::Ok() : s;
  });
}

void Engine::SetCommitListener(std::function<void(std::uint64_t)> listener) {
  std::lock_guard<std::mutex> lock(impl_->hooks_mu);
  impl_->commit_listener = std::move(listener);
}

void Engine::SetRetentionPin(std::function<std::uint64_t()> pin) {
  std::lock_guard<std::mutex> lock(impl_->hooks_mu);
  impl_->retention_pin = std::move(pin);
}

Status Engine::Shutdown() {
  Impl& impl = *impl_;
  std::lock_guard<std::mutex> once(impl.shutdown_mu);
  if (impl.shut_down) return impl.final_status;
  {
    std::lock_guard<std::mutex> lock(impl.mu);
    impl.stopping = true;
  }
  impl.cv.notify_one();
  if (impl.writer.joinable()) impl.writer.join();
  impl.shut_down = true;
  return impl.final_status;
}

std::optional<std::string> Engine::PoisonReason() const {
  if (!impl_->poisoned.load()) return std::nullopt;
  std::lock_guard<std::mutex> lock(impl_->stats_mu);
  return impl_->poison_message;
}

EngineStats Engine::Stats() {
  EngineStats stats;
  {
    std::lock_guard<std::mutex> lock(impl_->stats_mu);
    stats.commits = impl_->commits;
    stats.committed_writes = impl_->committed_writes;
    stats.fsyncs = impl_->fsyncs;
    stats.last_checkpoint_seq = impl_->last_checkpoint_seq;
    stats.poisoned = impl_->poisoned.load();
    stats.poison_reason = impl_->poison_message;
  }
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    stats.queued_requests = impl_->queue.size();
  }
  stats.fsync_seconds = impl_->fsync_seconds.Snapshot();
  stats.batch_writes = impl_->batch_writes.Snapshot();
  stats.storage = storage_->Stats();
  stats.log = log_->Stats();
  return stats;
}

}  // namespace kvstore
