#include "server/metrics_registry.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"

namespace squeezeserve::server::metrics {

void AtomicDouble::Add(double delta) {
  // compare_exchange loop: std::atomic<double>::fetch_add is C++20 only.
  double current = bits_.load(std::memory_order_relaxed);
  while (!bits_.compare_exchange_weak(current, current + delta, std::memory_order_relaxed)) {
  }
}

namespace {
const std::vector<double> kNoBounds;
}  // namespace

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds != nullptr ? bounds : &kNoBounds), buckets_(bounds_->size() + 1, 0) {}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;  // NaN falls in no bucket and would poison the sum
  // First bound >= value ("le" is inclusive); past the end is the +Inf bucket.
  size_t index = std::lower_bound(bounds_->begin(), bounds_->end(), value) - bounds_->begin();
  absl::MutexLock lock(&mu_);
  ++buckets_[index];
  ++count_;
  sum_ += value;
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot snapshot;
  absl::MutexLock lock(&mu_);
  uint64_t running = 0;
  for (uint64_t bucket : buckets_) {
    running += bucket;
    snapshot.cumulative.push_back(running);
  }
  snapshot.count = count_;
  snapshot.sum = sum_;
  return snapshot;
}

HistogramFamily::HistogramFamily(std::string name, std::string help, std::vector<std::string> label_names,
                                 std::vector<double> bounds)
    : Family(std::move(name), std::move(help), std::move(label_names)), bounds_([&] {
        std::sort(bounds.begin(), bounds.end());
        bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
        bounds.erase(std::remove_if(bounds.begin(), bounds.end(), [](double b) { return !std::isfinite(b); }),
                     bounds.end());
        return bounds;
      }()) {}

Family<Counter>& Registry::AddCounter(std::string name, std::string help, std::vector<std::string> label_names) {
  absl::MutexLock lock(&mu_);
  counters_.push_back(std::make_unique<Family<Counter>>(std::move(name), std::move(help), std::move(label_names)));
  order_.emplace_back(counters_.back().get());
  return *counters_.back();
}

Family<Gauge>& Registry::AddGauge(std::string name, std::string help, std::vector<std::string> label_names) {
  absl::MutexLock lock(&mu_);
  gauges_.push_back(std::make_unique<Family<Gauge>>(std::move(name), std::move(help), std::move(label_names)));
  order_.emplace_back(gauges_.back().get());
  return *gauges_.back();
}

HistogramFamily& Registry::AddHistogram(std::string name, std::string help, std::vector<std::string> label_names,
                                        std::vector<double> bounds) {
  absl::MutexLock lock(&mu_);
  histograms_.push_back(std::make_unique<HistogramFamily>(std::move(name), std::move(help), std::move(label_names),
                                                          std::move(bounds)));
  order_.emplace_back(histograms_.back().get());
  return *histograms_.back();
}

void Registry::AddCollected(std::string name, std::string help, std::string type,
                            std::vector<std::string> label_names, std::function<std::vector<Sample>()> collect) {
  absl::MutexLock lock(&mu_);
  collected_.push_back(std::make_unique<Collected>(
      Collected{std::move(name), std::move(help), std::move(type), std::move(label_names), std::move(collect)}));
  order_.emplace_back(collected_.back().get());
}

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(const std::string& help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.17g", value);
  // Prefer the short form when it round-trips (0.1 rather than 0.10000000000000001).
  char shorter[32];
  std::snprintf(shorter, sizeof(shorter), "%.15g", value);
  return std::strtod(shorter, nullptr) == value ? shorter : buffer;
}

namespace {

// {a="x",b="y"} with an optional extra label (the histogram's le); empty when there are no labels.
std::string LabelText(const std::vector<std::string>& names, const Labels& values, const std::string& extra_name = "",
                      const std::string& extra_value = "") {
  std::string out;
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    absl::StrAppend(&out, out.empty() ? "" : ",", names[i], "=\"", EscapeLabelValue(values[i]), "\"");
  }
  if (!extra_name.empty()) {
    absl::StrAppend(&out, out.empty() ? "" : ",", extra_name, "=\"", EscapeLabelValue(extra_value), "\"");
  }
  return out.empty() ? out : absl::StrCat("{", out, "}");
}

void Header(std::string* out, const std::string& name, const std::string& help, const std::string& type) {
  absl::StrAppend(out, "# HELP ", name, " ", EscapeHelp(help), "\n# TYPE ", name, " ", type, "\n");
}

template <typename Metric>
void RenderSimple(std::string* out, const Family<Metric>& family, const std::string& type) {
  Header(out, family.name(), family.help(), type);
  family.ForEach([&](const Labels& labels, const Metric& metric) {
    absl::StrAppend(out, family.name(), LabelText(family.label_names(), labels), " ", FormatValue(metric.Get()),
                    "\n");
  });
}

void RenderHistogram(std::string* out, const HistogramFamily& family) {
  Header(out, family.name(), family.help(), "histogram");
  family.ForEach([&](const Labels& labels, const Histogram& histogram) {
    Histogram::Snapshot snapshot = histogram.Read();
    const std::vector<double>& bounds = family.bounds();
    for (size_t i = 0; i <= bounds.size(); ++i) {
      std::string le = i < bounds.size() ? FormatValue(bounds[i]) : "+Inf";
      absl::StrAppend(out, family.name(), "_bucket", LabelText(family.label_names(), labels, "le", le), " ",
                      snapshot.cumulative[i], "\n");
    }
    const std::string label_text = LabelText(family.label_names(), labels);
    absl::StrAppend(out, family.name(), "_sum", label_text, " ", FormatValue(snapshot.sum), "\n");
    absl::StrAppend(out, family.name(), "_count", label_text, " ", snapshot.count, "\n");
  });
}

}  // namespace

std::string Registry::Render() const {
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const Entry& entry : order_) {
    if (auto* counter = std::get_if<Family<Counter>*>(&entry)) {
      RenderSimple(&out, **counter, "counter");
    } else if (auto* gauge = std::get_if<Family<Gauge>*>(&entry)) {
      RenderSimple(&out, **gauge, "gauge");
    } else if (auto* histogram = std::get_if<HistogramFamily*>(&entry)) {
      RenderHistogram(&out, **histogram);
    } else if (auto* collected = std::get_if<Collected*>(&entry)) {
      const Collected& c = **collected;
      Header(&out, c.name, c.help, c.type);
      for (const Sample& sample : c.collect()) {
        absl::StrAppend(&out, c.name, LabelText(c.label_names, sample.labels), " ", FormatValue(sample.value), "\n");
      }
    }
  }
  return out;
}

}  // namespace squeezeserve::server::metrics
