#pragma once

// What a command that waits on a fill in the running pipeline shows a person
// (`pgderive backfill`; a version's promote reuses it): the view's progress as the
// running pipeline reports it on /status (the rows its backfill has applied and the
// planner's estimate), drawn by base/progress_line.h - a line rewritten in place on a
// terminal, plain lines every few seconds otherwise.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include "base/progress_line.h"

namespace pgderive {

// One view as the running pipeline's /status has it; nullopt when nothing answers on
// `listen` (or the view is not in its answer: `answered` true, `state` empty).
struct ViewProgress {
  bool answered = false;
  std::string state;  // live, backfilling, catching up, stalled, failed
  uint64_t rows = 0;
  uint64_t estimated = 0;
  std::string reason;
};
ViewProgress ReadViewProgress(const std::string& listen, const std::string& store,
                              const std::string& view);

// Turns what ReadViewProgress says into a sample for the line ("waiting ..." notes while
// the fill has not started or nothing answers).
ProgressSample SampleOf(const ViewProgress& progress, const std::string& listen);

// A progress line for `what` on `out`: in place when `out` is a terminal, else a line
// every `plain_interval`.
ProgressLine ViewProgressLine(std::FILE* out, const std::string& what,
                              std::chrono::milliseconds plain_interval);

}  // namespace pgderive
