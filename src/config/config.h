// Config: every setting of the server, loaded in layers: defaults, then a YAML file (--config),
// then environment variables, then command-line flags. The setting table in config.cpp is the
// single source for all four layers and for docs/CONFIGURATION.md. The only module that includes
// yaml-cpp. Thread-compatible: plain values.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine.h"
#include "kvstore/status.h"

namespace kvstore {

struct Config {
  // Network
  std::string bind = "0.0.0.0";
  int port = 5555;
  int admin_port = 8080;  // 0 disables
  int io_threads = 1;
  int read_threads = 1;
  // Storage and durability
  std::string data_dir = "/data";
  FsyncMode fsync = FsyncMode::kAlways;
  std::uint64_t fsync_interval_ms = 1000;
  std::uint64_t checkpoint_interval_ms = 10000;
  std::uint64_t max_map_bytes = 32ull << 30;
  std::uint64_t log_segment_bytes = 64ull << 20;
  std::uint64_t repl_backlog_bytes = 1ull << 30;
  std::uint64_t repl_backlog_max_bytes = 8ull << 30;
  // Limits
  std::uint64_t max_value_bytes = 512ull << 20;
  std::uint64_t max_clients = 10000;
  std::uint64_t max_query_buffer_bytes = 1ull << 30;
  std::uint64_t client_output_buffer_limit_bytes = 1ull << 30;
  std::uint64_t frame_timeout_ms = 30000;
  std::uint64_t shutdown_timeout_ms = 10000;
  std::uint64_t shutdown_replica_wait_ms = 10000;
  // Security
  std::string requirepass;  // env KVSTORE_PASSWORD
  // Logging
  std::string log_level = "info";
  std::string log_format = "text";
  // Identity and role (the replication issue acts on these)
  std::string config_dir = "/etc/kvstore";
  std::string pod_name;  // env POD_NAME; falls back to the hostname
  std::string master_ordinal = "0";
  bool replication_enabled = true;
  std::string replication_mode = "async";
  std::string master_address;
  std::string headless_service = "kvstore-headless";
  std::uint64_t config_poll_ms = 1000;
  // Replication
  int sync_replicas = 1;
  std::uint64_t sync_timeout_ms = 1000;
  std::uint64_t replica_sync_delay_ms = 10;
  int min_replicas_to_write = 0;
  std::uint64_t min_replicas_max_lag = 10;  // seconds, as in Redis
  std::uint64_t promotion_timeout_ms = 10000;
  // Longer than a replica's slowest retry (a 5 s connect timeout, to the old address of a pod
  // whose DNS record has not moved yet, then a 5 s pause), so that every replica still running
  // has asked to attach before the wait ends.
  std::uint64_t empty_master_wait_ms = 15000;
  std::uint64_t ready_max_lag_entries = 10000;
};

// One row of the setting table.
struct SettingInfo {
  std::string name;           // YAML key, e.g. "fsync_interval_ms"
  std::string flag;           // e.g. "--fsync-interval-ms"
  std::string env;            // e.g. "FSYNC_INTERVAL_MS"
  std::string default_value;  // as text
  std::string help;
};

const std::vector<SettingInfo>& Settings();

struct ConfigSources {
  std::string yaml_path;                   // empty: no file
  std::map<std::string, std::string> env;  // environment, by env name
  // Files of the mounted ConfigMap directory, by env name (ReadConfigDir). Applied after the
  // environment: the files follow `kubectl edit configmap`, the pod's environment does not.
  std::map<std::string, std::string> config_dir_files;
  std::string config_dir;                    // where config_dir_files came from (messages)
  std::map<std::string, std::string> flags;  // command line, by setting name
};

// Reads the files of dir whose names are settings' env names (MASTER_ORDINAL, ...), with
// trailing whitespace removed. A missing directory or file is not set there; a file that cannot
// be read (not a regular file, no permission, over 64 KiB) is InvalidArgument naming it.
Result<std::map<std::string, std::string>> ReadConfigDir(const std::string& dir);

// Why address is not host:port (with a port 1..65535; "{ordinal}" counts as 0), or nullopt.
std::optional<std::string> HostPortProblem(std::string_view address);

// Applies the layers in order (defaults, YAML, environment, ConfigMap files, flags). On the first
// invalid value: InvalidArgument whose message is one line naming the setting and its source, e.g.
//   "invalid port \"abc\" (from flag --port): expected an integer between 1 and 65535".
Result<Config> LoadConfig(const ConfigSources& sources);

// The value of every setting of config, by setting name, as text that LoadConfig accepts back
// (sizes as "64MiB", booleans as "true"). Includes requirepass in clear: redact before logging.
std::map<std::string, std::string> ConfigValues(const Config& config);

// Collects the environment variables named in Settings() from the process environment.
std::map<std::string, std::string> EnvironmentFromProcess();

}  // namespace kvstore
