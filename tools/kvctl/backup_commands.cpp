// kvctl backup / backup verify / restore (see backup_commands.h and docs/BACKUP.md). A backup is
// streamed from the server's SNAPSHOT into a temporary file beside the target, checked while it
// is written, fsynced, then renamed into place: a crash or error never leaves a partial file
// under a backup's name; an interrupted one (SIGINT, SIGTERM, SIGHUP) removes it too, and
// retention removes those a kill -9 left. Progress goes to stderr on a terminal; otherwise one
// summary line.
#include "backup_commands.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <optional>
#include <sstream>
#include <vector>

#include "common/files.h"
#include "snapshot/backup_file.h"

namespace kvctl {
namespace {

namespace fs = std::filesystem;
using kvstore::Client;
using kvstore::Status;
using kvstore::resp::Value;
using Clock = std::chrono::steady_clock;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnavailable = 3;
// Taking a snapshot (the server writes it first) and installing one may take minutes.
constexpr std::chrono::milliseconds kLongWait{std::chrono::minutes(30)};
// The least time a snapshot stream may go without progress (the server drops a stalled
// client after 60 s too).
constexpr std::chrono::milliseconds kStreamIdle{std::chrono::seconds(60)};
// Retention removes a temporary file only after it has not been written for this long (at
// least), whatever its pid says: see StaleTempFiles.
constexpr std::chrono::milliseconds kStaleTempQuiet{std::chrono::hours(1)};
constexpr std::string_view kPrefix = "kvstore-backup-";
constexpr std::string_view kSuffix = ".kvbackup";

void PrintError(const std::string& message) {
  std::fprintf(stderr, "kvctl: %s\n", message.c_str());
}

std::string Mib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MiB", bytes / (1 << 20));
  return buf;
}

// A progress bar on stderr when it is a terminal, redrawn at most every 100 ms.
class Progress {
 public:
  Progress(std::string what, std::uint64_t total)
      : what_(std::move(what)), total_(total), tty_(isatty(STDERR_FILENO) != 0) {}
  void Update(std::uint64_t done) {
    if (!tty_) return;
    const auto now = Clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double rate = seconds > 0 ? done / seconds : 0;
    const double fraction = total_ == 0 ? 1 : std::min(1.0, double(done) / total_);
    const int width = 30;
    const int filled = static_cast<int>(fraction * width);
    std::string bar(filled, '#');
    bar.resize(width, ' ');
    const double eta = rate > 0 ? (total_ - std::min(done, total_)) / rate : 0;
    std::fprintf(stderr, "\r%s [%s] %3d%% %s / %s  %s/s  ETA %.0fs ", what_.c_str(), bar.c_str(),
                 static_cast<int>(fraction * 100), Mib(done).c_str(), Mib(total_).c_str(),
                 Mib(rate).c_str(), eta);
    std::fflush(stderr);
  }
  void Done() {
    if (tty_) std::fputc('\n', stderr);
  }
  double Seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  std::string what_;
  std::uint64_t total_;
  bool tty_;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_{};
};

std::unique_ptr<Client> Connect(const kvstore::ClientOptions& options, int* exit_code) {
  auto client = Client::Connect(options);
  if (client.ok()) return std::move(client).value();
  if (client.status().code() == Status::Code::kInvalidArgument) {
    PrintError("authentication failed: " + client.status().message() +
               " (check --password or KVSTORE_PASSWORD)");
    *exit_code = kExitFailed;
  } else {
    PrintError(client.status().message());
    *exit_code = kExitUnavailable;
  }
  return nullptr;
}

// Writes all of bytes to fd. False on error (errno set).
bool WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// "+SNAPSHOT <pod> <epoch> <seq> <keys> <bytes> [<taken>]" -> info. created is when the snapshot
// was taken; a server that does not send <taken> (older) gets the time of the reply, which is
// later than the snapshot when the server shared a recent one.
std::optional<kvstore::BackupInfo> ParseSnapshotReply(const std::string& text) {
  std::istringstream in(text);
  std::string word;
  kvstore::BackupInfo info;
  if (!(in >> word >> info.pod >> info.epoch >> info.seq >> info.keys >> info.snapshot_bytes) ||
      word != "SNAPSHOT") {
    return std::nullopt;
  }
  if (!(in >> info.created)) info.created = kvstore::BackupTimestamp();
  return info;
}

// UTC time with milliseconds, for file names that sort by creation: 20261125T150000.123Z.
std::string FileStamp() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%dT%H%M%S", &tm);
  char out[48];
  std::snprintf(out, sizeof(out), "%s.%03dZ", buf, static_cast<int>(ms.count()));
  return out;
}

// The temporary file of the backup in progress, for the signal handler; null when there is none.
std::atomic<const char*> interrupted_temp{nullptr};

// SIGINT/SIGTERM/SIGHUP: the CronJob's activeDeadlineSeconds sends SIGTERM, and a partial
// file of a backup's size must not stay on the backup volume. Async-signal-safe calls only.
void RemoveTempAndExit(int signal_number) {
  if (const char* path = interrupted_temp.load(); path != nullptr) {
    ::unlink(path);
    static constexpr char kMessage[] =
        "kvctl: backup interrupted; its temporary file was removed\n";
    [[maybe_unused]] const ssize_t ignored = ::write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
  }
  ::_exit(128 + signal_number);
}

// The temporary file a backup is written to: removed on every way out except a rename into
// place (RenameTo), including a signal.
class TempFile {
 public:
  explicit TempFile(fs::path path) : path_(std::move(path)) {
    interrupted_temp.store(path_.c_str());
    struct sigaction action {};
    action.sa_handler = RemoveTempAndExit;
    sigemptyset(&action.sa_mask);
    for (int signal_number : {SIGINT, SIGTERM, SIGHUP}) sigaction(signal_number, &action, nullptr);
  }
  ~TempFile() {
    interrupted_temp.store(nullptr);
    if (fd >= 0) ::close(fd);
    std::error_code ignored;
    if (!renamed_) fs::remove(path_, ignored);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  // Renames the file into place. From then on it is the backup: a signal no longer removes it.
  // The signals are held during the rename, so that none lands between the rename and that.
  void RenameTo(const fs::path& target, std::error_code& ec) {
    sigset_t held, previous;
    sigemptyset(&held);
    for (int signal_number : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&held, signal_number);
    pthread_sigmask(SIG_BLOCK, &held, &previous);
    fs::rename(path_, target, ec);
    if (!ec) {
      renamed_ = true;
      interrupted_temp.store(nullptr);
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  }

  int fd = -1;

 private:
  fs::path path_;
  bool renamed_ = false;
};

// Backups in dir written by kvctl, oldest first (their names sort by creation time).
std::vector<fs::path> BackupsIn(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file(ec) && name.starts_with(kPrefix) && name.ends_with(kSuffix)) {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Temporary files in dir left by backups that were killed (kill -9, or SIGKILL after a pod's
// grace period): named like ours, "<backup name>.tmp-<pid>", whose process is gone. The pid
// means something only in our PID namespace: a backup in another pod sharing the volume may
// have any pid, even ours (kvctl is often PID 1 in its container), so a file written to within
// `quiet` is kept too (a running backup writes at least once per stream timeout).
std::vector<fs::path> StaleTempFiles(const fs::path& dir, std::chrono::milliseconds quiet) {
  std::vector<fs::path> files;
  const std::string marker = std::string(kSuffix) + ".tmp-";
  const auto quiet_since = fs::file_time_type::clock::now() - quiet;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const std::size_t at = name.find(marker);
    if (!name.starts_with(kPrefix) || at == std::string::npos) continue;
    const std::string_view digits = std::string_view(name).substr(at + marker.size());
    pid_t pid = 0;
    const auto [end, parse_error] =
        std::from_chars(digits.data(), digits.data() + digits.size(), pid);
    if (parse_error != std::errc() || end != digits.data() + digits.size() || pid <= 0) continue;
    // Our own pid: not our file (ours is already renamed), so its process is gone.
    const bool gone = pid == getpid() || (::kill(pid, 0) != 0 && errno == ESRCH);
    if (!gone || !entry.is_regular_file(ec)) continue;
    const auto written = entry.last_write_time(ec);
    if (!ec && written < quiet_since) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

int Backup(const kvstore::ClientOptions& options, const std::string& out, int keep) {
  std::error_code ec;
  const bool to_dir = fs::is_directory(out, ec) || out.ends_with('/');
  if (keep > 0 && !to_dir) {
    PrintError("--keep needs --out to name a directory");
    return kExitUsage;
  }
  int exit_code = kExitOk;
  std::unique_ptr<Client> client = Connect(options, &exit_code);
  if (!client) return exit_code;
  client->set_timeout(std::max(options.timeout, kLongWait));
  auto reply = client->Call({"SNAPSHOT"});
  if (!reply.ok()) {
    PrintError(reply.status().message());
    return kExitUnavailable;
  }
  if (reply->is_error()) {
    PrintError("server error: " + reply->str);
    return kExitFailed;
  }
  auto info = ParseSnapshotReply(reply->str);
  if (reply->type != Value::Type::kSimpleString || !info) {
    PrintError("unexpected reply to SNAPSHOT: " + reply->str);
    return kExitFailed;
  }
  const std::chrono::milliseconds stream_idle = std::max(options.timeout, kStreamIdle);
  client->set_timeout(stream_idle);

  fs::path target = out;
  if (to_dir) {
    fs::create_directories(target, ec);
    target /= std::string(kPrefix) + FileStamp() + "-" + info->pod + std::string(kSuffix);
  }
  const fs::path temp = target.string() + ".tmp-" + std::to_string(getpid());
  TempFile temp_file(temp);  // before the file exists: a signal right after open removes it
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) {
    PrintError("cannot create " + temp.string() + ": " + std::strerror(errno));
    return kExitFailed;
  }
  temp_file.fd = fd;

  // Everything written is also fed to a reader: the file is checked as it is produced.
  kvstore::BackupEncoder encoder;
  kvstore::BackupReader check;
  auto emit = [&](std::string_view bytes) -> Status {
    if (Status s = check.Feed(bytes, nullptr); !s.ok()) return s;
    if (!WriteAll(fd, bytes)) {
      return Status::IOError("cannot write " + temp.string() + ": " + std::strerror(errno));
    }
    return Status::Ok();
  };
  auto header = encoder.Header(*info);
  Status status = header.ok() ? emit(*header) : header.status();
  Progress progress("backup", info->snapshot_bytes);
  std::uint64_t received = 0;
  while (status.ok() && received < info->snapshot_bytes) {
    auto chunk = client->ReadReply();
    if (!chunk.ok()) {
      PrintError("the snapshot stream broke after " + std::to_string(received) +
                 " bytes: " + chunk.status().message());
      return kExitUnavailable;
    }
    if (chunk->type != Value::Type::kBulkString || chunk->str.empty()) {
      status = Status::Corruption("unexpected message in the snapshot stream");
      break;
    }
    received += chunk->str.size();
    encoder.Body(chunk->str);
    status = emit(chunk->str);
    progress.Update(received);
  }
  progress.Done();
  if (status.ok()) {
    auto trailer = encoder.Trailer();
    status = trailer.ok() ? emit(*trailer) : trailer.status();
  }
  if (status.ok()) status = check.Finish();
  if (status.ok() && ::fsync(fd) != 0) {
    status = Status::IOError("cannot sync " + temp.string() + ": " + std::strerror(errno));
  }
  if (!status.ok()) {
    PrintError("backup failed: " + status.message());
    return kExitFailed;
  }
  ::close(fd);
  temp_file.fd = -1;
  temp_file.RenameTo(target, ec);
  if (ec) {
    PrintError("cannot rename " + temp.string() + " to " + target.string() + ": " + ec.message());
    return kExitFailed;
  }
  // The rename is durable once the directory is synced.
  (void)kvstore::SyncDirectory(target.has_parent_path() ? target.parent_path().string() : ".");
  const double seconds = progress.Seconds();
  const std::uint64_t size = fs::file_size(target, ec);
  std::printf(
      "backup ok: file=%s pod=%s epoch=%s seq=%llu keys=%llu bytes=%llu seconds=%.2f "
      "rate=%.1fMB/s\n",
      target.c_str(), info->pod.c_str(), info->epoch.c_str(),
      static_cast<unsigned long long>(info->seq), static_cast<unsigned long long>(info->keys),
      static_cast<unsigned long long>(size), seconds, seconds > 0 ? size / seconds / 1e6 : 0.0);

  if (keep > 0) {
    std::vector<fs::path> files = BackupsIn(target.parent_path());
    const std::size_t excess =
        files.size() > static_cast<std::size_t>(keep) ? files.size() - keep : 0;
    for (std::size_t i = 0; i < excess; ++i) {
      if (files[i] == target) continue;
      fs::remove(files[i], ec);
      if (ec) {
        PrintError("retention: cannot remove " + files[i].string() + ": " + ec.message());
        return kExitFailed;
      }
      std::printf("retention: removed %s (keeping %d)\n", files[i].c_str(), keep);
    }
    for (const fs::path& stale :
         StaleTempFiles(target.parent_path(), std::max(kStaleTempQuiet, 2 * stream_idle))) {
      fs::remove(stale, ec);
      if (ec) {
        PrintError("retention: cannot remove " + stale.string() + ": " + ec.message());
        return kExitFailed;
      }
      std::printf("retention: removed %s (left by an interrupted backup)\n", stale.c_str());
    }
  }
  return kExitOk;
}

int VerifyBackup(const std::string& file) {
  std::error_code ec;
  const std::uint64_t size = fs::file_size(file, ec);
  if (ec) {
    PrintError("cannot read " + file + ": " + ec.message());
    return kExitFailed;
  }
  Progress progress("verify", size);
  kvstore::BackupInfo info;
  Status s = kvstore::ReadBackupFile(file, &info, nullptr,
                                     [&](std::uint64_t done) { progress.Update(done); });
  progress.Done();
  if (!s.ok()) {
    PrintError(file + " is not a valid backup: " + s.message());
    return kExitFailed;
  }
  std::printf(
      "backup ok: file=%s format=%d pod=%s epoch=%s seq=%llu keys=%llu created=%s bytes=%llu\n",
      file.c_str(), info.version, info.pod.c_str(), info.epoch.c_str(),
      static_cast<unsigned long long>(info.seq), static_cast<unsigned long long>(info.keys),
      info.created.c_str(), static_cast<unsigned long long>(size));
  return kExitOk;
}

int Restore(const kvstore::ClientOptions& options, const std::string& file, bool force) {
  // First a full check (checksum included), so a damaged file never reaches the server.
  std::error_code ec;
  const std::uint64_t size = fs::file_size(file, ec);
  if (ec) {
    PrintError("cannot read " + file + ": " + ec.message());
    return kExitFailed;
  }
  kvstore::BackupInfo info;
  {
    Progress progress("verify ", size);
    Status s = kvstore::ReadBackupFile(file, &info, nullptr,
                                       [&](std::uint64_t done) { progress.Update(done); });
    progress.Done();
    if (!s.ok()) {
      PrintError(file + " refused: " + s.message() + "; the server was not touched");
      return kExitFailed;
    }
  }
  int exit_code = kExitOk;
  std::unique_ptr<Client> client = Connect(options, &exit_code);
  if (!client) return exit_code;
  std::vector<std::string> command = {"RESTORE-SNAPSHOT", std::to_string(info.snapshot_bytes)};
  if (force) command.push_back("FORCE");
  auto reply = client->Call(command);
  if (!reply.ok()) {
    PrintError(reply.status().message());
    return kExitUnavailable;
  }
  if (reply->is_error()) {
    PrintError("server refused the restore: " + reply->str);
    return kExitFailed;
  }
  if (reply->type != Value::Type::kSimpleString || reply->str != "SEND") {
    PrintError("unexpected reply to RESTORE-SNAPSHOT: " + reply->str);
    return kExitFailed;
  }
  client->set_timeout(std::max(options.timeout, kStreamIdle));
  Progress progress("restore", info.snapshot_bytes);
  std::uint64_t sent = 0;
  bool send_failed = false;
  Status s = kvstore::ReadBackupFile(file, nullptr, [&](std::string_view bytes) {
    std::string message;
    kvstore::resp::AppendBulkString(&message, bytes);
    Status sent_ok = client->SendRaw(message);
    send_failed = !sent_ok.ok();
    sent += bytes.size();
    progress.Update(sent);
    return sent_ok;
  });
  progress.Done();
  if (send_failed) {
    // The server may have refused part-way (e.g. its disk is full) and closed: its reply says
    // why, better than the broken connection.
    auto refusal = client->ReadReply();
    if (refusal.ok() && refusal->is_error()) {
      PrintError("server refused the restore: " + refusal->str);
      return kExitFailed;
    }
  }
  if (!s.ok()) {
    // The server installs nothing until it has the whole snapshot; closing aborts it.
    PrintError("restore aborted: " + s.message() + "; nothing changed on the server");
    return s.code() == Status::Code::kIOError || s.code() == Status::Code::kUnavailable
               ? kExitUnavailable
               : kExitFailed;
  }
  client->set_timeout(std::max(options.timeout, kLongWait));
  auto done = client->ReadReply();
  if (!done.ok()) {
    PrintError("no answer after sending the snapshot: " + done.status().message() +
               " (check the server's log: the restore may or may not have happened)");
    return kExitUnavailable;
  }
  if (done->is_error()) {
    PrintError("server refused the restore: " + done->str);
    return kExitFailed;
  }
  std::printf(
      "restore ok: file=%s keys=%llu seq=%llu epoch=%s pod=%s bytes=%llu seconds=%.2f "
      "rate=%.1fMB/s\n",
      file.c_str(), static_cast<unsigned long long>(info.keys),
      static_cast<unsigned long long>(info.seq), info.epoch.c_str(), info.pod.c_str(),
      static_cast<unsigned long long>(info.snapshot_bytes), progress.Seconds(),
      progress.Seconds() > 0 ? info.snapshot_bytes / progress.Seconds() / 1e6 : 0.0);
  return kExitOk;
}

}  // namespace kvctl
