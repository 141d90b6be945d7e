#include "config/view_record.h"

#include <nlohmann/json.hpp>

namespace pgderive {

std::string ViewRecord(const ViewConfig& view) {
  nlohmann::json j = {{"name", view.name}, {"store", view.store}};
  if (!view.from.empty()) j["from"] = view.from;
  if (view.columns) j["columns"] = *view.columns;
  if (view.key) j["key"] = view.key->text();
  if (!view.index.empty()) j["index"] = view.index;
  if (!view.table.empty()) j["table"] = view.table;
  if (!view.key_columns.empty()) j["key_columns"] = view.key_columns;
  if (!view.query.empty()) j["query"] = view.query;
  return j.dump();
}

std::optional<ViewConfig> ViewFromRecord(std::string_view json) {
  auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) return std::nullopt;
  auto text = [&](const char* key) -> std::string {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  auto list = [&](const char* key) -> std::optional<std::vector<std::string>> {
    auto it = j.find(key);
    if (it == j.end() || !it->is_array()) return std::nullopt;
    std::vector<std::string> out;
    for (const auto& item : *it) {
      if (!item.is_string()) return std::nullopt;
      out.push_back(item.get<std::string>());
    }
    return out;
  };
  ViewConfig view;
  view.name = text("name");
  view.store = text("store");
  view.from = text("from");
  view.columns = list("columns");
  if (j.contains("key")) {
    auto key = KeyTemplate::Parse(text("key"));
    if (!key.ok()) return std::nullopt;
    view.key = std::move(key).value();
  }
  view.index = text("index");
  view.table = text("table");
  view.key_columns = list("key_columns").value_or(std::vector<std::string>{});
  view.query = text("query");
  return view;
}

}  // namespace pgderive
