#include "sinks/common/view_inspector.h"

#include <set>

namespace pgderive {

Result<std::vector<ViewInspector::Entry>> ViewInspector::ReadEntries(
    const std::string& view, const std::vector<std::string>& keys) {
  auto all = ReadView(view);
  if (!all.ok()) return all.error();
  const std::set<std::string> wanted(keys.begin(), keys.end());
  std::vector<Entry> out;
  for (Entry& entry : all.value()) {
    if (wanted.contains(entry.first)) out.push_back(std::move(entry));
  }
  return out;
}

}  // namespace pgderive
