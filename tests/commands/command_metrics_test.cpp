// CommandMetrics tests: counts per command and result, the family of each command, unknown
// commands, and that concurrent recording loses nothing.
#include "commands/command_metrics.h"

#include <catch2/catch.hpp>
#include <thread>

#include "commands/dispatcher.h"

namespace kvstore {
namespace {

const CommandSpec* Find(std::string_view name) {
  for (const CommandSpec* spec : AllCommands()) {
    if (spec->name == name) return spec;
  }
  FAIL("no command " << name);
  return nullptr;
}

CommandMetrics::CommandCounts CountsOf(const CommandMetrics& metrics, std::string_view name) {
  for (const auto& c : metrics.Counts()) {
    if (c.name == name) return c;
  }
  FAIL("no counts for " << name);
  return {};
}

}  // namespace

TEST_CASE("commands are counted by name and result; unknown commands as 'unknown'",
          "[command_metrics]") {
  CommandMetrics metrics;
  metrics.Record(Find("get"), true, 0.001);
  metrics.Record(Find("get"), true, 0.002);
  metrics.Record(Find("set"), false, 0.5);
  metrics.Record(nullptr, false, 0.0);
  CHECK(CountsOf(metrics, "get").ok == 2);
  CHECK(CountsOf(metrics, "get").errors == 0);
  CHECK(CountsOf(metrics, "get").microseconds == 3000);
  CHECK(CountsOf(metrics, "set").errors == 1);
  CHECK(CountsOf(metrics, "unknown").errors == 1);
  CHECK(CountsOf(metrics, "del").ok + CountsOf(metrics, "del").errors == 0);
  CHECK(metrics.total_errors() == 2);
  CHECK(metrics.Counts().size() == AllCommands().size() + 1);
}

TEST_CASE("latency goes to the command's family histogram", "[command_metrics]") {
  CHECK(CommandMetrics::FamilyOf(Find("get")) == CommandMetrics::Family::kRead);
  CHECK(CommandMetrics::FamilyOf(Find("set")) == CommandMetrics::Family::kWrite);
  CHECK(CommandMetrics::FamilyOf(Find("info")) == CommandMetrics::Family::kAdmin);
  CHECK(CommandMetrics::FamilyOf(Find("ping")) == CommandMetrics::Family::kAdmin);
  CommandMetrics metrics;
  metrics.Record(Find("get"), true, 0.001);
  metrics.Record(Find("set"), true, 0.004);
  metrics.Record(Find("del"), true, 0.004);
  CHECK(metrics.Latency(CommandMetrics::Family::kRead).count() == 1);
  CHECK(metrics.Latency(CommandMetrics::Family::kWrite).count() == 2);
  CHECK(metrics.Latency(CommandMetrics::Family::kWrite).sum == Approx(0.008));
  CHECK(metrics.Latency(CommandMetrics::Family::kAdmin).count() == 0);
}

TEST_CASE("concurrent recording loses no call", "[command_metrics]") {
  CommandMetrics metrics;
  const CommandSpec* get = Find("get");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) metrics.Record(get, i % 10 != 0, 0.0001);
    });
  }
  for (auto& t : threads) t.join();
  CHECK(CountsOf(metrics, "get").ok == 36000);
  CHECK(CountsOf(metrics, "get").errors == 4000);
  CHECK(metrics.Latency(CommandMetrics::Family::kRead).count() == 40000);
}

}  // namespace kvstore
