// kvctl: the operator CLI of kvstore. Each subcommand connects with kvstore::Client, sends one
// or a few RESP commands and prints the result. Single-threaded.
//
// Exit codes: 0 success; 1 key not found, error reply from the server, a value too large or
// output that could not be written; 2 usage error; 3 server unreachable or connection lost (one
// line on stderr); 128+N killed by signal N (backup removes its temporary file first).
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "backup_commands.h"
#include "kvstore/client.h"

namespace {

using kvstore::Client;
using kvstore::ClientOptions;
using kvstore::resp::Value;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;  // key not found, or the server replied with an error
constexpr int kExitUsage = 2;
constexpr int kExitUnavailable = 3;  // server unreachable or connection lost

// The largest value put reads from stdin: the server's default max_value_bytes, which is also
// the largest it can be set to. The value is held in memory whole (the request states its length
// first), so this also bounds kvctl's memory.
constexpr std::size_t kMaxValueBytes = std::size_t{512} << 20;
// stdin is read in pieces of this size, never reallocated: one copy of the value in memory.
constexpr std::size_t kValuePieceBytes = std::size_t{1} << 20;

void PrintError(const std::string& message) {
  std::fprintf(stderr, "kvctl: %s\n", message.c_str());
}

// The errno of the first failed write to stdout: its error flag alone does not say why, and a
// large write that bypassed the buffer leaves nothing for the final fflush to fail on again.
int stdout_errno = 0;

// Keys and values are binary: write them as they are. A failure is reported by FinishOutput.
void WriteRaw(std::string_view bytes) {
  if (std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size() && stdout_errno == 0) {
    stdout_errno = errno;
  }
}

// Flushes stdout. Output that could not be written (a full disk, a closed file) fails the
// command, which otherwise looks done to a script: exit 1 with one line, unless it failed anyway.
int FinishOutput(int exit_code) {
  errno = 0;
  const bool flushed = std::fflush(stdout) == 0;
  if (flushed && !std::ferror(stdout)) return exit_code;
  const int error = stdout_errno != 0 ? stdout_errno : errno;
  PrintError("cannot write the output" +
             (error != 0 ? ": " + std::generic_category().message(error) : std::string()));
  return exit_code == kExitOk ? kExitFailed : exit_code;
}

// "host:port", with brackets around an IPv6 literal (as Client's messages show it).
std::string Address(const ClientOptions& options) {
  const bool ipv6 = options.host.find(':') != std::string::npos;
  return (ipv6 ? "[" + options.host + "]" : options.host) + ":" + std::to_string(options.port);
}

// Connects, or prints why not and returns nullptr with *exit_code set.
std::unique_ptr<Client> Connect(const ClientOptions& options, int* exit_code) {
  kvstore::Result<std::unique_ptr<Client>> client = Client::Connect(options);
  if (client.ok()) return std::move(client).value();
  if (client.status().code() == kvstore::Status::Code::kInvalidArgument) {
    // The server rejected AUTH: an error reply, not a connectivity problem.
    PrintError("authentication failed: " + client.status().message() +
               " (check --password or KVSTORE_PASSWORD)");
    *exit_code = kExitFailed;
  } else {
    PrintError(client.status().message());
    *exit_code = kExitUnavailable;
  }
  return nullptr;
}

// Checks the reply to one command: returns it when it is not an error reply; otherwise prints
// why and returns nullopt with *exit_code set.
std::optional<Value> CheckReply(kvstore::Result<Value>& reply, int* exit_code) {
  if (!reply.ok()) {
    PrintError(reply.status().message());
    *exit_code = kExitUnavailable;
    return std::nullopt;
  }
  if (reply->is_error()) {
    PrintError("server error: " + reply->str);
    *exit_code = kExitFailed;
    return std::nullopt;
  }
  return std::move(reply).value();
}

std::optional<Value> Call(Client& client, const std::vector<std::string>& args, int* exit_code) {
  kvstore::Result<Value> reply = client.Call(args);
  return CheckReply(reply, exit_code);
}

int UnexpectedReply(const std::string& command) {
  PrintError("unexpected reply to " + command + " (is this a kvstore or Redis server?)");
  return kExitFailed;
}

int KeyNotFound(const std::string& key) {
  PrintError("key not found: " + key);
  return kExitFailed;
}

std::string TooLarge() {
  return "the value on stdin is larger than 512 MiB, the server's default and largest "
         "max_value_bytes: nothing was stored";
}

// All of stdin, in pieces of kValuePieceBytes, or nullopt after printing why not.
std::optional<std::vector<std::string>> ReadStdin() {
  // A file's size is known: refuse at once rather than after reading 512 MiB.
  struct stat st {};
  const off_t offset = lseek(STDIN_FILENO, 0, SEEK_CUR);
  if (fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode) && offset >= 0 &&
      static_cast<std::uint64_t>(st.st_size - std::min(offset, st.st_size)) > kMaxValueBytes) {
    PrintError(TooLarge());
    return std::nullopt;
  }
  std::vector<std::string> pieces;
  std::size_t total = 0;
  for (;;) {
    std::string piece(kValuePieceBytes, '\0');
    const std::size_t n = std::fread(piece.data(), 1, piece.size(), stdin);
    if (n == 0) break;
    piece.resize(n);
    total += n;
    if (total > kMaxValueBytes) {
      PrintError(TooLarge());
      return std::nullopt;
    }
    pieces.push_back(std::move(piece));
  }
  if (std::ferror(stdin)) {
    PrintError("cannot read the value from stdin: " + std::generic_category().message(errno));
    return std::nullopt;
  }
  return pieces;
}

// put KEY VALUE: SET, with VALUE "-" meaning all of stdin (read before connecting, so a slow
// producer does not hold an idle connection).
int Put(const ClientOptions& options, const std::string& key, const std::string& value_arg) {
  std::vector<std::string> pieces = {value_arg};
  if (value_arg == "-") {
    std::optional<std::vector<std::string>> from_stdin = ReadStdin();
    if (!from_stdin) return kExitFailed;
    pieces = std::move(*from_stdin);
  }
  int exit_code = kExitOk;
  std::unique_ptr<Client> client = Connect(options, &exit_code);
  if (!client) return exit_code;
  kvstore::Result<Value> reply = client->Call({"SET", key}, pieces);
  if (!CheckReply(reply, &exit_code)) return exit_code;
  WriteRaw("OK\n");
  return kExitOk;
}

// read KEY: GET, value written byte-exact; the newline is only for a human at a terminal.
int Read(const ClientOptions& options, const std::string& key) {
  int exit_code = kExitOk;
  std::unique_ptr<Client> client = Connect(options, &exit_code);
  if (!client) return exit_code;
  std::optional<Value> reply = Call(*client, {"GET", key}, &exit_code);
  if (!reply) return exit_code;
  if (reply->is_null()) return KeyNotFound(key);
  if (reply->type != Value::Type::kBulkString) return UnexpectedReply("GET");
  WriteRaw(reply->str);
  if (isatty(STDOUT_FILENO)) WriteRaw("\n");
  return kExitOk;
}

// delete KEY: DEL, whose integer reply says whether the key existed.
int Delete(const ClientOptions& options, const std::string& key) {
  int exit_code = kExitOk;
  std::unique_ptr<Client> client = Connect(options, &exit_code);
  if (!client) return exit_code;
  std::optional<Value> reply = Call(*client, {"DEL", key}, &exit_code);
  if (!reply) return exit_code;
  if (reply->type != Value::Type::kInteger) return UnexpectedReply("DEL");
  if (reply->integer == 0) return KeyNotFound(key);
  WriteRaw("deleted\n");
  return kExitOk;
}

// SCAN's MATCH is a glob: escape its metacharacters so that the prefix matches literally.
std::string EscapeGlob(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// scan [--prefix P] [--limit N] [-0]: SCAN until the cursor returns to "0" or N keys are printed.
// Keys are binary: with null_terminated each ends with a NUL byte instead of a newline, so that a
// key holding a newline is not read as two (xargs -0, read -d '').
int Scan(const ClientOptions& options, const std::string& prefix, std::size_t limit,
         bool null_terminated) {
  const std::string_view end_of_key = null_terminated ? std::string_view("\0", 1) : "\n";
  int exit_code = kExitOk;
  std::unique_ptr<Client> client = Connect(options, &exit_code);
  if (!client) return exit_code;
  const std::string pattern = EscapeGlob(prefix) + "*";
  std::string cursor = "0";
  std::size_t printed = 0;
  do {
    std::optional<Value> reply =
        Call(*client, {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"}, &exit_code);
    if (!reply) return exit_code;
    // [cursor, [key...]]
    if (reply->type != Value::Type::kArray || reply->elements.size() != 2 ||
        reply->elements[0].type != Value::Type::kBulkString ||
        reply->elements[1].type != Value::Type::kArray) {
      return UnexpectedReply("SCAN");
    }
    cursor = reply->elements[0].str;
    for (const Value& key : reply->elements[1].elements) {
      if (limit > 0 && printed == limit) break;
      WriteRaw(key.str);
      WriteRaw(end_of_key);
      ++printed;
    }
    // Output that cannot be written ends the scan (FinishOutput says why).
  } while (cursor != "0" && (limit == 0 || printed < limit) && !std::ferror(stdout));
  return kExitOk;
}

// INFO's body: "field:value" lines, with "# Section" headers and blank lines in between.
std::map<std::string, std::string> ParseInfo(std::string_view text) {
  std::map<std::string, std::string> fields;
  while (!text.empty()) {
    const std::size_t end = std::min(text.find('\n'), text.size());
    std::string_view line = text.substr(0, end);
    text.remove_prefix(std::min(end + 1, text.size()));
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::size_t colon = line.find(':');
    if (line.empty() || line[0] == '#' || colon == std::string_view::npos) continue;
    fields.emplace(line.substr(0, colon), line.substr(colon + 1));
  }
  return fields;
}

// "keys=3,expires=0,avg_ttl=0" -> "3".
std::optional<std::string> KeysOfDb(const std::string& db_info) {
  const std::string_view prefix = "keys=";
  if (db_info.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  return db_info.substr(prefix.size(), db_info.find(',') - prefix.size());
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
      out += escaped;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

bool IsInteger(const std::string& s) {
  long long value;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  return !s.empty() && ec == std::errc() && end == s.data() + s.size();
}

// status [--json]: the INFO fields an operator checks first. Fields the server does not report
// (e.g. kvstore_* against Redis) show as "-" in the table and null in JSON.
int ShowStatus(const ClientOptions& options, bool json) {
  int exit_code = kExitOk;
  std::unique_ptr<Client> client = Connect(options, &exit_code);
  if (!client) return exit_code;
  std::optional<Value> reply = Call(*client, {"INFO"}, &exit_code);
  if (!reply) return exit_code;
  if (reply->type != Value::Type::kBulkString) return UnexpectedReply("INFO");
  const std::map<std::string, std::string> info = ParseInfo(reply->str);
  auto field = [&](const std::string& name) -> std::optional<std::string> {
    auto it = info.find(name);
    if (it == info.end()) return std::nullopt;
    return it->second;
  };
  auto db0 = field("db0");
  std::optional<std::string> master;
  if (auto host = field("master_host"), port = field("master_port"); host && port) {
    master = *host + ":" + *port;
  }
  // slave0:ip=...,port=...,state=...,offset=...,lag=... -> "ip:port state offset=N lag=Ns; ..."
  std::optional<std::string> replicas;
  for (int i = 0;; ++i) {
    auto line = field("slave" + std::to_string(i));
    if (!line) break;
    std::map<std::string, std::string> parts;
    std::size_t start = 0;
    while (start <= line->size()) {
      const std::size_t comma = std::min(line->find(',', start), line->size());
      const std::string item = line->substr(start, comma - start);
      if (const auto eq = item.find('='); eq != std::string::npos) {
        parts[item.substr(0, eq)] = item.substr(eq + 1);
      }
      start = comma + 1;
    }
    const std::string text = parts["ip"] + ":" + parts["port"] + " " + parts["state"] +
                             " offset=" + parts["offset"] + " lag=" + parts["lag"] + "s";
    replicas = replicas ? *replicas + "; " + text : text;
  }

  struct Row {
    std::string name;  // JSON key; the table shows it with spaces
    std::optional<std::string> value;
    bool numeric;
    const char* unit;  // table only
  };
  const std::vector<Row> rows = {
      {"address", Address(options), false, ""},
      {"role", field("role"), false, ""},
      {"version", field("kvstore_version"), false, ""},
      {"keys", db0 ? KeysOfDb(*db0) : std::optional<std::string>("0"), true, ""},
      {"last_sequence", field("master_repl_offset"), true, ""},
      {"epoch", field("kvstore_epoch"), true, ""},
      {"replication_mode", field("kvstore_replication_mode"), false, ""},
      {"master", master, false, ""},
      {"master_link", field("master_link_status"), false, ""},
      {"master_last_io", field("master_last_io_seconds_ago"), true, " s"},
      {"lag_entries", field("kvstore_lag_entries"), true, ""},
      {"link_error", field("kvstore_link_error"), false, ""},
      {"connected_replicas", field("connected_slaves"), true, ""},
      {"replicas", replicas, false, ""},
      {"connected_clients", field("connected_clients"), true, ""},
      {"uptime", field("uptime_in_seconds"), true, " s"},
      {"used_map_bytes", field("kvstore_map_used_bytes"), true, ""},
      {"fsync_mode", field("kvstore_fsync"), false, ""},
  };

  if (json) {
    std::string out = "{";
    for (const Row& row : rows) {
      if (out.size() > 1) out += ", ";
      out += JsonString(row.name) + ": ";
      if (!row.value) {
        out += "null";
      } else if (row.numeric && IsInteger(*row.value)) {
        out += *row.value;
      } else {
        out += JsonString(*row.value);
      }
    }
    WriteRaw(out + "}\n");
    return kExitOk;
  }
  for (const Row& row : rows) {
    std::string label = row.name;
    std::replace(label.begin(), label.end(), '_', ' ');
    label.resize(std::max<std::size_t>(label.size(), 20), ' ');
    WriteRaw(label + (row.value ? *row.value + row.unit : "-") + "\n");
  }
  return kExitOk;
}

// ping: PING, with the round trip of that one command (connection setup not included).
int Ping(const ClientOptions& options) {
  int exit_code = kExitOk;
  std::unique_ptr<Client> client = Connect(options, &exit_code);
  if (!client) return exit_code;
  const auto start = std::chrono::steady_clock::now();
  std::optional<Value> reply = Call(*client, {"PING"}, &exit_code);
  const std::chrono::duration<double, std::milli> elapsed =
      std::chrono::steady_clock::now() - start;
  if (!reply) return exit_code;
  if (reply->type != Value::Type::kSimpleString) return UnexpectedReply("PING");
  char round_trip[32];
  std::snprintf(round_trip, sizeof(round_trip), " (%.2f ms)\n", elapsed.count());
  WriteRaw(reply->str + round_trip);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvctl: operator CLI for a kvstore server"};
  app.set_version_flag("--version", KVSTORE_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // global options may also follow the subcommand

  ClientOptions options;
  double timeout_seconds = 5;
  app.add_option("--host", options.host, "Server host name or address")->capture_default_str();
  app.add_option("--port", options.port, "Server port")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_option("--password", options.password, "Password sent with AUTH")
      ->envname("KVSTORE_PASSWORD");
  // CLI::Range lets NaN through (every comparison with it is false).
  const CLI::Validator finite(
      [](std::string& text) {
        double seconds = 0;
        if (!CLI::detail::lexical_cast(text, seconds) || !std::isfinite(seconds)) {
          return "Value " + text + " is not a number of seconds";
        }
        return std::string();
      },
      "");
  app.add_option("--timeout", timeout_seconds,
                 "Seconds to connect, then the longest time a transfer may go without progress "
                 "(a slow but moving transfer never times out)")
      ->capture_default_str()
      ->check(finite)
      ->check(CLI::Range(0.001, 86400.0));

  std::string key;
  std::string value;
  CLI::App* put = app.add_subcommand("put", "Store VALUE under KEY");
  put->add_option("key", key, "Key")->required();
  put->add_option("value", value,
                  "Value; - reads it from stdin (at most 512 MiB); put -- before a key or value "
                  "starting with -")
      ->required();
  CLI::App* read = app.add_subcommand("read", "Print the value of KEY")->alias("get");
  read->add_option("key", key, "Key; put -- before a key starting with -")->required();
  CLI::App* del = app.add_subcommand("delete", "Delete KEY")->alias("del");
  del->add_option("key", key, "Key; put -- before a key starting with -")->required();

  std::string prefix;
  std::size_t limit = 0;
  CLI::App* scan = app.add_subcommand("scan", "List keys, one per line");
  scan->add_option("--prefix", prefix, "Only keys starting with this (matched literally)");
  scan->add_option("--limit", limit, "Stop after this many keys (0: no limit)")
      ->check(CLI::NonNegativeNumber)  // a size_t would take -1 as "no limit"
      ->capture_default_str();
  bool null_terminated = false;
  scan->add_flag("-0,--null", null_terminated,
                 "End each key with a NUL byte, not a newline (keys may hold newlines)");

  bool json = false;
  CLI::App* status = app.add_subcommand(
      "status", "Show role, replication (epoch, master link, lag, replicas), keys, version");
  status->add_flag("--json", json, "Print one JSON object instead of a table");
  CLI::App* ping = app.add_subcommand("ping", "Check that the server answers; print round trip");

  std::string backup_out;
  int keep = 0;
  std::string file;
  bool force = false;
  CLI::App* backup =
      app.add_subcommand("backup", "Write a consistent snapshot to a backup file (atomically)");
  backup->add_option("--out", backup_out,
                     "Backup file, or a directory (the file is then named by time)");
  backup->add_option("--keep", keep, "With a directory: keep the newest N backups, remove older")
      ->check(CLI::PositiveNumber);
  CLI::App* verify = backup->add_subcommand("verify", "Check a backup file without restoring");
  verify->add_option("file", file, "Backup file")->required();
  CLI::App* restore =
      app.add_subcommand("restore", "Load a backup file into an empty running master");
  restore->add_option("file", file, "Backup file")->required();
  restore->add_flag("--force", force, "Replace the keys of a non-empty master");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 reports a misspelt command as "A subcommand is required": name what was given.
    const auto given = app.remaining();
    if (app.get_subcommands().empty() && !given.empty() && !given.front().starts_with("-")) {
      std::string known;
      for (const CLI::App* sub : app.get_subcommands({})) {
        known += (known.empty() ? "" : ", ") + sub->get_name();
      }
      std::fprintf(stderr, "kvctl: unknown command '%s' (commands: %s; see kvctl --help)\n",
                   given.front().c_str(), known.c_str());
      return kExitUsage;
    }
    // `read -k`: CLI11 takes -k for an unknown option and reports the key as missing.
    if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr && !given.empty() &&
        given.front().starts_with("-")) {
      for (const CLI::App* sub : {put, read, del}) {
        if (!sub->parsed()) continue;
        const std::string name = sub->get_name();
        std::fprintf(stderr,
                     "kvctl: %s ('%s' was read as an option: put -- before a key or value "
                     "starting with -, e.g. kvctl %s -- %s)\n",
                     e.what(), given.front().c_str(), name.c_str(),
                     name == "put" ? "KEY VALUE" : given.front().c_str());
        return kExitUsage;
      }
    }
    // --help and --version arrive here too, with exit code 0.
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  options.timeout = std::chrono::milliseconds(std::llround(timeout_seconds * 1000));

  auto run = [&]() -> int {
    if (put->parsed()) return Put(options, key, value);
    if (read->parsed()) return Read(options, key);
    if (del->parsed()) return Delete(options, key);
    if (scan->parsed()) return Scan(options, prefix, limit, null_terminated);
    if (status->parsed()) return ShowStatus(options, json);
    if (ping->parsed()) return Ping(options);
    if (verify->parsed()) return kvctl::VerifyBackup(file);
    if (backup->parsed()) {
      if (backup_out.empty()) {
        PrintError("backup needs --out FILE or --out DIR (or: backup verify FILE)");
        return kExitUsage;
      }
      return kvctl::Backup(options, backup_out, keep);
    }
    if (restore->parsed()) return kvctl::Restore(options, file, force);
    return kExitUsage;  // unreachable: require_subcommand(1)
  };
  try {
    return FinishOutput(run());
  } catch (const std::bad_alloc&) {
    // A value (put from stdin, or a reply) is held in memory whole.
    PrintError("out of memory: the value does not fit in the memory kvctl may use");
    return kExitFailed;
  }
}
