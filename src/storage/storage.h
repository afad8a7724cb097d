// Storage: the key space in one LMDB environment (the only module that includes <lmdb.h>).
// Threads: Snapshot reads may run on any thread at the same time; WriteTxn is used by exactly
// one thread at a time (the engine's writer). Reads never wait for the writer, except for the
// brief exclusive section while the map grows (mdb_env_set_mapsize needs no live transaction).
//
// Layout inside the environment:
//   database "kv"   : key bytes -> value bytes (1 <= key size <= 511, LMDB's limit)
//   database "meta" : "applied_seq" -> u64 little endian: the last log sequence whose effect is
//                     in this environment (written in the same transaction as the effect, so
//                     recovery knows exactly where to resume replay);
//                     other names -> values owned by the engine (GetMeta / PutMeta).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "kvstore/status.h"

namespace kvstore {

struct StorageOptions {
  std::string dir;                                // created if missing
  std::uint64_t initial_map_bytes = 64ull << 20;  // grows x2 on demand ...
  std::uint64_t max_map_bytes = 32ull << 30;      // ... up to this bound
  // When true, LMDB commits do not fsync (MDB_NOSYNC); durability comes from the engine's log and
  // Sync() checkpoints. Tests of storage alone may set it false.
  bool no_sync = true;
  // MDB_WRITEMAP: a commit writes its pages into the shared map instead of one pwrite() per
  // dirty page (random keys dirty one or two pages per put). The whole map's blocks are
  // reserved on disk (see storage.cpp), so a page fault in the map never meets a full disk.
  bool write_map = true;
};

inline constexpr std::size_t kMaxKeyBytes = 511;  // mdb_env_get_maxkeysize() for default builds

struct StorageStats {
  std::uint64_t keys = 0;
  std::uint64_t map_bytes = 0;  // current map size
  std::uint64_t max_map_bytes = 0;
  std::uint64_t used_bytes = 0;  // pages in use * page size (last committed transaction)
  std::uint64_t applied_seq = 0;
};

class Storage {
 public:
  // Opens (or creates) the environment in options.dir and clears stale reader slots. The data
  // file takes the whole map on disk (at least initial_map_bytes; less if the disk is smaller).
  // Failure: IOError naming the directory and the LMDB / errno reason; StorageFull when the
  // disk has no room even for the pages in use.
  static Result<std::unique_ptr<Storage>> Open(const StorageOptions& options);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  // A consistent read-only view. Cheap: read transactions are pooled and reused (reset/renew).
  // Must be destroyed before the Storage; must not be held for long (it pins old pages).
  class Snapshot {
   public:
    ~Snapshot();
    Snapshot(Snapshot&&) noexcept;
    Snapshot& operator=(Snapshot&&) = delete;
    // Ok and *value set; NotFound; or IOError.
    Status Get(std::string_view key, std::string* value) const;
    // As above without the copy: *value views the map, valid while this snapshot lives (for a
    // WriteTxn's view: until that transaction's next write).
    Status Get(std::string_view key, std::string_view* value) const;
    // Visits keys in sorted order starting at the first key >= start (or > start when
    // exclusive is true), until visit returns false. Values are views into the map, valid only
    // during the call.
    Status Scan(
        std::string_view start, bool exclusive,
        const std::function<bool(std::string_view key, std::string_view value)>& visit) const;
    std::uint64_t KeyCount() const;
    std::uint64_t AppliedSeq() const;
    // Ok and *value set, NotFound or IOError.
    Status GetMeta(std::string_view name, std::string* value) const;

   private:
    friend class Storage;
    Snapshot(Storage* storage, void* txn, bool owned);
    Storage* storage_;
    void* txn_;   // MDB_txn*, kept opaque so <lmdb.h> stays inside storage/
    bool owned_;  // false: a view of a WriteTxn, which outlives it and ends the transaction
  };

  // Failure: IOError (for example reader table full).
  Result<Snapshot> Read();

  // The single write transaction. Destroying it without Commit() aborts it.
  class WriteTxn {
   public:
    ~WriteTxn();
    WriteTxn(WriteTxn&&) noexcept;
    WriteTxn& operator=(WriteTxn&&) = delete;
    Status Get(std::string_view key, std::string* value) const;  // sees this txn's own writes
    // StorageFull when the map is full (the transaction is then unusable: Abort and retry after
    // Grow()); InvalidArgument for an empty or too long key.
    Status Put(std::string_view key, std::string_view value);
    Status Delete(std::string_view key);  // Ok, or NotFound when the key did not exist
    Status Clear();                       // removes every key
    Status SetAppliedSeq(std::uint64_t seq);
    Status GetMeta(std::string_view name, std::string* value) const;  // Ok, NotFound or IOError
    Status PutMeta(std::string_view name, std::string_view value);    // StorageFull like Put
    Status DeleteMeta(std::string_view name);                         // Ok when absent too
    // Keys in the database as this transaction sees it (its own writes included).
    std::uint64_t KeyCount() const;
    // Reads through this transaction, its own writes included, with the Snapshot interface (a
    // transaction's read commands, see commands/transaction.cpp). Same thread only; must be
    // destroyed before the transaction ends and not used across a Put or Delete that it reads
    // after (values are copied out, so only Scan's views are affected).
    Snapshot View() const;

    // Makes the changes visible to new snapshots (durable only after Storage::Sync when
    // no_sync is set). StorageFull or IOError on failure; the transaction is gone either way.
    Status Commit();
    void Abort();

   private:
    friend class Storage;
    WriteTxn(Storage* storage, void* txn);
    void* Current() const;  // the open MDB_txn*
    Storage* storage_;
    void* txn_;  // MDB_txn*
  };

  Result<WriteTxn> BeginWrite();

  // Doubles the map size, up to max_map_bytes minus a small reserve (see below). Waits for
  // live snapshots to end. The data file's blocks for the new size are allocated first
  // (so commits never run out of disk). StorageFull when already at that limit or
  // when the disk has no room (the map then keeps its size). Must not be called with a
  // WriteTxn open. wait_for_snapshots false: if a snapshot is live, Unavailable at once and the
  // map keeps its size (a growth that waited would hold up new readers meanwhile).
  Status Grow(bool wait_for_snapshots = true);

  // The reserve: LMDB copies pages on write, so even a delete needs free pages; a map filled
  // completely by puts would refuse the deletes that could empty it. Grow() therefore stops
  // short of max_map_bytes by a reserve (max_map_bytes / 32, clamped to [256 KiB, 16 MiB], at
  // most a quarter), which only write transactions that delete may use: OpenReserve() maps the
  // full max_map_bytes, CloseReserve() shrinks the map back to the put limit (or to the pages
  // in use, if more). Same rules as Grow(): no WriteTxn open, waits for snapshots.
  Status OpenReserve();
  Status CloseReserve();

  // Returns once no snapshot taken before the call is live (new readers wait behind it, as for
  // Grow()). LMDB reuses a page freed by a commit only once no snapshot older than that commit
  // is live: a large rewrite that depends on that reuse (a snapshot install in chunks) waits
  // here first. Must not be called with a WriteTxn open, nor by a thread holding a snapshot.
  Status WaitForSnapshots();

  // Flushes everything committed so far to disk (the checkpoint). IOError on failure. May run
  // on any thread while the writer commits (LMDB's sync takes no lock); a Grow() waits for it.
  Status Sync();

  StorageStats Stats();

 private:
  struct Impl;
  explicit Storage(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvstore
