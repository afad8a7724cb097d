// String commands: GET SET SETNX GETSET GETDEL MGET MSET MSETNX INCR INCRBY DECR DECRBY APPEND
// STRLEN GETRANGE SETRANGE, and the expiry commands, which answer as for keys without a TTL
// (TTL, PTTL, PERSIST) or refuse to set one (EXPIRE, SETEX, ...).
// Reads use an engine snapshot on the caller's thread; writes become WriteFns that run inside
// the writer's transaction, so read-modify-write commands (INCR, APPEND, SET NX) are atomic.
#include <limits>

#include "commands/command.h"
#include "kvstore/resp.h"

namespace kvstore {
namespace {

// Appends the value of key as a bulk string, or a null bulk string when absent.
void ReplyValueOf(CommandContext& c, std::string_view key) {
  Storage::Snapshot* snapshot = c.reads.Borrow(c.out);
  if (snapshot == nullptr) return;
  std::string_view value;  // a view into the snapshot, copied once: into the reply
  Status s = snapshot->Get(key, &value);
  if (s.ok()) {
    resp::AppendBulkString(c.out, value);
  } else if (s.IsNotFound() || s.code() == Status::Code::kInvalidArgument) {
    resp::AppendNullBulkString(c.out);  // a key LMDB cannot hold cannot exist either
  } else {
    resp::AppendError(c.out, "ERR " + s.message());
  }
}

Outcome Get(CommandContext& c) {
  ReplyValueOf(c, c.args[1]);
  return Outcome::Replied();
}

void ReplyNoExpiry(const std::string& what, std::string* out) {
  resp::AppendError(out, "ERR " + what + " is not supported: kvstore keys do not expire");
}

bool IsExpiryOption(const std::string& lower_case) {
  return lower_case == "ex" || lower_case == "px" || lower_case == "exat" || lower_case == "pxat";
}

// ArgumentCheck of SET (and GETSET): a storable key, and no expiry option, refused rather than
// ignored: kvstore keys never expire.
bool CheckSet(const CommandSpec& spec, const std::vector<std::string>& args, std::string* out) {
  for (std::size_t i = 3; i < args.size(); ++i) {
    if (const std::string option = ToLower(args[i]); IsExpiryOption(option)) {
      ReplyNoExpiry("SET " + option, out);
      return false;
    }
  }
  return CheckKeysStorable(spec, args, out);
}

// ArgumentCheck of EXPIRE, SETEX and the other commands that would give a key a TTL: refused, so
// an application never believes a key will expire when it will not (as SET ... EX).
bool RefuseExpiry(const CommandSpec&, const std::vector<std::string>& args, std::string* out) {
  ReplyNoExpiry(ToUpper(args[0]), out);
  return false;
}

// SET key value [NX | XX] [GET] [KEEPTTL]
Outcome Set(CommandContext& c) {
  bool nx = false, xx = false, get = false;
  for (std::size_t i = 3; i < c.args.size(); ++i) {
    const std::string option = ToLower(c.args[i]);
    if (option == "nx") {
      nx = true;
    } else if (option == "xx") {
      xx = true;
    } else if (option == "get") {
      get = true;
    } else if (option == "keepttl") {
      // No key has a TTL, so keeping it is what already happens.
    } else if (IsExpiryOption(option)) {  // CheckSet refuses it first; never ignored
      ReplyNoExpiry("SET " + option, c.out);
      return Outcome::Replied();
    } else {
      ReplySyntaxError(c.out);
      return Outcome::Replied();
    }
  }
  if (nx && xx) {
    ReplySyntaxError(c.out);
    return Outcome::Replied();
  }
  if (!ValidateValueSize(c.args[2].size(), c.options, c.out)) return Outcome::Replied();
  return MakeWrite([key = std::move(c.args[1]), value = std::move(c.args[2]), nx, xx, get](
                       WriteContext& db, std::string* reply) -> Status {
    std::string old;
    bool exists = false;
    if (nx || xx || get) {
      Status s = db.Get(key, &old);
      if (!s.ok() && !s.IsNotFound()) return s;
      exists = s.ok();
    }
    const bool write = !(nx && exists) && !(xx && !exists);
    if (write) {
      Status s = db.Put(key, value);
      if (!s.ok()) return s;
    }
    if (get) {
      exists ? resp::AppendBulkString(reply, old) : resp::AppendNullBulkString(reply);
    } else if (write) {
      resp::AppendSimpleString(reply, "OK");
    } else {
      resp::AppendNullBulkString(reply);
    }
    return Status::Ok();
  });
}

Outcome GetDel(CommandContext& c) {
  return MakeWrite([key = std::move(c.args[1])](WriteContext& db, std::string* reply) -> Status {
    std::string old;
    Status s = db.Get(key, &old);
    if (s.IsNotFound() || s.code() == Status::Code::kInvalidArgument) {
      resp::AppendNullBulkString(reply);
      return Status::Ok();
    }
    if (!s.ok()) return s;
    s = db.Delete(key);
    if (!s.ok()) return s;
    resp::AppendBulkString(reply, old);
    return Status::Ok();
  });
}

Outcome MGet(CommandContext& c) {
  Storage::Snapshot* snapshot = c.reads.Borrow(c.out);
  if (snapshot == nullptr) return Outcome::Replied();
  resp::AppendArrayHeader(c.out, c.args.size() - 1);
  std::string_view value;  // views into the snapshot, copied once: into the reply
  for (std::size_t i = 1; i < c.args.size(); ++i) {
    if (snapshot->Get(c.args[i], &value).ok()) {
      resp::AppendBulkString(c.out, value);
    } else {
      resp::AppendNullBulkString(c.out);
    }
  }
  return Outcome::Replied();
}

// MSET / MSETNX key value [key value ...]: all pairs in one transaction. MSETNX sets them only
// when none of the keys exists, and answers 1 (set) or 0 (nothing set).
Outcome SetPairs(CommandContext& c, bool only_if_none_exists) {
  if (c.args.size() % 2 != 1) {
    ReplyWrongArity(c.args[0], c.out);
    return Outcome::Replied();
  }
  for (std::size_t i = 1; i < c.args.size(); i += 2) {
    if (!ValidateValueSize(c.args[i + 1].size(), c.options, c.out)) return Outcome::Replied();
  }
  std::vector<std::string> pairs(std::make_move_iterator(c.args.begin() + 1),
                                 std::make_move_iterator(c.args.end()));
  return MakeWrite([pairs = std::move(pairs), only_if_none_exists](WriteContext& db,
                                                                   std::string* reply) -> Status {
    std::string old;
    for (std::size_t i = 0; only_if_none_exists && i < pairs.size(); i += 2) {
      Status s = db.Get(pairs[i], &old);
      if (s.ok()) {
        resp::AppendInteger(reply, 0);
        return Status::Ok();
      }
      if (!s.IsNotFound()) return s;
    }
    for (std::size_t i = 0; i < pairs.size(); i += 2) {
      Status s = db.Put(pairs[i], pairs[i + 1]);
      if (!s.ok()) return s;
    }
    only_if_none_exists ? resp::AppendInteger(reply, 1) : resp::AppendSimpleString(reply, "OK");
    return Status::Ok();
  });
}

Outcome MSet(CommandContext& c) { return SetPairs(c, false); }
Outcome MSetNx(CommandContext& c) { return SetPairs(c, true); }

// Adds delta to the integer stored at key (absent counts as 0), like Redis' incrDecrCommand.
Outcome IncrementBy(CommandContext& c, std::int64_t delta) {
  return MakeWrite(
      [key = std::move(c.args[1]), delta](WriteContext& db, std::string* reply) -> Status {
        std::string old;
        std::int64_t current = 0;
        Status s = db.Get(key, &old);
        if (s.ok()) {
          if (!resp::ParseInteger(old, &current)) {
            ReplyNotInteger(reply);
            return Status::Ok();
          }
        } else if (!s.IsNotFound()) {
          return s;
        }
        if ((delta < 0 && current < std::numeric_limits<std::int64_t>::min() - delta) ||
            (delta > 0 && current > std::numeric_limits<std::int64_t>::max() - delta)) {
          resp::AppendError(reply, "ERR increment or decrement would overflow");
          return Status::Ok();
        }
        const std::int64_t updated = current + delta;
        s = db.Put(key, std::to_string(updated));
        if (!s.ok()) return s;
        resp::AppendInteger(reply, updated);
        return Status::Ok();
      });
}

Outcome Incr(CommandContext& c) { return IncrementBy(c, 1); }
Outcome Decr(CommandContext& c) { return IncrementBy(c, -1); }

Outcome IncrBy(CommandContext& c) {
  std::int64_t delta = 0;
  if (!resp::ParseInteger(c.args[2], &delta)) {
    ReplyNotInteger(c.out);
    return Outcome::Replied();
  }
  return IncrementBy(c, delta);
}

Outcome DecrBy(CommandContext& c) {
  std::int64_t delta = 0;
  if (!resp::ParseInteger(c.args[2], &delta)) {
    ReplyNotInteger(c.out);
    return Outcome::Replied();
  }
  if (delta == std::numeric_limits<std::int64_t>::min()) {
    // -LLONG_MIN does not exist; worded as Redis 7 words it.
    resp::AppendError(c.out, "ERR decrement would overflow");
    return Outcome::Replied();
  }
  return IncrementBy(c, -delta);
}

Outcome Append(CommandContext& c) {
  return MakeWrite(
      [key = std::move(c.args[1]), suffix = std::move(c.args[2]),
       limit = c.options.max_value_bytes](WriteContext& db, std::string* reply) -> Status {
        std::string value;
        Status s = db.Get(key, &value);
        if (!s.ok() && !s.IsNotFound()) return s;
        if (value.size() + suffix.size() > limit) {
          resp::AppendError(reply, "ERR string exceeds maximum allowed size (max_value_bytes is " +
                                       std::to_string(limit) + " bytes)");
          return Status::Ok();
        }
        value += suffix;
        s = db.Put(key, value);
        if (!s.ok()) return s;
        resp::AppendInteger(reply, static_cast<std::int64_t>(value.size()));
        return Status::Ok();
      });
}

Outcome StrLen(CommandContext& c) {
  Storage::Snapshot* snapshot = c.reads.Borrow(c.out);
  if (snapshot == nullptr) return Outcome::Replied();
  std::string_view value;
  const bool found = snapshot->Get(c.args[1], &value).ok();
  resp::AppendInteger(c.out, found ? static_cast<std::int64_t>(value.size()) : 0);
  return Outcome::Replied();
}

// SETNX key value -> 1 when it set the key, 0 when the key existed: MSETNX of one pair.
Outcome SetNx(CommandContext& c) { return SetPairs(c, true); }

// GETSET key value: SET key value GET.
Outcome GetSet(CommandContext& c) {
  c.args.push_back("GET");
  return Set(c);
}

// GETRANGE key start end: the bytes from start to end inclusive; negative offsets count from
// the end. Clamped as Redis clamps them: out of range gives "", never an error.
Outcome GetRange(CommandContext& c) {
  std::int64_t start = 0, end = 0;
  if (!resp::ParseInteger(c.args[2], &start) || !resp::ParseInteger(c.args[3], &end)) {
    ReplyNotInteger(c.out);
    return Outcome::Replied();
  }
  Storage::Snapshot* snapshot = c.reads.Borrow(c.out);
  if (snapshot == nullptr) return Outcome::Replied();
  std::string_view value;
  (void)snapshot->Get(c.args[1], &value);  // a missing key reads as ""
  const auto length = static_cast<std::int64_t>(value.size());
  if (start < 0 && end < 0 && start > end) {
    resp::AppendBulkString(c.out, "");
    return Outcome::Replied();
  }
  if (start < 0) start = std::max<std::int64_t>(0, length + start);
  if (end < 0) end = std::max<std::int64_t>(0, length + end);
  end = std::min(end, length - 1);
  if (length == 0 || start > end) {
    resp::AppendBulkString(c.out, "");
  } else {
    resp::AppendBulkString(c.out, value.substr(static_cast<std::size_t>(start),
                                               static_cast<std::size_t>(end - start + 1)));
  }
  return Outcome::Replied();
}

// SETRANGE key offset value -> the new length. Overwrites from offset, padding with zero bytes;
// an empty value changes nothing (and creates no key).
Outcome SetRange(CommandContext& c) {
  std::int64_t offset = 0;
  if (!resp::ParseInteger(c.args[2], &offset)) {
    ReplyNotInteger(c.out);
    return Outcome::Replied();
  }
  if (offset < 0) {
    resp::AppendError(c.out, "ERR offset is out of range");
    return Outcome::Replied();
  }
  if (!c.args[3].empty() &&
      !ValidateValueSize(static_cast<std::uint64_t>(offset) + c.args[3].size(), c.options, c.out)) {
    return Outcome::Replied();
  }
  return MakeWrite([key = std::move(c.args[1]), offset = static_cast<std::size_t>(offset),
                    piece = std::move(c.args[3])](WriteContext& db, std::string* reply) -> Status {
    std::string value;
    Status s = db.Get(key, &value);
    if (!s.ok() && !s.IsNotFound()) return s;
    if (!piece.empty()) {
      if (value.size() < offset + piece.size()) value.resize(offset + piece.size(), '\0');
      value.replace(offset, piece.size(), piece);
      s = db.Put(key, value);
      if (!s.ok()) return s;
    }
    resp::AppendInteger(reply, static_cast<std::int64_t>(value.size()));
    return Status::Ok();
  });
}

// TTL / PTTL key -> -2 when the key does not exist, else -1: kvstore keys never expire.
Outcome Ttl(CommandContext& c) {
  Storage::Snapshot* snapshot = c.reads.Borrow(c.out);
  if (snapshot == nullptr) return Outcome::Replied();
  std::string_view value;
  resp::AppendInteger(c.out, snapshot->Get(c.args[1], &value).ok() ? -1 : -2);
  return Outcome::Replied();
}

// PERSIST key -> 0: no key has a TTL to remove.
Outcome Persist(CommandContext& c) {
  resp::AppendInteger(c.out, 0);
  return Outcome::Replied();
}

// The handler of the commands RefuseExpiry refuses before they run or are queued.
Outcome Refused(CommandContext& c) {
  RefuseExpiry(CommandSpec{}, c.args, c.out);
  return Outcome::Replied();
}

constexpr CommandSpec kCommands[] = {
    {"get", 2, kFlagRead | kFlagFast | kFlagSnapshotRead, Get, 1, 1, 1},
    {"set", -3, kFlagWrite, Set, 1, 1, 1, CheckSet},
    {"getdel", 2, kFlagWrite | kFlagFast, GetDel, 1, 1, 1},
    {"mget", -2, kFlagRead | kFlagFast | kFlagSnapshotRead, MGet, 1, -1, 1},
    {"mset", -3, kFlagWrite, MSet, 1, -1, 2, CheckKeysStorable},
    {"incr", 2, kFlagWrite | kFlagFast, Incr, 1, 1, 1, CheckKeysStorable},
    {"incrby", 3, kFlagWrite | kFlagFast, IncrBy, 1, 1, 1, CheckKeysStorable},
    {"decr", 2, kFlagWrite | kFlagFast, Decr, 1, 1, 1, CheckKeysStorable},
    {"decrby", 3, kFlagWrite | kFlagFast, DecrBy, 1, 1, 1, CheckKeysStorable},
    {"append", 3, kFlagWrite, Append, 1, 1, 1, CheckKeysStorable},
    {"strlen", 2, kFlagRead | kFlagFast | kFlagSnapshotRead, StrLen, 1, 1, 1},
    {"setnx", 3, kFlagWrite | kFlagFast, SetNx, 1, 1, 1, CheckKeysStorable},
    {"getset", 3, kFlagWrite | kFlagFast, GetSet, 1, 1, 1, CheckKeysStorable},
    {"msetnx", -3, kFlagWrite, MSetNx, 1, -1, 2, CheckKeysStorable},
    {"getrange", 4, kFlagRead | kFlagSnapshotRead, GetRange, 1, 1, 1},
    {"substr", 4, kFlagRead | kFlagSnapshotRead, GetRange, 1, 1, 1},
    {"setrange", 4, kFlagWrite, SetRange, 1, 1, 1, CheckKeysStorable},
    {"ttl", 2, kFlagRead | kFlagFast | kFlagSnapshotRead, Ttl, 1, 1, 1},
    {"pttl", 2, kFlagRead | kFlagFast | kFlagSnapshotRead, Ttl, 1, 1, 1},
    {"persist", 2, kFlagWrite | kFlagFast, Persist, 1, 1, 1},
    {"expire", -3, kFlagWrite | kFlagFast, Refused, 1, 1, 1, RefuseExpiry},
    {"pexpire", -3, kFlagWrite | kFlagFast, Refused, 1, 1, 1, RefuseExpiry},
    {"expireat", -3, kFlagWrite | kFlagFast, Refused, 1, 1, 1, RefuseExpiry},
    {"pexpireat", -3, kFlagWrite | kFlagFast, Refused, 1, 1, 1, RefuseExpiry},
    {"setex", 4, kFlagWrite, Refused, 1, 1, 1, RefuseExpiry},
    {"psetex", 4, kFlagWrite, Refused, 1, 1, 1, RefuseExpiry},
};

}  // namespace

std::span<const CommandSpec> StringCommands() { return kCommands; }

}  // namespace kvstore
