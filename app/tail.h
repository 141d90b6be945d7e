#pragma once

// `pgderive tail`: the decoded change stream as JSON lines, for debugging and as the
// capture core's benchmark target. By default it reads through a temporary slot created
// for the session (dropped when it ends), so the pipeline's slot never moves. With
// `slot`, it reads an existing slot and never confirms anything on it.

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include "cdc/lsn.h"

namespace pgderive {

struct TailOptions {
  std::string config_path;
  bool snapshot = false;          // first print every row of the views' tables ("op":"read")
  std::string slot;               // read this existing slot instead of a temporary one
  std::optional<uint64_t> limit;  // stop after printing this many changes
  std::optional<Lsn> until;       // stop after the first transaction committed at or past it
  std::FILE* out = stdout;
  const std::atomic<bool>* stop = nullptr;  // set by a signal handler
};

// Returns the process exit status: 0 after a clean stop, 2 for an invalid
// configuration, 1 for any other failure (its message on stderr).
int RunTail(const TailOptions& options);

}  // namespace pgderive
