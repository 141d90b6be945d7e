#pragma once

// One Sink per store that has views (of `only_view`, when given).

#include <memory>
#include <optional>
#include <vector>

#include "config/config.h"
#include "sinks/common/sink.h"
#include "sinks/common/view_inspector.h"

namespace pgderive {

Result<std::vector<std::unique_ptr<Sink>>> MakeSinks(
    const Config& config, const std::optional<std::string>& only_view = {});

// A store as `verify` sees it: the write-path contract (to connect, read the checkpoint
// and the views' states) and the inspection of its views, one object behind both.
struct InspectedStore {
  std::unique_ptr<Sink> sink;
  ViewInspector* inspector = nullptr;  // the same object as `sink`
};
Result<std::vector<InspectedStore>> MakeInspectedStores(
    const Config& config, const std::optional<std::string>& only_view = {});

}  // namespace pgderive
