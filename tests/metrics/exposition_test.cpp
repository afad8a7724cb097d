// Tests of the Prometheus text exposition writer: family headers, label escaping, value
// formatting and histogram rendering (cumulative buckets, +Inf, _sum, _count).
#include "metrics/exposition.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

namespace kvstore::metrics {

TEST_CASE("a gauge and a counter render HELP, TYPE and one sample", "[exposition]") {
  Exposition e;
  e.Gauge("kvstore_keys", "keys in the key space", 42);
  e.Counter("kvstore_fsyncs_total", "log fsyncs", 7);
  CHECK(e.text() ==
        "# HELP kvstore_keys keys in the key space\n"
        "# TYPE kvstore_keys gauge\n"
        "kvstore_keys 42\n"
        "# HELP kvstore_fsyncs_total log fsyncs\n"
        "# TYPE kvstore_fsyncs_total counter\n"
        "kvstore_fsyncs_total 7\n");
}

TEST_CASE("label values escape backslash, quote and newline; help escapes backslash and newline",
          "[exposition]") {
  Exposition e;
  e.Family("x", "a \\ b\nc \"q\"", Exposition::Type::kGauge);
  e.Sample("x", {{"a", "back\\slash"}, {"b", "say \"hi\"\nbye"}}, 1);
  CHECK(e.text() ==
        "# HELP x a \\\\ b\\nc \"q\"\n"
        "# TYPE x gauge\n"
        "x{a=\"back\\\\slash\",b=\"say \\\"hi\\\"\\nbye\"} 1\n");
}

TEST_CASE("values: integers plain, fractions exact, infinities and NaN by name", "[exposition]") {
  CHECK(FormatValue(0) == "0");
  CHECK(FormatValue(-3) == "-3");
  CHECK(FormatValue(18446744073709.0) == "18446744073709");
  CHECK(FormatValue(0.25) == "0.25");
  CHECK(FormatValue(1e300) == "1e+300");
  CHECK(FormatValue(0.1 + 0.2) == "0.30000000000000004");
  CHECK(FormatValue(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(FormatValue(-std::numeric_limits<double>::infinity()) == "-Inf");
  CHECK(FormatValue(std::nan("")) == "NaN");
}

TEST_CASE("a histogram renders cumulative buckets up to +Inf, then _sum and _count",
          "[exposition]") {
  Histogram h({0.1, 1});
  h.Observe(0.05);
  h.Observe(0.1);  // le is inclusive
  h.Observe(0.5);
  h.Observe(3);
  Exposition e;
  e.Family("lat_seconds", "latency", Exposition::Type::kHistogram);
  e.HistogramSamples("lat_seconds", {{"family", "read"}}, h.Snapshot());
  CHECK(e.text() ==
        "# HELP lat_seconds latency\n"
        "# TYPE lat_seconds histogram\n"
        "lat_seconds_bucket{family=\"read\",le=\"0.1\"} 2\n"
        "lat_seconds_bucket{family=\"read\",le=\"1\"} 3\n"
        "lat_seconds_bucket{family=\"read\",le=\"+Inf\"} 4\n"
        "lat_seconds_sum{family=\"read\"} 3.65\n"
        "lat_seconds_count{family=\"read\"} 4\n");
}

}  // namespace kvstore::metrics
