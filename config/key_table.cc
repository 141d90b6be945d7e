#include "config/internal/key_table.h"

#include <sstream>

namespace pgderive {
namespace config_keys {

unsigned StoreBit(StoreType type) {
  switch (type) {
    case StoreType::kRedis:
      return kRedis;
    case StoreType::kOpenSearch:
      return kOpenSearch;
    case StoreType::kPostgres:
      return kPostgres;
  }
  return 0;
}

// Every key pgderive reads, once. ParseConfig reads each through this table (type,
// required, default) and rejects any key it does not list; the key reference of
// docs/configuration.md is rendered from it (ConfigKeyTableMarkdown, checked by a unit test).
const std::vector<KeyDef>& Keys() {
  static const std::vector<KeyDef> keys = {
      {"", "pipeline", Kind::kString, 0, true, "required",
       "names the slot, publication and checkpoints: lower-case letters, digits and `_`"},
      {"", "source", Kind::kMapping, 0, true, "required", "the source database"},
      {"", "stores", Kind::kStores, 0, true, "required", "the stores, by name"},
      {"", "views", Kind::kViews, 0, true, "required",
       "the views, at least one; no two may write the same keys, index or table"},
      {"", "snapshot", Kind::kMapping, 0, false, "",
       "reading an exported snapshot (`tail --snapshot`); every fill of `run` is the "
       "backfill"},
      {"", "spool", Kind::kMapping, 0, false, "on, every default",
       "the durable change log between capture and the stores: a mapping of the keys below, or "
       "`off` (the slot then waits for the slowest store)"},
      {"", "verify", Kind::kMapping, 0, false, "on, every default",
       "the background verifier of `run`: compares Redis and OpenSearch views with their "
       "source tables, chunk by chunk, and postgres views with their queries over the store's "
       "mirrors, and repairs what differs; a mapping of the keys below, "
       "`on` (every default) or `off` (only `pgderive verify` compares)"},
      {"", "http", Kind::kMapping, 0, false, "", "the health and metrics endpoint"},
      {"", "log", Kind::kMapping, 0, false, "", "the log lines on stderr"},

      {"source", "dsn", Kind::kString, 0, true, "required",
       "libpq URI or key=value string of the source database, with a host; TLS through "
       "`sslmode`, `sslrootcert`"},
      {"source", "slot", Kind::kString, 0, false, "`pgderive_<pipeline>`",
       "the logical replication slot"},
      {"source", "publication", Kind::kString, 0, false, "`pgderive_<pipeline>`",
       "the publication (created or extended with the views' tables)"},
      {"source", "heartbeat_interval", Kind::kInteger, 0, false, "10",
       "seconds between heartbeat messages that let an idle slot advance; 0 disables them", 0,
       3600},
      {"source", "max_retained_wal", Kind::kByteSize, 0, false, "1GB",
       "retained WAL above this size is warned about: `1GB`, `512MB`, `64kB` or bytes"},
      {"source", "snapshot_parallelism", Kind::kInteger, 0, false, "2",
       "connections that fill views while the stream flows: views of different tables or "
       "stores fill at once, one job a connection (1-64)",
       1, 64},

      {"stores.NAME", "type", Kind::kString, kAnyStore, true, "required",
       "`redis`, `opensearch` or `postgres`"},
      {"stores.NAME", "url", Kind::kString, kRedis | kOpenSearch, true, "required",
       "`redis://[[user]:password@]host:port/db` or `http(s)://[user:password@]host:port`"},
      {"stores.NAME", "username", Kind::kString, kRedis | kOpenSearch, false, "none",
       "the user for Redis AUTH (needs `password`) or OpenSearch basic auth (with `password`)"},
      {"stores.NAME", "password", Kind::kString, kRedis | kOpenSearch, false, "none",
       "for Redis AUTH or OpenSearch basic auth (with `username`); best as `${NAME}`; never "
       "printed"},
      {"stores.NAME", "ca_file", Kind::kString, kOpenSearch, false, "system CAs",
       "CA bundle for an `https://` url; must be readable"},
      {"stores.NAME", "dsn", Kind::kString, kPostgres, true, "required",
       "the target database (libpq URI or key=value, with a host; TLS through `sslmode`)"},

      {"views[]", "name", Kind::kString, kAnyStore, true, "required", "the view's name, unique"},
      {"views[]", "store", Kind::kString, kAnyStore, true, "required",
       "the store it writes, a name under `stores`"},
      {"views[]", "from", Kind::kString, kRedis | kOpenSearch, true, "required",
       "its source table, `schema.table` (default schema `public`)"},
      {"views[]", "columns", Kind::kStringList, kRedis | kOpenSearch, false,
       "all, following the table", "the columns a Redis value / OpenSearch document holds"},
      {"views[]", "key", Kind::kString, kRedis, true, "required",
       "the key template, e.g. `product:{id}`: literal text and `{column}`s of the row key "
       "(the primary key, or the replica identity index)"},
      {"views[]", "index", Kind::kString, kOpenSearch, true, "required",
       "the alias readers query (lower-case); the documents live in `<index>-<n>` behind it"},
      {"views[]", "table", Kind::kString, kPostgres, true, "required",
       "the target table, `schema.table` (default schema `public`)"},
      {"views[]", "key", Kind::kStringList, kPostgres, true, "required",
       "the key columns of the query's result, unique"},
      {"views[]", "query", Kind::kString, kPostgres, true, "required",
       "the query the target table equals"},
      {"views[]", "promote", Kind::kChoice, kOpenSearch | kRedis | kPostgres, false, "auto",
       "when a changed definition's new version replaces the serving one: `auto` once it is "
       "complete and caught up, `manual` by `pgderive promote` (Redis: a changed key template; "
       "a Redis change that keeps it is rebuilt in place and switches when complete; postgres: "
       "a changed key or table is rebuilt, not versioned)",
       0, 0, "auto|manual"},
      {"views[]", "retain_previous", Kind::kDuration, kOpenSearch | kRedis | kPostgres, false, "1h",
       "how long the version switched away from is kept (maintained from the stream) for "
       "`pgderive rollback`: `1h`, `30m`, `90s`, `2d`, or seconds; `0` drops it at once"},

      {"snapshot", "workers", Kind::kInteger, 0, false, "4",
       "connections reading an exported snapshot in parallel, each a chunk of a table; "
       "not the backfill's (`source.snapshot_parallelism`) (1-64)",
       1, 64},
      {"spool", "dir", Kind::kString, 0, false, "`pgderive-spool/<pipeline>`",
       "the log's directory, absolute or relative to the configuration file's directory; "
       "put it on a persistent volume; refused at start when `run` cannot write it, or it "
       "holds other files or another pipeline's log (pgderive removes the log's own files "
       "in it)"},
      {"spool", "max_bytes", Kind::kByteSize, 0, false, "10GB",
       "the log's bound on disk; what happens when it is reached: `when_full`"},
      {"spool", "when_full", Kind::kChoice, 0, false, "detach",
       "`detach`: a store still in the oldest segment at `max_bytes` is detached, stalled (at "
       "once) or slow (after 10 s, the capture paused meanwhile): its views `failed`, then "
       "refilled by the backfill once it answers, and the slot moves on; `pause`: only a stalled "
       "store is detached, a slow one pauses the "
       "capture (the slot holds the WAL) until the log is down to 3/4 of `max_bytes`",
       0, 0, "detach|pause"},
      {"spool", "segment_bytes", Kind::kByteSize, 0, false, "64MB",
       "the size a segment file is closed at; whole segments are removed once every store "
       "passed them"},
      {"verify", "continuous", Kind::kChoice, 0, false, "on",
       "`on`: `run` walks each live Redis and OpenSearch view's keys in chunks, over and over, "
       "comparing the store with the source, and compares each postgres view with its query "
       "over the store's mirrors (digests first); `off`: only `pgderive verify` compares",
       0, 0, "on|off"},
      {"verify", "rows_per_second", Kind::kInteger, 0, false, "1000",
       "the source rows the verifier reads a second, for the whole pipeline (a postgres "
       "view's pass counts its entries) (1-10000000)",
       1, 10000000},
      {"verify", "repair", Kind::kChoice, 0, false, "auto",
       "`auto`: a chunk that differs is written again through the backfill (the stream wins "
       "over it), a postgres view's differing keys recomputed from the mirrors, and checked "
       "again; `report`: differences are only logged and counted",
       0, 0, "auto|report"},
      {"http", "listen", Kind::kString, 0, false, "`127.0.0.1:9187`",
       "`host:port` of `/healthz`, `/readyz`, `/metrics`"},
      {"log", "format", Kind::kChoice, 0, false, "json", "`json` or `logfmt`", 0, 0, "json|logfmt"},
      {"log", "level", Kind::kChoice, 0, false, "info", "`debug`, `info`, `warn` or `error`", 0, 0,
       "debug|info|warn|error"},
  };
  return keys;
}

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kMapping:
      return "mapping";
    case Kind::kStores:
      return "mapping of name to store";
    case Kind::kViews:
      return "list of views";
    case Kind::kString:
      return "string";
    case Kind::kInteger:
      return "integer";
    case Kind::kByteSize:
      return "size";
    case Kind::kChoice:
      return "string";
    case Kind::kStringList:
      return "list of strings";
    case Kind::kDuration:
      return "duration";
  }
  return "";
}

std::string StoreNames(unsigned stores) {
  if (stores == 0 || stores == kAnyStore) return "";
  std::string out;
  for (auto [bit, name] : {std::pair{kRedis, "redis"}, std::pair{kOpenSearch, "opensearch"},
                           std::pair{kPostgres, "postgres"}}) {
    if (stores & bit) out += (out.empty() ? "" : ", ") + std::string(name);
  }
  return out;
}

std::vector<std::string> SplitChoices(const char* choices) {
  std::vector<std::string> out;
  std::stringstream in(choices);
  for (std::string item; std::getline(in, item, '|');) out.push_back(item);
  return out;
}

}  // namespace config_keys

using namespace config_keys;

const std::vector<ConfigKey>& ConfigKeys() {
  static const std::vector<ConfigKey> keys = [] {
    std::vector<ConfigKey> out;
    for (const KeyDef& def : Keys()) {
      out.push_back(ConfigKey{def.section, def.name, KindName(def.kind), StoreNames(def.stores),
                              def.required ? "required" : def.fallback, def.meaning});
    }
    return out;
  }();
  return keys;
}

std::string ConfigKeyTableMarkdown() {
  std::string out = "| key | type | default | meaning |\n| --- | --- | --- | --- |\n";
  for (const ConfigKey& key : ConfigKeys()) {
    const std::string name = key.section.empty() ? key.name : key.section + "." + key.name;
    const std::string meaning =
        key.applies.empty() ? key.meaning : key.applies + ": " + key.meaning;
    out += "| `" + name + "` | " + key.type + " | " +
           (key.fallback.empty() ? "none" : key.fallback) + " | " + meaning + " |\n";
  }
  return out;
}

}  // namespace pgderive
