#pragma once

// `pgderive status -c FILE [--json]` (SPEC.md §2, issue 5 item 3): the slot (active,
// confirmed position, retained WAL, wal_status, safe_wal_size), each store's checkpoint
// and lag in bytes (read from the store itself, so it works whether pgderive runs or
// not), and, from the running process's /status endpoint when it answers, each store's
// lag in seconds (age of the last transaction applied while behind), each view's state
// (live, backfilling n%, catching up, failed) and the snapshot's progress. Reads only;
// creates nothing.

#include <cstdio>
#include <string>

namespace pgderive {

struct StatusOptions {
  std::string config_path;
  bool json = false;
  std::FILE* out = stdout;
};

// 0 when the report was made; 1 when the source cannot be reached; 2 for an invalid
// configuration.
int RunStatus(const StatusOptions& options);

}  // namespace pgderive
