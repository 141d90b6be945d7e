#pragma once

// Slot confirmation: how far the replication slot may be confirmed.
//
//   store A worker --Durable()--+
//   store B worker --Durable()--+--> SlowestDurable --> ConfirmFlushed --> the slot
//   store C worker --Durable()--+
//
// The slot moves only past what every store has made durable (a store's checkpoint once
// its durability delay has passed): WAL the slot releases can never be read again, so a
// store that lost what it had not made durable would have to be rebuilt. A detached or
// failed store holds the slot at its own durable checkpoint; it rejoins from there.
// When nothing is in flight, the dispatcher's idle marks carry every store to the
// stream's position.

#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>

#include "cdc/lsn.h"
#include "pipeline/pipeline_worker.h"

namespace pgderive {

// The one exception, while streaming: a postgres store on the source's own server that
// cannot reach it (the server is stopping, and a fast shutdown waits for the slot's
// consumer to confirm all WAL) keeps what it has not applied in its queue and applies it
// once the server is back; the slot does not wait for it. Should pgderive itself stop
// before then, the store is behind the slot at the next start and is rebuilt.
struct SourceServerStores {
  std::set<std::string> stores;  // postgres stores on the source's own server
  bool idle = false;             // nothing pending in the dispatcher or the assembler
  Lsn received;                  // what the stream has received
};

// The lowest durable checkpoint of `workers` (nullopt without workers): the position
// the slot may be confirmed to. With `on_source`, a store it names that is unhealthy
// but neither detached nor failed counts as at `received` while the stream is idle, and
// is told the slot passed it (PipelineWorker::MarkSlotPassed).
std::optional<Lsn> SlowestDurable(std::span<const std::unique_ptr<PipelineWorker>> workers,
                                  const SourceServerStores* on_source = nullptr);

}  // namespace pgderive
