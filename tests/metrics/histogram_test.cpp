// Tests of Histogram: bucket choice at and around bounds, and that concurrent Observe() calls
// lose no observation.
#include "metrics/histogram.h"

#include <catch2/catch.hpp>
#include <thread>
#include <vector>

namespace kvstore::metrics {

TEST_CASE("observations land in the first bucket whose bound is >= the value", "[histogram]") {
  Histogram h({1, 2, 4});
  for (double v : {0.0, 1.0, 1.5, 2.0, 4.0, 4.5, 100.0}) h.Observe(v);
  const HistogramSnapshot s = h.Snapshot();
  CHECK(s.counts == std::vector<std::uint64_t>{2, 2, 1, 2});
  CHECK(s.count() == 7);
  CHECK(s.sum == Approx(113.0));
}

TEST_CASE("concurrent observations are all counted", "[histogram]") {
  Histogram h(Histogram::LatencyBounds());
  constexpr int kThreads = 4, kEach = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < kEach; ++i) h.Observe(t == 0 ? 0.00001 : 20.0);
    });
  }
  for (auto& t : threads) t.join();
  const HistogramSnapshot s = h.Snapshot();
  CHECK(s.count() == kThreads * kEach);
  CHECK(s.counts.front() == kEach);
  CHECK(s.counts.back() == (kThreads - 1) * kEach);
  CHECK(s.sum == Approx(kEach * 0.00001 + (kThreads - 1) * kEach * 20.0));
}

}  // namespace kvstore::metrics
