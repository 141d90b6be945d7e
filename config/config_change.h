#pragma once

// What a new version of the configuration file changes against the one a running
// pipeline uses, for a reload (`pgderive reload`, SIGHUP). Pure: two loaded configs in,
// the differences out.
//
//   can change while running        views (added, removed, redefined), stores (added,
//                                   removed, another url/credentials), snapshot.workers,
//                                   source.heartbeat_interval, source.max_retained_wal,
//                                   spool (the next generation opens the log anew)
//   cannot (the reload is refused)  pipeline, source.dsn, source.slot,
//                                   source.publication, http.listen: what names the
//                                   pipeline, holds its lock, or is bound by the process
//   kept until the next start       log.format, log.level (the process's logger)

#include <string>
#include <vector>

#include "config/config.h"

namespace pgderive {

struct ConfigChange {
  // The keys that cannot change while running, each at its value in the new file.
  std::vector<ConfigProblem> refused;
  std::vector<std::string> views_added;
  std::vector<std::string> views_removed;
  // Same name, another definition (store, from, columns, key, index, table, query):
  // rebuilt as a changed definition is at start.
  std::vector<std::string> views_redefined;
  std::vector<std::string> stores_added;
  std::vector<std::string> stores_removed;
  std::vector<std::string> stores_changed;
  // Other keys that apply with the reload (snapshot.workers, heartbeat, ...).
  std::vector<std::string> settings_changed;
  // log.* keys: kept as they are until the process starts again.
  std::vector<std::string> kept_until_restart;

  // Nothing the pipeline would do differently.
  bool empty() const;
  // "views added: a; rebuilt: b; removed: c; stores added: s" ("no change" when empty).
  std::string Summary() const;
};

ConfigChange CompareConfigs(const Config& running, const Config& next);

// Whether two views have the same definition (what they write and from what): the same
// ViewDefinitionFingerprint.
bool SameViewDefinition(const ViewConfig& a, const ViewConfig& b);

// A fingerprint ("v1:" and 16 hex digits) of what decides a view's entries and their
// keys: store, from, columns (as written, with renames and types; absent: following the
// table), key template, index, table, key columns, query. Settings that do not change an
// entry (batch sizes, workers, credentials) do not change it. Row stores record it with
// a view's state, so that a definition changed while pgderive was stopped is rebuilt at
// the next start, as a reload rebuilds it.
std::string ViewDefinitionFingerprint(const ViewConfig& view);

}  // namespace pgderive
