#pragma once

// `pgderive teardown`: removes a pipeline - its slot and publication on the source,
// what pgderive keeps for it in each store (checkpoint, views' states, its own
// metadata) and, when asked, the views' data - while the caller holds the pipeline's
// lock (run_lock.h), so that no `run` of it is active. What is gone already is no
// error: a second teardown removes nothing. What cannot be removed (a store down, a
// slot in use) is reported as left, never as removed.

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "sinks/common/sink.h"

namespace pgderive {

struct TeardownReport {
  // "from the source: slot pgderive_shop", "from store cache: key pgderive:shop:checkpoint"
  std::vector<std::string> removed;
  // "in store search: <why>; its checkpoint and views' states for pipeline shop"
  std::vector<std::string> left;
  // What is left on purpose: "on the source: publication orders_pub (named in
  // source.publication: ...)". Not a failure.
  std::vector<std::string> kept;
};

// The stores first, then the slot and the publication (dropped even when a store is
// down: a slot left behind keeps WAL on the source). Only pgderive's own publication
// (the default pgderive_<pipeline>) is dropped; one named in source.publication may be
// the table owner's, shared with other subscribers: kept.
TeardownReport TeardownPipeline(const Config& config,
                                const std::vector<std::unique_ptr<Sink>>& sinks, bool views);

}  // namespace pgderive
