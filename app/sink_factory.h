#pragma once

// One Sink per store that has views (of `only_view`, when given).

#include <memory>
#include <optional>
#include <vector>

#include "config/config.h"
#include "sinks/common/sink.h"

namespace pgderive {

Result<std::vector<std::unique_ptr<Sink>>> MakeSinks(
    const Config& config, const std::optional<std::string>& only_view = {});

}  // namespace pgderive
