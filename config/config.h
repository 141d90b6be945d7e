#pragma once

// pgderive's configuration (docs/configuration.md): one YAML file into immutable typed
// structs. Every key is declared once, in the key table (ConfigKeys()), with its type,
// default and meaning; the checks and the key reference of docs/configuration.md both
// come from it.
// Loading reports every problem it finds in one go - unknown or duplicate key, wrong
// type, missing key, unknown store, two views writing one target, unset ${VARIABLE},
// a DSN or URL that does not parse - each with file, line and column, and never quotes
// a secret.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/log.h"
#include "base/status.h"
#include "config/key_template.h"

namespace pgderive {

struct ConfigProblem {
  int line = 0;  // 1-based; 0 when the problem is the whole file
  int column = 0;
  std::string key;  // dotted path, e.g. views[1].store
  std::string message;
  // A store that did not answer (connection refused, a timeout, HTTP 5xx): nothing is
  // known to be wrong with the file, the server is down. `run` waits for such a store of
  // a pipeline that already streams; validate reports it like any problem.
  bool unreachable = false;
};

// Where something is written in the file: 1-based line and column; 0 when unknown
// (a Config made in code). The checks that need a server (validate --connect, run)
// report at these, so that each problem points at the value at fault.
struct ConfigMark {
  int line = 0;
  int column = 0;
};
using ConfigMarks = std::map<std::string, ConfigMark>;  // key -> its value as written

struct SourceConfig {
  std::string dsn;
  std::string slot;         // default pgderive_<pipeline>
  std::string publication;  // default pgderive_<pipeline>
  // Seconds between the heartbeats that let an idle slot advance; 0 disables them.
  int heartbeat_seconds = 10;
  // Retained WAL above this many bytes is warned about.
  uint64_t max_retained_wal_bytes = uint64_t{1} << 30;
  // Connections the backfill fills views on, one job (views of one store reading one
  // table) each.
  int snapshot_parallelism = 2;
  int line = 0;  // of the `source` key, for messages about it
  int column = 0;
  ConfigMarks marks;  // dsn, slot, publication, ...: where each value is written

  // Where `key`'s value is written; the `source` key when it is not written.
  ConfigMark MarkOf(const std::string& key) const;
};

enum class StoreType { kRedis, kOpenSearch, kPostgres };

struct StoreConfig {
  std::string name;
  StoreType type = StoreType::kRedis;
  std::string url;  // redis, opensearch; as written (credentials in it stay there)
  std::string dsn;  // postgres
  // redis (AUTH) and opensearch (basic auth); empty when not given. A password in the
  // url's userinfo works too; the two ways are not mixed in one store.
  std::string username;
  std::string password;
  std::string ca_file;  // opensearch over https: the CA bundle to trust
  int line = 0;         // of the store's name under `stores`
  int column = 0;
  ConfigMarks marks;  // url, dsn, ...: where each value is written

  ConfigMark MarkOf(const std::string& key) const;  // the store's name when not written

  // `url` with `username` and `password` (when given) put into its userinfo,
  // percent-encoded: what a client connects to. Never log it (use Url::Redacted()).
  std::string ConnectUrl() const;
};

struct ViewConfig {
  std::string name;
  std::string store;
  std::string from;                                 // schema.table (redis, opensearch)
  std::optional<std::vector<std::string>> columns;  // default: all, following the table
  std::optional<KeyTemplate> key;                   // redis: "product:{id}", parsed
  std::string index;                                // opensearch
  std::string table;                                // postgres: the target table
  std::vector<std::string> key_columns;             // postgres: key: [..]
  std::string query;                                // postgres
  // A changed definition's new version replaces the serving one by `pgderive promote`
  // (promote: manual), not as soon as it is complete (auto).
  bool promote_manual = false;
  // How long the version switched away from is kept, maintained, for a rollback.
  std::chrono::seconds retain_previous{3600};
  int line = 0;  // of the view's entry in `views`
  int column = 0;
  ConfigMarks marks;  // from, key, columns, query, ...: where each value is written
  std::vector<ConfigMark> column_marks;      // columns[i] as written
  std::vector<ConfigMark> key_column_marks;  // postgres: key[i] as written
  ConfigMarks placeholder_marks;             // redis: each {column} of the key template
  // postgres, a query written as a literal block (`query: |`), whose lines are the
  // file's: where each of its lines starts; empty otherwise (one line, or folded).
  std::vector<ConfigMark> query_lines;

  // Where `key`'s value is written; the view's entry when it is not written.
  ConfigMark MarkOf(const std::string& key) const;
  // Where line `n` (1-based) of the query is written: in a literal block its own line,
  // otherwise the query's value.
  ConfigMark QueryLineMark(int n) const;
};

struct SnapshotConfig {
  // Connections that read an initial snapshot in parallel, each a chunk of a table at a
  // time; they share one exported snapshot.
  int workers = 4;
};

// The change log between capture and the stores (docs/configuration.md, "spool").
struct SpoolConfig {
  // On unless `spool: off` (then the slot is confirmed at the slowest store's durable
  // checkpoint). No `spool` section takes every default below.
  bool enabled = true;
  // Where its segments live: absolute, or relative to the configuration file's
  // directory; default `pgderive-spool/<pipeline>` there. Resolved to an absolute path.
  std::string dir;
  uint64_t max_bytes = uint64_t{10} << 30;
  uint64_t segment_bytes = uint64_t{64} << 20;
  // At max_bytes, a store whose checkpoint is still in the oldest segment:
  //   kDetach  is detached, stalled or slow (its views failed, refilled by the backfill
  //            once it answers); the log and the slot move on for the others
  //   kPause   is detached only when stalled; one that answers but is slower than the
  //            writer pauses the capture (the slot holds the WAL) until the log is down
  //            to 3/4 of max_bytes
  enum class WhenFull { kDetach, kPause };
  WhenFull when_full = WhenFull::kDetach;
};

// Whose change log a directory is (spool/ records it in the directory): the pipeline and
// its slot.
struct Config;
std::string ChangeLogOwner(const Config& config);

// The background verifier of `run` (docs/configuration.md, "verify"): Redis and
// OpenSearch views compared with their source tables, chunk by chunk.
struct VerifyConfig {
  bool continuous = true;  // docs/operations.md, "Continuous verification"
  // Source rows it reads a second, for the whole pipeline.
  int64_t rows_per_second = 1000;
  // A chunk that differs is written again through the backfill (else only reported).
  bool repair = true;
};

struct HttpConfig {
  std::string listen = "127.0.0.1:9187";
};

struct Config {
  std::string path;
  std::string pipeline;
  SourceConfig source;
  std::map<std::string, StoreConfig> stores;
  std::vector<ViewConfig> views;
  SnapshotConfig snapshot;
  SpoolConfig spool;
  VerifyConfig verify;
  HttpConfig http;
  LogConfig log;
  // Where the top-level values and those of http, log and spool are written: "pipeline",
  // "http.listen", "log.level", ... (for what reports at a key, as a reload does).
  ConfigMarks marks;

  // Where `key`'s value is written ({0, 0} when it is not written).
  ConfigMark MarkOf(const std::string& key) const;

  // The distinct `from` tables of the views, schema-qualified, in first-use order.
  std::vector<std::string> SourceTables() const;
  // The views' names, in file order (for a message about a name that is not one).
  std::vector<std::string> ViewNames() const;
  // The view named `name`. Error (kPermanent): "FILE: no view named 'x' (views: a, b;
  // did you mean a?)", FILE being the file's path - what a command prints.
  Result<const ViewConfig*> FindView(const std::string& name) const;
};

struct ConfigResult {
  std::optional<Config> config;  // set when there is no problem
  std::vector<ConfigProblem> problems;
  // "FILE:LINE:COLUMN: key: message" lines, one per problem.
  std::string Describe(const std::string& path) const;
};

ConfigResult LoadConfigFile(const std::string& path);
// LoadConfigFile for a command: the problems go to `err` ("FILE:LINE:COLUMN: ..."), and
// nullopt means the command exits 2.
std::optional<Config> LoadConfigOrReport(const std::string& path, std::FILE* err);
ConfigResult ParseConfig(const std::string& yaml_text, const std::string& path);

// One declared key, as the checks use it and docs/configuration.md documents it.
struct ConfigKey {
  std::string section;   // "" (top level), "source", "stores.NAME", "views[]", ...
  std::string name;      // the key within its section
  std::string type;      // "string", "integer", "size", "list of strings", ...
  std::string applies;   // "" (always) or the store types it belongs to: "redis, opensearch"
  std::string fallback;  // the default, "required", or "" (a section without a default)
  std::string meaning;
};
const std::vector<ConfigKey>& ConfigKeys();
// The key reference of docs/configuration.md (Markdown), rendered from ConfigKeys().
std::string ConfigKeyTableMarkdown();

}  // namespace pgderive
