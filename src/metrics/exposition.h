// Exposition: writes metrics in Prometheus' text format 0.0.4, the format /metrics serves.
// Not thread-safe: one writer builds one response. Grammar (per family, samples follow their
// HELP and TYPE lines):
//   "# HELP " name " " escaped-help "\n"
//   "# TYPE " name " " ("counter" | "gauge" | "histogram") "\n"
//   name ["{" label "=\"" escaped-value "\"" *("," label "=\"" escaped-value "\"") "}"] " " value
//   "\n"
// escaped-value escapes '\', '"' and newline; escaped-help escapes '\' and newline. A histogram
// writes name_bucket{le=...} cumulatively up to le="+Inf", then name_sum and name_count.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "metrics/histogram.h"

namespace kvstore::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Exposition {
 public:
  enum class Type { kCounter, kGauge, kHistogram };

  // Starts a family: its HELP and TYPE lines. Each name once per exposition.
  void Family(std::string_view name, std::string_view help, Type type);
  // A sample of the current family (counter or gauge). name is the family name.
  void Sample(std::string_view name, const Labels& labels, double value);
  void Sample(std::string_view name, double value) { Sample(name, {}, value); }
  // The samples of a histogram family: buckets, _sum and _count, with extra labels.
  void HistogramSamples(std::string_view name, const Labels& labels,
                        const HistogramSnapshot& histogram);

  // Shorthands for a family with one unlabelled sample.
  void Gauge(std::string_view name, std::string_view help, double value);
  void Counter(std::string_view name, std::string_view help, double value);

  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

// Formats a sample value: integers without a fraction, "+Inf", "-Inf", "NaN", else the
// shortest text that reads back exactly.
std::string FormatValue(double value);

}  // namespace kvstore::metrics
