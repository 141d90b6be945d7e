#pragma once

// A view's versions in its store (SPEC.md §1.4): when a view's definition changes, the
// new version is built next to the serving one, both maintained from the stream - the
// serving one with the definition recorded with it (config/view_record.h), since the
// file no longer has it - until the switch. Then the version switched away from is
// retained (`retain_previous`) and maintained too, so that a rollback can switch back,
// and dropped after. Pure: the store (an OpenSearch alias over generation indexes, a
// postgres table renamed in one transaction) does the I/O; this says what each step
// leaves.
//
//   building --complete, caught up--> ready --promote (auto: at once)--> serving
//   serving --switched away from--> retained --drop_at passed--> dropped
//   rollback: retained -> serving, serving -> ready (held: no automatic promote)
//
// A generation is a store's name for one version's data (`<index>-<n>`, a table). The
// store records the versions with the data, so that a restart continues: a building
// version resumes its backfill, a ready one stays ready, a retained one keeps its drop
// time. A switch is one atomic step in the store (one _aliases call, one transaction)
// followed by its record; a crash between them is recovered from what the store serves
// (Recover).
//
// `promote: manual` holds a version of another definition at ready until `pgderive
// promote`; a rebuild of the same definition (`pgderive backfill`) switches when ready.

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"

namespace pgderive {

struct Versions {
  std::optional<int> serving;
  // Being built from the file's definition, or ready (built and caught up: the view's
  // state is live) and waiting for its promote.
  std::optional<int> building;
  // Switched away from, retained until `drop_at` (unix seconds) for a rollback.
  std::optional<int> previous;
  int64_t drop_at = 0;
  // Rolled back: the ready version is not promoted automatically, only by a promote.
  bool held = false;
  // Each generation's definition (a ViewRecord), where recorded.
  std::map<int, std::string> definitions;

  bool operator==(const Versions&) const = default;
};

// The versions a store records after it found `aliased` serving (what the alias points
// at, the table that holds the view's name): a switch or a rollback made whose record
// was not (a crash in between) is completed. `retain`: seconds the version switched away
// from is kept. Unchanged when `aliased` is what was recorded or none of the view's.
// `retired`: generations to delete soon (AfterPromote).
Versions Recover(Versions recorded, std::optional<int> aliased, int64_t now, int64_t retain,
                 std::vector<int>& retired);

// The versions after the building one becomes the serving one. The serving one before
// is retained for `retain` seconds when it holds another definition than the one
// promoted (a version, not a rebuild of the same definition); returns in `retired` a
// generation to delete soon instead (a rebuild's old data, or a previous one replaced).
Versions AfterPromote(Versions versions, int64_t now, int64_t retain, std::vector<int>& retired);
// The versions after a rollback: the retained one serves again, the one that served is
// ready and held (maintained; `promote` switches to it again).
Versions AfterRollback(Versions versions);

// Why a promote cannot be made now (nullopt: it can). `backfilling`: the building
// version is still filling; `percent`: how far (negative: unknown).
std::optional<std::string> PromoteRefusal(const Versions& versions, const std::string& view,
                                          bool backfilling, double percent);
std::optional<std::string> RollbackRefusal(const Versions& versions, const std::string& view);

// Whether the building version switches as soon as it is ready: not held by a rollback,
// and promote auto - or a rebuild of the serving version's own definition.
bool SwitchesOnReady(const Versions& versions, bool manual);
// Whether the building version holds another definition than the serving one (a
// version, not a rebuild).
bool OtherThanServing(const Versions& versions);

// The kept generations (serving, previous) that hold another definition than `file`
// (the file's ViewRecord): each is maintained with its recorded definition. The others
// (and the building one) are written with the file's.
std::vector<std::pair<int, std::string>> OtherDefinitions(const Versions& versions,
                                                          const std::string& file);

// Whether the retained version's time is up.
bool PreviousDue(const Versions& versions, int64_t now);

// Unix seconds as "2026-11-30T01:23:45Z".
std::string UnixTimeText(int64_t seconds);

// How a version is shown (status, /status, metrics).
struct VersionInfo {
  std::string view;
  int generation = 0;
  std::string where;    // the index or table holding it
  std::string state;    // building, ready, serving, retained
  int64_t drop_at = 0;  // retained: unix seconds
};
std::vector<VersionInfo> Describe(const Versions& versions, const std::string& view,
                                  bool backfilling, const std::function<std::string(int)>& where);

// The versions as a store records them (Redis: a hash field; OpenSearch: the view's
// state document): {"serving", "building", "previous": n or null, "drop_at" (with
// "previous"), "held" (when set), "definitions": {"n": ViewRecord}}.
nlohmann::json VersionsToJson(const Versions& versions);
// The other way; what is missing or of another type is taken as absent (a record of an
// older pgderive), a "definitions" key that is no generation number is skipped.
Versions VersionsFromJson(const nlohmann::json& j);

}  // namespace pgderive
