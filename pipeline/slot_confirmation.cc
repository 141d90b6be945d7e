#include "pipeline/slot_confirmation.h"

#include <algorithm>

namespace pgderive {

std::optional<Lsn> SlowestDurable(std::span<const std::unique_ptr<PipelineWorker>> workers,
                                  const SourceServerStores* on_source) {
  std::optional<Lsn> lowest;
  for (const auto& worker : workers) {
    Lsn durable = worker->Durable();
    if (on_source != nullptr && on_source->idle && !worker->healthy() && !worker->detached() &&
        !worker->failed() && on_source->stores.contains(worker->sink().name())) {
      if (on_source->received > durable) worker->MarkSlotPassed();
      durable = std::max(durable, on_source->received);
    }
    if (!lowest || durable < *lowest) lowest = durable;
  }
  return lowest;
}

}  // namespace pgderive
