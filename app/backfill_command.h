#pragma once

// `pgderive backfill -c FILE --view NAME` (SPEC.md §2): rebuilds one view from the
// source while streaming goes on. The request is a logical message in the source's WAL,
// so the running pipeline (or the next start, if none runs) meets it in commit order:
// at that position the view is emptied and filled again by the watermark backfill
// (snapshot/backfill.h); a postgres view is recomputed from its mirrors. The command
// then waits until the view's store records it live again, showing the running
// pipeline's progress of it (app/progress_watch.h): on a terminal one line updated in
// place (rows, rate, time left, percent of the estimated rows), otherwise a plain line
// every `interval`; then a summary line ("view V: done, live again: N rows, R rows/s
// (S s)"). With --no-wait it returns once the request is recorded.

#include <chrono>
#include <cstdio>
#include <string>

namespace pgderive {

struct BackfillCommandOptions {
  std::string config_path;
  std::string view;
  bool wait = true;
  std::chrono::seconds timeout{0};           // 0: no limit
  std::chrono::milliseconds interval{5000};  // between progress lines when not a terminal
  std::FILE* out = stdout;
};

// 0 once the view is live again (or, without waiting, once requested); 1 on timeout or
// an error; 2 for an invalid configuration, an unknown view or a pipeline never started.
int RunBackfill(const BackfillCommandOptions& options);

}  // namespace pgderive
