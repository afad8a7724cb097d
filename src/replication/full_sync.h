// FullSyncSource: the snapshot files a master streams in full resyncs. Replicas that ask while a
// file is being written, or soon after, share it (no full-sync storms under heavy writes), and
// the log from the file's sequence stays pinned while any replica uses it. Backups (SNAPSHOT)
// use their own source, which shares a file only while it is still the current state.
// Thread-safe: Acquire / Release / PinnedSeq from any thread; each file is written by its own
// background thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"

namespace kvstore {

struct FullSyncFile {
  std::string path;
  std::atomic<bool> ready{false};  // written (or failed: see status)
  // Set before ready becomes true; read only after.
  Status status;
  std::uint64_t seq = 0;  // the snapshot's applied sequence
  // The pod's epoch history (encoded) when the file was started. A file is shared only while the
  // history is still this one: a restore or a full resync of this pod replaces the key space
  // and the history, and may restart the log below the file's sequence.
  std::string history;
  std::uint64_t bytes = 0;
  std::uint64_t keys = 0;
  std::chrono::steady_clock::time_point started;
  // When the snapshot's read transaction began: the time its content is from. Set with seq.
  std::chrono::system_clock::time_point taken;
  int users = 0;  // GUARDED_BY(FullSyncSource::mu_)
};

class FullSyncSource {
 public:
  enum class Sharing {
    // Full resyncs: a replica continues from a file's sequence through the log, so an older
    // file serves as well as a new one.
    kRecent,
    // Backups: a backup must hold every write acknowledged before it was asked for, so only a
    // file at the current committed sequence serves.
    kCurrentOnly,
  };

  // Files go to <dir> (created; files left from an earlier run are deleted).
  FullSyncSource(Engine& engine, std::string dir, Sharing sharing = Sharing::kRecent);
  ~FullSyncSource();

  // A file to stream, from the current epoch history: with kRecent, one being written, or one
  // written within reuse_window whose sequence the log still continues from; with
  // kCurrentOnly, one (being written or written) whose sequence is the current committed one.
  // Otherwise a new one, started now. Release it when done. A file that could not be written
  // is deleted before it is marked ready (status then says why): a full disk stays full
  // otherwise, and the pod's own writes fail.
  std::shared_ptr<FullSyncFile> Acquire();
  // A file nobody uses is deleted as soon as no later Acquire may share it: at once with
  // kCurrentOnly, after reuse_window with kRecent (DropExpired). Each is a full copy of the key
  // space on the data volume.
  void Release(const std::shared_ptr<FullSyncFile>& file);
  // Deletes the current file once nobody uses it and it is past reuse_window. Call now and then.
  void DropExpired();
  // The oldest log sequence a file in use (or being written) needs: its seq + 1; 0 for none.
  std::uint64_t PinnedSeq() const;

 private:
  void Write(std::shared_ptr<FullSyncFile> file);
  // REQUIRES: mu_ held. Deletes the current file if nobody uses it and it is done being written,
  // and (unless now) past reuse_window.
  void DropCurrentLocked(bool now);

  Engine& engine_;
  const std::string dir_;
  const Sharing sharing_;
  const std::chrono::seconds reuse_window_{30};
  mutable std::mutex mu_;
  std::shared_ptr<FullSyncFile> current_;              // GUARDED_BY(mu_)
  std::vector<std::shared_ptr<FullSyncFile>> in_use_;  // GUARDED_BY(mu_)
  std::vector<std::thread> writers_;                   // GUARDED_BY(mu_)
  std::uint64_t next_number_ = 1;                      // GUARDED_BY(mu_)
};

}  // namespace kvstore
