#pragma once

// A long-lived thread that is asked to stop and joined: the backfill thread, the run
// monitor and each store's worker. The stop is a std::stop_source; the body receives its
// token and passes it to the std::condition_variable_any waits it makes on its own mutex,
// which return as soon as the stop is asked (the stopping side neither takes that mutex
// nor notifies), and checks stop_requested() between them. State the body and the other
// threads share stays the owner's, under the owner's mutex.

#include <functional>
#include <stop_token>
#include <thread>

namespace pgderive {

class StoppableThread {
 public:
  StoppableThread() = default;
  StoppableThread(const StoppableThread&) = delete;
  StoppableThread& operator=(const StoppableThread&) = delete;
  ~StoppableThread() { Stop(); }

  // Runs `body` with the stop's token on a new thread; false, and nothing started, while a
  // body runs already.
  bool Start(std::function<void(std::stop_token)> body);
  // Asks the body to stop and waits for it to return. Safe before Start and twice; a stop
  // asked before Start holds (the body sees it at once).
  void Stop();

  // From any thread, at any time.
  bool stop_requested() const { return stop_.stop_requested(); }
  std::stop_token token() const { return stop_.get_token(); }

 private:
  std::stop_source stop_;
  std::jthread thread_;
};

}  // namespace pgderive
