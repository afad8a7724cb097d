// Dispatcher and the helpers every command file shares.
#include "commands/dispatcher.h"

#include <algorithm>

#include "kvstore/resp.h"
#include "storage/storage.h"

namespace kvstore {

namespace {

// std::tolower without the call into libc: the server never sets a locale, so in its "C" locale
// std::tolower folds exactly A-Z.
char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return AsciiLower(x) == AsciiLower(y);
         });
}

std::string ToLower(std::string_view s) {
  std::string lower(s);
  for (char& c : lower) c = AsciiLower(c);
  return lower;
}

std::string ToUpper(std::string_view s) {
  std::string upper(s);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return upper;
}

void ReplyWrongArity(std::string_view command, std::string* out) {
  resp::AppendError(out, "ERR wrong number of arguments for '" + ToLower(command) + "' command");
}

namespace {

bool ArityOk(int arity, std::size_t args) {
  return arity >= 0 ? args == static_cast<std::size_t>(arity)
                    : args >= static_cast<std::size_t>(-arity);
}

}  // namespace

const SubcommandSpec* FindSubcommand(CommandContext& c, std::string_view command,
                                     std::span<const SubcommandSpec> subcommands) {
  const std::string sub = ToLower(c.args[1]);
  for (const SubcommandSpec& spec : subcommands) {
    if (spec.name != sub) continue;
    if (ArityOk(spec.arity, c.args.size())) {
      c.client.info.last_subcommand = spec.name;  // CLIENT LIST's cmd=client|info, as Redis
      return &spec;
    }
    ReplyWrongArity(std::string(command) + "|" + sub, c.out);
    return nullptr;
  }
  const std::string upper = ToUpper(command);
  if (sub == "help" && c.args.size() != 2) {
    ReplyWrongArity(std::string(command) + "|help", c.out);
    return nullptr;
  }
  if (sub == "help") {
    std::vector<std::string> lines{upper + " <subcommand> [<arg> [value] [opt] ...]. " +
                                   "Subcommands are:"};
    for (const SubcommandSpec& spec : subcommands) {
      lines.push_back(ToUpper(spec.name) + (spec.usage.empty() ? "" : " ") +
                      std::string(spec.usage));
      lines.push_back("    " + std::string(spec.help));
    }
    lines.push_back("HELP");
    lines.push_back("    Print this help.");
    resp::AppendArrayHeader(c.out, lines.size());
    for (const std::string& line : lines) resp::AppendSimpleString(c.out, line);
    return nullptr;
  }
  resp::AppendError(
      c.out, "ERR unknown subcommand '" + c.args[1].substr(0, 128) + "'. Try " + upper + " HELP.");
  return nullptr;
}

void ReplySyntaxError(std::string* out) { resp::AppendError(out, "ERR syntax error"); }

void ReplyNotInteger(std::string* out) {
  resp::AppendError(out, "ERR value is not an integer or out of range");
}

bool ValidateKeyForWrite(std::string_view key, std::string* out) {
  if (key.empty()) {
    resp::AppendError(out, "ERR empty keys are not supported: kvstore keys are 1 to 511 bytes");
    return false;
  }
  if (key.size() > kMaxKeyBytes) {
    resp::AppendError(out, "ERR key is too long: " + std::to_string(key.size()) +
                               " bytes; kvstore keys are at most 511 bytes (LMDB's key limit)");
    return false;
  }
  return true;
}

bool CheckKeysStorable(const CommandSpec& spec, const std::vector<std::string>& args,
                       std::string* out) {
  const std::size_t last = spec.last_key < 0
                               ? args.size() - static_cast<std::size_t>(-spec.last_key)
                               : static_cast<std::size_t>(spec.last_key);
  for (std::size_t i = static_cast<std::size_t>(spec.first_key); i <= last && i < args.size();
       i += static_cast<std::size_t>(spec.key_step)) {
    if (!ValidateKeyForWrite(args[i], out)) return false;
  }
  return true;
}

bool ValidateValueSize(std::size_t size, const DispatcherOptions& options, std::string* out) {
  if (size <= options.max_value_bytes) return true;
  resp::AppendError(out, "ERR string exceeds maximum allowed size (max_value_bytes is " +
                             std::to_string(options.max_value_bytes) + " bytes)");
  return false;
}

Storage::Snapshot* SnapshotLender::Borrow(std::string* out) {
  if (!snapshot_) {
    auto snapshot = engine_.Read();
    if (!snapshot.ok()) {
      resp::AppendError(out, "ERR " + snapshot.status().message());
      return nullptr;
    }
    snapshot_.emplace(std::move(*snapshot));
  }
  return &*snapshot_;
}

void AppendWriteResult(const Status& status, const std::string& reply, std::string* out) {
  if (status.ok()) {
    out->append(reply);
    return;
  }
  switch (status.code()) {
    case Status::Code::kStorageFull:
      // Engine messages already start with "storage full"; say it once.
      resp::AppendError(out, status.message().starts_with("storage full")
                                 ? "ERR " + status.message()
                                 : "ERR storage full: " + status.message());
      break;
    case Status::Code::kReadOnly:
      resp::AppendError(out, "READONLY " + status.message());
      break;
    case Status::Code::kUnavailable:
      // Sync replication's refusal carries its own Redis error code.
      resp::AppendError(out, status.message().starts_with("NOREPLICAS ")
                                 ? status.message()
                                 : "ERR " + status.message());
      break;
    default:
      // EXEC's refusal of a reply too large carries its own Redis error code.
      resp::AppendError(out, status.message().starts_with("EXECABORT ")
                                 ? status.message()
                                 : "ERR " + status.message());
      break;
  }
}

std::span<const CommandSpec* const> AllCommands() {
  static const std::vector<const CommandSpec*> all = [] {
    std::vector<const CommandSpec*> specs;
    for (auto group : {ConnectionCommands(), StringCommands(), KeyspaceCommands(), ServerCommands(),
                       ReplicationCommands(), BackupCommands(), TransactionCommands()}) {
      for (const CommandSpec& spec : group) specs.push_back(&spec);
    }
    return specs;
  }();
  return all;
}

Dispatcher::Dispatcher(Engine& engine, ServerContext& server, ReplicationContext* replication,
                       DispatcherOptions options)
    : engine_(engine), server_(server), replication_(replication), options_(std::move(options)) {
  for (const CommandSpec* spec : AllCommands()) table_.emplace(spec->name, spec);
}

std::size_t Dispatcher::NameHash::operator()(std::string_view name) const {
  std::size_t hash = 14695981039346656037ull;  // FNV-1a over the lower-cased bytes
  for (char c : name) hash = (hash ^ static_cast<unsigned char>(AsciiLower(c))) * 1099511628211ull;
  return hash;
}

bool Dispatcher::NameEqual::operator()(std::string_view a, std::string_view b) const {
  return EqualsIgnoreCase(a, b);
}

namespace {

void ReplyUnknownCommand(const std::vector<std::string>& args, std::string* out) {
  // Worded exactly as Redis 7: client libraries (go-redis) match this text. As Redis, the name
  // is cut at 128 bytes, and the arguments together at about 128: each gets what is left.
  // Appended piece by piece: GCC 12 -O3 reports a false -Wrestrict on chained operator+.
  constexpr std::size_t kLimit = 128;
  auto quoted = [](std::string* out, std::string_view arg, std::size_t most) {
    out->push_back('\'');
    out->append(arg.substr(0, most));
    out->push_back('\'');
  };
  std::string message = "ERR unknown command ";
  quoted(&message, args[0], kLimit);
  message.append(", with args beginning with: ");
  std::string listed;
  for (std::size_t i = 1; i < args.size() && listed.size() < kLimit; ++i) {
    quoted(&listed, args[i], kLimit - listed.size());
    listed.push_back(' ');
  }
  message.append(listed);
  resp::AppendError(out, message);
}

}  // namespace

const CommandSpec* Dispatcher::Lookup(std::string_view command) const {
  auto it = table_.find(command);
  return it == table_.end() ? nullptr : it->second;
}

Outcome Dispatcher::Execute(const CommandSpec* spec, std::vector<std::string>& args,
                            ClientState& client, SnapshotLender& reads, std::string* out) {
  const bool auth_required = AuthPending(options_, client);
  if (auth_required && (spec == nullptr || !(spec->flags & kFlagNoAuth))) {
    // In Redis' order: an unknown command or a wrong arity is reported before the missing login.
    if (spec == nullptr) {
      ReplyUnknownCommand(args, out);
    } else if (!ArityOk(spec->arity, args.size())) {
      ReplyWrongArity(spec->name, out);
    } else {
      resp::AppendError(out, "NOAUTH Authentication required.");
    }
    return Outcome::Replied();
  }
  if (client.transaction.open && !ControlsTransaction(spec)) {
    Outcome outcome = Outcome::Replied();
    outcome.queued = Queue(spec, args, client.transaction, out);
    return outcome;
  }
  const std::size_t mark = out->size();
  if (!Admits(spec, args, out)) {
    // As Redis: a refused EXEC ends the transaction, any other refusal inside MULTI fails it.
    if (spec != nullptr && spec->name == "exec") {
      AbortExec(client.transaction, out, mark);
    } else if (client.transaction.open) {
      client.transaction.aborted = true;
    }
    return Outcome::Replied();
  }
  client.info.last_command = spec->name;
  client.info.last_subcommand = {};
  CommandContext context{args,    client,       out,      engine_, reads,
                         server_, replication_, options_, cursors_};
  return spec->handler(context);
}

bool Dispatcher::Queue(const CommandSpec* spec, std::vector<std::string>& args,
                       Transaction& transaction, std::string* out) const {
  std::uint64_t bytes = 0;
  for (const std::string& arg : args) bytes += arg.size() + sizeof(std::string);
  if (!Admits(spec, args, out)) {
    // As Redis: a command refused while queuing is answered now and fails the whole EXEC.
  } else if (!QueueableInTransaction(spec->flags)) {
    resp::AppendError(out, "ERR " + ToUpper(spec->name) +
                               " is not allowed inside MULTI: kvstore transactions hold data "
                               "commands (reads and writes), PING, ECHO, TIME and SELECT");
  } else if (transaction.bytes + bytes > options_.max_transaction_bytes) {
    resp::AppendError(out,
                      "ERR transaction too large: its queued commands and watched values "
                      "would pass " +
                          std::to_string(options_.max_transaction_bytes) +
                          " bytes (max_query_buffer_bytes)");
  } else {
    transaction.bytes += bytes;
    transaction.queued.push_back({spec, std::move(args)});
    resp::AppendSimpleString(out, "QUEUED");
    return true;
  }
  transaction.aborted = true;
  return false;
}

bool Dispatcher::Admits(const CommandSpec* spec, const std::vector<std::string>& args,
                        std::string* out) const {
  if (spec == nullptr) {
    ReplyUnknownCommand(args, out);
    return false;
  }
  if (!ArityOk(spec->arity, args.size())) {
    ReplyWrongArity(spec->name, out);
    return false;
  }
  if ((spec->flags & kFlagWrite) && replication_ != nullptr) {
    if (auto refusal = replication_->WriteRefusal()) {
      resp::AppendError(out, *refusal);
      return false;
    }
  }
  return spec->check == nullptr || spec->check(*spec, args, out);
}

}  // namespace kvstore
