#include "base/stoppable_thread.h"

namespace pgderive {

bool StoppableThread::Start(std::function<void(std::stop_token)> body) {
  if (thread_.joinable()) return false;
  // The jthread's own stop state goes unused: stop_ exists before the thread, so the
  // token can be read and a stop asked without racing the start.
  thread_ = std::jthread([body = std::move(body), token = stop_.get_token()] { body(token); });
  return true;
}

void StoppableThread::Stop() {
  stop_.request_stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace pgderive
