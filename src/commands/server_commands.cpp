// Server commands: INFO, COMMAND, CONFIG GET, TIME, MEMORY USAGE, SHUTDOWN.
// INFO uses Redis' field names wherever one exists, so Redis tools (redis-cli, exporters,
// dashboards) read it; kvstore-only fields carry a kvstore_ prefix.
#include <fmt/format.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <fstream>

#include "commands/command.h"
#include "commands/command_metrics.h"
#include "commands/glob.h"
#include "commands/info_field.h"
#include "kvstore/resp.h"

namespace kvstore {
namespace {

std::uint64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

// The most the process has had resident (the kernel's VmHWM), 0 if unreadable.
std::uint64_t PeakResidentBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    std::uint64_t kib = 0;
    if (std::sscanf(line.c_str(), "VmHWM: %" SCNu64 " kB", &kib) == 1) return kib * 1024;
  }
  return 0;
}

std::string HumanBytes(std::uint64_t bytes) { return fmt::format("{:.2f}M", bytes / 1048576.0); }

std::string InfoText(CommandContext& c, const std::vector<std::string>& wanted) {
  // As Redis: the default sections, unless asked for by name or with "all" / "everything";
  // commandstats is not a default section.
  auto want = [&](std::string_view section) {
    const bool in_default = section != "commandstats";
    if (wanted.empty()) return in_default;
    for (const std::string& w : wanted) {
      if (w == "all" || w == "everything" || w == section) return true;
      if (w == "default" && in_default) return true;
    }
    return false;
  };
  const CommandMetrics* commands = c.server.command_metrics();
  const ServerCounters counters = c.server.Counters();
  const EngineStats stats = c.engine.Stats();
  std::string text;
  if (want("server")) {
    utsname uts{};
    uname(&uts);
    text += "# Server\r\n";
    Field(&text, "redis_version", std::string(kRedisCompatVersion));
    Field(&text, "kvstore_version", c.options.version);
    Field(&text, "redis_mode", std::string("standalone"));
    Field(&text, "os", std::string(uts.sysname) + " " + uts.release + " " + uts.machine);
    Field(&text, "arch_bits", sizeof(void*) * 8);
    Field(&text, "process_id", static_cast<long>(getpid()));
    Field(&text, "tcp_port", counters.port);
    Field(&text, "uptime_in_seconds", static_cast<std::uint64_t>(counters.uptime_seconds));
    Field(&text, "uptime_in_days", static_cast<std::uint64_t>(counters.uptime_seconds / 86400));
    text += "\r\n";
  }
  if (want("clients")) {
    text += "# Clients\r\n";
    Field(&text, "connected_clients", counters.connected_clients);
    Field(&text, "maxclients", c.options.max_clients);
    // Clients waiting for replica acknowledgements (WAIT, a sync-mode write).
    Field(&text, "blocked_clients",
          c.replication != nullptr ? c.replication->BlockedClients() : std::uint64_t{0});
    text += "\r\n";
  }
  if (want("memory")) {
    text += "# Memory\r\n";
    // kvstore's data lives in LMDB's memory map (page cache), not the heap: used_memory is the
    // process' resident memory, used_memory_dataset the map's used pages.
    const std::uint64_t rss = ResidentBytes();
    const std::uint64_t peak = std::max(rss, PeakResidentBytes());
    Field(&text, "used_memory", rss);
    Field(&text, "used_memory_human", HumanBytes(rss));
    Field(&text, "used_memory_rss", rss);
    Field(&text, "used_memory_rss_human", HumanBytes(rss));
    Field(&text, "used_memory_peak", peak);
    Field(&text, "used_memory_peak_human", HumanBytes(peak));
    Field(&text, "used_memory_dataset", stats.storage.used_bytes);
    Field(&text, "maxmemory", 0);
    // Job queues (BullMQ, Sidekiq) warn unless keys are never evicted; kvstore never evicts.
    Field(&text, "maxmemory_policy", std::string("noeviction"));
    Field(&text, "kvstore_map_size_bytes", stats.storage.map_bytes);
    Field(&text, "kvstore_map_used_bytes", stats.storage.used_bytes);
    Field(&text, "kvstore_max_map_bytes", stats.storage.max_map_bytes);
    text += "\r\n";
  }
  if (want("persistence")) {
    text += "# Persistence\r\n";
    Field(&text, "loading", 0);
    Field(&text, "aof_enabled", 1);
    Field(&text, "aof_rewrite_in_progress", 0);
    Field(&text, "aof_last_write_status", std::string(stats.poisoned ? "err" : "ok"));
    Field(&text, "rdb_bgsave_in_progress", 0);
    Field(&text, "kvstore_fsync", c.options.fsync);
    Field(&text, "kvstore_fsyncs", stats.fsyncs);
    Field(&text, "kvstore_group_commits", stats.commits);
    Field(&text, "kvstore_committed_writes", stats.committed_writes);
    Field(&text, "kvstore_last_checkpoint_seq", stats.last_checkpoint_seq);
    Field(&text, "kvstore_log_first_seq", stats.log.first_seq);
    Field(&text, "kvstore_log_last_seq", stats.log.last_seq);
    Field(&text, "kvstore_log_bytes", stats.log.bytes);
    Field(&text, "kvstore_log_segments", stats.log.segments);
    Field(&text, "kvstore_writes_disabled", stats.poisoned ? 1 : 0);
    if (stats.poisoned) Field(&text, "kvstore_writes_disabled_reason", stats.poison_reason);
    text += "\r\n";
  }
  if (want("stats")) {
    text += "# Stats\r\n";
    Field(&text, "total_connections_received", counters.total_connections);
    Field(&text, "total_commands_processed", counters.total_commands);
    Field(&text, "total_net_input_bytes", counters.net_input_bytes);
    Field(&text, "total_net_output_bytes", counters.net_output_bytes);
    Field(&text, "rejected_connections", counters.rejected_connections);
    Field(&text, "total_error_replies", commands ? commands->total_errors() : 0);
    Field(&text, "kvstore_pooled_read_commands", counters.pooled_read_commands);
    text += "\r\n";
  }
  if (want("replication")) {
    ReplicationStatus status;
    if (c.replication != nullptr) {
      status = c.replication->CurrentStatus();
    } else {
      status.standalone = true;
      status.seq = c.engine.committed_seq();
      status.log_first_seq = stats.log.first_seq;
      status.log_bytes = stats.log.bytes;
    }
    AppendReplicationInfo(status, &text);
  }
  if (want("commandstats") && commands != nullptr) {
    // Redis' layout: cmdstat_<name>:calls=,usec=,usec_per_call=,rejected_calls=,failed_calls=
    text += "# Commandstats\r\n";
    for (const auto& command : commands->Counts()) {
      const std::uint64_t calls = command.ok + command.errors;
      if (calls == 0) continue;
      Field(&text, "cmdstat_" + std::string(command.name),
            fmt::format("calls={},usec={},usec_per_call={:.2f},rejected_calls=0,failed_calls={}",
                        calls, command.microseconds,
                        static_cast<double>(command.microseconds) / static_cast<double>(calls),
                        command.errors));
    }
    text += "\r\n";
  }
  if (want("keyspace")) {
    text += "# Keyspace\r\n";
    if (stats.storage.keys > 0) {
      Field(&text, "db0", "keys=" + std::to_string(stats.storage.keys) + ",expires=0,avg_ttl=0");
    }
    text += "\r\n";
  }
  // Sections end with a blank line; the reply as a whole does not.
  while (text.size() >= 2 && text.ends_with("\r\n\r\n")) text.resize(text.size() - 2);
  return text;
}

// INFO [section ...]
Outcome Info(CommandContext& c) {
  std::vector<std::string> wanted;
  for (std::size_t i = 1; i < c.args.size(); ++i) wanted.push_back(ToLower(c.args[i]));
  resp::AppendBulkString(c.out, InfoText(c, wanted));
  return Outcome::Replied();
}

void AppendFlags(std::uint32_t flags, std::string* out) {
  std::vector<std::string_view> names;
  if (flags & kFlagWrite) names.push_back("write");
  if (flags & kFlagRead) names.push_back("readonly");
  if (flags & kFlagAdmin) names.push_back("admin");
  if (flags & kFlagNoAuth) names.push_back("no_auth");
  if (flags & kFlagFast) names.push_back("fast");
  resp::AppendArrayHeader(out, names.size());
  for (auto name : names) resp::AppendSimpleString(out, name);
}

// One COMMAND INFO entry in Redis 7's ten-field layout.
void AppendCommandInfo(const CommandSpec& spec, std::string* out) {
  resp::AppendArrayHeader(out, 10);
  resp::AppendBulkString(out, spec.name);
  resp::AppendInteger(out, spec.arity);
  AppendFlags(spec.flags, out);
  resp::AppendInteger(out, spec.first_key);
  resp::AppendInteger(out, spec.last_key);
  resp::AppendInteger(out, spec.key_step);
  for (int i = 0; i < 4; ++i) resp::AppendArrayHeader(out, 0);  // acl, tips, keys, subcommands
}

const CommandSpec* FindCommand(std::string_view name) {
  for (const CommandSpec* spec : AllCommands()) {
    if (EqualsIgnoreCase(spec->name, name)) return spec;
  }
  return nullptr;
}

constexpr SubcommandSpec kCommandSubcommands[] = {
    {"count", 2, "", "Return the total number of commands in this server."},
    {"list", 2, "", "Return a list of all commands in this server."},
    {"info", -2, "[<command-name> ...]",
     "Return details about the named commands, or about all commands when none is named."},
    {"docs", -2, "[<command-name> ...]", "Answered with no documentation."},
};

// COMMAND | COMMAND COUNT | COMMAND INFO [name...] | COMMAND LIST | COMMAND DOCS [name...]
// DOCS answers with no documentation, which redis-cli 7 accepts at start-up.
Outcome Command(CommandContext& c) {
  const auto all = AllCommands();
  if (c.args.size() == 1 || (c.args.size() == 2 && EqualsIgnoreCase(c.args[1], "info"))) {
    resp::AppendArrayHeader(c.out, all.size());
    for (const CommandSpec* spec : all) AppendCommandInfo(*spec, c.out);
    return Outcome::Replied();
  }
  const SubcommandSpec* sub = FindSubcommand(c, "command", kCommandSubcommands);
  if (sub == nullptr) return Outcome::Replied();
  if (sub->name == "count") {
    resp::AppendInteger(c.out, static_cast<std::int64_t>(all.size()));
  } else if (sub->name == "list") {
    resp::AppendArrayHeader(c.out, all.size());
    for (const CommandSpec* spec : all) resp::AppendBulkString(c.out, spec->name);
  } else if (sub->name == "info") {
    resp::AppendArrayHeader(c.out, c.args.size() - 2);
    for (std::size_t i = 2; i < c.args.size(); ++i) {
      const CommandSpec* spec = FindCommand(c.args[i]);
      spec ? AppendCommandInfo(*spec, c.out) : resp::AppendNullBulkString(c.out);  // as Redis
    }
  } else {  // docs
    resp::AppendArrayHeader(c.out, 0);
  }
  return Outcome::Replied();
}

constexpr SubcommandSpec kConfigSubcommands[] = {
    {"get", -3, "<pattern> [<pattern> ...]",
     "Return parameters matching the glob-like <pattern>s and their values."},
    {"set", -4, "<directive> <value> ...", "Refused: kvstore settings come from its config."},
    {"rewrite", 2, "", "Refused: kvstore settings come from its config."},
    {"resetstat", 2, "", "Accepted; changes nothing."},
};

// CONFIG GET parameter [parameter ...]: the Redis parameters clients ask about, answered from
// kvstore's settings. CONFIG SET and REWRITE are refused: settings come from the config layers.
Outcome Config(CommandContext& c) {
  const SubcommandSpec* sub = FindSubcommand(c, "config", kConfigSubcommands);
  if (sub == nullptr) return Outcome::Replied();
  if (sub->name == "resetstat") {
    resp::AppendSimpleString(c.out, "OK");
    return Outcome::Replied();
  }
  if (sub->name != "get") {
    resp::AppendError(c.out, "ERR CONFIG " + std::string(sub->name) +
                                 " is not supported: kvstore settings come from its config "
                                 "file, environment and flags (see docs/CONFIGURATION.md)");
    return Outcome::Replied();
  }
  const std::string appendfsync = c.options.fsync == "interval" ? "everysec"
                                  : c.options.fsync == "never"  ? "no"
                                                                : "always";
  const std::pair<std::string, std::string> parameters[] = {
      {"save", ""},
      {"appendonly", "yes"},
      {"appendfsync", appendfsync},
      {"databases", "1"},
      {"maxmemory", "0"},
      {"maxmemory-policy", "noeviction"},
      {"cluster-enabled", "no"},
      {"replica-read-only", "yes"},
      {"maxclients", std::to_string(c.options.max_clients)},
      {"port", std::to_string(c.server.Counters().port)},
      {"dir", c.options.data_dir},
      {"proto-max-bulk-len", std::to_string(c.options.max_value_bytes)},
      {"timeout", "0"},
  };
  std::vector<const std::pair<std::string, std::string>*> matched;
  for (const auto& parameter : parameters) {
    for (std::size_t i = 2; i < c.args.size(); ++i) {
      if (GlobMatch(ToLower(c.args[i]), parameter.first)) {
        matched.push_back(&parameter);
        break;
      }
    }
  }
  resp::AppendArrayHeader(c.out, matched.size() * 2);
  for (const auto* parameter : matched) {
    resp::AppendBulkString(c.out, parameter->first);
    resp::AppendBulkString(c.out, parameter->second);
  }
  return Outcome::Replied();
}

Outcome Time(CommandContext& c) {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  resp::AppendArrayHeader(c.out, 2);
  resp::AppendBulkString(c.out, std::to_string(micros / 1000000));
  resp::AppendBulkString(c.out, std::to_string(micros % 1000000));
  return Outcome::Replied();
}

// What one pair takes in LMDB, as MEMORY USAGE reports it. A pair is a node in a page: an
// 8-byte header, the key, the value and a 2-byte slot in the page's index. A node that would
// pass half a page keeps only the key and a page number, and its value takes whole overflow
// pages of its own, each run with a 16-byte header (lmdb's mdb.c: me_nodemax, OVPAGES).
std::uint64_t PairBytes(std::uint64_t key, std::uint64_t value) {
  constexpr std::uint64_t kNodeHeader = 8, kIndexSlot = 2, kPageHeader = 16;
  const auto page = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
  const std::uint64_t node_max = ((page - kPageHeader) / 2 & ~std::uint64_t{1}) - kIndexSlot;
  if (kNodeHeader + key + value <= node_max) return kNodeHeader + key + value + kIndexSlot;
  const std::uint64_t overflow_pages = (kPageHeader - 1 + value) / page + 1;
  return kNodeHeader + key + sizeof(std::uint64_t) + kIndexSlot + overflow_pages * page;
}

constexpr SubcommandSpec kMemorySubcommands[] = {
    {"usage", -3, "<key> [SAMPLES <count>]",
     "Return the bytes <key> and its value take in storage. SAMPLES is accepted and ignored: "
     "values are strings."},
};

// MEMORY USAGE key [SAMPLES count] -> the bytes the pair takes in storage, nil when the key does
// not exist (redis-cli --memkeys reads it). MEMORY HELP lists this.
Outcome Memory(CommandContext& c) {
  if (FindSubcommand(c, "memory", kMemorySubcommands) == nullptr) return Outcome::Replied();
  for (std::size_t i = 3; i < c.args.size(); i += 2) {
    std::int64_t samples = 0;
    if (!EqualsIgnoreCase(c.args[i], "samples") || i + 1 == c.args.size()) {
      ReplySyntaxError(c.out);
      return Outcome::Replied();
    }
    if (!resp::ParseInteger(c.args[i + 1], &samples)) {
      ReplyNotInteger(c.out);
      return Outcome::Replied();
    }
    if (samples < 0) {
      ReplySyntaxError(c.out);
      return Outcome::Replied();
    }
  }
  Storage::Snapshot* snapshot = c.reads.Borrow(c.out);
  if (snapshot == nullptr) return Outcome::Replied();
  std::string value;
  if (snapshot->Get(c.args[2], &value).ok()) {
    resp::AppendInteger(c.out,
                        static_cast<std::int64_t>(PairBytes(c.args[2].size(), value.size())));
  } else {
    resp::AppendNullBulkString(c.out);
  }
  return Outcome::Replied();
}

// SHUTDOWN [NOSAVE | SAVE]: the graceful stop of SIGTERM (finish the commands in flight, make
// everything durable, let replicas catch up, exit 0). Every acknowledged write is durable
// already, so NOSAVE and SAVE change nothing. As in Redis, success has no reply: the connection
// closes. NOW, FORCE and ABORT are refused rather than half-honoured.
Outcome Shutdown(CommandContext& c) {
  for (std::size_t i = 1; i < c.args.size(); ++i) {
    const std::string option = ToLower(c.args[i]);
    if (option == "nosave" || option == "save") continue;
    if (option == "now" || option == "force" || option == "abort") {
      resp::AppendError(c.out, "ERR SHUTDOWN " + c.args[i] +
                                   " is not supported: kvstore shuts down gracefully only");
    } else {
      ReplySyntaxError(c.out);
    }
    return Outcome::Replied();
  }
  if (!c.server.RequestShutdown()) {
    resp::AppendError(c.out, "ERR SHUTDOWN is not available here");
    return Outcome::Replied();
  }
  c.client.close_after_reply = true;
  return Outcome::Replied();
}

constexpr CommandSpec kCommands[] = {
    {"info", -1, kFlagAdmin, Info, 0, 0, 0},
    {"command", -1, kFlagAdmin, Command, 0, 0, 0},
    {"config", -2, kFlagAdmin, Config, 0, 0, 0},
    {"time", 1, kFlagFast | kFlagInTransaction, Time, 0, 0, 0},
    {"memory", -2, kFlagRead, Memory, 0, 0, 0},
    // The graceful stop of SIGTERM.
    {"shutdown", -1, kFlagAdmin, Shutdown, 0, 0, 0},
};

}  // namespace

std::span<const CommandSpec> ServerCommands() { return kCommands; }

}  // namespace kvstore
