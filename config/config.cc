#include "config/config.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <sstream>

#include "config/redact.h"

namespace pgderive {
namespace {

// Collects problems while walking the document.
class Checker {
 public:
  explicit Checker(std::vector<ConfigProblem>& problems) : problems_(problems) {}

  void Problem(const YAML::Node& node, const std::string& key, std::string message) {
    const YAML::Mark mark = node.IsDefined() ? node.Mark() : YAML::Mark::null_mark();
    problems_.push_back(ConfigProblem{mark.line >= 0 ? mark.line + 1 : 0,
                                      mark.column >= 0 ? mark.column + 1 : 0, key,
                                      RedactSecrets(message)});
  }

  // Keys of `map` that are not in `allowed` are problems.
  void OnlyKeys(const YAML::Node& map, const std::string& path,
                std::initializer_list<const char*> allowed) {
    if (!map.IsMap()) return;
    for (const auto& entry : map) {
      const std::string key = entry.first.Scalar();
      bool known = false;
      for (const char* a : allowed) known = known || key == a;
      if (!known) {
        std::string list;
        for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
        Problem(entry.first, Join(path, key), "unknown key (expected one of: " + list + ")");
      }
    }
  }

  // ${NAME} -> the environment's value; an unset variable is a problem.
  std::string Expand(const YAML::Node& node, const std::string& key, const std::string& text) {
    static const std::regex kVariable(R"(\$\{([A-Za-z_][A-Za-z0-9_]*)\})");
    std::string out;
    auto begin = std::sregex_iterator(text.begin(), text.end(), kVariable);
    size_t last = 0;
    for (auto it = begin; it != std::sregex_iterator(); ++it) {
      out += text.substr(last, static_cast<size_t>(it->position()) - last);
      const std::string name = (*it)[1];
      const char* value = std::getenv(name.c_str());
      if (value == nullptr) {
        Problem(node, key, "environment variable " + name + " is not set");
      } else {
        out += value;
      }
      last = static_cast<size_t>(it->position() + it->length());
    }
    out += text.substr(last);
    return out;
  }

  // A required or optional string scalar.
  std::string String(const YAML::Node& map, const std::string& path, const char* key, bool required,
                     const std::string& fallback = "") {
    const YAML::Node node = map[key];
    if (!node.IsDefined() || node.IsNull()) {
      if (required) Problem(map, Join(path, key), "required key is missing");
      return fallback;
    }
    if (!node.IsScalar()) {
      Problem(node, Join(path, key), "must be a string");
      return fallback;
    }
    return Expand(node, Join(path, key), node.Scalar());
  }

  // An optional integer in [min, max].
  int Integer(const YAML::Node& map, const std::string& path, const char* key, int min, int max,
              int fallback) {
    const YAML::Node node = map[key];
    if (!node.IsDefined() || node.IsNull()) return fallback;
    const std::string text = node.IsScalar() ? Expand(node, Join(path, key), node.Scalar()) : "";
    char* end = nullptr;
    errno = 0;
    const long value = text.empty() ? 0 : std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || errno != 0 || value < min || value > max) {
      Problem(node, Join(path, key),
              "must be a whole number from " + std::to_string(min) + " to " + std::to_string(max));
      return fallback;
    }
    return static_cast<int>(value);
  }

  std::optional<std::vector<std::string>> StringList(const YAML::Node& map, const std::string& path,
                                                     const char* key) {
    const YAML::Node node = map[key];
    if (!node.IsDefined() || node.IsNull()) return std::nullopt;
    if (!node.IsSequence()) {
      Problem(node, Join(path, key), "must be a list of strings, e.g. [id, name]");
      return std::nullopt;
    }
    std::vector<std::string> out;
    for (size_t i = 0; i < node.size(); ++i) {
      if (!node[i].IsScalar() || node[i].Scalar().empty()) {
        Problem(node[i], Join(path, key) + "[" + std::to_string(i) + "]", "must be a column name");
        continue;
      }
      out.push_back(node[i].Scalar());
    }
    return out;
  }

  static std::string Join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

 private:
  std::vector<ConfigProblem>& problems_;
};

bool IsIdentifier(const std::string& text) {
  static const std::regex kIdentifier("[a-z_][a-z0-9_]*");
  return std::regex_match(text, kIdentifier);
}

// "products" -> "public.products"; "sales.orders" stays.
std::string Qualify(const std::string& table) {
  return table.find('.') == std::string::npos ? "public." + table : table;
}

}  // namespace

std::vector<std::string> Config::SourceTables() const {
  std::vector<std::string> tables;
  std::set<std::string> seen;
  for (const ViewConfig& view : views) {
    if (view.from.empty()) continue;
    if (seen.insert(view.from).second) tables.push_back(view.from);
  }
  return tables;
}

std::string ConfigResult::Describe(const std::string& path) const {
  std::string out;
  for (const ConfigProblem& p : problems) {
    out += path;
    if (p.line > 0) out += ":" + std::to_string(p.line) + ":" + std::to_string(p.column);
    out += ": ";
    if (!p.key.empty()) out += p.key + ": ";
    out += p.message + "\n";
  }
  return out;
}

ConfigResult ParseConfig(const std::string& yaml_text, const std::string& path) {
  ConfigResult result;
  Checker check(result.problems);
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    result.problems.push_back(
        ConfigProblem{e.mark.line + 1, e.mark.column + 1, "", "not valid YAML: " + e.msg});
    return result;
  }
  if (!root.IsMap()) {
    result.problems.push_back(ConfigProblem{0, 0, "", "the file must be a YAML mapping"});
    return result;
  }
  check.OnlyKeys(root, "", {"pipeline", "source", "stores", "views", "snapshot", "http"});

  Config config;
  config.path = path;
  config.pipeline = check.String(root, "", "pipeline", true);
  if (!config.pipeline.empty() && !IsIdentifier(config.pipeline)) {
    check.Problem(root["pipeline"], "pipeline",
                  "must be lower-case letters, digits and _ (it names the slot and publication)");
  }

  const YAML::Node source = root["source"];
  if (!source.IsDefined() || !source.IsMap()) {
    check.Problem(source.IsDefined() ? source : root, "source", "required mapping is missing");
  } else {
    check.OnlyKeys(source, "source", {"dsn", "slot", "publication"});
    config.source.dsn = check.String(source, "source", "dsn", true);
    config.source.slot =
        check.String(source, "source", "slot", false, "pgderive_" + config.pipeline);
    config.source.publication =
        check.String(source, "source", "publication", false, "pgderive_" + config.pipeline);
  }

  const YAML::Node stores = root["stores"];
  if (stores.IsDefined() && !stores.IsMap()) {
    check.Problem(stores, "stores", "must be a mapping of store name to its settings");
  } else if (stores.IsDefined()) {
    for (const auto& entry : stores) {
      const std::string name = entry.first.Scalar();
      const std::string path_key = "stores." + name;
      const YAML::Node node = entry.second;
      if (!node.IsMap()) {
        check.Problem(node, path_key, "must be a mapping with at least `type`");
        continue;
      }
      StoreConfig store;
      store.name = name;
      const std::string type = check.String(node, path_key, "type", true);
      if (type == "redis" || type == "opensearch") {
        store.type = type == "redis" ? StoreType::kRedis : StoreType::kOpenSearch;
        check.OnlyKeys(node, path_key, {"type", "url"});
        store.url = check.String(node, path_key, "url", true);
      } else if (type == "postgres") {
        store.type = StoreType::kPostgres;
        check.OnlyKeys(node, path_key, {"type", "dsn"});
        store.dsn = check.String(node, path_key, "dsn", true);
      } else if (!type.empty()) {
        check.Problem(node["type"], path_key + ".type",
                      "unknown store type '" + type + "' (expected redis, opensearch or postgres)");
      }
      config.stores[name] = std::move(store);
    }
  }

  const YAML::Node views = root["views"];
  if (views.IsDefined() && !views.IsSequence()) {
    check.Problem(views, "views", "must be a list of views");
  } else if (views.IsDefined()) {
    std::set<std::string> names;
    for (size_t i = 0; i < views.size(); ++i) {
      const YAML::Node node = views[i];
      const std::string path_key = "views[" + std::to_string(i) + "]";
      if (!node.IsMap()) {
        check.Problem(node, path_key, "must be a mapping");
        continue;
      }
      ViewConfig view;
      view.line = node.Mark().line + 1;
      view.name = check.String(node, path_key, "name", true);
      view.store = check.String(node, path_key, "store", true);
      if (!view.name.empty() && !names.insert(view.name).second) {
        check.Problem(node["name"], path_key + ".name",
                      "another view has the name '" + view.name + "'");
      }
      auto store = config.stores.find(view.store);
      if (!view.store.empty() && store == config.stores.end()) {
        check.Problem(node["store"], path_key + ".store",
                      "no store named '" + view.store + "' under stores");
        check.OnlyKeys(node, path_key,
                       {"name", "store", "from", "columns", "key", "index", "table", "query"});
      } else if (store != config.stores.end()) {
        switch (store->second.type) {
          case StoreType::kRedis:
            check.OnlyKeys(node, path_key, {"name", "store", "from", "columns", "key"});
            view.key_template = check.String(node, path_key, "key", true);
            break;
          case StoreType::kOpenSearch:
            check.OnlyKeys(node, path_key, {"name", "store", "from", "columns", "index"});
            view.index = check.String(node, path_key, "index", true);
            break;
          case StoreType::kPostgres:
            check.OnlyKeys(node, path_key, {"name", "store", "table", "key", "query"});
            view.table = check.String(node, path_key, "table", true);
            view.query = check.String(node, path_key, "query", true);
            if (auto keys = check.StringList(node, path_key, "key")) {
              view.key_columns = *keys;
            } else {
              check.Problem(node, path_key + ".key", "required list of key columns is missing");
            }
            break;
        }
        if (store->second.type != StoreType::kPostgres) {
          view.from = check.String(node, path_key, "from", true);
          if (!view.from.empty()) view.from = Qualify(view.from);
          view.columns = check.StringList(node, path_key, "columns");
        }
      }
      config.views.push_back(std::move(view));
    }
  }

  const YAML::Node snapshot = root["snapshot"];
  if (snapshot.IsDefined() && !snapshot.IsMap()) {
    check.Problem(snapshot, "snapshot", "must be a mapping");
  } else if (snapshot.IsDefined()) {
    check.OnlyKeys(snapshot, "snapshot", {"workers"});
    config.snapshot.workers =
        check.Integer(snapshot, "snapshot", "workers", 1, 64, config.snapshot.workers);
  }

  const YAML::Node http = root["http"];
  if (http.IsDefined() && !http.IsMap()) {
    check.Problem(http, "http", "must be a mapping");
  } else if (http.IsDefined()) {
    check.OnlyKeys(http, "http", {"listen"});
    config.http.listen = check.String(http, "http", "listen", false, config.http.listen);
  }

  if (result.problems.empty()) result.config = std::move(config);
  return result;
}

ConfigResult LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    ConfigResult result;
    result.problems.push_back(ConfigProblem{0, 0, "", "cannot read the file"});
    return result;
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseConfig(text.str(), path);
}

std::optional<Config> LoadConfigOrReport(const std::string& path, std::FILE* err) {
  ConfigResult loaded = LoadConfigFile(path);
  if (!loaded.config) std::fputs(loaded.Describe(path).c_str(), err);
  return std::move(loaded.config);
}

}  // namespace pgderive
