#pragma once

// What every sink does with its list of views (each a unique_ptr to a struct with a
// ViewConfig `config`): names, lookup by name, the distinct source tables.

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace pgderive {

template <typename View>
std::vector<std::string> ViewNames(const std::vector<std::unique_ptr<View>>& views) {
  std::vector<std::string> out;
  for (const auto& view : views) out.push_back(view->config.name);
  return out;
}

template <typename View>
View* FindView(const std::vector<std::unique_ptr<View>>& views, const std::string& name) {
  for (const auto& view : views) {
    if (view->config.name == name) return view.get();
  }
  return nullptr;
}

// The views' `from` tables, each once, in order.
template <typename View>
std::vector<std::string> ViewTables(const std::vector<std::unique_ptr<View>>& views) {
  std::vector<std::string> out;
  for (const auto& view : views) {
    if (std::find(out.begin(), out.end(), view->config.from) == out.end()) {
      out.push_back(view->config.from);
    }
  }
  return out;
}

}  // namespace pgderive
