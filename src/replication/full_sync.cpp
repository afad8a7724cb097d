// Full-resync snapshot files (see full_sync.h). A file is written from one read transaction:
// a consistent copy at its applied sequence while writes go on.
#include "replication/full_sync.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/logging.h"
#include "snapshot/snapshot_format.h"

namespace kvstore {
namespace {

// What a failed file call on path did: StorageFull for a full disk, IOError otherwise.
Status FileError(std::string_view what, const std::string& path, int err) {
  std::string message = fmt::format("cannot {} {}: {}", what, path, std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) return Status::StorageFull(std::move(message));
  return Status::IOError(std::move(message));
}

Status WriteAll(int fd, std::string_view bytes, const std::string& path) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FileError("write", path, errno);
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return Status::Ok();
}

}  // namespace

FullSyncSource::FullSyncSource(Engine& engine, std::string dir, Sharing sharing)
    : engine_(engine), dir_(std::move(dir)), sharing_(sharing) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    if (entry.path().filename().string().starts_with("full-")) {
      std::filesystem::remove(entry.path(), ec);
    }
  }
}

FullSyncSource::~FullSyncSource() {
  std::vector<std::thread> writers;
  {
    std::lock_guard lock(mu_);
    writers.swap(writers_);
  }
  for (std::thread& t : writers) t.join();
}

std::shared_ptr<FullSyncFile> FullSyncSource::Acquire() {
  std::lock_guard lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  auto epochs = engine_.Epochs();
  const std::string history = epochs.ok() ? EncodeEpochHistory(*epochs) : std::string();
  const std::uint64_t committed = engine_.committed_seq();
  // A file from another history (this pod was restored or resynced since) would give the
  // replica a key space this pod no longer has, acknowledged as if it were current.
  if (current_ && epochs.ok() && current_->history == history && current_->seq <= committed) {
    const bool writing = !current_->ready.load();
    bool share = false;
    if (sharing_ == Sharing::kRecent) {
      share = writing || (current_->status.ok() && now - current_->started < reuse_window_ &&
                          engine_.Stats().log.first_seq <= current_->seq + 1);
    } else {
      // A file being written holds at least the state at its Acquire (its seq until then),
      // which is the current state when nothing committed since.
      share = current_->seq == committed && (writing || current_->status.ok());
    }
    if (share) {
      ++current_->users;
      in_use_.push_back(current_);
      return current_;
    }
  }
  auto file = std::make_shared<FullSyncFile>();
  file->path = fmt::format("{}/full-{}.kvsnap", dir_, next_number_++);
  file->started = now;
  file->users = 1;
  // Until the snapshot is taken, pin from the current position: the snapshot is at least there.
  file->seq = committed;
  file->history = history;
  if (current_ && current_->users == 0) {
    std::error_code ec;
    std::filesystem::remove(current_->path, ec);
  }
  current_ = file;
  in_use_.push_back(file);
  writers_.emplace_back([this, file] { Write(file); });
  return file;
}

void FullSyncSource::Release(const std::shared_ptr<FullSyncFile>& file) {
  std::lock_guard lock(mu_);
  --file->users;
  auto it = std::find(in_use_.begin(), in_use_.end(), file);
  if (it != in_use_.end()) in_use_.erase(it);
  if (file->users == 0 && file != current_) {
    std::error_code ec;
    std::filesystem::remove(file->path, ec);
  }
  if (file == current_ && sharing_ == Sharing::kCurrentOnly) DropCurrentLocked(/*now=*/true);
}

void FullSyncSource::DropExpired() {
  std::lock_guard lock(mu_);
  DropCurrentLocked(/*now=*/false);
}

void FullSyncSource::DropCurrentLocked(bool now) {
  if (!current_ || current_->users != 0 || !current_->ready.load()) return;
  if (!now && std::chrono::steady_clock::now() - current_->started < reuse_window_) return;
  std::error_code ec;
  std::filesystem::remove(current_->path, ec);
  current_.reset();
}

std::uint64_t FullSyncSource::PinnedSeq() const {
  std::lock_guard lock(mu_);
  std::uint64_t pinned = 0;
  for (const auto& file : in_use_) {
    if (pinned == 0 || file->seq + 1 < pinned) pinned = file->seq + 1;
  }
  return pinned;
}

void FullSyncSource::Write(std::shared_ptr<FullSyncFile> file) {
  const auto started = std::chrono::steady_clock::now();
  Status status;
  std::uint64_t seq = 0, bytes = 0, keys = 0;
  std::chrono::system_clock::time_point taken;
  const int fd = ::open(file->path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) status = FileError("create", file->path, errno);
  if (status.ok()) {
    if (Status grown = engine_.GrowAheadOfSnapshot(); !grown.ok()) {
      logging::Warn("snapshot: cannot grow the map ahead of it", {{"error", grown.ToString()}});
    }
    auto snapshot = engine_.Read();
    taken = std::chrono::system_clock::now();
    if (!snapshot.ok()) status = snapshot.status();
    if (status.ok()) {
      auto history = Engine::EpochsOf(*snapshot);
      const std::string encoded_history = history.ok() ? EncodeEpochHistory(*history) : "";
      if (!history.ok()) {
        status = history.status();
      } else if (encoded_history != file->history) {
        // A promotion or restore came between Acquire and this read transaction: replicas
        // that joined this file expect the history it was started under.
        status = Status::Unavailable("the epoch history changed as the snapshot was started");
      }
      seq = snapshot->AppliedSeq();
      SnapshotEncoder encoder;
      std::string buf;
      if (status.ok()) encoder.Begin(seq, encoded_history, &buf);
      Status written;  // the first failed write
      auto flush = [&] {
        written = WriteAll(fd, buf, file->path);
        bytes += buf.size();
        buf.clear();
        return written.ok();
      };
      if (status.ok()) {
        status = snapshot->Scan("", false, [&](std::string_view key, std::string_view value) {
          encoder.Add(key, value, &buf);
          return buf.size() < (1 << 20) || flush();
        });
        if (status.ok()) status = written;
      }
      if (status.ok()) {
        encoder.Finish(&buf);
        flush();
        status = written;
        keys = encoder.keys();
      }
    }
  }  // the read transaction ends here: the sync below need not hold LMDB's pages
  // The last bytes may only fail to reach the disk at the sync or the close (a full disk found
  // at write-back): such a file would be streamed as if complete.
  if (fd >= 0) {
    if (status.ok() && ::fdatasync(fd) != 0) status = FileError("sync", file->path, errno);
    if (::close(fd) != 0 && status.ok()) status = FileError("close", file->path, errno);
  }
  if (!status.ok()) {
    // Nobody can use the partial file, and on a full disk it is what keeps the disk full.
    std::error_code ignored;
    std::filesystem::remove(file->path, ignored);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (status.ok()) {
    // "snapshot": the same files serve full resyncs and backups (the path says which).
    logging::Info("snapshot written", {{"file", file->path},
                                       {"seq", std::to_string(seq)},
                                       {"keys", std::to_string(keys)},
                                       {"bytes", std::to_string(bytes)},
                                       {"seconds", fmt::format("{:.3f}", seconds)}});
  } else {
    logging::Error("cannot write the snapshot",
                   {{"file", file->path}, {"error", status.ToString()}});
  }
  {
    std::lock_guard lock(mu_);
    file->seq = status.ok() ? seq : file->seq;
    file->taken = taken;
    file->bytes = bytes;
    file->keys = keys;
    file->status = status;
    file->ready.store(true);
    // Everyone may have gone while it was written (a client that disconnected).
    if (file == current_ && sharing_ == Sharing::kCurrentOnly) DropCurrentLocked(/*now=*/true);
  }
}

}  // namespace kvstore
