// A small Prometheus metrics registry (Debian ships no prometheus-cpp): counter, gauge and histogram
// families with label sets, thread-safe, rendered in the text exposition format 0.0.4. Families are
// created once at start-up and live as long as the registry; children (one per label-value tuple) are
// created on first use and never removed, so pointers to them stay valid.
//
// Values that already live elsewhere (status counts, queue depth, contexts per tier) are not copied
// into the registry: a collector callback reads them at scrape time, so there is one source of truth.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace squeezeserve::server::metrics {

using Labels = std::vector<std::string>;  // values, in the order of the family's label names

// A double that many threads add to without a lock.
class AtomicDouble {
 public:
  void Add(double delta);
  void Set(double value) { bits_.store(value, std::memory_order_relaxed); }
  double Get() const { return bits_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> bits_{0};
};

class Counter {
 public:
  void Increment(double delta = 1) {
    if (delta > 0) value_.Add(delta);  // counters only go up
  }
  double Get() const { return value_.Get(); }

 private:
  AtomicDouble value_;
};

class Gauge {
 public:
  void Set(double value) { value_.Set(value); }
  void Add(double delta) { value_.Add(delta); }
  double Get() const { return value_.Get(); }

 private:
  AtomicDouble value_;
};

class Histogram {
 public:
  // `bounds` outlives the histogram (owned by its family); nullptr = only the +Inf bucket.
  explicit Histogram(const std::vector<double>* bounds = nullptr);
  void Observe(double value);
  struct Snapshot {
    std::vector<uint64_t> cumulative;  // per bound, then +Inf
    uint64_t count = 0;
    double sum = 0;
  };
  Snapshot Read() const;

 private:
  const std::vector<double>* bounds_;  // ascending upper bounds, owned by the family
  mutable absl::Mutex mu_;  // one short lock per observation keeps count, sum and buckets consistent
  std::vector<uint64_t> buckets_ ABSL_GUARDED_BY(mu_);  // non-cumulative, last = +Inf
  uint64_t count_ ABSL_GUARDED_BY(mu_) = 0;
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
};

// One metric name with its label names; children per label-value tuple.
template <typename Metric>
class Family {
 public:
  Family(std::string name, std::string help, std::vector<std::string> label_names)
      : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)) {}
  virtual ~Family() = default;

  // The child for `values` (created on first use). The number of values must match the label names;
  // a mismatch is a programming error, answered with a child under truncated/padded labels.
  Metric& With(Labels values = {}) {
    values.resize(label_names_.size());
    absl::MutexLock lock(&mu_);
    std::unique_ptr<Metric>& child = children_[values];
    if (child == nullptr) child = NewChild();
    return *child;
  }

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  // Calls `visit` for every child, in label order, under the family's lock.
  void ForEach(const std::function<void(const Labels&, const Metric&)>& visit) const {
    absl::MutexLock lock(&mu_);
    for (const auto& [labels, child] : children_) visit(labels, *child);
  }

 protected:
  virtual std::unique_ptr<Metric> NewChild() const { return std::make_unique<Metric>(); }

 private:
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  mutable absl::Mutex mu_;
  std::map<Labels, std::unique_ptr<Metric>> children_ ABSL_GUARDED_BY(mu_);
};

class HistogramFamily final : public Family<Histogram> {
 public:
  HistogramFamily(std::string name, std::string help, std::vector<std::string> label_names,
                  std::vector<double> bounds);
  const std::vector<double>& bounds() const { return bounds_; }

 protected:
  std::unique_ptr<Histogram> NewChild() const override { return std::make_unique<Histogram>(&bounds_); }

 private:
  const std::vector<double> bounds_;
};

// One sample a collector reports at scrape time.
struct Sample {
  Labels labels;
  double value = 0;
};

class Registry {
 public:
  Family<Counter>& AddCounter(std::string name, std::string help, std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(std::string name, std::string help, std::vector<std::string> label_names = {});
  HistogramFamily& AddHistogram(std::string name, std::string help, std::vector<std::string> label_names,
                                std::vector<double> bounds);
  // A family whose samples are computed at scrape time by `collect`. `type` is "counter" or "gauge".
  void AddCollected(std::string name, std::string help, std::string type, std::vector<std::string> label_names,
                    std::function<std::vector<Sample>()> collect);

  // The whole registry in the Prometheus text format, families in registration order.
  std::string Render() const;

 private:
  struct Collected {
    std::string name, help, type;
    std::vector<std::string> label_names;
    std::function<std::vector<Sample>()> collect;
  };
  using Entry = std::variant<Family<Counter>*, Family<Gauge>*, HistogramFamily*, Collected*>;

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Family<Counter>>> counters_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Family<Gauge>>> gauges_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<HistogramFamily>> histograms_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Collected>> collected_ ABSL_GUARDED_BY(mu_);
  std::vector<Entry> order_ ABSL_GUARDED_BY(mu_);
};

// Exposition helpers, exposed for tests.
std::string EscapeLabelValue(const std::string& value);  // backslash, double quote, newline
std::string EscapeHelp(const std::string& help);          // backslash, newline
std::string FormatValue(double value);                    // shortest round-trip form; +Inf, -Inf, NaN

}  // namespace squeezeserve::server::metrics
