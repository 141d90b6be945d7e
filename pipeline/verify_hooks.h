#pragma once

// What the background verifier (snapshot/verify.cc) needs of the stores: their entries
// for a chunk's keys, read through each store's ViewInspector (Redis pipelined GET,
// OpenSearch _mget), and the comparison with the source rows (view_compare.h), whose
// differences are logged here, one warning each, with the view, the key, what differs
// and the position.

#include <functional>
#include <memory>
#include <vector>

#include "base/log.h"
#include "config/config.h"
#include "pipeline/pipeline_worker.h"
#include "sinks/common/sink.h"
#include "snapshot/backfill.h"

namespace pgderive {

// The verifier's options from `verify:` (continuous off when no store has a view it can
// compare). `types`: the stream's type registry as it is now (thread-safe).
ContinuousVerifyOptions MakeContinuousVerifyOptions(
    const Config& config, const std::vector<std::unique_ptr<PipelineWorker>>& workers,
    std::function<std::shared_ptr<const TypeRegistry>()> types, Logger& log);

}  // namespace pgderive
