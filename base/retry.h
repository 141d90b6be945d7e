#pragma once

// Retrying a call that fails transiently, with backoff, until it works, fails for good,
// or the caller stops.

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "base/backoff.h"
#include "base/status.h"

namespace pgderive {

// Calls `attempt` (returning a Status or Result) until it succeeds, fails with an error
// that is not transient, or `stopped`; `log` is told of each retry. Used at start, where
// a store's transient error (OpenSearch's shards still recovering after a crash, a store
// restarting) is retried, never the end of the run.
template <typename Attempt>
auto RetryTransient(Attempt attempt, const std::function<bool()>& stopped,
                    const std::function<void(const std::string&)>& log) {
  Backoff backoff(std::chrono::milliseconds(200), std::chrono::seconds(10));
  while (true) {
    auto result = attempt();
    if (result.ok() || result.error().kind() != ErrorKind::kTransient || stopped()) return result;
    const auto wait = backoff.Next();
    log(result.error().message() + "; retrying in " + std::to_string(wait.count()) + " ms");
    const auto until = std::chrono::steady_clock::now() + wait;
    while (!stopped() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polls `stopped`
    }
  }
}

}  // namespace pgderive
