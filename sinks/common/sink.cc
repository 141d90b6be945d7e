#include "sinks/common/sink.h"

#include <algorithm>

namespace pgderive {

std::vector<std::string> Sink::tables() const {
  std::vector<std::string> out;
  for (const auto& [view, tables] : view_sources()) {
    for (const std::string& table : tables) {
      if (std::find(out.begin(), out.end(), table) == out.end()) out.push_back(table);
    }
  }
  return out;
}

}  // namespace pgderive
