#pragma once

// `pgderive promote` and `pgderive rollback`: switch a view's version in the running
// `pgderive run` (sinks/common/view_versions.h), through its HTTP endpoint (POST
// /promote, /rollback, as `pgderive reload` posts /reload). promote waits, by default,
// while the new version builds, with a progress line (app/progress_watch.h), then
// switches to it; a version switched automatically meanwhile (promote: auto) is done too.

#include <chrono>
#include <cstdio>
#include <string>

namespace pgderive {

struct VersionCommandOptions {
  std::string config_path;
  std::string view;
  bool rollback = false;
  // promote: wait while the version builds (else a version not ready is refused).
  bool wait = true;
  std::chrono::seconds timeout{0};                              // 0: no limit
  std::chrono::milliseconds interval{std::chrono::seconds(5)};  // plain progress lines
  std::FILE* out = stdout;
};

// 0: switched; 1: refused (the reason printed) or nothing answers; 2: the file or view.
int RunVersionCommand(const VersionCommandOptions& options);

}  // namespace pgderive
