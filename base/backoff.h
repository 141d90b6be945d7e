#pragma once

// Exponential backoff with jitter, for reconnecting to a peer that went away: the
// delay starts at `initial`, doubles up to `max`, and each one is randomised by +-20%
// so that many clients do not return in lock-step, without ever exceeding `max`.

#include <algorithm>
#include <chrono>
#include <random>

namespace pgderive {

class Backoff {
 public:
  explicit Backoff(std::chrono::milliseconds initial = std::chrono::milliseconds(100),
                   std::chrono::milliseconds max = std::chrono::seconds(5))
      : initial_(initial), max_(max), next_(initial) {}

  // The delay to wait now; the next one is twice as long, up to the maximum.
  std::chrono::milliseconds Next() {
    const auto base = next_;
    next_ = std::min(next_ * 2, max_);
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    const auto jittered = std::chrono::milliseconds(
        static_cast<long>(static_cast<double>(base.count()) * jitter(Generator())));
    return std::min(jittered, max_);
  }
  void Reset() { next_ = initial_; }

 private:
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  std::chrono::milliseconds next_;

  // Seeded once per thread: a Backoff is made for every batch a worker applies, and
  // seeding from std::random_device each time cost 13% of the pipeline's CPU.
  static std::minstd_rand& Generator() {
    thread_local std::minstd_rand generator(std::random_device{}());
    return generator;
  }
};

}  // namespace pgderive
