#pragma once

// `pgderive teardown -c FILE [--views]`: removes the pipeline - the slot, the
// publication and pgderive's own metadata in the source and in each store (checkpoints,
// views' states, mirror tables) and, with --views, the views' data (Redis keys,
// OpenSearch indexes, postgres target tables). Refused while a `run` of the pipeline is
// active. Prints what it removed; a second teardown finds nothing left.

#include <cstdio>
#include <string>

namespace pgderive {

struct TeardownOptions {
  std::string config_path;
  bool views = false;
  std::FILE* out = stdout;
};

// 0 when nothing of the pipeline is left; 1 when something could not be removed (a
// store or the source unreachable: what is left is printed); 2 for an invalid
// configuration or while a `run` of the pipeline is active (nothing is removed).
int RunTeardown(const TeardownOptions& options);

}  // namespace pgderive
