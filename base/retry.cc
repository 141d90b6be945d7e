#include "base/retry.h"

#include <thread>

namespace pgderive {

void WaitUnlessStopped(std::chrono::milliseconds wait, const std::function<bool()>& stopped) {
  const auto until = std::chrono::steady_clock::now() + wait;
  while (!stopped() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace pgderive
