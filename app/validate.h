#pragma once

// `pgderive validate` (SPEC.md §2): checks a configuration without changing anything.
//
// Offline, it is the configuration loader's checks (config/config.h): every problem of
// the file, each with file, line and column. With `connect`, it also asks the servers,
// with read-only queries only (the source session is set to read-only transactions, so
// a mistake here could not write either):
//   - the source: reachable; wal_level = logical; a replication slot free (unless the
//     pipeline's slot exists, and then it must be a pgoutput slot of this database);
//     the role has REPLICATION (or is superuser) and can open a replication connection;
//     the publication, if it exists, publishes every operation, and if it must be
//     created or extended the role may do so (CREATE on the database, owner of the
//     tables);
//   - every table a view reads (`from`, and the tables a postgres view's query reads):
//     exists, has a replica identity pgderive can use, the role may SELECT it; every
//     column a view names (its `columns` and its key template's placeholders) exists
//     and a key column is in the replica identity; a postgres view's query can be
//     maintained and its key is unique;
//   - every store a view uses: reachable, its version printed; a postgres store lets the
//     role create what `run` creates there.
// Every failed check is listed, each naming its source, store, view or table.

#include <cstdio>
#include <string>
#include <vector>

#include "config/config.h"

namespace pgderive {

struct ValidateOptions {
  std::string config_path;
  bool connect = false;  // also check the source and the stores
  std::FILE* out = stdout;
};

// 0 when valid (a one-line summary is printed); 2 when anything is wrong (every problem
// printed as "FILE:LINE:COLUMN: key: message").
int RunValidate(const ValidateOptions& options);

// The --connect checks of a loaded configuration, for any command that must not start
// on a source or store that cannot work: every problem found (none when all is well),
// each at the line of the file it concerns (ConfigResult::Describe prints them). What
// each server is (its version) goes to `info` as one line per server, when not null.
// Read-only, like all of validate.
// `slot_exists` (when not null): whether the source's slot exists (the pipeline has
// streamed before); false also when the source could not be read.
std::vector<ConfigProblem> CheckConnected(const Config& config, std::FILE* info = nullptr,
                                          bool* slot_exists = nullptr);
// The same checks of one store of the configuration alone (`run` waiting for a store that
// did not answer). A store that still does not answer: ConfigProblem::unreachable.
std::vector<ConfigProblem> CheckConnectedStore(const Config& config, const std::string& store);

}  // namespace pgderive
