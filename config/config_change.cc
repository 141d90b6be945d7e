#include "config/config_change.h"

#include <cstdint>
#include <map>
#include <string_view>

namespace pgderive {
namespace {

std::string Join(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

bool SameStore(const StoreConfig& a, const StoreConfig& b) {
  return a.type == b.type && a.url == b.url && a.dsn == b.dsn && a.username == b.username &&
         a.password == b.password && a.ca_file == b.ca_file;
}

}  // namespace

std::string ViewDefinitionFingerprint(const ViewConfig& view) {
  // Canonical text: each field named, each value length-prefixed (no two definitions
  // give the same text), then hashed (FNV-1a, 64 bits: stable across builds).
  std::string text;
  auto field = [&](std::string_view name, std::string_view value) {
    text.append(name).append("=").append(std::to_string(value.size())).append(":");
    text.append(value).append(";");
  };
  field("store", view.store);
  field("from", view.from);
  if (view.columns) {
    field("columns", std::to_string(view.columns->size()));
    for (const std::string& c : *view.columns) field("column", c);
  }
  if (view.key) field("key", view.key->text());
  field("index", view.index);
  field("table", view.table);
  field("key_columns", std::to_string(view.key_columns.size()));
  for (const std::string& c : view.key_columns) field("key_column", c);
  field("query", view.query);
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "v1:";
  for (int shift = 60; shift >= 0; shift -= 4) out += kHex[(hash >> shift) & 0xf];
  return out;
}

bool SameViewDefinition(const ViewConfig& a, const ViewConfig& b) {
  return ViewDefinitionFingerprint(a) == ViewDefinitionFingerprint(b);
}

bool ConfigChange::empty() const {
  return refused.empty() && views_added.empty() && views_removed.empty() &&
         views_redefined.empty() && stores_added.empty() && stores_removed.empty() &&
         stores_changed.empty() && settings_changed.empty();
}

std::string ConfigChange::Summary() const {
  std::string out;
  auto part = [&](const std::string& what, const std::vector<std::string>& names) {
    if (!names.empty()) out += (out.empty() ? "" : "; ") + what + ": " + Join(names);
  };
  part("views added", views_added);
  part("views rebuilt", views_redefined);
  part("views removed", views_removed);
  part("stores added", stores_added);
  part("stores changed", stores_changed);
  part("stores removed", stores_removed);
  part("settings changed", settings_changed);
  part("kept until the next start", kept_until_restart);
  return out.empty() ? "no change" : out;
}

ConfigChange CompareConfigs(const Config& running, const Config& next) {
  ConfigChange change;
  auto refuse = [&](const std::string& key, ConfigMark mark, const std::string& was) {
    change.refused.push_back(
        ConfigProblem{mark.line, mark.column, key,
                      "cannot change while pgderive runs (the running pipeline has " + was +
                          "); the running configuration is kept: restart pgderive to change it"});
  };
  if (next.pipeline != running.pipeline) {
    refuse("pipeline", next.MarkOf("pipeline"), "pipeline " + running.pipeline);
  }
  if (next.source.dsn != running.source.dsn) {
    // The DSN may hold a password: never quoted.
    refuse("source.dsn", next.source.MarkOf("dsn"), "another source.dsn");
  }
  if (next.source.slot != running.source.slot) {
    refuse("source.slot", next.source.MarkOf("slot"), "slot " + running.source.slot);
  }
  if (next.source.publication != running.source.publication) {
    refuse("source.publication", next.source.MarkOf("publication"),
           "publication " + running.source.publication);
  }
  if (next.http.listen != running.http.listen) {
    ConfigMark mark = next.MarkOf("http.listen");
    if (mark.line == 0) mark = next.MarkOf("http");
    refuse("http.listen", mark, "http.listen " + running.http.listen);
  }

  std::map<std::string, const ViewConfig*> before;
  for (const ViewConfig& v : running.views) before[v.name] = &v;
  for (const ViewConfig& v : next.views) {
    auto it = before.find(v.name);
    if (it == before.end()) {
      change.views_added.push_back(v.name);
    } else if (!SameViewDefinition(*it->second, v)) {
      change.views_redefined.push_back(v.name);
    } else if (it->second->promote_manual != v.promote_manual ||
               it->second->retain_previous != v.retain_previous) {
      // How its versions switch and how long the previous one is kept: no rebuild.
      change.settings_changed.push_back("view " + v.name + " promote/retain_previous");
    }
  }
  for (const ViewConfig& v : running.views) {
    bool kept = false;
    for (const ViewConfig& n : next.views) kept = kept || n.name == v.name;
    if (!kept) change.views_removed.push_back(v.name);
  }
  for (const auto& [name, store] : next.stores) {
    auto it = running.stores.find(name);
    if (it == running.stores.end()) {
      change.stores_added.push_back(name);
    } else if (!SameStore(it->second, store)) {
      change.stores_changed.push_back(name);
    }
  }
  for (const auto& [name, store] : running.stores) {
    if (!next.stores.contains(name)) change.stores_removed.push_back(name);
  }
  if (next.snapshot.workers != running.snapshot.workers) {
    change.settings_changed.push_back("snapshot.workers");
  }
  if (next.source.heartbeat_seconds != running.source.heartbeat_seconds) {
    change.settings_changed.push_back("source.heartbeat_interval");
  }
  if (next.source.max_retained_wal_bytes != running.source.max_retained_wal_bytes) {
    change.settings_changed.push_back("source.max_retained_wal");
  }
  if (next.spool.enabled != running.spool.enabled || next.spool.dir != running.spool.dir ||
      next.spool.max_bytes != running.spool.max_bytes ||
      next.spool.segment_bytes != running.spool.segment_bytes ||
      next.spool.when_full != running.spool.when_full) {
    change.settings_changed.push_back("spool");
  }
  if (next.verify.continuous != running.verify.continuous ||
      next.verify.rows_per_second != running.verify.rows_per_second ||
      next.verify.repair != running.verify.repair) {
    change.settings_changed.push_back("verify");
  }
  if (next.log.format != running.log.format) change.kept_until_restart.push_back("log.format");
  if (next.log.level != running.log.level) change.kept_until_restart.push_back("log.level");
  return change;
}

}  // namespace pgderive
