#pragma once

// Retrying a call that fails transiently (a peer restarting, a connection dropped), with
// backoff, until it works, fails for good, or the caller stops. Every reconnect loop of
// pgderive waits through this file, so they share one policy: 200 ms doubling to 10 s,
// +-20% jitter, never above 10 s (base/backoff.h).

#include <chrono>
#include <functional>
#include <string>

#include "base/backoff.h"
#include "base/status.h"

namespace pgderive {

// The delays of every reconnect and retry loop.
inline Backoff ReconnectBackoff() {
  return Backoff(std::chrono::milliseconds(200), std::chrono::seconds(10));
}

// Waits `wait`, or less once `stopped` returns true (polled every 50 ms, so a signal
// handler that only sets a flag ends the wait promptly).
void WaitUnlessStopped(std::chrono::milliseconds wait, const std::function<bool()>& stopped);

// Calls `attempt` (returning a Status or Result) until it succeeds, fails with an error
// that is not transient (ErrorKind::kTransient), or `stopped`; the last result is
// returned. Before each retry `log` is told "<error>; retrying in N ms" and the delay is
// waited by `wait` (default: WaitUnlessStopped with `stopped`; a thread that sleeps on
// its own condition variable passes its own).
template <typename Attempt>
auto RetryTransient(Attempt attempt, const std::function<bool()>& stopped,
                    const std::function<void(const std::string&)>& log,
                    const std::function<void(std::chrono::milliseconds)>& wait = {}) {
  Backoff backoff = ReconnectBackoff();
  while (true) {
    auto result = attempt();
    if (result.ok() || result.error().kind() != ErrorKind::kTransient || stopped()) return result;
    const auto delay = backoff.Next();
    log(result.error().message() + "; retrying in " + std::to_string(delay.count()) + " ms");
    if (wait) {
      wait(delay);
    } else {
      WaitUnlessStopped(delay, stopped);
    }
  }
}

}  // namespace pgderive
