// Logging tests: capture what the logger writes to stderr and check both formats.
#include "common/logging.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace kvstore::logging {
namespace {

// Runs fn with stderr redirected to a temporary file and returns what was written.
template <typename Fn>
std::string CaptureStderr(Fn fn) {
  std::fflush(stderr);
  char path[] = "/tmp/kvstore-logging-XXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  const int saved = dup(STDERR_FILENO);
  dup2(fd, STDERR_FILENO);
  fn();
  std::fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fd);
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  std::remove(path);
  return text.str();
}

TEST_CASE("logging: invalid level and format are refused with the setting named") {
  Status bad_level = Init("verbose", "text");
  CHECK(bad_level.code() == Status::Code::kInvalidArgument);
  CHECK(bad_level.message().find("log_level") != std::string::npos);
  Status bad_format = Init("info", "xml");
  CHECK(bad_format.code() == Status::Code::kInvalidArgument);
  CHECK(bad_format.message().find("log_format") != std::string::npos);
}

TEST_CASE("logging: json lines are one escaped object each, with global fields") {
  REQUIRE(Init("info", "json").ok());
  SetGlobalField("pod", "kvstore-0");
  const std::string out = CaptureStderr([] {
    Info("hello \"world\"\nnext", {{"key", "a\\b"}});
    Debug("hidden at info level");
  });
  CHECK(out.find("hidden") == std::string::npos);
  CHECK(out.find('\n') == out.size() - 1);  // exactly one line
  CHECK(out.starts_with("{\"time\":\""));
  CHECK(out.find("\"level\":\"info\"") != std::string::npos);
  // The newline is escaped (as \u000a), so the line stays one line.
  CHECK(out.find("\"message\":\"hello \\\"world\\\"\\u000anext\"") != std::string::npos);
  CHECK(out.find("\"pod\":\"kvstore-0\"") != std::string::npos);
  CHECK(out.find("\"key\":\"a\\\\b\"") != std::string::npos);
}

TEST_CASE("logging: text lines carry the message and key=value fields") {
  REQUIRE(Init("debug", "text").ok());
  const std::string out = CaptureStderr([] { Warn("disk slow", {{"ms", "12"}}); });
  CHECK(out.find("WARN disk slow") != std::string::npos);
  CHECK(out.find("ms=12") != std::string::npos);
}

TEST_CASE("logging: lines logged through spdlog's default logger are formatted the same way") {
  REQUIRE(Init("info", "json").ok());
  SetGlobalField("pod", "kvstore-1");
  const std::string out = CaptureStderr([] {
    spdlog::warn("engine: log trim failed: {}", "disk gone");
    spdlog::debug("hidden at info level");
  });
  CHECK(out.find('\n') == out.size() - 1);
  CHECK(out.starts_with("{\"time\":\""));
  CHECK(out.find("\"level\":\"warn\"") != std::string::npos);
  CHECK(out.find("\"message\":\"engine: log trim failed: disk gone\"") != std::string::npos);
  CHECK(out.find("\"pod\":\"kvstore-1\"") != std::string::npos);
}

}  // namespace
}  // namespace kvstore::logging
