// Tests of the setting table and the configuration layers: defaults < YAML < env < flags,
// every validation rule, size suffixes, YAML errors, error message format, and agreement with
// docs/CONFIGURATION.md. No sockets; YAML files are written to a temporary directory.
#include "config/config.h"

#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "temp_dir.h"

namespace kvstore {
namespace {

namespace fs = std::filesystem;

// A YAML file in a fresh temporary directory, removed at scope exit.
class TempYaml {
 public:
  explicit TempYaml(const std::string& contents) {
    REQUIRE(!dir_.path().empty());
    path_ = dir_.path() + "/kvstore.yaml";
    std::ofstream out(path_, std::ios::binary);
    out << contents;
    REQUIRE(out.good());
  }
  const std::string& path() const { return path_; }

 private:
  testing::TempDir dir_{"kvstore-config-test"};
  std::string path_;
};

// The message of a load that must fail.
std::string LoadError(const ConfigSources& sources) {
  Result<Config> result = LoadConfig(sources);
  REQUIRE_FALSE(result.ok());
  CHECK(result.status().code() == Status::Code::kInvalidArgument);
  CHECK(result.status().message().find('\n') == std::string::npos);
  return result.status().message();
}

Config LoadOk(const ConfigSources& sources) {
  Result<Config> result = LoadConfig(sources);
  INFO(result.status().ToString());
  REQUIRE(result.ok());
  return std::move(result).value();
}

// Loads one setting from a flag and returns its value as text.
std::string FlagValue(const std::string& name, const std::string& text) {
  ConfigSources sources;
  sources.flags[name] = text;
  return ConfigValues(LoadOk(sources)).at(name);
}

// The message for one setting given as a flag that must be rejected.
std::string FlagError(const std::string& name, const std::string& text) {
  ConfigSources sources;
  sources.flags[name] = text;
  return LoadError(sources);
}

const SettingInfo& Info(const std::string& name) {
  for (const SettingInfo& setting : Settings()) {
    if (setting.name == name) return setting;
  }
  FAIL("no setting " << name);
  throw std::logic_error("unreachable");
}

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;

}  // namespace

TEST_CASE("the setting table covers every field of Config, in order", "[config]") {
  std::vector<std::string> names;
  for (const SettingInfo& setting : Settings()) names.push_back(setting.name);
  const std::vector<std::string> expected = {
      "bind",
      "port",
      "admin_port",
      "io_threads",
      "read_threads",
      "data_dir",
      "fsync",
      "fsync_interval_ms",
      "checkpoint_interval_ms",
      "max_map_bytes",
      "log_segment_bytes",
      "repl_backlog_bytes",
      "repl_backlog_max_bytes",
      "max_value_bytes",
      "max_clients",
      "max_query_buffer_bytes",
      "client_output_buffer_limit_bytes",
      "frame_timeout_ms",
      "shutdown_timeout_ms",
      "shutdown_replica_wait_ms",
      "requirepass",
      "log_level",
      "log_format",
      "config_dir",
      "pod_name",
      "master_ordinal",
      "replication_enabled",
      "replication_mode",
      "master_address",
      "headless_service",
      "config_poll_ms",
      "sync_replicas",
      "sync_timeout_ms",
      "replica_sync_delay_ms",
      "min_replicas_to_write",
      "min_replicas_max_lag",
      "promotion_timeout_ms",
      "empty_master_wait_ms",
      "ready_max_lag_entries",
  };
  CHECK(names == expected);
  CHECK(ConfigValues(Config{}).size() == expected.size());
}

TEST_CASE("flags and env names follow the naming rule, with the documented exceptions",
          "[config]") {
  const std::map<std::string, std::pair<std::string, std::string>> exceptions = {
      {"requirepass", {"--requirepass", "KVSTORE_PASSWORD"}},
      {"pod_name", {"--pod-name", "POD_NAME"}},
      {"config_dir", {"--config-dir", "CONFIG_DIR"}},
      {"data_dir", {"--data-dir", "DATA_DIR"}},
  };
  std::set<std::string> flags;
  std::set<std::string> envs;
  for (const SettingInfo& setting : Settings()) {
    INFO(setting.name);
    std::string flag = "--" + setting.name;
    std::replace(flag.begin(), flag.end(), '_', '-');
    std::string env = setting.name;
    for (char& c : env) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (const auto it = exceptions.find(setting.name); it != exceptions.end()) {
      flag = it->second.first;
      env = it->second.second;
    }
    CHECK(setting.flag == flag);
    CHECK(setting.env == env);
    CHECK_FALSE(setting.help.empty());
    CHECK(setting.help.find('\n') == std::string::npos);
    flags.insert(setting.flag);
    envs.insert(setting.env);
  }
  CHECK(flags.size() == Settings().size());
  CHECK(envs.size() == Settings().size());
  CHECK(Info("fsync_interval_ms").flag == "--fsync-interval-ms");
  CHECK(Info("fsync_interval_ms").env == "FSYNC_INTERVAL_MS");
  CHECK(Info("master_ordinal").env == "MASTER_ORDINAL");
  CHECK(Info("replication_mode").env == "REPLICATION_MODE");
  CHECK(Info("replication_enabled").env == "REPLICATION_ENABLED");
  CHECK(Info("master_address").env == "MASTER_ADDRESS");
}

TEST_CASE("defaults: the table's default text is the default Config, and loads back to it",
          "[config]") {
  const std::map<std::string, std::string> defaults = ConfigValues(Config{});
  for (const SettingInfo& setting : Settings()) {
    INFO(setting.name);
    CHECK(setting.default_value == defaults.at(setting.name));
  }
  CHECK(Info("port").default_value == "5555");
  CHECK(Info("admin_port").default_value == "8080");
  CHECK(Info("data_dir").default_value == "/data");
  CHECK(Info("config_dir").default_value == "/etc/kvstore");
  CHECK(Info("fsync").default_value == "always");
  CHECK(Info("max_map_bytes").default_value == "32GiB");
  CHECK(Info("log_segment_bytes").default_value == "64MiB");
  CHECK(Info("max_value_bytes").default_value == "512MiB");
  CHECK(Info("replication_enabled").default_value == "true");
  CHECK(Info("master_ordinal").default_value == "0");
  CHECK(Info("requirepass").default_value.empty());

  // Nothing given: the defaults.
  CHECK(ConfigValues(LoadOk(ConfigSources{})) == defaults);
  // Every default given back as a flag: still the defaults (the printed forms parse).
  ConfigSources sources;
  sources.flags = defaults;
  CHECK(ConfigValues(LoadOk(sources)) == defaults);
}

TEST_CASE("a non-default Config round-trips through ConfigValues", "[config]") {
  ConfigSources sources;
  sources.flags = {{"bind", "127.0.0.1"},        {"port", "6000"},
                   {"admin_port", "0"},          {"io_threads", "8"},
                   {"data_dir", "/var/lib/kv"},  {"fsync", "interval"},
                   {"fsync_interval_ms", "5"},   {"max_map_bytes", "1536m"},
                   {"max_value_bytes", "1000"},  {"requirepass", "s3cret with spaces"},
                   {"log_format", "json"},       {"pod_name", "kvstore-2"},
                   {"master_ordinal", "1"},      {"replication_enabled", "no"},
                   {"replication_mode", "sync"}, {"master_address", "[::1]:7000"}};
  const Config config = LoadOk(sources);
  CHECK(config.bind == "127.0.0.1");
  CHECK(config.port == 6000);
  CHECK(config.admin_port == 0);
  CHECK(config.io_threads == 8);
  CHECK(config.data_dir == "/var/lib/kv");
  CHECK(config.fsync == FsyncMode::kInterval);
  CHECK(config.fsync_interval_ms == 5);
  CHECK(config.max_map_bytes == 1536 * kMiB);
  CHECK(config.max_value_bytes == 1000);
  CHECK(config.requirepass == "s3cret with spaces");
  CHECK(config.log_format == "json");
  CHECK(config.pod_name == "kvstore-2");
  CHECK(config.master_ordinal == "1");
  CHECK_FALSE(config.replication_enabled);
  CHECK(config.replication_mode == "sync");
  CHECK(config.master_address == "[::1]:7000");

  const std::map<std::string, std::string> values = ConfigValues(config);
  CHECK(values.at("max_map_bytes") == "1536MiB");
  CHECK(values.at("replication_enabled") == "false");
  ConfigSources again;
  again.flags = values;
  CHECK(ConfigValues(LoadOk(again)) == values);
}

TEST_CASE("precedence: defaults < YAML < env < flags", "[config]") {
  const TempYaml yaml(
      "port: 6001\n"
      "fsync: interval\n"
      "log_level: warn\n"
      "requirepass: from-yaml\n"
      "max_clients: 11\n");
  ConfigSources sources;
  sources.yaml_path = yaml.path();
  sources.env = {{"PORT", "6002"},
                 {"LOG_LEVEL", "error"},
                 {"KVSTORE_PASSWORD", "from-env"},
                 {"IO_THREADS", "3"}};
  sources.flags = {{"port", "6003"}, {"requirepass", "from-flag"}, {"bind", "127.0.0.2"}};
  const Config config = LoadOk(sources);

  // All four layers set port: the flag wins.
  CHECK(config.port == 6003);
  // YAML, env and flag set requirepass: the flag wins.
  CHECK(config.requirepass == "from-flag");
  // YAML and env: env wins.
  CHECK(config.log_level == "error");
  // YAML only.
  CHECK(config.fsync == FsyncMode::kInterval);
  CHECK(config.max_clients == 11);
  // Env only.
  CHECK(config.io_threads == 3);
  // Flag only.
  CHECK(config.bind == "127.0.0.2");
  // Nobody: the default.
  CHECK(config.admin_port == 8080);
  CHECK(config.data_dir == "/data");

  SECTION("without the flags, env wins over YAML") {
    sources.flags.clear();
    const Config without_flags = LoadOk(sources);
    CHECK(without_flags.port == 6002);
    CHECK(without_flags.requirepass == "from-env");
    CHECK(without_flags.bind == "0.0.0.0");
  }
  SECTION("without flags and env, YAML wins over defaults") {
    sources.flags.clear();
    sources.env.clear();
    const Config yaml_only = LoadOk(sources);
    CHECK(yaml_only.port == 6001);
    CHECK(yaml_only.requirepass == "from-yaml");
    CHECK(yaml_only.log_level == "warn");
    CHECK(yaml_only.io_threads == 1);
  }
  SECTION("a flag wins over env without YAML") {
    sources.yaml_path.clear();
    const Config no_yaml = LoadOk(sources);
    CHECK(no_yaml.port == 6003);
    CHECK(no_yaml.log_level == "error");
    CHECK(no_yaml.fsync == FsyncMode::kAlways);
  }
}

TEST_CASE("env: the exceptional names, set-but-empty values, unrelated variables", "[config]") {
  ConfigSources sources;
  sources.env = {{"KVSTORE_PASSWORD", "pw"},
                 {"POD_NAME", "kvstore-1"},
                 {"CONFIG_DIR", "/cfg"},
                 {"DATA_DIR", "/d"},
                 {"MASTER_ORDINAL", "2"},
                 {"REPLICATION_MODE", "sync"},
                 {"REPLICATION_ENABLED", "false"},
                 {"MASTER_ADDRESS", "localhost:5556"},
                 {"HOME", "/root"},
                 {"REQUIREPASS", "ignored: not the env name of requirepass"}};
  const Config config = LoadOk(sources);
  CHECK(config.requirepass == "pw");
  CHECK(config.pod_name == "kvstore-1");
  CHECK(config.config_dir == "/cfg");
  CHECK(config.data_dir == "/d");
  CHECK(config.master_ordinal == "2");
  CHECK(config.replication_mode == "sync");
  CHECK_FALSE(config.replication_enabled);
  CHECK(config.master_address == "localhost:5556");

  SECTION("set but empty: an empty value, which is valid for free text") {
    ConfigSources empty;
    empty.flags["requirepass"] = "x";
    empty.env = {{"POD_NAME", ""}, {"MASTER_ADDRESS", ""}};
    const Config c = LoadOk(empty);
    CHECK(c.pod_name.empty());
    CHECK(c.master_address.empty());
  }
  SECTION("set but empty: invalid for a number, naming the env variable") {
    ConfigSources empty;
    empty.env = {{"PORT", ""}};
    CHECK(LoadError(empty) ==
          "invalid port \"\" (from env PORT): expected an integer between 1 and 65535");
  }
  SECTION("a Kubernetes service link variable gets a hint") {
    ConfigSources link;
    link.env = {{"ADMIN_PORT", "tcp://10.0.0.7:8080"}};
    const std::string message = LoadError(link);
    CHECK(message.rfind("invalid admin_port \"tcp://10.0.0.7:8080\" (from env ADMIN_PORT): ", 0) ==
          0);
    CHECK(message.find("enableServiceLinks: false") != std::string::npos);
  }
}

TEST_CASE("EnvironmentFromProcess reads only the settings' variables, including empty ones",
          "[config]") {
  REQUIRE(setenv("FSYNC_INTERVAL_MS", "250", 1) == 0);
  REQUIRE(setenv("KVSTORE_PASSWORD", "", 1) == 0);
  REQUIRE(setenv("KVSTORE_CONFIG_TEST_UNRELATED", "x", 1) == 0);
  REQUIRE(unsetenv("MASTER_ADDRESS") == 0);
  const std::map<std::string, std::string> env = EnvironmentFromProcess();
  unsetenv("FSYNC_INTERVAL_MS");
  unsetenv("KVSTORE_PASSWORD");
  unsetenv("KVSTORE_CONFIG_TEST_UNRELATED");

  CHECK(env.at("FSYNC_INTERVAL_MS") == "250");
  REQUIRE(env.count("KVSTORE_PASSWORD") == 1);
  CHECK(env.at("KVSTORE_PASSWORD").empty());
  CHECK(env.count("KVSTORE_CONFIG_TEST_UNRELATED") == 0);
  CHECK(env.count("MASTER_ADDRESS") == 0);
  std::set<std::string> names;
  for (const SettingInfo& setting : Settings()) names.insert(setting.env);
  for (const auto& [name, value] : env) CHECK(names.count(name) == 1);
}

TEST_CASE("error messages: one line naming the setting, the value and the source", "[config]") {
  CHECK(FlagError("port", "abc") ==
        "invalid port \"abc\" (from flag --port): expected an integer between 1 and 65535");

  ConfigSources env;
  env.env["FSYNC"] = "sometimes";
  CHECK(LoadError(env) ==
        "invalid fsync \"sometimes\" (from env FSYNC): expected always, interval or never");

  const TempYaml yaml("log_level: loud\n");
  ConfigSources file;
  file.yaml_path = yaml.path();
  CHECK(LoadError(file) == "invalid log_level \"loud\" (from " + yaml.path() +
                               "): expected debug, info, warn or error");

  // Control characters and quotes in the value are escaped so the message stays one line.
  CHECK(FlagError("io_threads", "4\n\"5\"") ==
        "invalid io_threads \"4\\x0a\\\"5\\\"\" (from flag --io-threads): expected an integer "
        "between 1 and 64");
  // The exceptional flag and env names appear as such.
  CHECK(FlagError("data_dir", "").rfind("invalid data_dir \"\" (from flag --data-dir): ", 0) == 0);
  ConfigSources data_dir_env;
  data_dir_env.env["DATA_DIR"] = "";
  CHECK(LoadError(data_dir_env).rfind("invalid data_dir \"\" (from env DATA_DIR): ", 0) == 0);
}

TEST_CASE("an invalid value in a lower layer is an error even when a higher layer overrides it",
          "[config]") {
  ConfigSources sources;
  sources.env["PORT"] = "0";
  sources.flags["port"] = "5555";
  CHECK(LoadError(sources).rfind("invalid port \"0\" (from env PORT)", 0) == 0);
}

TEST_CASE("unknown setting names on the command line are rejected", "[config]") {
  ConfigSources sources;
  sources.flags["prot"] = "1";
  CHECK(LoadError(sources) == "unknown setting \"prot\" on the command line");
}

TEST_CASE("validation: ports", "[config]") {
  CHECK(FlagValue("port", "1") == "1");
  CHECK(FlagValue("port", "65535") == "65535");
  CHECK(FlagValue("port", " 6379 ") == "6379");
  for (const char* bad :
       {"0", "65536", "-1", "+80", "80.0", "0x50", "", "eighty", "99999999999999999999999"}) {
    INFO(bad);
    CHECK(FlagError("port", bad) == std::string("invalid port ") + "\"" + bad +
                                        "\" (from flag --port): expected an integer between 1 "
                                        "and 65535");
  }
  CHECK(FlagValue("admin_port", "0") == "0");
  CHECK(FlagValue("admin_port", "9090") == "9090");
  CHECK(FlagError("admin_port", "65536") ==
        "invalid admin_port \"65536\" (from flag --admin-port): expected an integer between 1 and "
        "65535, or 0 to disable");
  CHECK(FlagError("admin_port", "-1").rfind("invalid admin_port \"-1\"", 0) == 0);
}

TEST_CASE("validation: port and admin_port must differ unless the admin server is off",
          "[config]") {
  ConfigSources sources;
  sources.flags["admin_port"] = "5555";
  CHECK(LoadError(sources) ==
        "invalid admin_port \"5555\" (from flag --admin-port): expected a port other than port "
        "(5555), or 0 to disable");
  sources.flags = {{"port", "8080"}};
  CHECK(LoadError(sources) ==
        "invalid port \"8080\" (from flag --port): expected a port other than admin_port (8080)");
  sources.flags = {{"port", "8080"}, {"admin_port", "0"}};
  CHECK(LoadOk(sources).port == 8080);
}

TEST_CASE("validation: io_threads, read_threads and max_clients", "[config]") {
  CHECK(LoadOk(ConfigSources{}).read_threads == 1);
  CHECK(FlagValue("read_threads", "0") == "0");
  CHECK(FlagValue("read_threads", "64") == "64");
  CHECK(FlagError("read_threads", "-1") ==
        "invalid read_threads \"-1\" (from flag --read-threads): expected an integer between 0 "
        "and 64");
  CHECK(FlagValue("io_threads", "1") == "1");
  CHECK(FlagValue("io_threads", "64") == "64");
  CHECK(FlagError("io_threads", "0").find("expected an integer between 1 and 64") !=
        std::string::npos);
  CHECK(FlagError("io_threads", "65").find("expected an integer between 1 and 64") !=
        std::string::npos);
  CHECK(FlagValue("max_clients", "1") == "1");
  CHECK(FlagValue("max_clients", "1000000") == "1000000");
  CHECK(FlagError("max_clients", "0") ==
        "invalid max_clients \"0\" (from flag --max-clients): expected an integer between 1 and "
        "1000000");
  CHECK(FlagError("max_clients", "1k").rfind("invalid max_clients \"1k\"", 0) == 0);
}

TEST_CASE("validation: millisecond durations are integers of at least 1", "[config]") {
  for (const char* name :
       {"fsync_interval_ms", "checkpoint_interval_ms", "frame_timeout_ms", "shutdown_timeout_ms"}) {
    INFO(name);
    CHECK(FlagValue(name, "1") == "1");
    CHECK(FlagValue(name, "86400000") == "86400000");
    for (const char* bad : {"0", "86400001", "1s", "1.5", "-5", ""}) {
      INFO(bad);
      const std::string message = FlagError(name, bad);
      CHECK(message.rfind("invalid " + std::string(name) + " \"" + bad + "\" (from flag " +
                              Info(name).flag +
                              "): expected an integer number of milliseconds "
                              "between 1 and 86400000",
                          0) == 0);
    }
  }
}

TEST_CASE("size suffixes: k, m, g in every spelling and case, all binary", "[config]") {
  const std::vector<std::pair<std::string, std::uint64_t>> cases = {
      {"1048576", kMiB},  {"1024k", kMiB},        {"1024K", kMiB},        {"1024kb", kMiB},
      {"1024KB", kMiB},   {"1024kib", kMiB},      {"1024KiB", kMiB},      {"1m", kMiB},
      {"1M", kMiB},       {"1mb", kMiB},          {"1MB", kMiB},          {"1mib", kMiB},
      {"1MiB", kMiB},     {"2g", 2 * kGiB},       {"2G", 2 * kGiB},       {"2gb", 2 * kGiB},
      {"2GB", 2 * kGiB},  {"2gib", 2 * kGiB},     {"2GiB", 2 * kGiB},     {"3 MiB", 3 * kMiB},
      {" 5m ", 5 * kMiB}, {"1536m", 1536 * kMiB}, {"1025k", 1025 * 1024},
  };
  for (const auto& [text, bytes] : cases) {
    INFO(text);
    ConfigSources sources;
    sources.flags["max_map_bytes"] = text;
    CHECK(LoadOk(sources).max_map_bytes == bytes);
  }
  const std::string expected_tail =
      "expected a size between 1MiB and 16TiB: a number of bytes, optionally with a suffix k, m "
      "or g (1k = 1024)";
  for (const char* bad : {"1t", "1.5g", "g", "", "-1m", "1mm", "1 k b", "0x100000", "1e6",
                          "18446744073709551615g", "99999999999999999999"}) {
    INFO(bad);
    CHECK(FlagError("max_map_bytes", bad) ==
          "invalid max_map_bytes \"" + std::string(bad) +
              "\" (from flag --max-map-bytes): " + expected_tail);
  }
}

TEST_CASE("validation: size bounds", "[config]") {
  // max_value_bytes: 1 byte .. 512 MiB.
  CHECK(FlagValue("max_value_bytes", "1") == "1");
  CHECK(FlagValue("max_value_bytes", "512m") == "512MiB");
  CHECK(FlagError("max_value_bytes", "0") ==
        "invalid max_value_bytes \"0\" (from flag --max-value-bytes): expected a size between 1 "
        "byte and 512MiB: a number of bytes, optionally with a suffix k, m or g (1k = 1024)");
  CHECK(FlagError("max_value_bytes", "513m").rfind("invalid max_value_bytes \"513m\"", 0) == 0);
  // max_map_bytes: at least 1 MiB.
  CHECK(FlagValue("max_map_bytes", "1m") == "1MiB");
  CHECK(FlagValue("max_map_bytes", "16384g") == "16384GiB");
  CHECK(FlagError("max_map_bytes", "1048575").rfind("invalid max_map_bytes", 0) == 0);
  CHECK(FlagError("max_map_bytes", "16385g").rfind("invalid max_map_bytes", 0) == 0);
  // log_segment_bytes: 1 MiB .. 4 GiB.
  CHECK(FlagValue("log_segment_bytes", "1m") == "1MiB");
  CHECK(FlagValue("log_segment_bytes", "4g") == "4GiB");
  CHECK(FlagError("log_segment_bytes", "1023k").find("between 1MiB and 4GiB") != std::string::npos);
  CHECK(FlagError("log_segment_bytes", "5g").find("between 1MiB and 4GiB") != std::string::npos);
  // repl_backlog_bytes: at least 1 MiB.
  CHECK(FlagValue("repl_backlog_bytes", "1m") == "1MiB");
  CHECK(FlagError("repl_backlog_bytes", "0").find("between 1MiB and 16TiB") != std::string::npos);
  // Buffers: 1 MiB .. 16 GiB.
  for (const char* name : {"max_query_buffer_bytes", "client_output_buffer_limit_bytes"}) {
    INFO(name);
    CHECK(FlagError(name, "17g").find("between 1MiB and 16GiB") != std::string::npos);
    CHECK(FlagError(name, "1k").find("between 1MiB and 16GiB") != std::string::npos);
    CHECK(FlagValue(name, "16g") == "16GiB");
  }
}

TEST_CASE("validation: buffers must hold the largest value", "[config]") {
  ConfigSources sources;
  sources.flags["max_query_buffer_bytes"] = "64m";
  CHECK(LoadError(sources) ==
        "invalid max_query_buffer_bytes \"64m\" (from flag --max-query-buffer-bytes): expected "
        "at least max_value_bytes (512MiB) + 65KiB");
  // A buffer exactly as large as a value cannot carry the command around it.
  sources.flags["max_value_bytes"] = "64m";
  CHECK(LoadError(sources) ==
        "invalid max_query_buffer_bytes \"64m\" (from flag --max-query-buffer-bytes): expected "
        "at least max_value_bytes (64MiB) + 65KiB");
  sources.flags["max_value_bytes"] = std::to_string(64 * kMiB - 65 * 1024);
  CHECK(LoadOk(sources).max_query_buffer_bytes == 64 * kMiB);

  ConfigSources output;
  output.env["CLIENT_OUTPUT_BUFFER_LIMIT_BYTES"] = "100m";
  CHECK(LoadError(output) ==
        "invalid client_output_buffer_limit_bytes \"100m\" (from env "
        "CLIENT_OUTPUT_BUFFER_LIMIT_BYTES): expected at least max_value_bytes (512MiB) + 65KiB");
  output.env["MAX_VALUE_BYTES"] = "99m";
  CHECK(LoadOk(output).client_output_buffer_limit_bytes == 100 * kMiB);
}

TEST_CASE("validation: booleans", "[config]") {
  for (const char* yes : {"true", "yes", "1", "TRUE", "Yes"}) {
    INFO(yes);
    CHECK(FlagValue("replication_enabled", yes) == "true");
  }
  for (const char* no : {"false", "no", "0", "False", "NO"}) {
    INFO(no);
    CHECK(FlagValue("replication_enabled", no) == "false");
  }
  for (const char* bad : {"on", "off", "2", "", "y", "truee"}) {
    INFO(bad);
    CHECK(FlagError("replication_enabled", bad) ==
          "invalid replication_enabled \"" + std::string(bad) +
              "\" (from flag --replication-enabled): expected true, false, yes, no, 1 or 0");
  }
}

TEST_CASE("validation: words (fsync, log_level, log_format, replication_mode)", "[config]") {
  ConfigSources sources;
  sources.flags["fsync"] = "always";
  CHECK(LoadOk(sources).fsync == FsyncMode::kAlways);
  sources.flags["fsync"] = "interval";
  CHECK(LoadOk(sources).fsync == FsyncMode::kInterval);
  sources.flags["fsync"] = "Never";
  CHECK(LoadOk(sources).fsync == FsyncMode::kNever);
  CHECK(FlagError("fsync", "everysec") ==
        "invalid fsync \"everysec\" (from flag --fsync): expected always, interval or never");

  for (const char* level : {"debug", "info", "warn", "error"}) {
    CHECK(FlagValue("log_level", level) == level);
  }
  CHECK(FlagValue("log_level", "WARN") == "warn");
  CHECK(FlagError("log_level", "warning") ==
        "invalid log_level \"warning\" (from flag --log-level): expected debug, info, warn or "
        "error");
  CHECK(FlagValue("log_format", "json") == "json");
  CHECK(FlagValue("log_format", "text") == "text");
  CHECK(FlagError("log_format", "logfmt") ==
        "invalid log_format \"logfmt\" (from flag --log-format): expected text or json");
  CHECK(FlagValue("replication_mode", "sync") == "sync");
  CHECK(FlagValue("replication_mode", "async") == "async");
  CHECK(FlagError("replication_mode", "semisync") ==
        "invalid replication_mode \"semisync\" (from flag --replication-mode): expected async or "
        "sync");
}

TEST_CASE("validation: master_ordinal is a non-negative integer", "[config]") {
  CHECK(FlagValue("master_ordinal", "0") == "0");
  CHECK(FlagValue("master_ordinal", "12") == "12");
  CHECK(FlagValue("master_ordinal", "007") == "7");
  for (const char* bad : {"-1", "one", "", "1.0", "kvstore-1", "99999999999"}) {
    INFO(bad);
    CHECK(FlagError("master_ordinal", bad) ==
          "invalid master_ordinal \"" + std::string(bad) +
              "\" (from flag --master-ordinal): expected a non-negative integer (the ordinal of "
              "the master pod, e.g. 0)");
  }
}

TEST_CASE("validation: master_address is empty or host:port", "[config]") {
  for (const char* good : {"", "localhost:5555", "kvstore-1.kvstore-headless:5555", "10.0.0.1:1",
                           "[::1]:65535", "[fe80::1%eth0]:5555"}) {
    INFO(good);
    CHECK(FlagValue("master_address", good) == good);
  }
  for (const char* bad : {"localhost", "localhost:", ":5555", "host:0", "host:65536", "host:port",
                          "::1:5555", "[::1]5555", "[::1]", "a b:5555", "host:55 55"}) {
    INFO(bad);
    CHECK(FlagError("master_address", bad) ==
          "invalid master_address \"" + std::string(bad) +
              "\" (from flag --master-address): expected host:port with a port between 1 and "
              "65535 (IPv6 as [address]:port), or empty");
  }
}

TEST_CASE("validation: free-text settings", "[config]") {
  CHECK(FlagValue("bind", "::") == "::");
  CHECK(FlagError("bind", "") ==
        "invalid bind \"\" (from flag --bind): expected an IPv4 or "
        "IPv6 address, such as 0.0.0.0, 127.0.0.1 or ::");
  CHECK(FlagError("bind", "999.1.1.1").rfind("invalid bind", 0) == 0);
  CHECK(FlagError("bind", "localhost").rfind("invalid bind", 0) == 0);
  CHECK(FlagValue("bind", "127.0.0.1") == "127.0.0.1");
  CHECK(FlagError("bind", "0.0.0.0 ").rfind("invalid bind", 0) == 0);
  CHECK(FlagValue("headless_service", "kv.ns.svc.cluster.local") == "kv.ns.svc.cluster.local");
  CHECK(FlagError("headless_service", "").rfind("invalid headless_service \"\"", 0) == 0);
  CHECK(FlagValue("data_dir", "/tmp/data dir") == "/tmp/data dir");
  CHECK(FlagError("data_dir", "") ==
        "invalid data_dir \"\" (from flag --data-dir): expected a non-empty path");
  CHECK(FlagError("config_dir", "") ==
        "invalid config_dir \"\" (from flag --config-dir): expected a non-empty path");
  // The password and the pod name are taken verbatim, spaces and all.
  CHECK(FlagValue("requirepass", " p@ss word ") == " p@ss word ");
  CHECK(FlagValue("requirepass", "") == "");
  CHECK(FlagValue("pod_name", "") == "");
}

TEST_CASE("YAML: scalars of every kind, quoting, nulls and comments", "[config]") {
  const TempYaml yaml(
      "# kvstore settings\n"
      "port: 7000\n"
      "fsync: \"interval\"\n"
      "max_map_bytes: 2GiB\n"
      "replication_enabled: no\n"
      "requirepass: 'secret: with colon'\n"
      "pod_name:\n"
      "master_address: ~\n"
      "log_format: json   # trailing comment\n");
  ConfigSources sources;
  sources.yaml_path = yaml.path();
  const Config config = LoadOk(sources);
  CHECK(config.port == 7000);
  CHECK(config.fsync == FsyncMode::kInterval);
  CHECK(config.max_map_bytes == 2 * kGiB);
  CHECK_FALSE(config.replication_enabled);
  CHECK(config.requirepass == "secret: with colon");
  CHECK(config.pod_name.empty());
  CHECK(config.master_address.empty());
  CHECK(config.log_format == "json");
}

TEST_CASE("YAML: an empty file or one with only comments sets nothing", "[config]") {
  for (const char* contents : {"", "# nothing here\n", "---\n"}) {
    INFO(contents);
    const TempYaml yaml(contents);
    ConfigSources sources;
    sources.yaml_path = yaml.path();
    CHECK(ConfigValues(LoadOk(sources)) == ConfigValues(Config{}));
  }
}

TEST_CASE("YAML errors", "[config]") {
  ConfigSources sources;

  SECTION("unknown key") {
    const TempYaml yaml("port: 1\nfoo: bar\n");
    sources.yaml_path = yaml.path();
    CHECK(LoadError(sources) == "unknown setting \"foo\" in " + yaml.path());
  }
  SECTION("unknown key that looks like a flag or an env name gets a suggestion") {
    const TempYaml dashed("fsync-interval-ms: 5\n");
    sources.yaml_path = dashed.path();
    CHECK(LoadError(sources) == "unknown setting \"fsync-interval-ms\" in " + dashed.path() +
                                    " (did you mean fsync_interval_ms?)");
    const TempYaml env_name("KVSTORE_PASSWORD: x\n");
    sources.yaml_path = env_name.path();
    CHECK(LoadError(sources) == "unknown setting \"KVSTORE_PASSWORD\" in " + env_name.path() +
                                    " (did you mean requirepass?)");
  }
  SECTION("bad syntax: yaml-cpp's message and the path") {
    const TempYaml yaml("port: [1, 2\n");
    sources.yaml_path = yaml.path();
    const std::string message = LoadError(sources);
    CHECK(message.rfind("invalid config file " + yaml.path() + ": yaml-cpp: error at line", 0) ==
          0);
  }
  SECTION("bad syntax: a map value on the same line") {
    const TempYaml yaml("port: a: b\n");
    sources.yaml_path = yaml.path();
    CHECK(LoadError(sources) == "invalid config file " + yaml.path() +
                                    ": yaml-cpp: error at line 1, column 8: illegal map value");
  }
  SECTION("missing file") {
    sources.yaml_path = "/nonexistent/kvstore.yaml";
    CHECK(LoadError(sources) ==
          "cannot read config file /nonexistent/kvstore.yaml: No such file or directory");
  }
  SECTION("a directory instead of a file") {
    const TempYaml yaml("");
    sources.yaml_path = fs::path(yaml.path()).parent_path().string();
    CHECK(LoadError(sources).rfind("cannot read config file " + sources.yaml_path, 0) == 0);
  }
  SECTION("not a mapping") {
    const TempYaml yaml("- port\n- 5555\n");
    sources.yaml_path = yaml.path();
    CHECK(LoadError(sources) ==
          "invalid config file " + yaml.path() + ": expected a mapping of setting names to values");
  }
  SECTION("a list value") {
    const TempYaml yaml("port: [1, 2]\n");
    sources.yaml_path = yaml.path();
    CHECK(LoadError(sources) == "invalid port \"[1, 2]\" (from " + yaml.path() +
                                    "): expected a single value, not a list or a mapping");
  }
  SECTION("a duplicate key") {
    const TempYaml yaml("port: 1\nport: 2\n");
    sources.yaml_path = yaml.path();
    CHECK(LoadError(sources) == "duplicate setting \"port\" in " + yaml.path());
  }
  SECTION("an invalid value names the file as its source") {
    const TempYaml yaml("io_threads: 100\n");
    sources.yaml_path = yaml.path();
    CHECK(LoadError(sources) == "invalid io_threads \"100\" (from " + yaml.path() +
                                    "): expected an integer between 1 and 64");
  }
}

TEST_CASE("docs/CONFIGURATION.md documents every setting as the table has it", "[config][docs]") {
  // tests/config/config_test.cpp -> <source dir>/docs/CONFIGURATION.md
  const fs::path docs =
      fs::path(__FILE__).parent_path().parent_path().parent_path() / "docs" / "CONFIGURATION.md";
  std::ifstream in(docs);
  INFO(docs.string());
  REQUIRE(in.good());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  for (const SettingInfo& setting : Settings()) {
    INFO(setting.name);
    CHECK(text.find(setting.flag) != std::string::npos);
    CHECK(text.find(setting.env) != std::string::npos);
    // The table row: | `name` | `--flag` | `ENV` | `default` | meaning |
    const std::string default_cell =
        setting.default_value.empty() ? "(empty)" : "`" + setting.default_value + "`";
    const std::string row = "| `" + setting.name + "` | `" + setting.flag + "` | `" + setting.env +
                            "` | " + default_cell + " | ";
    CHECK(text.find(row) != std::string::npos);
  }
}

}  // namespace kvstore
