// kvstore: the server binary. Parses the command line (CLI11), loads the layered config, picks
// the role, opens the engine and serves RESP until SIGTERM/SIGINT.
// Exit codes: 0 clean shutdown, 1 runtime failure (storage corrupt, port in use), 2 bad setting.
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "backup/backup_service.h"
#include "common/logging.h"
#include "config/config.h"
#include "config/role.h"
#include "engine/engine.h"
#include "kube/pod_labeler.h"
#include "main/admin_provider.h"
#include "main/offline_restore.h"
#include "replication/replication.h"
#include "server/server.h"

namespace kvstore {
namespace {

constexpr int kExitRuntimeError = 1;
constexpr int kExitBadSetting = 2;

std::string Hostname() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "";
  return name;
}

// The data directory must exist (or be creatable) and be writable, or the start stops here
// with one line instead of failing later inside LMDB.
Status CheckDataDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Status::InvalidArgument("invalid data_dir \"" + dir +
                                   "\": cannot create it: " + ec.message());
  }
  const std::string probe = dir + "/.kvstore-write-test";
  int err = 0;
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    err = errno;
  } else {
    if (::write(fd, "ok", 2) != 2 || ::fsync(fd) != 0) err = errno != 0 ? errno : EIO;
    ::close(fd);
    std::filesystem::remove(probe, ec);
  }
  if (err == ENOSPC || err == EDQUOT) {
    // Writable, but full: that is no bad setting. The server starts and serves reads; writes
    // fail with "storage full" until space is freed (a master that cannot open its epoch yet
    // opens it then: ReplicationManager::OpenEpochWhenSpaceIsFreed).
    logging::Warn("the data volume is full: writes will fail until space is freed",
                  {{"data_dir", dir}, {"error", std::strerror(err)}});
    return Status::Ok();
  }
  if (err != 0) {
    return Status::InvalidArgument("invalid data_dir \"" + dir +
                                   "\": the directory is not writable: " + std::strerror(err));
  }
  return Status::Ok();
}

// A message on one line: a value quoted in it (a YAML parser's excerpt, say) may hold line breaks
// or other control characters, and a bad setting is reported in exactly one line.
std::string OneLine(std::string text) {
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return text;
}

struct Invocation {
  ConfigSources sources;
  bool role_only = false;
  bool restore = false;
  OfflineRestoreArgs restore_args;
};

// What the replication manager should make of a role decision.
RoleTarget TargetOf(const RoleDecision& role) {
  RoleTarget target;
  target.master = role.kind != RoleDecision::Kind::kReplica;
  target.standalone = role.kind == RoleDecision::Kind::kStandalone;
  target.master_address = role.master_address;
  target.reason = role.reason;
  return target;
}

// Re-reads the mounted ConfigMap and decides the role again (for live MASTER_ORDINAL changes).
// A bad value or an unreadable file is logged once and ignored: the pod keeps its current role.
// A file that disappears keeps its last value: falling back to the pod's environment (set when
// the pod started, maybe before a promotion) could move the master back.
std::function<std::optional<RoleTarget>()> RoleRereader(ConfigSources sources) {
  auto last_error = std::make_shared<std::string>();
  return [sources, last_error]() mutable -> std::optional<RoleTarget> {
    auto warn_once = [&last_error](const std::string& error) {
      if (*last_error == error) return;
      *last_error = error;
      logging::Warn("ignoring a bad ConfigMap change; keeping the current role",
                    {{"error", error}});
    };
    auto files = ReadConfigDir(sources.config_dir);
    if (!files.ok()) {
      warn_once(files.status().message());
      return std::nullopt;
    }
    for (const auto& [name, value] : sources.config_dir_files) {
      if (files->count(name) == 0) {
        warn_once("ConfigMap file " + sources.config_dir + "/" + name +
                  " disappeared; it keeps its last value \"" + value + "\" until a restart");
        files->emplace(name, value);
      }
    }
    sources.config_dir_files = std::move(files).value();
    auto config = LoadConfig(sources);
    Result<RoleDecision> role =
        config.ok() ? DecideRole(*config, Hostname()) : Result<RoleDecision>(config.status());
    if (!role.ok()) {
      warn_once(role.status().message());
      return std::nullopt;
    }
    last_error->clear();
    return TargetOf(*role);
  };
}

// Set once, before the handler below is installed. The line has no time: a signal handler can
// only write what was prepared before.
const char* stop_during_startup_line = nullptr;

void ExitOnStopDuringStartup(int /*signal*/) {
  [[maybe_unused]] const ssize_t ignored =
      ::write(STDERR_FILENO, stop_during_startup_line, std::strlen(stop_during_startup_line));
  ::_exit(0);
}

// Until the server's own handler takes SIGTERM and SIGINT over (it stops serving gracefully),
// a stop signal ends the start-up at once with exit 0. A start-up step can take minutes (a log
// replay, a resumed snapshot install); each is crash-safe and resumes at the next start, and
// this process has acknowledged nothing yet, so there is nothing to finish.
void ExitOnStopSignalsUntilServing(const Config& config) {
  stop_during_startup_line =
      config.log_format == "json"
          ? "{\"level\":\"info\",\"message\":\"shutdown: stop signal during start-up, exiting "
            "(start-up resumes at the next start)\"}\n"
          : "INFO shutdown: stop signal during start-up, exiting (start-up resumes at the next "
            "start)\n";
  struct sigaction action = {};
  action.sa_handler = ExitOnStopDuringStartup;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);
}

int Serve(const Config& config, const RoleDecision& role, const ConfigSources& sources) {
  ExitOnStopSignalsUntilServing(config);
  if (Status s = CheckDataDir(config.data_dir); !s.ok()) {
    std::cerr << "kvstore: " << s.message() << "\n";
    return kExitBadSetting;
  }
  if (std::error_code ec; std::filesystem::exists(RestoreMarkerPath(config.data_dir), ec)) {
    std::cerr << "kvstore: the data directory " << config.data_dir
              << " holds a partial store: an offline restore into it did not finish; run "
                 "`kvstore restore` again, or remove the "
                 "directory's db/, log/ and restore-in-progress to start empty\n";
    return kExitRuntimeError;
  }
  switch (role.kind) {
    case RoleDecision::Kind::kStandalone:
      logging::Info("Starting as MASTER (standalone: " + role.reason + ")",
                    {{"pod", role.pod_name}, {"data_dir", config.data_dir}});
      break;
    case RoleDecision::Kind::kMaster:
      logging::Info("Starting as MASTER (" + role.reason + ")",
                    {{"pod", role.pod_name}, {"data_dir", config.data_dir}});
      break;
    case RoleDecision::Kind::kReplica:
      logging::Info("Starting as REPLICA of " + role.master_address + " (" + role.reason + ")",
                    {{"pod", role.pod_name}, {"data_dir", config.data_dir}});
      break;
  }

  EngineOptions engine_options;
  engine_options.data_dir = config.data_dir;
  engine_options.fsync = config.fsync;
  engine_options.fsync_interval = std::chrono::milliseconds(config.fsync_interval_ms);
  engine_options.checkpoint_interval = std::chrono::milliseconds(config.checkpoint_interval_ms);
  engine_options.replicated_sync_delay = std::chrono::milliseconds(config.replica_sync_delay_ms);
  engine_options.max_map_bytes = config.max_map_bytes;
  engine_options.initial_map_bytes = std::min<std::uint64_t>(64ull << 20, config.max_map_bytes);
  engine_options.log_segment_bytes = config.log_segment_bytes;
  engine_options.log_retain_bytes = config.repl_backlog_bytes;
  engine_options.log_max_retain_bytes = config.repl_backlog_max_bytes;
  auto engine = Engine::Open(engine_options);
  if (!engine.ok()) {
    logging::Error("cannot open the data directory", {{"error", engine.status().ToString()}});
    return kExitRuntimeError;
  }
  // The snapshot an offline restore killed while extracting it left (the next restore writes it
  // anew). The engine holds the data directory's lock now, so no other process is writing it.
  {
    std::error_code ignored;
    std::filesystem::remove(RestoreSnapshotPath(config.data_dir), ignored);
  }

  asio::io_context io;
  ReplicationOptions replication_options;
  replication_options.data_dir = config.data_dir;
  replication_options.password = config.requirepass;
  replication_options.ordinal = role.ordinal.value_or(-1);
  replication_options.announce_port = config.port;
  replication_options.mode = config.replication_mode;
  replication_options.sync_replicas = config.sync_replicas;
  replication_options.sync_timeout = std::chrono::milliseconds(config.sync_timeout_ms);
  replication_options.min_replicas_to_write = config.min_replicas_to_write;
  replication_options.min_replicas_max_lag = std::chrono::seconds(config.min_replicas_max_lag);
  replication_options.promotion_timeout = std::chrono::milliseconds(config.promotion_timeout_ms);
  replication_options.empty_master_wait = std::chrono::milliseconds(config.empty_master_wait_ms);
  replication_options.role_poll = std::chrono::milliseconds(config.config_poll_ms);
  if (role.kind != RoleDecision::Kind::kStandalone) {
    replication_options.reread_role = RoleRereader(sources);
  }
  // Kubernetes: the pod labels itself with every role it takes (kvstore-master selects
  // role=master).
  PodLabeler labeler(PodLabelerOptions::FromEnvironment(role.pod_name));
  replication_options.on_role = [&labeler](const std::string& taken) { labeler.SetRole(taken); };
  ReplicationManager replication(io, **engine, replication_options);

  ServerOptions server_options;
  server_options.bind = config.bind;
  server_options.port = config.port;
  server_options.io_threads = config.io_threads;
  server_options.read_threads = config.read_threads;
  server_options.max_clients = config.max_clients;
  server_options.max_query_buffer_bytes = config.max_query_buffer_bytes;
  server_options.client_output_buffer_limit_bytes = config.client_output_buffer_limit_bytes;
  server_options.frame_timeout = std::chrono::milliseconds(config.frame_timeout_ms);
  server_options.shutdown_timeout = std::chrono::milliseconds(config.shutdown_timeout_ms);
  server_options.shutdown_replica_wait = std::chrono::milliseconds(config.shutdown_replica_wait_ms);
  // A request carries the value plus framing and the other arguments.
  server_options.parser_limits.max_bulk_bytes = config.max_value_bytes + 1024;
  // Backups: SNAPSHOT and RESTORE-SNAPSHOT take the connection over (src/backup).
  BackupServiceOptions backup_options;
  backup_options.data_dir = config.data_dir;
  backup_options.pod = role.pod_name;
  backup_options.max_frame_bytes = config.max_value_bytes + (1 << 20);
  BackupService backups(**engine, &replication, backup_options);
  server_options.handoffs["snapshot"] = [&backups](asio::ip::tcp::socket socket,
                                                   std::vector<std::string> args) {
    return backups.ServeSnapshot(std::move(socket), std::move(args));
  };
  server_options.handoffs["restore-snapshot"] = [&backups](asio::ip::tcp::socket socket,
                                                           std::vector<std::string> args) {
    return backups.ServeRestore(std::move(socket), std::move(args));
  };

  DispatcherOptions dispatcher_options;
  dispatcher_options.requirepass = config.requirepass;
  dispatcher_options.max_value_bytes = config.max_value_bytes;
  dispatcher_options.version = KVSTORE_VERSION;
  dispatcher_options.fsync = std::string(FsyncModeName(config.fsync));
  dispatcher_options.data_dir = config.data_dir;
  dispatcher_options.max_clients = config.max_clients;
  dispatcher_options.max_transaction_bytes = config.max_query_buffer_bytes;
  dispatcher_options.max_exec_reply_bytes = config.client_output_buffer_limit_bytes;

  Server server(server_options, io, **engine, &replication, dispatcher_options);
  if (Status s = server.Listen(); !s.ok()) {
    logging::Error(s.message());
    return kExitRuntimeError;
  }
  // The admin port (/healthz, /readyz, /metrics) lives until Serve returns, so probes keep being
  // answered while the shutdown drains.
  EngineAdminProvider admin_provider(**engine, server, labeler, replication,
                                     config.ready_max_lag_entries);
  AdminServer admin(AdminOptions{config.bind, config.admin_port}, admin_provider);
  if (config.admin_port != 0) {
    if (Status s = admin.Start(); !s.ok()) {
      logging::Error(s.message());
      return kExitRuntimeError;
    }
  }
  // The role only once both ports are ours: a master opens a new epoch (a log record) as it
  // takes the role, and a pod crash-looping on a port in use opened one per attempt. Nothing is
  // accepted on the client port before the event loops run.
  if (Status s = replication.Start(TargetOf(role)); !s.ok()) {
    logging::Error("cannot take the role", {{"error", s.ToString()}});
    return kExitRuntimeError;
  }
  admin_provider.MarkRoleTaken();
  logging::Info("ready to accept connections",
                {{"bind", config.bind},
                 {"port", std::to_string(server.port())},
                 {"fsync", std::string(FsyncModeName(config.fsync))}});
  server.Run();
  replication.Shutdown();
  logging::Info("shutdown: connections closed; making all writes durable");
  if (Status s = (*engine)->Shutdown(); !s.ok()) {
    logging::Error("shutdown: final sync failed", {{"error", s.ToString()}});
    return kExitRuntimeError;
  }
  logging::Info("shutdown: complete");
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app{"kvstore: a replicated key-value server that speaks the Redis protocol"};
  app.set_version_flag("--version", std::string("kvstore ") + KVSTORE_VERSION);
  Invocation invocation;
  app.add_option("--config", invocation.sources.yaml_path, "YAML settings file");
  std::map<std::string, std::string> flag_values;
  for (const SettingInfo& setting : Settings()) {
    app.add_option(setting.flag, flag_values[setting.name],
                   setting.help + " (env " + setting.env + ", default " +
                       (setting.default_value.empty() ? "empty" : setting.default_value) + ")");
  }
  CLI::App* role_command =
      app.add_subcommand("role", "Print the role this pod would take, and why, then exit");
  CLI::App* restore_command = app.add_subcommand(
      "restore", "Restore a backup file into the data directory (no server may run on it)");
  restore_command->fallthrough();
  restore_command
      ->add_option("--from", invocation.restore_args.from, "The backup file (kvctl backup)")
      ->envname("RESTORE_FROM");
  restore_command->add_flag("--force", invocation.restore_args.force,
                            "Replace the keys of a non-empty data directory");
  restore_command->add_flag("--if-empty", invocation.restore_args.if_empty,
                            "Init-container mode: do nothing without a file, on a replica, or "
                            "when the data directory already holds a store");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // One line, like every other bad setting (CLI11's own report adds a "Run with --help" line).
    std::cerr << "kvstore: " << OneLine(e.what()) << " (kvstore --help lists the settings)\n";
    return kExitBadSetting;
  }
  invocation.role_only = role_command->parsed();
  invocation.restore = restore_command->parsed();
  for (const SettingInfo& setting : Settings()) {
    if (app.count(setting.flag) > 0) {
      invocation.sources.flags[setting.name] = flag_values[setting.name];
    }
  }
  invocation.sources.env = EnvironmentFromProcess();

  // The ConfigMap directory is itself a setting: find it first, then read its files as a layer.
  auto config = LoadConfig(invocation.sources);
  if (config.ok()) {
    invocation.sources.config_dir = config->config_dir;
    auto files = ReadConfigDir(config->config_dir);
    if (files.ok()) {
      invocation.sources.config_dir_files = std::move(files).value();
      config = LoadConfig(invocation.sources);
    } else {
      config = files.status();
    }
  }
  if (!config.ok()) {
    std::cerr << "kvstore: " << OneLine(config.status().message()) << "\n";
    return kExitBadSetting;
  }
  if (Status s = logging::Init(config->log_level, config->log_format); !s.ok()) {
    std::cerr << "kvstore: " << s.message() << "\n";
    return kExitBadSetting;
  }
  auto role = DecideRole(*config, Hostname());
  if (!role.ok()) {
    std::cerr << "kvstore: " << OneLine(role.status().message()) << "\n";
    return kExitBadSetting;
  }
  logging::SetGlobalField("pod", role->pod_name);
  if (invocation.role_only) {
    const char* kind = role->kind == RoleDecision::Kind::kReplica  ? "replica"
                       : role->kind == RoleDecision::Kind::kMaster ? "master"
                                                                   : "standalone master";
    std::cout << "role: " << kind << "\n"
              << "pod: " << role->pod_name << "\n";
    if (!role->master_address.empty()) std::cout << "master: " << role->master_address << "\n";
    std::cout << "why: " << role->reason << "\n";
    return 0;
  }
  if (invocation.restore) return RunOfflineRestore(*config, *role, invocation.restore_args);
  return Serve(*config, *role, invocation.sources);
}

}  // namespace
}  // namespace kvstore

int main(int argc, char** argv) {
  // A closed stderr pipe (a log collector gone) must not kill the server mid-shutdown; sockets
  // already write with MSG_NOSIGNAL.
  std::signal(SIGPIPE, SIG_IGN);
  return kvstore::Main(argc, argv);
}
