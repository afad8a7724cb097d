// Structured logging: formats each line itself (timestamp, level, message, global fields, line
// fields) and hands the finished line to a spdlog logger whose pattern is "%v", writing to a
// color-less stderr_sink_mt. Thread-safe: state is guarded by a shared_mutex (writers: Init and
// SetGlobalField; readers: every log call), and the mt sink serializes writes to stderr.
//
// Line grammar:
//   text = time " " LEVEL " " message *(" " key "=" text-value)
//   text-value = bare | '"' escaped '"'   ; quoted when empty or holding space, '"', '=', '\'
//                                          ; or a control byte
//   json = '{"time":"' time '","level":"' level '","message":' string *(',' string ':' string) '}'
//   time = YYYY-MM-DDTHH:MM:SS.mmmZ        ; UTC
// Global fields come before the line's own fields; a line field replaces a global field of the
// same key on that line. After Init, lines logged through spdlog's default logger (spdlog::info
// in the engine and the log) are formatted here too, so that every line is JSON in json mode.
#include "common/logging.h"

#include <spdlog/details/null_mutex.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <utility>
#include <vector>

namespace kvstore::logging {
namespace {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
enum class Format { kText, kJson };

struct State {
  State() {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    logger = std::make_shared<spdlog::logger>("kvstore", std::move(sink));
    logger->set_pattern("%v");
    logger->set_level(spdlog::level::trace);  // filtering is done here, by min_level
    logger->flush_on(spdlog::level::trace);
  }

  std::shared_mutex mutex;
  std::shared_ptr<spdlog::logger> logger;
  std::atomic<Level> min_level{Level::kInfo};
  Format format = Format::kText;                             // GUARDED_BY(mutex)
  std::vector<std::pair<std::string, std::string>> globals;  // GUARDED_BY(mutex), in set order
};

State& GetState() {
  static State* state = new State();  // never destroyed: logging may run during exit
  return *state;
}

// "2026-11-25T12:00:00.123Z"
void AppendTime(std::string& out) {
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch());
  const std::time_t seconds = static_cast<std::time_t>(ms.count() / 1000);
  const int millis = static_cast<int>(ms.count() % 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[32];
  const std::size_t n = std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%S", &tm);
  out.append(buffer, n);
  char frac[8];
  std::snprintf(frac, sizeof(frac), ".%03dZ", millis);
  out += frac;
}

std::string_view TextLevel(Level level) {
  switch (level) {
    case Level::kDebug:
      return "DEBUG";
    case Level::kInfo:
      return "INFO";
    case Level::kWarn:
      return "WARN";
    case Level::kError:
      return "ERROR";
  }
  return "INFO";
}

std::string_view JsonLevel(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "info";
}

spdlog::level::level_enum SpdlogLevel(Level level) {
  switch (level) {
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarn:
      return spdlog::level::warn;
    case Level::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

void AppendHexEscape(std::string& out, std::string_view prefix, unsigned char c) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += prefix;
  out += kHex[c >> 4];
  out += kHex[c & 0xf];
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not valid.
std::size_t Utf8SequenceLength(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  std::size_t len;
  std::uint32_t min;
  if (c < 0x80) return 1;
  if ((c & 0xe0) == 0xc0) {
    len = 2;
    min = 0x80;
  } else if ((c & 0xf0) == 0xe0) {
    len = 3;
    min = 0x800;
  } else if ((c & 0xf8) == 0xf0) {
    len = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  std::uint32_t cp = c & (0x7f >> len);
  for (std::size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

// A JSON string literal. Control characters become \u00XX; bytes that are not valid UTF-8
// become \ufffd so that every line stays valid JSON whatever the data (keys may be binary).
void AppendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20) {
      AppendHexEscape(out, "\\u00", c);
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else if (const std::size_t len = Utf8SequenceLength(s, i); len > 0) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += "\\ufffd";
      ++i;
    }
  }
  out += '"';
}

bool NeedsQuotes(std::string_view s) {
  if (s.empty()) return true;
  return std::any_of(s.begin(), s.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c <= 0x20 || c == 0x7f || c == '"' || c == '=' || c == '\\';
  });
}

// Escapes for the text format: \" \\ \n \r \t, other control bytes as \xXX. Keeps a line one line.
void AppendTextEscaped(std::string& out, std::string_view s, bool escape_quotes) {
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c == '"' && escape_quotes) || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      AppendHexEscape(out, "\\x", c);
    } else {
      out += ch;
    }
  }
}

void AppendTextValue(std::string& out, std::string_view s) {
  if (!NeedsQuotes(s)) {
    out += s;
    return;
  }
  out += '"';
  AppendTextEscaped(out, s, /*escape_quotes=*/true);
  out += '"';
}

bool LineHasKey(Fields fields, std::string_view key) {
  return std::any_of(fields.begin(), fields.end(), [&](const Field& f) { return f.key == key; });
}

// REQUIRES: state.mutex is held (shared).
std::string FormatLine(const State& state, Level level, std::string_view message, Fields fields) {
  std::string line;
  line.reserve(64 + message.size());
  if (state.format == Format::kJson) {
    line += "{\"time\":\"";
    AppendTime(line);
    line += "\",\"level\":\"";
    line += JsonLevel(level);
    line += "\",\"message\":";
    AppendJsonString(line, message);
    const auto append_field = [&](std::string_view key, std::string_view value) {
      line += ',';
      AppendJsonString(line, key);
      line += ':';
      AppendJsonString(line, value);
    };
    for (const auto& [key, value] : state.globals) {
      if (!LineHasKey(fields, key)) append_field(key, value);
    }
    for (const Field& field : fields) append_field(field.key, field.value);
    line += '}';
  } else {
    AppendTime(line);
    line += ' ';
    line += TextLevel(level);
    line += ' ';
    AppendTextEscaped(line, message, /*escape_quotes=*/false);
    const auto append_field = [&](std::string_view key, std::string_view value) {
      line += ' ';
      AppendTextEscaped(line, key, /*escape_quotes=*/false);
      line += '=';
      AppendTextValue(line, value);
    };
    for (const auto& [key, value] : state.globals) {
      if (!LineHasKey(fields, key)) append_field(key, value);
    }
    for (const Field& field : fields) append_field(field.key, field.value);
  }
  return line;
}

void Log(Level level, std::string_view message, Fields fields) {
  State& state = GetState();
  if (level < state.min_level.load(std::memory_order_relaxed)) return;
  std::shared_lock lock(state.mutex);
  const std::string line = FormatLine(state, level, message, fields);
  state.logger->log(SpdlogLevel(level), spdlog::string_view_t(line.data(), line.size()));
}

// spdlog's default logger, redirected: each message becomes one of our lines. Log() is
// thread-safe, so the sink needs no mutex of its own.
class BridgeSink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    Level level = Level::kInfo;
    if (msg.level <= spdlog::level::debug) {
      level = Level::kDebug;
    } else if (msg.level == spdlog::level::warn) {
      level = Level::kWarn;
    } else if (msg.level >= spdlog::level::err) {
      level = Level::kError;
    }
    Log(level, std::string_view(msg.payload.data(), msg.payload.size()), {});
  }
  void flush_() override {}
};

}  // namespace

Status Init(std::string_view level, std::string_view format) {
  Level parsed_level;
  if (level == "debug") {
    parsed_level = Level::kDebug;
  } else if (level == "info") {
    parsed_level = Level::kInfo;
  } else if (level == "warn") {
    parsed_level = Level::kWarn;
  } else if (level == "error") {
    parsed_level = Level::kError;
  } else {
    return Status::InvalidArgument("invalid log_level \"" + std::string(level) +
                                   "\": expected debug, info, warn or error");
  }
  Format parsed_format;
  if (format == "text") {
    parsed_format = Format::kText;
  } else if (format == "json") {
    parsed_format = Format::kJson;
  } else {
    return Status::InvalidArgument("invalid log_format \"" + std::string(format) +
                                   "\": expected text or json");
  }
  State& state = GetState();
  std::unique_lock lock(state.mutex);
  state.format = parsed_format;
  state.min_level.store(parsed_level, std::memory_order_relaxed);
  static const bool bridged = [] {
    auto logger = std::make_shared<spdlog::logger>("default", std::make_shared<BridgeSink>());
    logger->set_level(spdlog::level::trace);  // filtered by min_level in Log()
    spdlog::set_default_logger(std::move(logger));
    return true;
  }();
  (void)bridged;
  return Status::Ok();
}

void SetGlobalField(std::string_view key, std::string value) {
  State& state = GetState();
  std::unique_lock lock(state.mutex);
  for (auto& [existing_key, existing_value] : state.globals) {
    if (existing_key == key) {
      existing_value = std::move(value);
      return;
    }
  }
  state.globals.emplace_back(std::string(key), std::move(value));
}

void Debug(std::string_view message, Fields fields) { Log(Level::kDebug, message, fields); }
void Info(std::string_view message, Fields fields) { Log(Level::kInfo, message, fields); }
void Warn(std::string_view message, Fields fields) { Log(Level::kWarn, message, fields); }
void Error(std::string_view message, Fields fields) { Log(Level::kError, message, fields); }

}  // namespace kvstore::logging
