// Histogram: counts observations into fixed buckets for Prometheus, without locks.
// Thread-safe: Observe() is a few relaxed atomic adds and may run on any thread (the engine's
// writer, session event loops); Snapshot() may run concurrently and sees each bucket atomically.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace kvstore::metrics {

// A histogram's state at one moment: per-bucket (not cumulative) counts, the last one for
// observations above every bound (+Inf).
struct HistogramSnapshot {
  std::vector<double> bounds;         // upper bounds, ascending
  std::vector<std::uint64_t> counts;  // bounds.size() + 1 entries
  double sum = 0;
  std::uint64_t count() const;
};

class Histogram {
 public:
  // bounds: upper bounds, strictly ascending (not checked at run time; the callers pass
  // constants).
  explicit Histogram(std::vector<double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void Observe(double value);
  HistogramSnapshot Snapshot() const;

  // Buckets for durations in seconds: 50 us to 10 s.
  static std::vector<double> LatencyBounds();
  // Buckets for sizes: 1, 2, 4 ... 1024.
  static std::vector<double> SizeBounds();

 private:
  const std::vector<double> bounds_;
  const std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

}  // namespace kvstore::metrics
