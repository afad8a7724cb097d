// The setting table and the four configuration layers (defaults < YAML < env < flags).
// Every row knows how to parse its value into Config and how to print it back; the defaults in
// Settings() are printed from a default Config, so the table, the struct and the docs agree.
// Thread-safety: Settings() builds the table once (thread-safe static); LoadConfig is reentrant.
//
// Value grammar (surrounding whitespace is ignored except for free-text settings):
//   size     = digits [ws] [suffix]   ; suffix (any case): k kb kib | m mb mib | g gb gib,
//                                     ; all binary: 1k = 1024
//   millis   = digits                 ; integer milliseconds
//   bool     = true | false | yes | no | 1 | 0          ; any case
//   word     = one of the setting's words               ; any case, stored lower-case
//   hostport = host ":" port | "[" ipv6 "]" ":" port
// yaml-cpp may throw: every call into it is inside ApplyYaml's try block.
#include "config/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

namespace kvstore {
namespace {

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = kKiB * 1024;
// Room a buffer needs around the largest value (see CheckCombinations).
constexpr std::uint64_t kCommandRoomBytes = 65 * kKiB;
constexpr std::uint64_t kGiB = kMiB * 1024;
constexpr std::uint64_t kTiB = kGiB * 1024;
constexpr std::uint64_t kMaxConfigFileBytes = kMiB;  // a settings file is a few lines
constexpr std::uint64_t kOneDayMs = 24ull * 60 * 60 * 1000;

// Parses text into config. Returns std::nullopt on success, otherwise what is expected
// (the end of the error message, e.g. "expected an integer between 1 and 65535").
using ParseFn = std::function<std::optional<std::string>(std::string_view text, Config& config)>;
// Prints the setting's current value as text that ParseFn accepts back.
using FormatFn = std::function<std::string(const Config& config)>;

struct Setting {
  SettingInfo info;
  ParseFn parse;
  FormatFn format;
};

// ---- Text helpers ----

std::string_view Trim(std::string_view s) {
  const auto is_space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool HasSpaceOrControl(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c <= 0x20 || c == 0x7f;
  });
}

// Decimal digits only (no sign, no spaces), without overflow.
std::optional<std::uint64_t> ParseUint(std::string_view s) {
  if (s.empty() || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

std::optional<std::uint64_t> ParseSize(std::string_view text) {
  text = Trim(text);
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  const std::optional<std::uint64_t> number = ParseUint(text.substr(0, digits));
  if (!number) return std::nullopt;
  const std::string suffix = Lower(Trim(text.substr(digits)));
  std::uint64_t multiplier;
  if (suffix.empty()) {
    multiplier = 1;
  } else if (suffix == "k" || suffix == "kb" || suffix == "kib") {
    multiplier = kKiB;
  } else if (suffix == "m" || suffix == "mb" || suffix == "mib") {
    multiplier = kMiB;
  } else if (suffix == "g" || suffix == "gb" || suffix == "gib") {
    multiplier = kGiB;
  } else {
    return std::nullopt;
  }
  if (*number > std::numeric_limits<std::uint64_t>::max() / multiplier) return std::nullopt;
  return *number * multiplier;
}

// The shortest exact form: "32GiB", "64MiB", "4KiB" or plain bytes. ParseSize accepts it back.
std::string FormatSize(std::uint64_t bytes) {
  if (bytes != 0 && bytes % kGiB == 0) return std::to_string(bytes / kGiB) + "GiB";
  if (bytes != 0 && bytes % kMiB == 0) return std::to_string(bytes / kMiB) + "MiB";
  if (bytes != 0 && bytes % kKiB == 0) return std::to_string(bytes / kKiB) + "KiB";
  return std::to_string(bytes);
}

// For messages only: "16TiB" reads better than "16384GiB".
std::string DescribeSize(std::uint64_t bytes) {
  if (bytes != 0 && bytes % kTiB == 0) return std::to_string(bytes / kTiB) + "TiB";
  if (bytes == 1) return "1 byte";
  return FormatSize(bytes);
}

// The value as shown in an error message: quoted, escaped, bounded, always one line.
std::string QuoteValue(std::string_view value) {
  constexpr std::size_t kMaxShown = 80;
  std::string out = "\"";
  for (std::size_t i = 0; i < value.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (value.size() > kMaxShown) out += "...";
  out += '"';
  return out;
}

// ---- Row factories ----

SettingInfo MakeInfo(std::string name, std::string help) {
  SettingInfo info;
  info.flag = "--" + name;
  std::replace(info.flag.begin(), info.flag.end(), '_', '-');
  info.env = name;
  for (char& c : info.env) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  info.name = std::move(name);
  info.help = std::move(help);
  return info;
}

Setting WithEnv(Setting setting, std::string env) {
  setting.info.env = std::move(env);
  return setting;
}

Setting SizeSetting(std::string name, std::uint64_t Config::*field, std::uint64_t min,
                    std::uint64_t max, std::string help) {
  std::string expected = "expected a size between " + DescribeSize(min) + " and " +
                         DescribeSize(max) +
                         ": a number of bytes, optionally with a suffix k, m or g (1k = 1024)";
  return Setting{MakeInfo(std::move(name), std::move(help)),
                 [=](std::string_view text, Config& config) -> std::optional<std::string> {
                   const std::optional<std::uint64_t> value = ParseSize(text);
                   if (!value || *value < min || *value > max) return expected;
                   config.*field = *value;
                   return std::nullopt;
                 },
                 [=](const Config& config) { return FormatSize(config.*field); }};
}

Setting UintSetting(std::string name, std::uint64_t Config::*field, std::uint64_t min,
                    std::uint64_t max, std::string what, std::string help) {
  std::string expected =
      "expected " + what + " between " + std::to_string(min) + " and " + std::to_string(max);
  return Setting{MakeInfo(std::move(name), std::move(help)),
                 [=](std::string_view text, Config& config) -> std::optional<std::string> {
                   const std::optional<std::uint64_t> value = ParseUint(Trim(text));
                   if (!value || *value < min || *value > max) return expected;
                   config.*field = *value;
                   return std::nullopt;
                 },
                 [=](const Config& config) { return std::to_string(config.*field); }};
}

Setting MillisSetting(std::string name, std::uint64_t Config::*field, std::uint64_t min,
                      std::string help) {
  return UintSetting(std::move(name), field, min, kOneDayMs, "an integer number of milliseconds",
                     std::move(help));
}

Setting IntSetting(std::string name, int Config::*field, int min, int max, std::string expected,
                   std::string help) {
  return Setting{MakeInfo(std::move(name), std::move(help)),
                 [=](std::string_view text, Config& config) -> std::optional<std::string> {
                   const std::optional<std::uint64_t> value = ParseUint(Trim(text));
                   if (!value || *value < static_cast<std::uint64_t>(min) ||
                       *value > static_cast<std::uint64_t>(max)) {
                     return expected;
                   }
                   config.*field = static_cast<int>(*value);
                   return std::nullopt;
                 },
                 [=](const Config& config) { return std::to_string(config.*field); }};
}

Setting BoolSetting(std::string name, bool Config::*field, std::string help) {
  return Setting{MakeInfo(std::move(name), std::move(help)),
                 [=](std::string_view text, Config& config) -> std::optional<std::string> {
                   const std::string word = Lower(Trim(text));
                   if (word == "true" || word == "yes" || word == "1") {
                     config.*field = true;
                   } else if (word == "false" || word == "no" || word == "0") {
                     config.*field = false;
                   } else {
                     return "expected true, false, yes, no, 1 or 0";
                   }
                   return std::nullopt;
                 },
                 [=](const Config& config) { return config.*field ? "true" : "false"; }};
}

// "a, b or c"
std::string JoinWords(const std::vector<std::string>& words) {
  std::string out;
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (i > 0) out += i + 1 == words.size() ? " or " : ", ";
    out += words[i];
  }
  return out;
}

// A string setting restricted to a few words, stored lower-case.
Setting WordSetting(std::string name, std::string Config::*field, std::vector<std::string> words,
                    std::string help) {
  std::string expected = "expected " + JoinWords(words);
  return Setting{MakeInfo(std::move(name), std::move(help)),
                 [=](std::string_view text, Config& config) -> std::optional<std::string> {
                   const std::string word = Lower(Trim(text));
                   if (std::find(words.begin(), words.end(), word) == words.end()) {
                     return expected;
                   }
                   config.*field = word;
                   return std::nullopt;
                 },
                 [=](const Config& config) { return config.*field; }};
}

// A free-text setting, stored verbatim. validate returns what is expected when text is invalid.
Setting TextSetting(std::string name, std::string Config::*field,
                    std::function<std::optional<std::string>(std::string_view)> validate,
                    std::string help) {
  return Setting{MakeInfo(std::move(name), std::move(help)),
                 [=](std::string_view text, Config& config) -> std::optional<std::string> {
                   if (validate) {
                     if (std::optional<std::string> expected = validate(text)) return expected;
                   }
                   config.*field = std::string(text);
                   return std::nullopt;
                 },
                 [=](const Config& config) { return config.*field; }};
}

std::optional<std::string> NonEmptyPath(std::string_view text) {
  if (text.empty()) return "expected a non-empty path";
  return std::nullopt;
}

std::optional<std::string> HostName(std::string_view text) {
  if (text.empty() || HasSpaceOrControl(text)) return "expected a non-empty name without spaces";
  return std::nullopt;
}

// The listener takes an address literal; checked here so that a bad one stops the start with
// exit code 2 before the data directory is opened.
std::optional<std::string> IpAddress(std::string_view text) {
  const std::string address(text);
  unsigned char parsed[sizeof(in6_addr)];
  if (::inet_pton(AF_INET, address.c_str(), parsed) == 1 ||
      ::inet_pton(AF_INET6, address.c_str(), parsed) == 1) {
    return std::nullopt;
  }
  return "expected an IPv4 or IPv6 address, such as 0.0.0.0, 127.0.0.1 or ::";
}

std::optional<std::string> HostPort(std::string_view text) {
  if (text.empty()) return std::nullopt;
  // "{ordinal}" stands for MASTER_ORDINAL (a local cluster on one host: 127.0.0.1:710{ordinal}).
  std::string substituted(text);
  if (const auto at = substituted.find("{ordinal}"); at != std::string::npos) {
    substituted.replace(at, 9, "0");
    text = substituted;
  }
  const std::string expected =
      "expected host:port with a port between 1 and 65535 (IPv6 as [address]:port), or empty";
  std::string_view host;
  std::string_view port;
  if (text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return expected;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return expected;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return expected;
  }
  const std::optional<std::uint64_t> port_number = ParseUint(port);
  if (host.empty() || HasSpaceOrControl(host) || !port_number || *port_number < 1 ||
      *port_number > 65535) {
    return expected;
  }
  return std::nullopt;
}

Setting FsyncSetting() {
  return Setting{
      MakeInfo("fsync",
               "when the log reaches the disk: always (before each reply), interval or never"),
      [](std::string_view text, Config& config) -> std::optional<std::string> {
        const std::string word = Lower(Trim(text));
        if (word == "always") {
          config.fsync = FsyncMode::kAlways;
        } else if (word == "interval") {
          config.fsync = FsyncMode::kInterval;
        } else if (word == "never") {
          config.fsync = FsyncMode::kNever;
        } else {
          return "expected always, interval or never";
        }
        return std::nullopt;
      },
      [](const Config& config) { return std::string(FsyncModeName(config.fsync)); }};
}

Setting MasterOrdinalSetting() {
  return Setting{
      MakeInfo("master_ordinal",
               "ordinal of the pod that is master; every other pod replicates from it"),
      [](std::string_view text, Config& config) -> std::optional<std::string> {
        const std::optional<std::uint64_t> value = ParseUint(Trim(text));
        if (!value || *value > static_cast<std::uint64_t>(std::numeric_limits<int>::max())) {
          return "expected a non-negative integer (the ordinal of the master pod, e.g. 0)";
        }
        config.master_ordinal = std::to_string(*value);  // canonical: "00" -> "0"
        return std::nullopt;
      },
      [](const Config& config) { return config.master_ordinal; }};
}

// The table, in the order of struct Config. Adding a field to Config means adding a row here
// (a unit test checks that every row round-trips and that docs/CONFIGURATION.md names it).
std::vector<Setting> BuildTable() {
  std::vector<Setting> table;
  // Network
  table.push_back(TextSetting("bind", &Config::bind, IpAddress,
                              "address to listen on for clients and replicas"));
  table.push_back(IntSetting("port", &Config::port, 1, 65535,
                             "expected an integer between 1 and 65535",
                             "RESP port, for clients and for replication"));
  table.push_back(IntSetting("admin_port", &Config::admin_port, 0, 65535,
                             "expected an integer between 1 and 65535, or 0 to disable",
                             "HTTP port of /healthz, /readyz and /metrics; 0 disables it"));
  table.push_back(IntSetting("io_threads", &Config::io_threads, 1, 64,
                             "expected an integer between 1 and 64",
                             "event loops serving clients (each commits the writes it read)"));
  table.push_back(IntSetting("read_threads", &Config::read_threads, 0, 64,
                             "expected an integer between 0 and 64",
                             "threads running pipelined reads off the event loops; 0: none"));
  // Storage and durability
  table.push_back(WithEnv(TextSetting("data_dir", &Config::data_dir, NonEmptyPath,
                                      "directory of the database (db/) and the log (log/)"),
                          "DATA_DIR"));
  table.push_back(FsyncSetting());
  table.push_back(MillisSetting("fsync_interval_ms", &Config::fsync_interval_ms, 1,
                                "with fsync: interval, the time between two log syncs"));
  table.push_back(MillisSetting("checkpoint_interval_ms", &Config::checkpoint_interval_ms, 1,
                                "time between two checkpoints (LMDB sync, then log trim)"));
  table.push_back(SizeSetting("max_map_bytes", &Config::max_map_bytes, kMiB, 16 * kTiB,
                              "largest size the database file may grow to (LMDB map size)"));
  table.push_back(SizeSetting("log_segment_bytes", &Config::log_segment_bytes, kMiB, 4 * kGiB,
                              "size past which the log rolls over to a new file"));
  table.push_back(SizeSetting("repl_backlog_bytes", &Config::repl_backlog_bytes, kMiB, 16 * kTiB,
                              "log history kept so that replicas resume without a full resync"));
  table.push_back(SizeSetting("repl_backlog_max_bytes", &Config::repl_backlog_max_bytes, kMiB,
                              16 * kTiB,
                              "most log kept for lagging replicas; past it they get a full "
                              "resync instead"));
  // Limits
  table.push_back(SizeSetting("max_value_bytes", &Config::max_value_bytes, 1, 512 * kMiB,
                              "largest bulk string (a key or a value) a command may carry"));
  table.push_back(UintSetting("max_clients", &Config::max_clients, 1, 1000000, "an integer",
                              "most client connections at once; further ones are refused"));
  table.push_back(
      SizeSetting("max_query_buffer_bytes", &Config::max_query_buffer_bytes, kMiB, 16 * kGiB,
                  "most unparsed input held per client; at least max_value_bytes + 65KiB"));
  table.push_back(SizeSetting("client_output_buffer_limit_bytes",
                              &Config::client_output_buffer_limit_bytes, kMiB, 16 * kGiB,
                              "most unsent output held per client before it is disconnected; "
                              "at least max_value_bytes + 65KiB"));
  table.push_back(MillisSetting("frame_timeout_ms", &Config::frame_timeout_ms, 1,
                                "longest time a client may take to send one whole command"));
  table.push_back(MillisSetting("shutdown_timeout_ms", &Config::shutdown_timeout_ms, 1,
                                "longest time a shutdown waits for clients and pending writes"));
  table.push_back(UintSetting(
      "shutdown_replica_wait_ms", &Config::shutdown_replica_wait_ms, 0, kOneDayMs,
      "an integer number of milliseconds",
      "on a master, longest time a shutdown waits for replicas to catch up; 0: no wait"));
  // Security
  table.push_back(WithEnv(
      TextSetting("requirepass", &Config::requirepass, nullptr,
                  "password clients must AUTH with, also used by replicas; empty: no password"),
      "KVSTORE_PASSWORD"));
  // Logging
  table.push_back(WordSetting("log_level", &Config::log_level, {"debug", "info", "warn", "error"},
                              "least severe log level written: debug, info, warn or error"));
  table.push_back(WordSetting("log_format", &Config::log_format, {"text", "json"},
                              "log line format: text, or json (one object per line)"));
  // Identity and role
  table.push_back(WithEnv(
      TextSetting("config_dir", &Config::config_dir, NonEmptyPath,
                  "mounted ConfigMap directory (one file per key), followed without restart"),
      "CONFIG_DIR"));
  table.push_back(WithEnv(TextSetting("pod_name", &Config::pod_name, nullptr,
                                      "pod identity <statefulset>-<ordinal>; empty: the hostname"),
                          "POD_NAME"));
  table.push_back(MasterOrdinalSetting());
  table.push_back(BoolSetting("replication_enabled", &Config::replication_enabled,
                              "whether replicas connect to the master and follow it"));
  table.push_back(WordSetting("replication_mode", &Config::replication_mode, {"async", "sync"},
                              "async, or sync: a write is acknowledged once replicas have it"));
  table.push_back(TextSetting(
      "master_address", &Config::master_address, HostPort,
      "host:port of the master, instead of the one derived from master_ordinal; \"{ordinal}\" "
      "in it stands for master_ordinal (tests, local clusters)"));
  table.push_back(TextSetting("headless_service", &Config::headless_service, HostName,
                              "headless Service giving each pod a DNS name: "
                              "<statefulset>-<ordinal>.<headless_service>"));
  table.push_back(MillisSetting("config_poll_ms", &Config::config_poll_ms, 10,
                                "how often the ConfigMap directory is read for role changes"));
  // Replication
  table.push_back(IntSetting("sync_replicas", &Config::sync_replicas, 1, 64,
                             "expected an integer between 1 and 64",
                             "with replication_mode sync, replicas that must acknowledge a write"));
  table.push_back(MillisSetting("sync_timeout_ms", &Config::sync_timeout_ms, 1,
                                "with replication_mode sync, how long a write waits for them "
                                "before -NOREPLICAS"));
  table.push_back(UintSetting(
      "replica_sync_delay_ms", &Config::replica_sync_delay_ms, 0, 1000,
      "an integer number of milliseconds",
      "on a replica with fsync always, longest time applied entries wait for the fsync that "
      "makes them durable and acknowledged, so that one fsync covers several master batches "
      "(visibility does not wait; WAIT and sync mode ask for an fsync at once); 0: every batch"));
  table.push_back(IntSetting("min_replicas_to_write", &Config::min_replicas_to_write, 0, 64,
                             "expected an integer between 0 and 64",
                             "writes are refused unless this many replicas are connected and "
                             "recent (Redis' min-replicas-to-write); 0 disables"));
  table.push_back(UintSetting("min_replicas_max_lag", &Config::min_replicas_max_lag, 1, 3600,
                              "an integer of seconds",
                              "seconds since its last acknowledgement for a replica to count "
                              "for min_replicas_to_write"));
  table.push_back(MillisSetting("promotion_timeout_ms", &Config::promotion_timeout_ms, 1,
                                "how long a promoted replica tries to fence and catch up with "
                                "the old master"));
  table.push_back(MillisSetting("empty_master_wait_ms", &Config::empty_master_wait_ms, 0,
                                "how long a master that starts with an empty data directory "
                                "waits for its replicas to report their data before it takes "
                                "writes; 0: no wait"));
  table.push_back(UintSetting("ready_max_lag_entries", &Config::ready_max_lag_entries, 1,
                              1000000000000ull, "an integer",
                              "a replica further behind its master than this many log entries "
                              "reports not ready on /readyz"));

  const Config defaults;
  for (Setting& setting : table) setting.info.default_value = setting.format(defaults);
  return table;
}

const std::vector<Setting>& Table() {
  static const std::vector<Setting> table = BuildTable();
  return table;
}

const Setting* FindSetting(std::string_view name) {
  for (const Setting& setting : Table()) {
    if (setting.info.name == name) return &setting;
  }
  return nullptr;
}

// Where the winning value of each setting came from, for cross-setting errors.
struct Origin {
  std::string source;  // "flag --port", "env PORT" or the YAML path
  std::string text;
};
using Origins = std::map<std::string, Origin>;

Status InvalidValue(std::string_view name, std::string_view text, std::string_view source,
                    std::string_view expected) {
  std::string message = "invalid " + std::string(name) + " " + QuoteValue(text) + " (from " +
                        std::string(source) + "): " + std::string(expected);
  // Kubernetes service links inject <SERVICE>_PORT=tcp://... and similar variables.
  if (source.rfind("env ", 0) == 0 && text.rfind("tcp://", 0) == 0) {
    message += " (a Kubernetes service link? set enableServiceLinks: false on the pod)";
  }
  return Status::InvalidArgument(std::move(message));
}

Status Apply(const Setting& setting, std::string_view text, const std::string& source,
             Config& config, Origins& origins) {
  if (std::optional<std::string> expected = setting.parse(text, config)) {
    return InvalidValue(setting.info.name, text, source, *expected);
  }
  origins[setting.info.name] = Origin{source, std::string(text)};
  return Status::Ok();
}

// For an unknown YAML key: the setting the user probably meant, if any.
std::string Suggestion(std::string_view key) {
  std::string normalized = Lower(key);
  if (normalized.rfind("--", 0) == 0) normalized.erase(0, 2);
  std::replace(normalized.begin(), normalized.end(), '-', '_');
  for (const Setting& setting : Table()) {
    if (setting.info.name == normalized || Lower(setting.info.env) == normalized) {
      return " (did you mean " + setting.info.name + "?)";
    }
  }
  return "";
}

Status ReadFile(const std::string& path, std::string* contents) {
  const auto failure = [&](int error) {
    return Status::InvalidArgument("cannot read config file " + path + ": " + std::strerror(error));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return failure(errno);
  struct stat info {};
  if (::fstat(fd, &info) != 0 || S_ISDIR(info.st_mode)) {
    const int error = S_ISDIR(info.st_mode) ? EISDIR : errno;
    ::close(fd);
    return failure(error);
  }
  contents->clear();
  char buffer[16384];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      return failure(error);
    }
    contents->append(buffer, static_cast<std::size_t>(n));
    if (contents->size() > kMaxConfigFileBytes) {
      ::close(fd);
      return Status::InvalidArgument("cannot read config file " + path + ": larger than " +
                                     DescribeSize(kMaxConfigFileBytes));
    }
  }
  ::close(fd);
  return Status::Ok();
}

Status ApplyYamlDocument(const std::string& path, const YAML::Node& root, Config& config,
                         Origins& origins) {
  if (root.IsNull()) return Status::Ok();  // an empty file sets nothing
  if (!root.IsMap()) {
    return Status::InvalidArgument("invalid config file " + path +
                                   ": expected a mapping of setting names to values");
  }
  std::set<std::string> seen;
  for (const auto& entry : root) {
    const std::string key = entry.first.IsScalar() ? entry.first.Scalar() : "?";
    const Setting* setting = entry.first.IsScalar() ? FindSetting(key) : nullptr;
    if (setting == nullptr) {
      return Status::InvalidArgument("unknown setting " + QuoteValue(key) + " in " + path +
                                     Suggestion(key));
    }
    if (!seen.insert(key).second) {
      return Status::InvalidArgument("duplicate setting " + QuoteValue(key) + " in " + path);
    }
    const YAML::Node& value = entry.second;
    if (value.IsNull()) {  // "key:" or "key: ~": the empty string
      if (Status s = Apply(*setting, "", path, config, origins); !s.ok()) return s;
    } else if (value.IsScalar()) {
      if (Status s = Apply(*setting, value.Scalar(), path, config, origins); !s.ok()) return s;
    } else {
      YAML::Emitter emitter;
      emitter << YAML::Flow << value;
      return InvalidValue(key, emitter.c_str(), path,
                          "expected a single value, not a list or a mapping");
    }
  }
  return Status::Ok();
}

Status ApplyYaml(const std::string& path, Config& config, Origins& origins) {
  std::string contents;
  if (Status s = ReadFile(path, &contents); !s.ok()) return s;
  try {
    // A second document (after "---") would be ignored by YAML::Load, and its settings with it.
    // Empty ones (a trailing "---", a comment) hold nothing to lose.
    std::vector<YAML::Node> documents = YAML::LoadAll(contents);
    std::erase_if(documents, [](const YAML::Node& document) { return document.IsNull(); });
    if (documents.size() > 1) {
      return Status::InvalidArgument("invalid config file " + path + ": it holds " +
                                     std::to_string(documents.size()) +
                                     " YAML documents; expected one mapping");
    }
    return ApplyYamlDocument(path, documents.empty() ? YAML::Node() : documents.front(), config,
                             origins);
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument("invalid config file " + path + ": " + e.what());
  }
}

// Rules that involve two settings, checked once all layers are applied. The error names the
// setting that was set explicitly (or the first one when both or neither were).
Status CheckCombinations(const Config& config, const Origins& origins) {
  const auto invalid = [&](const std::string& name, const std::string& expected) {
    const auto it = origins.find(name);
    const Origin origin =
        it != origins.end() ? it->second : Origin{"default", FindSetting(name)->format(config)};
    return InvalidValue(name, origin.text, origin.source, expected);
  };
  // A buffer must carry a command (or reply) holding the largest value: the value, its key, the
  // framing, and besides a read's worth (16 KiB) of the next pipelined command, or the 64 KiB of
  // replies a session queues before it stops appending more (session.cpp).
  const std::uint64_t smallest_buffer = config.max_value_bytes + kCommandRoomBytes;
  const std::string value_limit = "max_value_bytes (" + FormatSize(config.max_value_bytes) +
                                  ") + " + FormatSize(kCommandRoomBytes);
  if (config.max_query_buffer_bytes < smallest_buffer) {
    return invalid("max_query_buffer_bytes", "expected at least " + value_limit);
  }
  if (config.client_output_buffer_limit_bytes < smallest_buffer) {
    return invalid("client_output_buffer_limit_bytes", "expected at least " + value_limit);
  }
  if (config.admin_port != 0 && config.admin_port == config.port) {
    if (origins.count("admin_port") == 0 && origins.count("port") != 0) {
      return invalid("port", "expected a port other than admin_port (" +
                                 std::to_string(config.admin_port) + ")");
    }
    return invalid("admin_port", "expected a port other than port (" + std::to_string(config.port) +
                                     "), or 0 to disable");
  }
  return Status::Ok();
}

}  // namespace

const std::vector<SettingInfo>& Settings() {
  static const std::vector<SettingInfo> settings = [] {
    std::vector<SettingInfo> out;
    for (const Setting& setting : Table()) out.push_back(setting.info);
    return out;
  }();
  return settings;
}

Result<Config> LoadConfig(const ConfigSources& sources) {
  Config config;
  Origins origins;
  if (!sources.yaml_path.empty()) {
    if (Status s = ApplyYaml(sources.yaml_path, config, origins); !s.ok()) return s;
  }
  for (const Setting& setting : Table()) {
    const auto it = sources.env.find(setting.info.env);
    if (it == sources.env.end()) continue;
    if (Status s = Apply(setting, it->second, "env " + setting.info.env, config, origins);
        !s.ok()) {
      return s;
    }
  }
  for (const Setting& setting : Table()) {
    const auto it = sources.config_dir_files.find(setting.info.env);
    if (it == sources.config_dir_files.end()) continue;
    if (setting.info.name == "pod_name") {
      // One ConfigMap is mounted in every pod: they would all take the same identity (and
      // several could start as master).
      return Status::InvalidArgument(
          "invalid pod_name (from ConfigMap file " + sources.config_dir +
          "/POD_NAME): a ConfigMap is shared by every pod; set POD_NAME per pod instead (the "
          "downward API's metadata.name)");
    }
    if (Status s =
            Apply(setting, it->second,
                  "ConfigMap file " + sources.config_dir + "/" + setting.info.env, config, origins);
        !s.ok()) {
      return s;
    }
  }
  for (const auto& [name, value] : sources.flags) {
    if (FindSetting(name) == nullptr) {
      return Status::InvalidArgument("unknown setting " + QuoteValue(name) +
                                     " on the command line");
    }
  }
  for (const Setting& setting : Table()) {
    const auto it = sources.flags.find(setting.info.name);
    if (it == sources.flags.end()) continue;
    if (Status s = Apply(setting, it->second, "flag " + setting.info.flag, config, origins);
        !s.ok()) {
      return s;
    }
  }
  if (Status s = CheckCombinations(config, origins); !s.ok()) return s;
  return config;
}

Result<std::map<std::string, std::string>> ReadConfigDir(const std::string& dir) {
  // A setting's value is short: a larger file is a mistake (a wrong mount), not a value.
  constexpr std::size_t kMaxFileBytes = 64 * 1024;
  std::map<std::string, std::string> files;
  if (dir.empty()) return files;
  for (const SettingInfo& setting : Settings()) {
    // Kubernetes mounts each key as a symlink into a ..data directory it swaps atomically, so
    // reading by name always sees one consistent version.
    const std::string path = dir + "/" + setting.env;
    auto unreadable = [&path](const std::string& why) {
      return Status::InvalidArgument("cannot read ConfigMap file " + path + ": " + why);
    };
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) continue;  // not set there
      return unreadable(std::strerror(errno));
    }
    // Checked before opening: opening a FIFO would wait for a writer, a directory fails to read.
    if (!S_ISREG(st.st_mode)) return unreadable("not a regular file");
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return unreadable(std::strerror(errno));
    std::string value(kMaxFileBytes + 1, '\0');
    std::size_t size = 0;
    int error = 0;
    while (size < value.size()) {
      const ssize_t n = ::read(fd, value.data() + size, value.size() - size);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) error = errno;
      if (n <= 0) break;
      size += static_cast<std::size_t>(n);
    }
    ::close(fd);
    if (error != 0) return unreadable(std::strerror(error));
    if (size > kMaxFileBytes) return unreadable("larger than 64 KiB");
    value.resize(size);
    while (!value.empty() && std::isspace(static_cast<unsigned char>(value.back()))) {
      value.pop_back();
    }
    files[setting.env] = value;
  }
  return files;
}

std::optional<std::string> HostPortProblem(std::string_view address) { return HostPort(address); }

std::map<std::string, std::string> EnvironmentFromProcess() {
  std::map<std::string, std::string> env;
  for (const SettingInfo& setting : Settings()) {
    if (const char* value = std::getenv(setting.env.c_str()); value != nullptr) {
      env[setting.env] = value;
    }
  }
  return env;
}

std::map<std::string, std::string> ConfigValues(const Config& config) {
  std::map<std::string, std::string> values;
  for (const Setting& setting : Table()) values[setting.info.name] = setting.format(config);
  return values;
}

}  // namespace kvstore
