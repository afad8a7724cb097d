// Keyspace commands: DEL EXISTS TYPE SCAN KEYS DBSIZE FLUSHALL FLUSHDB.
#include <charconv>

#include "commands/command.h"
#include "commands/glob.h"
#include "commands/scan_cursors.h"
#include "kvstore/resp.h"

namespace kvstore {
namespace {

Outcome Del(CommandContext& c) {
  std::vector<std::string> keys(std::make_move_iterator(c.args.begin() + 1),
                                std::make_move_iterator(c.args.end()));
  return MakeWrite([keys = std::move(keys)](WriteContext& db, std::string* reply) -> Status {
    std::int64_t deleted = 0;
    for (const std::string& key : keys) {
      Status s = db.Delete(key);
      if (s.ok()) {
        ++deleted;
      } else if (!s.IsNotFound() && s.code() != Status::Code::kInvalidArgument) {
        return s;
      }
    }
    resp::AppendInteger(reply, deleted);
    return Status::Ok();
  });
}

// EXISTS key [key ...]: counts repeated keys once per mention, as Redis does.
Outcome Exists(CommandContext& c) {
  Storage::Snapshot* snapshot = c.reads.Borrow(c.out);
  if (snapshot == nullptr) return Outcome::Replied();
  std::int64_t count = 0;
  std::string_view value;  // only whether it exists matters: not copied
  for (std::size_t i = 1; i < c.args.size(); ++i) {
    if (snapshot->Get(c.args[i], &value).ok()) ++count;
  }
  resp::AppendInteger(c.out, count);
  return Outcome::Replied();
}

Outcome Type(CommandContext& c) {
  Storage::Snapshot* snapshot = c.reads.Borrow(c.out);
  if (snapshot == nullptr) return Outcome::Replied();
  std::string_view value;
  resp::AppendSimpleString(c.out, snapshot->Get(c.args[1], &value).ok() ? "string" : "none");
  return Outcome::Replied();
}

// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]
// Walks the sorted key space from the position the cursor names, visiting up to COUNT keys.
// A key present for the whole scan is returned exactly once, because positions are keys, not
// slots. Cursor 0 starts (and, in a reply, ends) a scan; an unknown cursor is an error rather
// than a silent restart, so a client never loops forever.
Outcome Scan(CommandContext& c) {
  std::uint64_t cursor = 0;
  {
    const std::string& text = c.args[1];
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), cursor);
    if (ec != std::errc() || ptr != text.data() + text.size()) {
      resp::AppendError(c.out, "ERR invalid cursor");
      return Outcome::Replied();
    }
  }
  std::string pattern = "*";
  std::int64_t count = 10;
  bool only_strings_exist = true;  // TYPE other than string matches nothing
  for (std::size_t i = 2; i < c.args.size(); i += 2) {
    if (i + 1 >= c.args.size()) {
      ReplySyntaxError(c.out);
      return Outcome::Replied();
    }
    const std::string option = ToLower(c.args[i]);
    if (option == "match") {
      pattern = c.args[i + 1];
    } else if (option == "count") {
      if (!resp::ParseInteger(c.args[i + 1], &count)) {
        ReplyNotInteger(c.out);
        return Outcome::Replied();
      }
      if (count < 1) {
        ReplySyntaxError(c.out);
        return Outcome::Replied();
      }
    } else if (option == "type") {
      only_strings_exist = EqualsIgnoreCase(c.args[i + 1], "string");
    } else {
      ReplySyntaxError(c.out);
      return Outcome::Replied();
    }
  }
  std::string start;
  if (cursor != 0) {
    auto position = c.cursors.Find(cursor);
    if (!position) {
      resp::AppendError(c.out, "ERR invalid cursor (unknown or expired; restart the scan at 0)");
      return Outcome::Replied();
    }
    start = std::move(*position);
  }
  Storage::Snapshot* snapshot = c.reads.Borrow(c.out);
  if (snapshot == nullptr) return Outcome::Replied();
  // Bound the work per call even with a selective MATCH, as Redis does with COUNT.
  const std::int64_t budget = std::min<std::int64_t>(count, 100000);
  std::vector<std::string> keys;
  std::string last_key;
  std::int64_t visited = 0;
  bool more = false;
  Status s = snapshot->Scan(start, cursor != 0, [&](std::string_view key, std::string_view) {
    if (visited == budget) {
      more = true;
      return false;
    }
    ++visited;
    last_key.assign(key);
    if (only_strings_exist && GlobMatch(pattern, key)) keys.emplace_back(key);
    return true;
  });
  if (!s.ok()) {
    resp::AppendError(c.out, "ERR " + s.message());
    return Outcome::Replied();
  }
  const std::uint64_t next = more ? c.cursors.Save(std::move(last_key), cursor) : 0;
  resp::AppendArrayHeader(c.out, 2);
  resp::AppendBulkString(c.out, std::to_string(next));
  resp::AppendArrayHeader(c.out, keys.size());
  for (const std::string& key : keys) resp::AppendBulkString(c.out, key);
  return Outcome::Replied();
}

Outcome Keys(CommandContext& c) {
  Storage::Snapshot* snapshot = c.reads.Borrow(c.out);
  if (snapshot == nullptr) return Outcome::Replied();
  const std::string& pattern = c.args[1];
  std::vector<std::string> keys;
  Status s = snapshot->Scan("", false, [&](std::string_view key, std::string_view) {
    if (GlobMatch(pattern, key)) keys.emplace_back(key);
    return true;
  });
  if (!s.ok()) {
    resp::AppendError(c.out, "ERR " + s.message());
    return Outcome::Replied();
  }
  resp::AppendArrayHeader(c.out, keys.size());
  for (const std::string& key : keys) resp::AppendBulkString(c.out, key);
  return Outcome::Replied();
}

Outcome DbSize(CommandContext& c) {
  Storage::Snapshot* snapshot = c.reads.Borrow(c.out);
  if (snapshot == nullptr) return Outcome::Replied();
  resp::AppendInteger(c.out, static_cast<std::int64_t>(snapshot->KeyCount()));
  return Outcome::Replied();
}

// FLUSHALL [ASYNC | SYNC]: both run synchronously, durably, in one logged step.
Outcome FlushAll(CommandContext& c) {
  if (c.args.size() > 2 || (c.args.size() == 2 && !EqualsIgnoreCase(c.args[1], "async") &&
                            !EqualsIgnoreCase(c.args[1], "sync"))) {
    ReplySyntaxError(c.out);
    return Outcome::Replied();
  }
  return MakeWrite([](WriteContext& db, std::string* reply) -> Status {
    Status s = db.Clear();
    if (!s.ok()) return s;
    resp::AppendSimpleString(reply, "OK");
    return Status::Ok();
  });
}

constexpr CommandSpec kCommands[] = {
    {"del", -2, kFlagWrite, Del, 1, -1, 1},
    {"unlink", -2, kFlagWrite, Del, 1, -1, 1},
    {"exists", -2, kFlagRead | kFlagFast | kFlagSnapshotRead, Exists, 1, -1, 1},
    {"type", 2, kFlagRead | kFlagFast | kFlagSnapshotRead, Type, 1, 1, 1},
    {"scan", -2, kFlagRead, Scan, 0, 0, 0},
    {"keys", 2, kFlagRead, Keys, 0, 0, 0},
    {"dbsize", 1, kFlagRead | kFlagFast, DbSize, 0, 0, 0},
    {"flushall", -1, kFlagWrite, FlushAll, 0, 0, 0},
    {"flushdb", -1, kFlagWrite, FlushAll, 0, 0, 0},
};

}  // namespace

std::span<const CommandSpec> KeyspaceCommands() { return kCommands; }

}  // namespace kvstore
