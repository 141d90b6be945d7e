#pragma once

// pgderive's configuration (SPEC.md §3): one YAML file into immutable typed structs.
// Every key is declared once, in config.cc, with its type and default. Loading reports
// every problem it finds - unknown key, wrong type, missing key, unknown store, unset
// ${VARIABLE} - each with file, line and column, and never quotes a secret.

#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pgderive {

struct ConfigProblem {
  int line = 0;  // 1-based; 0 when the problem is the whole file
  int column = 0;
  std::string key;  // dotted path, e.g. views[1].store
  std::string message;
};

struct SourceConfig {
  std::string dsn;
  std::string slot;         // default pgderive_<pipeline>
  std::string publication;  // default pgderive_<pipeline>
};

enum class StoreType { kRedis, kOpenSearch, kPostgres };

struct StoreConfig {
  std::string name;
  StoreType type = StoreType::kRedis;
  std::string url;  // redis, opensearch
  std::string dsn;  // postgres
};

struct ViewConfig {
  std::string name;
  std::string store;
  std::string from;                                 // schema.table (redis, opensearch)
  std::optional<std::vector<std::string>> columns;  // default: all, following the table
  std::string key_template;                         // redis: "product:{id}"
  std::string index;                                // opensearch
  std::string table;                                // postgres: the target table
  std::vector<std::string> key_columns;             // postgres: key: [..]
  std::string query;                                // postgres
  int line = 0;
};

struct SnapshotConfig {
  // Connections that read an initial snapshot in parallel, each a chunk of a table at a
  // time; they share one exported snapshot.
  int workers = 4;
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
  HttpConfig http;

  // The distinct `from` tables of the views, schema-qualified, in first-use order.
  std::vector<std::string> SourceTables() const;
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

}  // namespace pgderive
