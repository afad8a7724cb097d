// Full-resync snapshot files (see full_sync.h). A file is written from one read transaction:
// a consistent copy at its applied sequence while writes go on.
#include "replication/full_sync.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/logging.h"
#include "snapshot/snapshot_format.h"

namespace kvstore {

FullSyncSource::FullSyncSource(Engine& engine, std::string dir)
    : engine_(engine), dir_(std::move(dir)) {
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
    const bool usable = current_->ready.load() && current_->status.ok() &&
                        now - current_->started < reuse_window_ &&
                        engine_.Stats().log.first_seq <= current_->seq + 1;
    if (writing || usable) {
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
  {
    auto snapshot = engine_.Read();
    if (!snapshot.ok()) status = snapshot.status();
    std::ofstream out;
    if (status.ok()) {
      out.open(file->path, std::ios::binary | std::ios::trunc);
      if (!out) status = Status::IOError("cannot create " + file->path);
    }
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
      auto flush = [&] {
        out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
        bytes += buf.size();
        buf.clear();
        return static_cast<bool>(out);
      };
      if (status.ok()) {
        status = snapshot->Scan("", false, [&](std::string_view key, std::string_view value) {
          encoder.Add(key, value, &buf);
          return buf.size() < (1 << 20) || flush();
        });
      }
      if (status.ok()) {
        encoder.Finish(&buf);
        if (!flush()) status = Status::IOError("cannot write " + file->path);
        keys = encoder.keys();
      }
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (status.ok()) {
    logging::Info("full resync: snapshot written", {{"seq", std::to_string(seq)},
                                                    {"keys", std::to_string(keys)},
                                                    {"bytes", std::to_string(bytes)},
                                                    {"seconds", fmt::format("{:.3f}", seconds)}});
  } else {
    logging::Error("full resync: cannot write the snapshot", {{"error", status.ToString()}});
  }
  {
    std::lock_guard lock(mu_);
    file->seq = status.ok() ? seq : file->seq;
    file->bytes = bytes;
    file->keys = keys;
    file->status = status;
  }
  file->ready.store(true);
}

}  // namespace kvstore
