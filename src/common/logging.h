// Structured logging on top of spdlog: text ("message key=value ...") or JSON lines
// ({"time":...,"level":...,"message":...,"<field>":...}). Thread-safe (spdlog's mt sinks).
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "kvstore/status.h"

namespace kvstore::logging {

struct Field {
  std::string_view key;
  std::string value;
};
using Fields = std::initializer_list<Field>;

// level: debug | info | warn | error; format: text | json. InvalidArgument naming the bad value.
// Until Init is called, logging goes to stderr as text at info.
Status Init(std::string_view level, std::string_view format);

// Fields added to every line from now on (for example pod and role).
void SetGlobalField(std::string_view key, std::string value);

void Debug(std::string_view message, Fields fields = {});
void Info(std::string_view message, Fields fields = {});
void Warn(std::string_view message, Fields fields = {});
void Error(std::string_view message, Fields fields = {});

}  // namespace kvstore::logging
