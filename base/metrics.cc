#include "base/metrics.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "base/log.h"

namespace pgderive {
namespace {

std::string Number(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[40];
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    std::snprintf(buffer, sizeof buffer, "%.0f", value);
  } else {
    // The shortest text that reads back as the same double: a Unix time with a fraction
    // keeps its every digit (with 9 significant digits it was rounded to 10 s).
    const auto [end, error] = std::to_chars(buffer, buffer + sizeof buffer - 1, value);
    if (error != std::errc()) return "NaN";
    *end = 0;
  }
  return buffer;
}

// {a="x",b="y"} with \\, \" and \n escaped; empty for no labels.
std::string LabelText(const MetricLabels& labels, const std::string& extra_key = "",
                      const std::string& extra_value = "") {
  MetricLabels all = labels;
  if (!extra_key.empty()) all.emplace_back(extra_key, extra_value);
  if (all.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < all.size(); ++i) {
    if (i) out += ',';
    out += all[i].first + "=\"";
    AppendBackslashEscaped(out, all[i].second);
    out += '"';
  }
  return out + "}";
}

}  // namespace

void Histogram::Observe(double seconds) {
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.Add(seconds);
}

std::array<uint64_t, Histogram::kBounds.size() + 1> Histogram::Buckets() const {
  std::array<uint64_t, kBounds.size() + 1> out{};
  uint64_t running = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    out[i] = running;
  }
  return out;
}

Metrics::Family& Metrics::family(const std::string& name, const std::string& help, Kind kind) {
  auto [it, inserted] = families_.try_emplace(name);
  if (inserted) {
    it->second.kind = kind;
    it->second.help = help;
    order_.push_back(name);
  }
  return it->second;
}

Counter& Metrics::counter(const std::string& name, const std::string& help, MetricLabels labels) {
  std::lock_guard lock(mutex_);
  auto& slot = family(name, help, Kind::kCounter).counters[std::move(labels)];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& Metrics::gauge(const std::string& name, const std::string& help, MetricLabels labels) {
  std::lock_guard lock(mutex_);
  auto& slot = family(name, help, Kind::kGauge).gauges[std::move(labels)];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}

Histogram& Metrics::histogram(const std::string& name, const std::string& help,
                              MetricLabels labels) {
  std::lock_guard lock(mutex_);
  auto& slot = family(name, help, Kind::kHistogram).histograms[std::move(labels)];
  if (!slot) slot = std::make_unique<Histogram>();
  return *slot;
}

std::string Metrics::Render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const std::string& name : order_) {
    const Family& f = families_.at(name);
    const char* type = f.kind == Kind::kCounter ? "counter"
                       : f.kind == Kind::kGauge ? "gauge"
                                                : "histogram";
    out += "# HELP " + name + " " + f.help + "\n# TYPE " + name + " " + type + "\n";
    for (const auto& [labels, c] : f.counters) {
      out += name + LabelText(labels) + " " + Number(c->value()) + "\n";
    }
    for (const auto& [labels, g] : f.gauges) {
      out += name + LabelText(labels) + " " + Number(g->value()) + "\n";
    }
    for (const auto& [labels, h] : f.histograms) {
      const auto buckets = h->Buckets();
      for (size_t i = 0; i < buckets.size(); ++i) {
        const std::string le =
            i < Histogram::kBounds.size() ? Number(Histogram::kBounds[i]) : "+Inf";
        out += name + "_bucket" + LabelText(labels, "le", le) + " " +
               Number(static_cast<double>(buckets[i])) + "\n";
      }
      out += name + "_sum" + LabelText(labels) + " " + Number(h->sum()) + "\n";
      // The +Inf bucket is the count: read once, so that the two always agree.
      out += name + "_count" + LabelText(labels) + " " +
             Number(static_cast<double>(buckets.back())) + "\n";
    }
  }
  return out;
}

}  // namespace pgderive
