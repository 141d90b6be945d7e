#pragma once

// `pgderive verify`: proves that each view equals its definition applied to the source
// (SPEC.md §2). It first waits until every store's checkpoint has passed the source's
// current position (a marker written with pg_logical_emit_message), then reads the
// source in one snapshot and the store, and compares them entry by entry, value by
// value. Differences under concurrent writes can be transient, so a view that differs
// is compared again after the next catch-up, up to `rounds` times; what differs every
// time is reported. A view its store records as being backfilled is compared once it is
// live (within `wait`).

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>

namespace pgderive {

struct VerifyOptions {
  std::string config_path;
  std::optional<std::string> view;
  std::chrono::seconds wait{60};  // for the stores to catch up
  int rounds = 3;
  // Each view found differing is refilled through the running pipeline (a backfill
  // request, app/backfill_command.h: the rebuild keeps serving what the view holds until
  // the new content is whole), then every compared view is compared again.
  bool repair = false;
  std::FILE* out = stdout;
};

// 0 when every view is consistent (with `repair`: after the refills); 1 when differences
// were found (remain) or a store did not catch up or a refill failed; 2 for an invalid
// configuration or an unknown view.
int RunVerify(const VerifyOptions& options);

}  // namespace pgderive
