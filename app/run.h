#pragma once

// `pgderive run`: the pipeline (SPEC.md §1). One replication stream, decoded and cut
// into batches of whole transactions, fans out to one worker per store, each with its
// own bounded queue, so a slow or failed store never stalls the others. The slot is
// confirmed only up to the minimum of the stores' durable checkpoints. SIGHUP (or
// `pgderive reload`) re-reads the file and applies it without a restart (app/reload.h).

#include <atomic>
#include <string>

namespace pgderive {

struct RunOptions {
  std::string config_path;
  const std::atomic<bool>* stop = nullptr;  // set by SIGTERM/SIGINT
  std::atomic<bool>* reload = nullptr;      // set by SIGHUP; cleared when taken
};

// 0 after a clean stop; 2 for an invalid configuration; 1 for a fatal error.
int RunPipeline(const RunOptions& options);

}  // namespace pgderive
