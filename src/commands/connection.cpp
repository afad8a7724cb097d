// Connection commands: PING, ECHO, AUTH, HELLO, QUIT, SELECT and CLIENT.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <set>
#include <string_view>

#include "commands/command.h"
#include "kvstore/resp.h"

namespace kvstore {
namespace {

// PING [message] -> +PONG, or the message as a bulk string.
Outcome Ping(CommandContext& c) {
  if (c.args.size() > 2) {
    ReplyWrongArity("ping", c.out);
  } else if (c.args.size() == 2) {
    resp::AppendBulkString(c.out, c.args[1]);
  } else {
    resp::AppendSimpleString(c.out, "PONG");
  }
  return Outcome::Replied();
}

Outcome Echo(CommandContext& c) {
  resp::AppendBulkString(c.out, c.args[1]);
  return Outcome::Replied();
}

// Checks user/password against requirepass; only the "default" user exists.
// Returns true and marks the client authenticated, or appends the Redis error.
// user: none for the one-argument AUTH <password>.
bool Authenticate(CommandContext& c, std::optional<std::string_view> user,
                  std::string_view password) {
  bool password_ok = true;
  if (c.options.requirepass.empty()) {
    // As Redis's default user without a password ("nopass"): a login naming it succeeds with
    // any password, so clients configured with user "default" and a password still connect.
    if (!user) {
      resp::AppendError(c.out,
                        "ERR AUTH <password> called without any password configured for the "
                        "default user. Are you sure your configuration is correct?");
      return false;
    }
  } else {
    // Compare every byte so the time taken does not reveal the matching prefix.
    const std::string& expected = c.options.requirepass;
    unsigned diff = expected.size() != password.size();
    for (std::size_t i = 0; i < expected.size(); ++i) {
      diff |= static_cast<unsigned char>(expected[i]) ^
              static_cast<unsigned char>(i < password.size() ? password[i] : 0);
    }
    password_ok = diff == 0;
  }
  if (user.value_or("default") != "default" || !password_ok) {
    resp::AppendError(c.out, "WRONGPASS invalid username-password pair or user is disabled.");
    return false;
  }
  c.client.authenticated = true;
  return true;
}

// AUTH [username] password
Outcome Auth(CommandContext& c) {
  if (c.args.size() > 3) {
    ReplySyntaxError(c.out);
  } else if (c.args.size() == 2 ? Authenticate(c, std::nullopt, c.args[1])
                                : Authenticate(c, c.args[1], c.args[2])) {
    resp::AppendSimpleString(c.out, "OK");
  }
  return Outcome::Replied();
}

bool ValidClientName(std::string_view name) {
  // Redis refuses spaces and newlines because CLIENT LIST is space separated.
  return std::all_of(name.begin(), name.end(), [](char ch) { return ch > ' ' && ch <= '~'; });
}

constexpr std::string_view kInvalidClientName =
    "ERR Client names cannot contain spaces, newlines or special characters.";

// HELLO [protover [AUTH username password] [SETNAME clientname]]
// Only RESP2 is spoken: HELLO 3 gets -NOPROTO, and clients such as go-redis fall back to RESP2.
// The checks come in Redis' order: a version outside 2..3 first, then the options (AUTH
// authenticates), then NOAUTH; only then does RESP3 meet NOPROTO, before SETNAME takes effect.
Outcome Hello(CommandContext& c) {
  std::size_t i = 1;
  bool resp3 = false;
  if (c.args.size() >= 2) {
    std::int64_t version = 0;
    if (!resp::ParseInteger(c.args[1], &version)) {
      resp::AppendError(c.out, "ERR Protocol version is not an integer or out of range");
      return Outcome::Replied();
    }
    if (version != 2 && version != 3) {
      resp::AppendError(c.out, "NOPROTO unsupported protocol version");
      return Outcome::Replied();
    }
    resp3 = version == 3;
    i = 2;
  }
  std::string new_name;
  bool set_name = false;
  for (; i < c.args.size(); ++i) {
    if (EqualsIgnoreCase(c.args[i], "auth") && i + 2 < c.args.size()) {
      if (!Authenticate(c, c.args[i + 1], c.args[i + 2])) return Outcome::Replied();
      i += 2;
    } else if (EqualsIgnoreCase(c.args[i], "setname") && i + 1 < c.args.size()) {
      new_name = c.args[++i];
      set_name = true;
      if (!ValidClientName(new_name)) {
        resp::AppendError(c.out, kInvalidClientName);
        return Outcome::Replied();
      }
    } else {
      resp::AppendError(c.out, "ERR Syntax error in HELLO option '" + c.args[i] + "'");
      return Outcome::Replied();
    }
  }
  if (AuthPending(c.options, c.client)) {
    resp::AppendError(c.out,
                      "NOAUTH HELLO must be called with the client already authenticated, "
                      "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                      "authenticate the client and select the RESP protocol version at the same "
                      "time");
    return Outcome::Replied();
  }
  if (resp3) {
    resp::AppendError(c.out, "NOPROTO unsupported protocol version");
    return Outcome::Replied();
  }
  if (set_name) c.client.info.name = new_name;
  resp::AppendArrayHeader(c.out, 14);
  resp::AppendBulkString(c.out, "server");
  resp::AppendBulkString(c.out, "kvstore");
  resp::AppendBulkString(c.out, "version");
  resp::AppendBulkString(c.out, kRedisCompatVersion);  // clients read features from it
  resp::AppendBulkString(c.out, "proto");
  resp::AppendInteger(c.out, 2);
  resp::AppendBulkString(c.out, "id");
  resp::AppendInteger(c.out, static_cast<std::int64_t>(c.client.info.id));
  resp::AppendBulkString(c.out, "mode");
  resp::AppendBulkString(c.out, "standalone");
  // As Redis: "replica" here, though ROLE and INFO still say "slave".
  const bool replica = c.replication != nullptr &&
                       c.replication->CurrentStatus().role == ReplicationStatus::Role::kReplica;
  resp::AppendBulkString(c.out, "role");
  resp::AppendBulkString(c.out, replica ? "replica" : "master");
  resp::AppendBulkString(c.out, "modules");
  resp::AppendArrayHeader(c.out, 0);
  return Outcome::Replied();
}

Outcome Quit(CommandContext& c) {
  resp::AppendSimpleString(c.out, "OK");
  c.client.close_after_reply = true;
  return Outcome::Replied();
}

// SELECT index: there is one database, 0.
Outcome Select(CommandContext& c) {
  std::int64_t index = -1;
  if (!resp::ParseInteger(c.args[1], &index)) {
    ReplyNotInteger(c.out);
  } else if (index != 0) {
    resp::AppendError(c.out, "ERR DB index is out of range");
  } else {
    resp::AppendSimpleString(c.out, "OK");
  }
  return Outcome::Replied();
}

// One CLIENT LIST line with redis-server 7.2's fields in its order, since client libraries
// (redis-py's client_info) index them by name. Fields for what kvstore does not have (pub/sub,
// tracking, per-client buffers it does not account) are 0, or -1 where Redis uses -1 for none.
// Only client-port connections are listed, so the replica flag S never applies.
std::string FormatClient(const ClientInfo& info, std::chrono::steady_clock::time_point now) {
  using std::chrono::duration_cast;
  using std::chrono::seconds;
  // Redis' flags: x in MULTI, b blocked, N neither.
  const std::string_view flags =
      info.multi >= 0 ? (info.blocked ? "xb" : "x") : (info.blocked ? "b" : "N");
  // Formatted, not built with + and +=: GCC 12 at -O3 (the Release build) reports a false
  // -Wrestrict on those.
  const std::string command = info.last_command.empty() ? std::string("NULL")
                              : info.last_subcommand.empty()
                                  ? std::string(info.last_command)
                                  : fmt::format("{}|{}", info.last_command, info.last_subcommand);
  return fmt::format(
      "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db=0 sub=0 psub=0 ssub=0 "
      "multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem={} rbs=0 rbp=0 obl=0 oll=0 omem=0 "
      "tot-mem=0 events=r cmd={} user=default redir=-1 resp=2 lib-name={} lib-ver={}\n",
      info.id, info.addr, info.local_addr, info.fd, info.name,
      duration_cast<seconds>(now - info.created).count(),
      duration_cast<seconds>(now - info.last_active).count(), flags, info.multi, info.multi_bytes,
      command, info.lib_name, info.lib_ver);
}

constexpr SubcommandSpec kClientSubcommands[] = {
    {"id", 2, "", "Return the ID of the current connection."},
    {"getname", 2, "", "Return the name of the current connection."},
    {"setname", 3, "<name>", "Assign the name <name> to the current connection."},
    {"setinfo", 4, "<LIB-NAME|LIB-VER> <value>",
     "Set client meta attr. Options are LIB-NAME and LIB-VER."},
    {"list", -2, "[TYPE (NORMAL|MASTER|REPLICA|PUBSUB)] [ID id [id ...]]",
     "Return information about client connections: all, those of a type, or those of the IDs."},
    {"info", 2, "", "Return information about the current client connection."},
};

// CLIENT ID | GETNAME | SETNAME name | SETINFO LIB-NAME|LIB-VER value | LIST | INFO | HELP
Outcome Client(CommandContext& c) {
  const SubcommandSpec* spec = FindSubcommand(c, "client", kClientSubcommands);
  if (spec == nullptr) return Outcome::Replied();
  const std::string_view sub = spec->name;
  const auto now = std::chrono::steady_clock::now();
  if (sub == "id") {
    resp::AppendInteger(c.out, static_cast<std::int64_t>(c.client.info.id));
  } else if (sub == "getname") {
    if (c.client.info.name.empty()) {
      resp::AppendNullBulkString(c.out);
    } else {
      resp::AppendBulkString(c.out, c.client.info.name);
    }
  } else if (sub == "setname") {
    if (!ValidClientName(c.args[2])) {
      resp::AppendError(c.out, kInvalidClientName);
    } else {
      c.client.info.name = c.args[2];
      resp::AppendSimpleString(c.out, "OK");
    }
  } else if (sub == "setinfo") {
    const std::string attribute = ToLower(c.args[2]);
    if (!ValidClientName(c.args[3])) {
      resp::AppendError(c.out, "ERR " + attribute +
                                   " cannot contain spaces, newlines or "
                                   "special characters.");
    } else if (attribute == "lib-name") {
      c.client.info.lib_name = c.args[3];
      resp::AppendSimpleString(c.out, "OK");
    } else if (attribute == "lib-ver") {
      c.client.info.lib_ver = c.args[3];
      resp::AppendSimpleString(c.out, "OK");
    } else {
      resp::AppendError(c.out, "ERR Unrecognized option '" + c.args[2] + "'");
    }
  } else if (sub == "list") {
    // As Redis 7.0: TYPE t, or ID id..., or nothing. Every client on the client port is of type
    // normal (replicas and the master link are not listed).
    std::optional<std::set<std::int64_t>> ids;
    bool none = false;
    const std::string option = c.args.size() > 2 ? ToLower(c.args[2]) : "";
    if (c.args.size() == 4 && option == "type") {
      const std::string type = ToLower(c.args[3]);
      if (type != "normal" && type != "master" && type != "replica" && type != "slave" &&
          type != "pubsub") {
        resp::AppendError(c.out, "ERR Unknown client type '" + c.args[3] + "'");
        return Outcome::Replied();
      }
      none = type != "normal";
    } else if (c.args.size() > 3 && option == "id") {
      ids.emplace();
      for (std::size_t i = 3; i < c.args.size(); ++i) {
        std::int64_t id = 0;
        if (!resp::ParseInteger(c.args[i], &id)) {
          resp::AppendError(c.out, "ERR Invalid client ID");
          return Outcome::Replied();
        }
        ids->insert(id);  // as Redis, 0 or -1 matches no client
      }
    } else if (c.args.size() != 2) {
      ReplySyntaxError(c.out);
      return Outcome::Replied();
    }
    std::string list;
    for (const ClientInfo& info : c.server.ListClients()) {
      if (none || (ids && !ids->contains(static_cast<std::int64_t>(info.id)))) continue;
      // This client's own entry is fresher than the registry copy.
      list += FormatClient(info.id == c.client.info.id ? c.client.Snapshot() : info, now);
    }
    resp::AppendBulkString(c.out, list);
  } else {  // info
    resp::AppendBulkString(c.out, FormatClient(c.client.Snapshot(), now));
  }
  return Outcome::Replied();
}

constexpr CommandSpec kCommands[] = {
    {"ping", -1, kFlagFast | kFlagInTransaction, Ping, 0, 0, 0},
    {"echo", 2, kFlagFast | kFlagInTransaction, Echo, 0, 0, 0},
    {"auth", -2, kFlagNoAuth | kFlagFast, Auth, 0, 0, 0},
    {"hello", -1, kFlagNoAuth | kFlagFast, Hello, 0, 0, 0},
    {"quit", -1, kFlagNoAuth | kFlagFast, Quit, 0, 0, 0},
    {"select", 2, kFlagFast | kFlagInTransaction, Select, 0, 0, 0},
    {"client", -2, kFlagAdmin, Client, 0, 0, 0},
};

}  // namespace

std::span<const CommandSpec> ConnectionCommands() { return kCommands; }

}  // namespace kvstore
