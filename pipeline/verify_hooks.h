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
// compare). The verifier learns the types of the tables it compares on its own session.
ContinuousVerifyOptions MakeContinuousVerifyOptions(
    const Config& config, const std::vector<std::unique_ptr<PipelineWorker>>& workers, Logger& log);

}  // namespace pgderive
