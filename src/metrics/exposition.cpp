// Exposition (see exposition.h).
#include "metrics/exposition.h"

#include <charconv>
#include <cmath>

namespace kvstore::metrics {
namespace {

void AppendEscaped(std::string& out, std::string_view text, bool quotes) {
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quotes) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

void AppendSample(std::string& out, std::string_view name, const Labels& labels,
                  const std::pair<std::string, std::string>* extra, double value) {
  out.append(name);
  if (!labels.empty() || extra != nullptr) {
    out += '{';
    bool first = true;
    auto label = [&](const std::pair<std::string, std::string>& l) {
      if (!first) out += ',';
      first = false;
      out += l.first;
      out += "=\"";
      AppendEscaped(out, l.second, true);
      out += '"';
    };
    for (const auto& l : labels) label(l);
    if (extra != nullptr) label(*extra);
    out += '}';
  }
  out += ' ';
  out += FormatValue(value);
  out += '\n';
}

}  // namespace

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return std::to_string(static_cast<std::int64_t>(value));
  }
  // The shortest text that reads back as the same double.
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

void Exposition::Family(std::string_view name, std::string_view help, Type type) {
  text_ += "# HELP ";
  text_.append(name);
  text_ += ' ';
  AppendEscaped(text_, help, false);
  text_ += "\n# TYPE ";
  text_.append(name);
  text_ += type == Type::kCounter ? " counter\n"
           : type == Type::kGauge ? " gauge\n"
                                  : " histogram\n";
}

void Exposition::Sample(std::string_view name, const Labels& labels, double value) {
  AppendSample(text_, name, labels, nullptr, value);
}

void Exposition::HistogramSamples(std::string_view name, const Labels& labels,
                                  const HistogramSnapshot& histogram) {
  const std::string bucket = std::string(name) + "_bucket";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < histogram.counts.size(); ++i) {
    cumulative += histogram.counts[i];
    const std::pair<std::string, std::string> le{
        "le", i < histogram.bounds.size() ? FormatValue(histogram.bounds[i]) : "+Inf"};
    AppendSample(text_, bucket, labels, &le, static_cast<double>(cumulative));
  }
  AppendSample(text_, std::string(name) + "_sum", labels, nullptr, histogram.sum);
  AppendSample(text_, std::string(name) + "_count", labels, nullptr,
               static_cast<double>(cumulative));
}

void Exposition::Gauge(std::string_view name, std::string_view help, double value) {
  Family(name, help, Type::kGauge);
  Sample(name, value);
}

void Exposition::Counter(std::string_view name, std::string_view help, double value) {
  Family(name, help, Type::kCounter);
  Sample(name, value);
}

}  // namespace kvstore::metrics
