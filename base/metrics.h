#pragma once

// Metrics in Prometheus text format (issue 5, /metrics): counters, gauges and
// histograms with labels, named as Prometheus asks (`pgderive_..._total` for counters,
// base units `_seconds` and `_bytes`). Families are registered once with their help
// text; a series (family + label values) is made on first use and lives as long as the
// registry, so callers keep references to the hot ones. Updates are lock-free atomics;
// rendering takes the registry's lock.

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace pgderive {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Add(double amount = 1) {
    double v = value_.load(std::memory_order_relaxed);
    while (!value_.compare_exchange_weak(v, v + amount, std::memory_order_relaxed)) {
    }
  }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Seconds, with buckets from 1 ms to 60 s.
class Histogram {
 public:
  static constexpr std::array<double, 14> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                     0.25,  0.5,    1,     2.5,  5,     10,   60};
  void Observe(double seconds);
  // Cumulative bucket counts (the last is +Inf), the count and the sum.
  std::array<uint64_t, kBounds.size() + 1> Buckets() const;
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const { return sum_.value(); }

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};
  std::atomic<uint64_t> count_{0};
  Counter sum_;
};

class Metrics {
 public:
  Counter& counter(const std::string& name, const std::string& help, MetricLabels labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, MetricLabels labels = {});
  Histogram& histogram(const std::string& name, const std::string& help, MetricLabels labels = {});

  // Every family in registration order, its series in label order.
  std::string Render() const;

 private:
  enum class Kind { kCounter, kGauge, kHistogram };
  struct Family {
    Kind kind;
    std::string help;
    std::map<MetricLabels, std::unique_ptr<Counter>> counters;
    std::map<MetricLabels, std::unique_ptr<Gauge>> gauges;
    std::map<MetricLabels, std::unique_ptr<Histogram>> histograms;
  };
  Family& family(const std::string& name, const std::string& help, Kind kind);

  mutable std::mutex mutex_;
  std::vector<std::string> order_;
  std::map<std::string, Family> families_;
};

}  // namespace pgderive
