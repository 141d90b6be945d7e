#pragma once

// Progress a person can watch, for the commands that wait on long work in the running
// pipeline (`pgderive backfill`; a version's promote reuses it): rows done, the rate,
// the time left and the percent of the estimated rows.
//   on a terminal       one line, rewritten in place ("\r" and the line, padded), at most
//                       every `terminal_interval`; a newline before the summary;
//   otherwise (a log)   a plain line every `plain_interval`, and at the end the summary.
// The rate is measured over what this line saw (rows since its first sample), so a
// command attached to a fill under way does not count what was done before it.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace pgderive {

struct ProgressSample {
  uint64_t rows = 0;       // done so far
  uint64_t estimated = 0;  // the planner's estimate of the total; 0 when unknown
  std::string note;        // a state to show instead of numbers ("waiting", "catching up")
};

// "120,000 of ~1,000,000 rows (12.0%), 8,400 rows/s, about 1m45s left"; without an
// estimate "120,000 rows, 8,400 rows/s"; `rate` < 0: not known yet.
std::string FormatProgress(const ProgressSample& sample, double rate);
// 1234567 -> "1,234,567".
std::string GroupDigits(uint64_t n);
// Seconds as "42s", "3m05s", "2h07m".
std::string FormatDuration(double seconds);

class ProgressLine {
 public:
  using Clock = std::chrono::steady_clock;
  ProgressLine(std::FILE* out, bool terminal, std::string what,
               std::chrono::milliseconds plain_interval = std::chrono::seconds(5),
               std::chrono::milliseconds terminal_interval = std::chrono::milliseconds(250));

  // A new sample; printed when its interval has passed (the first one at once).
  void Update(const ProgressSample& sample, Clock::time_point now = Clock::now());
  // Ends the line: "<what>: <summary> (<elapsed>)" on a line of its own.
  void Finish(const std::string& summary, Clock::time_point now = Clock::now());

  // Rows per second since the first sample with rows; < 0 when not known yet.
  double rate(Clock::time_point now) const;

 private:
  void Print(const std::string& text);

  std::FILE* out_;
  bool terminal_;
  std::string what_;
  std::chrono::milliseconds plain_interval_;
  std::chrono::milliseconds terminal_interval_;
  Clock::time_point started_;
  std::optional<Clock::time_point> last_printed_;
  std::optional<std::pair<Clock::time_point, uint64_t>> first_;  // first sample: when, rows
  ProgressSample last_;
  size_t last_width_ = 0;  // of the line on the terminal, to blank what is left of it
};

}  // namespace pgderive
