#pragma once

// Waiting on a condition with a deadline (never a bare sleep as synchronisation).

#include <chrono>
#include <thread>

namespace pgderive::testing {

// Polls `condition` until it holds or `timeout` passes; whether it held.
template <typename F>
bool WaitFor(F condition, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // poll interval
  }
  return true;
}

}  // namespace pgderive::testing
