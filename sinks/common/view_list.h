#pragma once

// What every sink does with its list of views (each a unique_ptr to a struct with a
// ViewConfig `config`): names, lookup by name, failed views, the tables each reads.

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "cdc/change_batch.h"

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

// A view's shape cannot be made for the table as it now is (a named column was
// dropped): only this view stops. Marks it failed with the reason; returns true when
// the error is of that kind (permanent), false when the caller must fail as before.
template <typename View>
bool FailView(View& view, const Error& error) {
  if (error.kind() != ErrorKind::kPermanent) return false;
  if (view.failed.empty()) view.failed = error.message();
  return true;
}

template <typename View>
std::vector<std::pair<std::string, std::string>> FailedViews(
    const std::vector<std::unique_ptr<View>>& views) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& view : views) {
    if (!view->failed.empty()) out.emplace_back(view->config.name, view->failed);
  }
  return out;
}

// Each view with the tables it reads: its `from` table, or `tables` when it has them.
template <typename View>
std::vector<std::pair<std::string, std::vector<std::string>>> ViewSources(
    const std::vector<std::unique_ptr<View>>& views) {
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  for (const auto& view : views) {
    if constexpr (requires { view->tables; }) {
      out.emplace_back(view->config.name, view->tables);
    } else {
      out.emplace_back(view->config.name, std::vector<std::string>{view->table});
    }
  }
  return out;
}

}  // namespace pgderive
