// Engine: the durable key-value store. Storage (LMDB) holds the key space, the Log is the
// durability point, and one writer at a time group-commits every write.
// Threads:
//   - Submit(), Enqueue(), CommitQueued() and Read() may be called from any thread;
//   - write functions and their completion callbacks run on whichever thread holds the writer
//     role: the engine's writer thread, or an event loop inside CommitQueued(). Callbacks must
//     only hand results over (post to the caller's executor), never block.
//
// Group commit (see docs/ARCHITECTURE.md): the writer takes everything queued, runs the write
// functions inside one LMDB transaction (which collects log entries), appends the entries to the
// log, fsyncs it once (fsync: always), commits LMDB without sync, then completes every request.
// A failed fsync poisons the engine: every later write fails with IOError until restart.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/epochs.h"
#include "kvstore/status.h"
#include "log/log.h"
#include "metrics/histogram.h"
#include "storage/storage.h"

namespace kvstore {

enum class FsyncMode { kAlways, kInterval, kNever };

// "always", "interval" or "never": the setting's spelling, for config, INFO and logs.
constexpr std::string_view FsyncModeName(FsyncMode mode) {
  switch (mode) {
    case FsyncMode::kAlways:
      return "always";
    case FsyncMode::kInterval:
      return "interval";
    case FsyncMode::kNever:
      return "never";
  }
  return "always";
}

struct EngineOptions {
  std::string data_dir;  // LMDB in <data_dir>/db, log in <data_dir>/log
  FsyncMode fsync = FsyncMode::kAlways;
  std::chrono::milliseconds fsync_interval{1000};        // for kInterval
  std::chrono::milliseconds checkpoint_interval{10000};  // LMDB sync + log trim
  // fsync: always only. A batch made only of a replica's applies (Origin::kReplicaApply) is
  // visible at once, and its fsync waits up to this long to be shared with the batches that follow;
  // its completion (the replica's acknowledgement) runs after that fsync. 0: each batch syncs. A
  // barrier, a client write, a checkpoint or shutdown syncs what waits at once.
  std::chrono::milliseconds replicated_sync_delay{0};
  std::uint64_t initial_map_bytes = 64ull << 20;
  std::uint64_t max_map_bytes = 32ull << 30;
  std::uint64_t log_segment_bytes = 64ull << 20;
  std::uint64_t log_retain_bytes = 1ull << 30;
  std::uint64_t log_max_retain_bytes = 8ull << 30;  // the bound on what replicas may pin
};

// What a write function sees: reads see the batch's earlier writes; every mutation is recorded
// for the log. Errors: StorageFull (map full; the engine isolates and retries), InvalidArgument.
class WriteContext {
 public:
  virtual ~WriteContext() = default;
  virtual Status Get(std::string_view key, std::string* value) = 0;  // Ok or NotFound
  virtual Status Put(std::string_view key, std::string_view value) = 0;
  virtual Status Delete(std::string_view key) = 0;  // Ok or NotFound (nothing logged then)
  virtual Status Clear() = 0;
  virtual std::uint64_t KeyCount() = 0;
  // A read view of the write in progress, its own changes included (Storage::WriteTxn::View).
  virtual Storage::Snapshot View() = 0;
  // The sequence the next logged entry of this write gets.
  virtual std::uint64_t NextSeq() = 0;
  // Applies a replicated record exactly as the master logged it and logs its stored bytes as
  // they are (no second encoding or checksum), even when it changes nothing (a delete of a
  // missing key), so the replica's log and sequences are the master's, units included.
  // Corruption if record.seq is not NextSeq(): an entry lands on the sequence it carries.
  virtual Status ApplyLogged(const LogRecordView& record) = 0;
  // Opens a new epoch with the given random id, numbered the newest known + 1, or min_number
  // if that is larger.
  virtual Status OpenEpoch(std::uint64_t id, std::uint64_t min_number, Epoch* opened) = 0;
};

// Applies consecutive log records (EncodeLogRecord's format, already checked: their checksums
// are not verified again) through db.ApplyLogged, stopping at the first failure.
Status ApplyLoggedRecords(WriteContext& db, std::string_view records);

// A write: reads and mutates through the context, stores its own reply in captured state.
// Must be deterministic given the context: it may run more than once (after a full map the
// engine re-runs it alone in a fresh transaction; when another write of its batch fails after
// changing something, the batch runs again without that one); only the last run's effects count.
using WriteFn = std::function<Status(WriteContext&)>;
// Called once by the writer (see Threads above) with one Status per WriteFn, in order, and the
// engine's committed sequence after them (at or past every entry they logged: what WAIT and
// sync replication wait for).
using WriteDone = std::function<void(std::vector<Status>, std::uint64_t committed_seq)>;

struct EngineStats {
  std::uint64_t commits = 0;           // group commits
  std::uint64_t committed_writes = 0;  // write functions committed
  std::uint64_t fsyncs = 0;
  std::uint64_t last_checkpoint_seq = 0;
  std::uint64_t queued_requests = 0;         // submissions waiting for the writer
  metrics::HistogramSnapshot fsync_seconds;  // each log fsync's duration
  metrics::HistogramSnapshot batch_writes;   // write functions per group commit
  bool poisoned = false;
  std::string poison_reason;
  StorageStats storage;
  LogStats log;
};

class Engine {
 public:
  // Opens storage and log, replays log entries newer than the storage's applied sequence,
  // then starts the writer thread. Corruption / IOError stop the start.
  static Result<std::unique_ptr<Engine>> Open(const EngineOptions& options);
  // Stops the writer after draining the queue (as Shutdown()).
  ~Engine();

  // Where a submission comes from. Client writes are subject to the write fence; the others
  // are not. A replica's applies of its master's entries are made visible before their fsync
  // (they are durable on the master already), and that fsync may wait for later batches
  // (EngineOptions::replicated_sync_delay). kReplication: everything else replication writes
  // (epochs, barriers).
  enum class Origin { kClient, kReplication, kReplicaApply };

  // Queues writes for the writer thread and wakes it; done runs once they are durable (per
  // fsync mode) and visible, or failed. An event loop's CommitQueued() leaves them, and what
  // was queued after them, to that thread: for work that does not come from a loop, or that
  // would stall one (a replicated transaction of many megabytes). After Shutdown() every
  // submission fails with Unavailable. An empty writes is a barrier: done runs once everything
  // submitted before it is committed and durable.
  void Submit(std::vector<WriteFn> writes, WriteDone done, Origin origin = Origin::kClient);

  // Queues writes like Submit() but does not wake the writer thread: the caller (an event loop)
  // promises to call CommitQueued() before it next waits for I/O. That is Redis's
  // beforeSleep: everything the loop read in one pass shares one fsync, and a write never
  // crosses threads on its way to the disk (on a 2-core machine each cross-thread wake-up of
  // the writer and back cost more than the fsync it waited for; docs/PERFORMANCE.md).
  void Enqueue(std::vector<WriteFn> writes, WriteDone done, Origin origin = Origin::kClient);
  // Group-commits everything queued, on the calling thread, in queue order; returns once it is
  // durable (per the fsync mode) and every completion has run. When another thread holds the
  // writer role (another loop's commit, the writer thread), returns at once instead: that
  // thread's commit, or the writer thread after it, takes the queue. Leaves a snapshot install
  // or a Submit()ted request, and what follows it, to the writer thread. Any thread.
  void CommitQueued();

  // While a refusal is set, client writes that reach the writer fail with ReadOnly(refusal).
  // Checked by the writer, so once a barrier submitted after the call completes, no
  // client write can commit any more (a fenced old master, a replica). Any thread.
  void SetClientWriteRefusal(std::optional<std::string> refusal);

  // A read snapshot of the latest committed state. Unavailable while a snapshot install that
  // does not fit in one transaction loads in chunks (the key space is partial meanwhile).
  Result<Storage::Snapshot> Read();

  // The newest sequence that is committed (durable per the fsync mode, and visible). Only
  // entries up to here may be shipped to replicas. On a replica with replicated_sync_delay, the
  // last few applied batches may be visible here before they are durable; their completions
  // (which carry a durable sequence) wait. Any thread.
  std::uint64_t committed_seq() const;
  // committed_seq() as far as it is durable per the fsync mode: behind it only while a
  // replica's applied batches wait for their fsync, or for good once that fsync failed. What
  // a replica may acknowledge. Any thread.
  std::uint64_t durable_seq() const;
  // The options it was opened with. Any thread.
  const EngineOptions& options() const;
  // Reads committed log entries from from_seq on (see Log::ReadFrom). Any thread.
  Status ReadLog(std::uint64_t from_seq,
                 const std::function<bool(std::uint64_t seq, const LogEntry& entry)>& visit);
  // A cursor over the log from from_seq (see LogCursor); pass committed_seq() as its limit.
  Result<std::unique_ptr<LogCursor>> OpenLogCursor(std::uint64_t from_seq) {
    return log_->OpenCursor(from_seq);
  }
  // The epoch history as of the latest commit. Any thread.
  Result<EpochHistory> Epochs();
  // Same, from a given snapshot (consistent with its data and AppliedSeq).
  static Result<EpochHistory> EpochsOf(const Storage::Snapshot& snapshot);

  // Replication hooks, set once before serving. listener runs on the writer after each
  // group commit with the new committed sequence (it must only hand the news over); pin returns
  // the oldest sequence a replica still needs (0: none), consulted when the log is trimmed.
  void SetCommitListener(std::function<void(std::uint64_t committed_seq)> listener);
  void SetRetentionPin(std::function<std::uint64_t()> pin);

  // Replaces the whole key space, the epoch history and the log position with the snapshot in
  // the file at path (snapshot_format.h), atomically: the file is checked while it is loaded
  // into one LMDB transaction, and on any error nothing changes. Afterwards the log restarts at
  // the snapshot's sequence + 1. Blocks until done; runs on the writer thread between batches.
  // When the snapshot and the data it replaces do not fit in the map together, the install
  // clears the key space and loads the snapshot in several commits instead, refusing reads
  // until it ends; an install mark in the storage makes Open install the file again after a
  // crash (nothing may remove the file before Open), or, without the file, start empty and
  // without history. If such an install fails after the clear (the snapshot does not fit even
  // alone), the store is left empty and without history, and the error says so.
  // only_into_empty (an online restore without FORCE): refuses (InvalidArgument, nothing
  // changed) a key space that holds any key, checked in the install's own write transaction just
  // before it clears the key space, so that no write can commit between the check and the
  // replacement (one checked earlier would let an acknowledged write be wiped).
  Status InstallSnapshot(const std::string& path, bool only_into_empty = false);
  // Before a long snapshot (a backup's, a full resync's): grows the map now if more than half of
  // it is in use, so that the writes made while the snapshot is read seldom need a growth. A
  // growth waits for every snapshot to end, and holds up new readers and all writes meanwhile:
  // minutes behind a large backup. Best effort: a map at its limit, a full disk or a snapshot
  // live now (another backup's) leave the map as it is (Ok). Blocks until done; runs on the writer
  // thread between batches.
  Status GrowAheadOfSnapshot();

  // Completes everything queued, fsyncs the log, checkpoints LMDB and stops the writer.
  Status Shutdown();

  EngineStats Stats();
  // Why writes are disabled (a failed fsync, ...), or nullopt. Unlike Stats(), never waits for the
  // storage (a map growth waiting for a long snapshot holds up new readers): for health probes.
  std::optional<std::string> PoisonReason() const;

 private:
  Status RunExclusive(std::function<Status()> work);
  struct Impl;
  Engine(std::unique_ptr<Storage> storage, std::unique_ptr<Log> log, std::unique_ptr<Impl> impl);
  void Queue(std::vector<WriteFn> writes, WriteDone done, Origin origin, bool wake_writer);
  std::unique_ptr<Storage> storage_;
  std::unique_ptr<Log> log_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvstore
