// Storage on LMDB: one environment, databases "kv" and "meta", pooled read transactions.
// Threads: Read()/Snapshot on any thread (MDB_NOTLS lets a read transaction move between
// threads and be reused); WriteTxn and Grow() by the single writer; Sync() on any thread.
//
// Map growth: mdb_env_set_mapsize() remaps the file, so no snapshot may be live while it runs.
// Every Snapshot holds map_mutex shared; Grow() takes it exclusive. So that a steady stream of
// readers cannot starve Grow(), new readers first pass through grow_gate while a grow waits.
//
// Disk space: the data file's blocks are made real (posix_fallocate) for the whole map whenever
// its size is set: at Open and before every Grow/OpenReserve. A full disk is then StorageFull at
// that moment, not an I/O error inside a commit (LMDB turns a short pwrite into EIO). This also
// keeps MDB_WRITEMAP (the default, write_map) safe: no SIGBUS on a sparse page.
#include "storage/storage.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <shared_mutex>
#include <system_error>
#include <utility>
#include <vector>

#include "common/coding.h"
#include "common/logging.h"

namespace kvstore {

namespace {

constexpr char kAppliedSeqKey[] = "applied_seq";
constexpr unsigned kMaxReaders = 512;
constexpr std::uint64_t kPageRound = 4096;

// Snapshots held by the calling thread. A thread that already holds one must not wait at the
// grow gate (Grow waits for that very snapshot). Approximate when snapshots move between
// threads, which only makes the gate less strict, never deadlocks.
thread_local int t_snapshots_held = 0;

MDB_txn* AsTxn(void* txn) { return static_cast<MDB_txn*>(txn); }

MDB_val ToVal(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }

std::string_view ToView(const MDB_val& v) {
  return std::string_view(static_cast<const char*>(v.mv_data), v.mv_size);
}

bool KeyLengthOk(std::string_view key) { return !key.empty() && key.size() <= kMaxKeyBytes; }

Status CheckKey(std::string_view key) {
  if (key.empty()) return Status::InvalidArgument("empty key: keys must be 1 to 511 bytes");
  if (key.size() > kMaxKeyBytes) {
    return Status::InvalidArgument(fmt::format(
        "key of {} bytes is too long: keys must be 1 to {} bytes", key.size(), kMaxKeyBytes));
  }
  return Status::Ok();
}

// Maps an LMDB write-path error. MAP_FULL / TXN_FULL / ENOSPC mean "no room": the caller may
// grow the map or free space; anything else is an I/O problem.
Status WriteError(std::string_view what, int rc) {
  if (rc == ENOSPC || rc == EDQUOT) {
    return Status::StorageFull(fmt::format("storage full: {}: no space left on device", what));
  }
  if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL) {
    return Status::StorageFull(fmt::format("{}: {}", what, mdb_strerror(rc)));
  }
  return Status::IOError(fmt::format("{}: {}", what, mdb_strerror(rc)));
}

std::uint64_t RoundUp(std::uint64_t n, std::uint64_t unit) { return (n + unit - 1) / unit * unit; }

using coding::DecodeFixed64;
using coding::EncodeFixed64;

// Reads "applied_seq" from meta in txn; 0 when absent or malformed.
std::uint64_t ReadAppliedSeq(MDB_txn* txn, MDB_dbi meta) {
  MDB_val k = ToVal(kAppliedSeqKey);
  MDB_val v;
  if (mdb_get(txn, meta, &k, &v) != 0 || v.mv_size != 8) return 0;
  return DecodeFixed64(static_cast<const char*>(v.mv_data));
}

// Reads meta[name] into *value: Ok, NotFound or IOError.
Status ReadMeta(MDB_txn* txn, MDB_dbi meta, std::string_view name, std::string* value) {
  MDB_val k = ToVal(name);
  MDB_val v;
  int rc = mdb_get(txn, meta, &k, &v);
  if (rc == MDB_NOTFOUND) return Status::NotFound(fmt::format("no {} in storage", name));
  if (rc != 0) {
    return Status::IOError(fmt::format("storage read of {} failed: {}", name, mdb_strerror(rc)));
  }
  value->assign(static_cast<const char*>(v.mv_data), v.mv_size);
  return Status::Ok();
}

std::uint64_t EntryCount(MDB_txn* txn, MDB_dbi dbi) {
  MDB_stat st;
  if (mdb_stat(txn, dbi, &st) != 0) return 0;
  return st.ms_entries;
}

// Aborts a cursor on scope exit.
class CursorGuard {
 public:
  explicit CursorGuard(MDB_cursor* c) : c_(c) {}
  ~CursorGuard() { mdb_cursor_close(c_); }
  CursorGuard(const CursorGuard&) = delete;
  CursorGuard& operator=(const CursorGuard&) = delete;

 private:
  MDB_cursor* c_;
};

}  // namespace

struct Storage::Impl {
  StorageOptions options;
  MDB_env* env = nullptr;
  MDB_dbi kv = 0;
  MDB_dbi meta = 0;
  std::uint64_t max_map_bytes = 0;
  std::uint64_t put_limit_bytes = 0;  // Grow() stops here; the rest is the delete reserve

  // Shared: one per live Snapshot. Exclusive: Grow() while it remaps.
  std::shared_mutex map_mutex;
  // Held by Grow() for its whole duration; readers pass through it while grow_pending is set.
  std::mutex grow_gate;
  std::atomic<bool> grow_pending{false};

  std::mutex pool_mutex;
  std::vector<MDB_txn*> pool;  // GUARDED_BY(pool_mutex): reset read transactions

  // The writer only (whichever thread holds the engine's writer role).
  bool write_open = false;

  ~Impl() {
    for (MDB_txn* txn : pool) mdb_txn_abort(txn);
    pool.clear();
    if (env != nullptr) mdb_env_close(env);
  }

  std::uint64_t MapBytes() {
    MDB_envinfo info;
    mdb_env_info(env, &info);
    return info.me_mapsize;
  }

  // Allocates the data file's blocks up to bytes (see the top of the file). StorageFull on
  // ENOSPC / EDQUOT (the file is cut back to keep_bytes so no half reservation stays), IOError
  // otherwise.
  Status Reserve(std::uint64_t bytes, std::uint64_t keep_bytes) {
    int fd = -1;
    if (int rc = mdb_env_get_fd(env, &fd); rc != 0) {
      return Status::IOError(
          fmt::format("cannot get the LMDB data file descriptor: {}", mdb_strerror(rc)));
    }
    int err = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes));
    if (err == 0) return Status::Ok();
    struct stat st;
    if (::fstat(fd, &st) == 0 && static_cast<std::uint64_t>(st.st_size) > keep_bytes) {
      (void)::ftruncate(fd, static_cast<off_t>(keep_bytes));
    }
    std::string what =
        fmt::format("cannot reserve {} bytes for the LMDB map in {}", bytes, options.dir);
    if (err == ENOSPC || err == EDQUOT) {
      return Status::StorageFull(fmt::format("storage full: {}: no space left on device", what));
    }
    return Status::IOError(
        fmt::format("{}: {}", what, std::error_code(err, std::generic_category()).message()));
  }

  // Sets the map size once no snapshot is live (LMDB rounds it up to the pages in use). A
  // larger map is reserved on disk first; if that fails the map keeps its size.
  // wait_for_snapshots false: Unavailable, and no change, if a snapshot is live now.
  // Runs work once every live snapshot has ended, holding new ones back meanwhile (they wait
  // at the gate while grow_pending is set, so a stream of readers cannot starve it).
  template <typename Work>
  void WithSnapshotsDrained(Work work) {
    grow_pending.store(true, std::memory_order_release);
    {
      std::lock_guard<std::mutex> gate(grow_gate);
      std::unique_lock<std::shared_mutex> exclusive(map_mutex);
      work();
    }
    grow_pending.store(false, std::memory_order_release);
  }

  Status Remap(std::uint64_t bytes, bool wait_for_snapshots = true) {
    if (write_open) return Status::InvalidArgument("cannot resize the map with a write open");
    const auto snapshots_live = [] { return Status::Unavailable("snapshots are open"); };
    if (!wait_for_snapshots) {
      // Checked before reserving disk for nothing; checked again below.
      std::unique_lock<std::shared_mutex> probe(map_mutex, std::try_to_lock);
      if (!probe.owns_lock()) return snapshots_live();
    }
    const std::uint64_t current = MapBytes();
    if (bytes > current) {
      if (Status s = Reserve(bytes, current); !s.ok()) return s;
    }
    int rc;
    if (wait_for_snapshots) {
      // Pooled transactions are reset: they hold no pointer into the map, and renew reads the
      // meta pages again from the new mapping.
      WithSnapshotsDrained([&] { rc = mdb_env_set_mapsize(env, bytes); });
    } else {
      std::unique_lock<std::shared_mutex> exclusive(map_mutex, std::try_to_lock);
      if (!exclusive.owns_lock()) return snapshots_live();
      rc = mdb_env_set_mapsize(env, bytes);
    }
    if (rc != 0) {
      return Status::IOError(
          fmt::format("cannot resize the LMDB map to {} bytes: {}", bytes, mdb_strerror(rc)));
    }
    return Status::Ok();
  }

  void Release(MDB_txn* txn) {
    mdb_txn_reset(txn);
    std::lock_guard<std::mutex> lock(pool_mutex);
    pool.push_back(txn);
  }
};

Storage::Storage(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Storage::~Storage() = default;

Result<std::unique_ptr<Storage>> Storage::Open(const StorageOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) {
    return Status::IOError(
        fmt::format("cannot create storage directory {}: {}", options.dir, ec.message()));
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  auto fail = [&](std::string_view what, int rc) {
    return Status::IOError(fmt::format("cannot open LMDB environment in {}: {}: {}", options.dir,
                                       what, mdb_strerror(rc)));
  };
  int rc = mdb_env_create(&impl->env);
  if (rc != 0) return fail("mdb_env_create", rc);
  mdb_env_set_maxdbs(impl->env, 4);
  mdb_env_set_maxreaders(impl->env, kMaxReaders);

  // The reserve kept free for deletes (see storage.h).
  const std::uint64_t max_bytes =
      RoundUp(std::max<std::uint64_t>(options.max_map_bytes, 1), kPageRound);
  std::uint64_t reserve = std::clamp<std::uint64_t>(max_bytes / 32, 256 << 10, 16 << 20);
  reserve = RoundUp(std::min(reserve, max_bytes / 4), kPageRound);
  impl->max_map_bytes = max_bytes;
  impl->put_limit_bytes = max_bytes - reserve;

  // Start at initial_map_bytes, doubled until the existing data file fits (as Grow() would
  // have done in an earlier run), but never below the file size.
  std::uint64_t file_bytes = 0;
  struct stat st;
  std::string data_path = options.dir + "/data.mdb";
  if (::stat(data_path.c_str(), &st) == 0) file_bytes = RoundUp(st.st_size, kPageRound);
  std::uint64_t map_bytes =
      RoundUp(std::max<std::uint64_t>(options.initial_map_bytes, kPageRound), kPageRound);
  while (map_bytes < file_bytes && map_bytes < impl->put_limit_bytes) map_bytes *= 2;
  map_bytes = std::min(map_bytes, impl->put_limit_bytes);
  map_bytes = std::max(map_bytes, file_bytes);
  rc = mdb_env_set_mapsize(impl->env, map_bytes);
  if (rc != 0) return fail("mdb_env_set_mapsize", rc);

  unsigned flags = MDB_NOTLS;
  if (options.no_sync) flags |= MDB_NOSYNC;
  if (options.write_map) flags |= MDB_WRITEMAP;
  // MADV_RANDOM on the map. With read-around, the kernel caches the file in folios of up to 32
  // pages, and with MDB_WRITEMAP every first write to a page after writeback (a checkpoint)
  // faults into ext4's page_mkwrite, which walks the buffers of the whole folio: on a full
  // 1M-key store that was 6.4% of both cores under replicated SETs (1.3% with this). A B-tree's
  // reads are random anyway; read-ahead only helped cold scans.
  flags |= MDB_NORDAHEAD;
  rc = mdb_env_open(impl->env, options.dir.c_str(), flags, 0644);
  if (rc != 0) return fail("mdb_env_open", rc);

  // Reserve the map on disk; on a disk too small for it, start with a smaller map (halved down
  // to the pages in use), which Grow() enlarges later if the space appears.
  for (;;) {
    const std::uint64_t mapped = impl->MapBytes();
    Status reserved = impl->Reserve(mapped, mapped);
    if (reserved.ok()) break;
    if (!reserved.IsStorageFull() || mapped <= kPageRound * 16) return reserved;
    if (int r = mdb_env_set_mapsize(impl->env, RoundUp(mapped / 2, kPageRound)); r != 0) {
      return fail("mdb_env_set_mapsize", r);
    }
    if (impl->MapBytes() >= mapped) return reserved;  // the pages in use need all of it
    logging::Warn(fmt::format("storage: {}; starting with a map of {} bytes", reserved.message(),
                              impl->MapBytes()));
  }

  int dead = 0;
  rc = mdb_reader_check(impl->env, &dead);
  if (rc != 0) return fail("mdb_reader_check", rc);
  if (dead > 0)
    logging::Warn(
        fmt::format("storage: cleared {} stale LMDB reader slots in {}", dead, options.dir));

  MDB_txn* txn = nullptr;
  rc = mdb_txn_begin(impl->env, nullptr, 0, &txn);
  if (rc != 0) return fail("mdb_txn_begin", rc);
  rc = mdb_dbi_open(txn, "kv", MDB_CREATE, &impl->kv);
  if (rc == 0) rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &impl->meta);
  if (rc != 0) {
    mdb_txn_abort(txn);
    return fail("mdb_dbi_open", rc);
  }
  rc = mdb_txn_commit(txn);
  if (rc != 0) return fail("mdb_txn_commit", rc);

  impl->max_map_bytes = std::max(impl->max_map_bytes, impl->MapBytes());
  return std::unique_ptr<Storage>(new Storage(std::move(impl)));
}

// ---------------------------------------------------------------------------------------------
// Snapshot

Storage::Snapshot::Snapshot(Storage* storage, void* txn, bool owned)
    : storage_(storage), txn_(txn), owned_(owned) {}

Storage::Snapshot::Snapshot(Snapshot&& other) noexcept
    : storage_(std::exchange(other.storage_, nullptr)),
      txn_(std::exchange(other.txn_, nullptr)),
      owned_(other.owned_) {}

Storage::Snapshot::~Snapshot() {
  if (txn_ == nullptr || !owned_) return;
  storage_->impl_->Release(AsTxn(txn_));
  storage_->impl_->map_mutex.unlock_shared();
  --t_snapshots_held;
}

Status Storage::Snapshot::Get(std::string_view key, std::string* value) const {
  std::string_view view;
  Status s = Get(key, &view);
  if (s.ok()) value->assign(view);
  return s;
}

Status Storage::Snapshot::Get(std::string_view key, std::string_view* value) const {
  if (!KeyLengthOk(key)) return Status::NotFound("key not found");
  MDB_val k = ToVal(key);
  MDB_val v;
  int rc = mdb_get(AsTxn(txn_), storage_->impl_->kv, &k, &v);
  if (rc == MDB_NOTFOUND) return Status::NotFound("key not found");
  if (rc != 0) return Status::IOError(fmt::format("storage read failed: {}", mdb_strerror(rc)));
  *value = ToView(v);
  return Status::Ok();
}

Status Storage::Snapshot::Scan(
    std::string_view start, bool exclusive,
    const std::function<bool(std::string_view key, std::string_view value)>& visit) const {
  MDB_cursor* cursor = nullptr;
  int rc = mdb_cursor_open(AsTxn(txn_), storage_->impl_->kv, &cursor);
  if (rc != 0) return Status::IOError(fmt::format("storage scan failed: {}", mdb_strerror(rc)));
  CursorGuard guard(cursor);
  MDB_val k;
  MDB_val v;
  if (start.empty()) {
    rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST);
  } else {
    // Keys are at most kMaxKeyBytes long, so positioning on the truncated start and skipping
    // keys below start (the loop below) finds the first key >= start.
    k = ToVal(start.substr(0, std::min(start.size(), kMaxKeyBytes)));
    rc = mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE);
  }
  while (rc == 0) {
    std::string_view key = ToView(k);
    int c = key.compare(start);
    if (c > 0 || (c == 0 && !exclusive)) {
      if (!visit(key, ToView(v))) return Status::Ok();
    }
    rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) {
    return Status::IOError(fmt::format("storage scan failed: {}", mdb_strerror(rc)));
  }
  return Status::Ok();
}

std::uint64_t Storage::Snapshot::KeyCount() const {
  return EntryCount(AsTxn(txn_), storage_->impl_->kv);
}

std::uint64_t Storage::Snapshot::AppliedSeq() const {
  return ReadAppliedSeq(AsTxn(txn_), storage_->impl_->meta);
}

Status Storage::Snapshot::GetMeta(std::string_view name, std::string* value) const {
  return ReadMeta(AsTxn(txn_), storage_->impl_->meta, name, value);
}

Result<Storage::Snapshot> Storage::Read() {
  Impl& impl = *impl_;
  if (impl.grow_pending.load(std::memory_order_acquire) && t_snapshots_held <= 0) {
    std::lock_guard<std::mutex> wait_for_grow(impl.grow_gate);
  }
  impl.map_mutex.lock_shared();
  MDB_txn* txn = nullptr;
  {
    std::lock_guard<std::mutex> lock(impl.pool_mutex);
    if (!impl.pool.empty()) {
      txn = impl.pool.back();
      impl.pool.pop_back();
    }
  }
  int rc = 0;
  if (txn != nullptr) {
    rc = mdb_txn_renew(txn);
    if (rc != 0) {
      mdb_txn_abort(txn);
      txn = nullptr;
    }
  }
  if (txn == nullptr) rc = mdb_txn_begin(impl.env, nullptr, MDB_RDONLY, &txn);
  if (rc != 0) {
    impl.map_mutex.unlock_shared();
    if (rc == MDB_READERS_FULL) {
      return Status::IOError(fmt::format(
          "cannot start a read: all {} LMDB reader slots are in use (too many concurrent reads)",
          kMaxReaders));
    }
    return Status::IOError(fmt::format("cannot start a read: {}", mdb_strerror(rc)));
  }
  ++t_snapshots_held;
  return Snapshot(this, txn, /*owned=*/true);
}

// ---------------------------------------------------------------------------------------------
// WriteTxn

Storage::WriteTxn::WriteTxn(Storage* storage, void* txn) : storage_(storage), txn_(txn) {}

Storage::WriteTxn::WriteTxn(WriteTxn&& other) noexcept
    : storage_(std::exchange(other.storage_, nullptr)), txn_(std::exchange(other.txn_, nullptr)) {}

Storage::WriteTxn::~WriteTxn() { Abort(); }

namespace {
Status Finished() { return Status::InvalidArgument("the write transaction is already finished"); }
}  // namespace

void* Storage::WriteTxn::Current() const { return txn_; }

Status Storage::WriteTxn::Get(std::string_view key, std::string* value) const {
  if (txn_ == nullptr) return Finished();
  if (!KeyLengthOk(key)) return Status::NotFound("key not found");
  MDB_val k = ToVal(key);
  MDB_val v;
  int rc = mdb_get(AsTxn(Current()), storage_->impl_->kv, &k, &v);
  if (rc == MDB_NOTFOUND) return Status::NotFound("key not found");
  if (rc != 0) return Status::IOError(fmt::format("storage read failed: {}", mdb_strerror(rc)));
  value->assign(static_cast<const char*>(v.mv_data), v.mv_size);
  return Status::Ok();
}

Status Storage::WriteTxn::Put(std::string_view key, std::string_view value) {
  if (txn_ == nullptr) return Finished();
  if (Status s = CheckKey(key); !s.ok()) return s;
  MDB_val k = ToVal(key);
  MDB_val v = ToVal(value);
  int rc = mdb_put(AsTxn(Current()), storage_->impl_->kv, &k, &v, 0);
  if (rc != 0) return WriteError("storage put failed", rc);
  return Status::Ok();
}

Status Storage::WriteTxn::Delete(std::string_view key) {
  if (txn_ == nullptr) return Finished();
  if (!KeyLengthOk(key)) return Status::NotFound("key not found");
  MDB_val k = ToVal(key);
  int rc = mdb_del(AsTxn(Current()), storage_->impl_->kv, &k, nullptr);
  if (rc == MDB_NOTFOUND) return Status::NotFound("key not found");
  if (rc != 0) return WriteError("storage delete failed", rc);
  return Status::Ok();
}

Status Storage::WriteTxn::Clear() {
  if (txn_ == nullptr) return Finished();
  int rc = mdb_drop(AsTxn(Current()), storage_->impl_->kv, 0);
  if (rc != 0) return WriteError("storage clear failed", rc);
  return Status::Ok();
}

std::uint64_t Storage::WriteTxn::KeyCount() const {
  if (txn_ == nullptr) return 0;
  return EntryCount(AsTxn(Current()), storage_->impl_->kv);
}

// No reader slot, no map lock: the write transaction already holds what a snapshot would.
Storage::Snapshot Storage::WriteTxn::View() const {
  return Snapshot(storage_, Current(), /*owned=*/false);
}

Status Storage::WriteTxn::SetAppliedSeq(std::uint64_t seq) {
  if (txn_ == nullptr) return Finished();
  char buf[8];
  EncodeFixed64(buf, seq);
  MDB_val k = ToVal(kAppliedSeqKey);
  MDB_val v{sizeof(buf), buf};
  int rc = mdb_put(AsTxn(Current()), storage_->impl_->meta, &k, &v, 0);
  if (rc != 0) return WriteError("storage put of applied_seq failed", rc);
  return Status::Ok();
}

Status Storage::WriteTxn::GetMeta(std::string_view name, std::string* value) const {
  if (txn_ == nullptr) return Finished();
  return ReadMeta(AsTxn(Current()), storage_->impl_->meta, name, value);
}

Status Storage::WriteTxn::PutMeta(std::string_view name, std::string_view value) {
  if (txn_ == nullptr) return Finished();
  MDB_val k = ToVal(name);
  MDB_val v = ToVal(value);
  int rc = mdb_put(AsTxn(Current()), storage_->impl_->meta, &k, &v, 0);
  if (rc != 0) return WriteError(fmt::format("storage put of {} failed", name), rc);
  return Status::Ok();
}

Status Storage::WriteTxn::DeleteMeta(std::string_view name) {
  if (txn_ == nullptr) return Finished();
  MDB_val k = ToVal(name);
  int rc = mdb_del(AsTxn(Current()), storage_->impl_->meta, &k, nullptr);
  if (rc == MDB_NOTFOUND) return Status::Ok();
  if (rc != 0) return WriteError(fmt::format("storage delete of {} failed", name), rc);
  return Status::Ok();
}

Status Storage::WriteTxn::Commit() {
  if (txn_ == nullptr) return Finished();
  Impl& impl = *storage_->impl_;
  int rc = mdb_txn_commit(AsTxn(std::exchange(txn_, nullptr)));
  impl.write_open = false;
  if (rc != 0) return WriteError("storage commit failed", rc);
  return Status::Ok();
}

void Storage::WriteTxn::Abort() {
  if (txn_ == nullptr) return;
  Impl& impl = *storage_->impl_;
  mdb_txn_abort(AsTxn(std::exchange(txn_, nullptr)));
  impl.write_open = false;
}

Result<Storage::WriteTxn> Storage::BeginWrite() {
  if (impl_->write_open) return Status::InvalidArgument("a write transaction is already open");
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(impl_->env, nullptr, 0, &txn);
  if (rc != 0) return WriteError("cannot begin a write transaction", rc);
  impl_->write_open = true;
  return WriteTxn(this, txn);
}

// ---------------------------------------------------------------------------------------------

Status Storage::Grow(bool wait_for_snapshots) {
  Impl& impl = *impl_;
  if (impl.write_open)
    return Status::InvalidArgument("Grow() called with a write transaction open");
  const std::uint64_t current = impl.MapBytes();
  if (current >= impl.put_limit_bytes) {
    return Status::StorageFull(fmt::format(
        "storage full: the map reached max_map_bytes ({} bytes, of which {} are kept for "
        "deletes); delete keys or raise max_map_bytes",
        impl.max_map_bytes, impl.max_map_bytes - impl.put_limit_bytes));
  }
  const std::uint64_t next = std::min(current * 2, impl.put_limit_bytes);
  if (Status s = impl.Remap(next, wait_for_snapshots); !s.ok()) return s;
  logging::Info(fmt::format("storage: map grown from {} to {} bytes (max {})", current, next,
                            impl.max_map_bytes));
  return Status::Ok();
}

Status Storage::OpenReserve() {
  Impl& impl = *impl_;
  if (impl.MapBytes() >= impl.max_map_bytes) return Status::Ok();
  return impl.Remap(impl.max_map_bytes);
}

Status Storage::CloseReserve() {
  Impl& impl = *impl_;
  if (impl.MapBytes() <= impl.put_limit_bytes) return Status::Ok();
  return impl.Remap(impl.put_limit_bytes);
}

Status Storage::WaitForSnapshots() {
  Impl& impl = *impl_;
  if (impl.write_open) {
    return Status::InvalidArgument("WaitForSnapshots() called with a write transaction open");
  }
  impl.WithSnapshotsDrained([] {});
  return Status::Ok();
}

Status Storage::Sync() {
  // Shared, like a snapshot: a Grow() must not remap the file under the sync.
  std::shared_lock<std::shared_mutex> map(impl_->map_mutex);
  int rc = mdb_env_sync(impl_->env, 1);
  if (rc != 0) {
    return Status::IOError(
        fmt::format("storage sync of {} failed: {}", impl_->options.dir, mdb_strerror(rc)));
  }
  return Status::Ok();
}

StorageStats Storage::Stats() {
  StorageStats stats;
  stats.max_map_bytes = impl_->max_map_bytes;
  // mdb_env_info reads the meta pages through the map: hold a snapshot (the shared map lock)
  // so that a concurrent Grow() cannot unmap them meanwhile.
  auto snapshot = Read();
  if (!snapshot.ok()) return stats;
  MDB_envinfo info;
  MDB_stat st;
  mdb_env_info(impl_->env, &info);
  mdb_env_stat(impl_->env, &st);
  stats.map_bytes = info.me_mapsize;
  stats.used_bytes = (std::uint64_t{info.me_last_pgno} + 1) * st.ms_psize;
  stats.keys = snapshot->KeyCount();
  stats.applied_seq = snapshot->AppliedSeq();
  return stats;
}

}  // namespace kvstore
