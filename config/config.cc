#include "config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "base/names.h"
#include "base/redact.h"
#include "config/dsn.h"
#include "config/grammar.h"
#include "config/internal/key_table.h"
#include "config/key_template.h"
#include "config/url.h"

namespace pgderive {
namespace {

using namespace config_keys;  // the key table (key_table.h)

std::string Join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}
std::string DescribeNode(const YAML::Node& node) {
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  if (node.IsNull()) return "empty";
  return "a string";
}
// ---------------------------------------------------------------- the checker

int LineOf(const YAML::Mark& mark) { return mark.line >= 0 ? mark.line + 1 : 0; }
int ColumnOf(const YAML::Mark& mark) { return mark.column >= 0 ? mark.column + 1 : 0; }
ConfigMark MarkFrom(const YAML::Mark& mark) { return ConfigMark{LineOf(mark), ColumnOf(mark)}; }

// Where each value of a mapping is written (an empty value: its key), for the checks
// made later against the servers.
ConfigMarks ValueMarks(const YAML::Node& map) {
  ConfigMarks marks;
  if (!map.IsMap()) return marks;
  for (const auto& entry : map) {
    if (!entry.first.IsScalar()) continue;
    marks[entry.first.Scalar()] =
        MarkFrom(entry.second.IsNull() ? entry.first.Mark() : entry.second.Mark());
  }
  return marks;
}

// The marks of a list's items.
std::vector<ConfigMark> ItemMarks(const YAML::Node& list) {
  std::vector<ConfigMark> marks;
  if (!list.IsSequence()) return marks;
  for (size_t i = 0; i < list.size(); ++i) marks.push_back(MarkFrom(list[i].Mark()));
  return marks;
}

// The file's lines, for what a Mark alone does not tell (where in a key template a
// {column} is; whether a value is a literal block).
class SourceText {
 public:
  explicit SourceText(const std::string& text) {
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines_.push_back(line);
  }
  // Line `line` (1-based), or "".
  const std::string& Line(int line) const {
    static const std::string kNone;
    return line >= 1 && static_cast<size_t>(line) <= lines_.size() ? lines_[line - 1] : kNone;
  }
  // Where `needle` first appears at or after `from` on its line; `from` when it does not.
  ConfigMark Find(ConfigMark from, const std::string& needle) const {
    const std::string& text = Line(from.line);
    if (from.column < 1) return from;
    const size_t at = text.find(needle, static_cast<size_t>(from.column - 1));
    if (at == std::string::npos) return from;
    return ConfigMark{from.line, static_cast<int>(at) + 1};
  }
  // For a literal block scalar (`|`, `|-`, `|+`) at `value`: where each of its text
  // lines starts (its first non-blank character); empty for any other value.
  std::vector<ConfigMark> LiteralBlock(ConfigMark value) const {
    const std::string& head = Line(value.line);
    if (value.column < 1 || static_cast<size_t>(value.column) > head.size() ||
        head[value.column - 1] != '|') {
      return {};
    }
    // The block's indentation is its first non-blank line's; it ends at a line indented
    // less. Blank lines inside it are lines of the text too.
    std::vector<ConfigMark> lines;
    size_t indent = std::string::npos;
    for (int line = value.line + 1; static_cast<size_t>(line) <= lines_.size(); ++line) {
      const std::string& body = Line(line);
      const size_t first = body.find_first_not_of(' ');
      if (first == std::string::npos) {
        lines.push_back(ConfigMark{line, 1});
        continue;
      }
      if (indent == std::string::npos) indent = first;
      if (first < indent) break;
      lines.push_back(ConfigMark{line, static_cast<int>(first) + 1});
    }
    while (!lines.empty() && Line(lines.back().line).find_first_not_of(' ') == std::string::npos) {
      lines.pop_back();  // trailing blank lines end the block
    }
    return lines;
  }

 private:
  std::vector<std::string> lines_;
};

// Collects problems while walking the document.
class Checker {
 public:
  explicit Checker(std::vector<ConfigProblem>& problems) : problems_(problems) {}

  void Problem(const YAML::Mark& mark, const std::string& key, const std::string& message) {
    problems_.push_back(ConfigProblem{LineOf(mark), ColumnOf(mark), key, RedactSecrets(message)});
  }
  void Problem(const YAML::Node& node, const std::string& key, const std::string& message) {
    Problem(node.IsDefined() ? node.Mark() : YAML::Mark::null_mark(), key, message);
  }

  // ${NAME} -> the environment's value; an unset variable is a problem, the only one
  // about this value (nullopt: its reader says nothing more).
  std::optional<std::string> Expand(const YAML::Node& node, const std::string& key,
                                    const std::string& text) {
    static const std::regex kVariable(R"(\$\{([A-Za-z_][A-Za-z0-9_]*)\})");
    std::string out;
    auto begin = std::sregex_iterator(text.begin(), text.end(), kVariable);
    size_t last = 0;
    bool unset = false;
    for (auto it = begin; it != std::sregex_iterator(); ++it) {
      out += text.substr(last, static_cast<size_t>(it->position()) - last);
      const std::string name = (*it)[1];
      const char* value = std::getenv(name.c_str());
      if (value == nullptr) {
        Problem(node, key, "environment variable " + name + " is not set");
        unset = true;
      } else {
        out += value;
      }
      last = static_cast<size_t>(it->position() + it->length());
    }
    out += text.substr(last);
    if (unset) return std::nullopt;
    return out;
  }

  // yaml-cpp keeps every entry of a mapping but finds only the first when asked for a
  // key, so a repeated key would silently lose one value: each repetition, anywhere in
  // the document, is a problem that says where the first one is.
  void DuplicateKeys(const YAML::Node& node, const std::string& path) {
    if (node.IsSequence()) {
      for (size_t i = 0; i < node.size(); ++i) {
        DuplicateKeys(node[i], path + "[" + std::to_string(i) + "]");
      }
      return;
    }
    if (!node.IsMap()) return;
    std::map<std::string, YAML::Mark> seen;
    for (const auto& entry : node) {
      const std::string key = entry.first.IsScalar() ? entry.first.Scalar() : "";
      auto [first, inserted] = seen.emplace(key, entry.first.Mark());
      if (!inserted) {
        Problem(entry.first, Join(path, key),
                "duplicate key: the first `" + key + "` is at line " +
                    std::to_string(LineOf(first->second)) + ", column " +
                    std::to_string(ColumnOf(first->second)) +
                    " (YAML would silently keep only one of them)");
      }
      DuplicateKeys(entry.second, Join(path, key));
    }
  }

 private:
  std::vector<ConfigProblem>& problems_;
};

// The mark of the key `name` in `map` (where a problem about its value's absence or
// its section belongs), or the map's own mark.
YAML::Mark KeyMark(const YAML::Node& map, const std::string& name) {
  if (map.IsMap()) {
    for (const auto& entry : map) {
      if (entry.first.IsScalar() && entry.first.Scalar() == name) return entry.first.Mark();
    }
  }
  return map.IsDefined() ? map.Mark() : YAML::Mark::null_mark();
}

// One mapping of the document read through the key table: its keys are checked against
// the section's declared keys, and each value is read by the kind its key declares.
class Section {
 public:
  // `owner`: where a missing key of this section is reported (the key naming it).
  Section(Checker& check, YAML::Node map, std::string section, std::string path, YAML::Mark owner)
      : check_(check),
        map_(std::move(map)),
        section_(std::move(section)),
        path_(std::move(path)),
        owner_(owner) {}

  // Keys the section does not declare (for `stores`, the store types in `stores`).
  void CheckKeys(unsigned stores = kAnyStore) {
    stores_ = stores;
    if (!map_.IsMap()) return;
    std::vector<std::string> allowed;
    for (const KeyDef& def : Keys()) {
      if (section_ != def.section || !Applies(def, stores)) continue;
      if (std::find(allowed.begin(), allowed.end(), def.name) == allowed.end()) {
        allowed.push_back(def.name);
      }
    }
    for (const auto& entry : map_) {
      const std::string key = entry.first.IsScalar() ? entry.first.Scalar() : "";
      if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
      std::string list;
      for (const std::string& a : allowed) list += (list.empty() ? "" : ", ") + a;
      std::string message = "unknown key (expected one of: " + list + ")";
      for (const KeyDef& def : Keys()) {
        if (section_ == def.section && key == def.name && def.stores != 0) {
          message += "; `" + key + "` is for " + StoreNames(def.stores) + " " +
                     (section_ == "views[]" ? "views" : "stores");
          break;
        }
      }
      check_.Problem(entry.first, Join(path_, key), message);
    }
  }

  const YAML::Node& map() const { return map_; }
  const std::string& path() const { return path_; }
  std::string KeyPath(const std::string& name) const { return Join(path_, name); }
  YAML::Node Node(const std::string& name) const { return map_[name]; }
  bool Has(const std::string& name) const {
    const YAML::Node node = map_[name];
    return node.IsDefined() && !node.IsNull();
  }

  // A string; nullopt when absent (a missing required key is reported) or wrong.
  std::optional<std::string> String(const std::string& name) {
    const KeyDef* def = Def(name, Kind::kString);
    const YAML::Node node = map_[name];
    if (!Present(def, node)) return std::nullopt;
    if (!node.IsScalar()) {
      check_.Problem(node, KeyPath(name), "must be a string, not " + DescribeNode(node));
      return std::nullopt;
    }
    const std::optional<std::string> expanded = check_.Expand(node, KeyPath(name), node.Scalar());
    if (!expanded) return std::nullopt;
    const std::string& value = *expanded;
    if (def->required && value.empty()) {
      check_.Problem(node, KeyPath(name), "must not be empty");
      return std::nullopt;
    }
    return value;
  }

  // An integer in the declared range; its default when absent or wrong.
  long long Integer(const std::string& name) {
    const KeyDef* def = Def(name, Kind::kInteger);
    const long long fallback = ParseInteger(def->fallback, def->min, def->max).value_or(0);
    const YAML::Node node = map_[name];
    if (!Present(def, node)) return fallback;
    const std::optional<std::string> text =
        node.IsScalar() ? check_.Expand(node, KeyPath(name), node.Scalar()) : "";
    if (!text) return fallback;
    const auto value = node.IsScalar() ? ParseInteger(*text, def->min, def->max) : std::nullopt;
    if (!value) {
      check_.Problem(node, KeyPath(name),
                     "must be a whole number from " + std::to_string(def->min) + " to " +
                         std::to_string(def->max));
      return fallback;
    }
    return *value;
  }

  uint64_t ByteSize(const std::string& name) {
    const KeyDef* def = Def(name, Kind::kByteSize);
    const uint64_t fallback = ParseByteSize(def->fallback).value_or(0);
    const YAML::Node node = map_[name];
    if (!Present(def, node)) return fallback;
    const std::optional<std::string> text =
        node.IsScalar() ? check_.Expand(node, KeyPath(name), node.Scalar()) : "";
    if (!text) return fallback;
    const auto value = node.IsScalar() ? ParseByteSize(*text) : std::nullopt;
    if (!value || *value == 0) {
      check_.Problem(node, KeyPath(name),
                     "must be a size above 0 such as 1GB, 512MB, 64kB or a number of bytes");
      return fallback;
    }
    return *value;
  }

  // The index of the value among the declared choices; the default's when absent/wrong.
  size_t Choice(const std::string& name) {
    const KeyDef* def = Def(name, Kind::kChoice);
    const std::vector<std::string> choices = SplitChoices(def->choices);
    auto index_of = [&](const std::string& text) {
      return static_cast<size_t>(std::find(choices.begin(), choices.end(), text) - choices.begin());
    };
    const size_t fallback = index_of(def->fallback);
    const YAML::Node node = map_[name];
    if (!Present(def, node)) return fallback;
    const std::optional<std::string> text =
        node.IsScalar() ? check_.Expand(node, KeyPath(name), node.Scalar()) : "";
    if (!text) return fallback;
    const size_t index = node.IsScalar() ? index_of(*text) : choices.size();
    if (index >= choices.size()) {
      std::string list;
      for (const std::string& c : choices) list += (list.empty() ? "" : ", ") + c;
      check_.Problem(node, KeyPath(name), "must be one of: " + list);
      return fallback;
    }
    return index;
  }

  // Seconds; the default's when absent or wrong.
  uint64_t Duration(const std::string& name) {
    const KeyDef* def = Def(name, Kind::kDuration);
    const uint64_t fallback = ParseDuration(def->fallback).value_or(0);
    const YAML::Node node = map_[name];
    if (!Present(def, node)) return fallback;
    const std::optional<std::string> text =
        node.IsScalar() ? check_.Expand(node, KeyPath(name), node.Scalar()) : "";
    if (!text) return fallback;
    const auto value = node.IsScalar() ? ParseDuration(*text) : std::nullopt;
    if (!value) {
      check_.Problem(node, KeyPath(name),
                     "must be a duration such as 1h, 30m, 90s, 2d or a number of seconds");
      return fallback;
    }
    return *value;
  }

  std::optional<std::vector<std::string>> StringList(const std::string& name) {
    const KeyDef* def = Def(name, Kind::kStringList);
    const YAML::Node node = map_[name];
    if (!Present(def, node)) return std::nullopt;
    if (!node.IsSequence()) {
      check_.Problem(node, KeyPath(name),
                     "must be a list of strings, e.g. [id, name], not " + DescribeNode(node));
      return std::nullopt;
    }
    std::vector<std::string> out;
    std::map<std::string, YAML::Mark> seen;
    for (size_t i = 0; i < node.size(); ++i) {
      const std::string item_path = KeyPath(name) + "[" + std::to_string(i) + "]";
      if (!node[i].IsScalar() || node[i].Scalar().empty()) {
        check_.Problem(node[i], item_path, "must be a column name");
        continue;
      }
      const std::optional<std::string> expanded =
          check_.Expand(node[i], item_path, node[i].Scalar());
      if (!expanded) continue;
      const std::string& value = *expanded;
      auto [first, inserted] = seen.emplace(value, node[i].Mark());
      if (!inserted) {
        check_.Problem(node[i], item_path,
                       "column " + value + " is listed twice (first at line " +
                           std::to_string(LineOf(first->second)) + ")");
        continue;
      }
      out.push_back(value);
    }
    if (def->required && out.empty() && node.size() == 0) {
      check_.Problem(node, KeyPath(name), "must name at least one column");
    }
    return out;
  }

  // The value of a mapping or list key, or nullopt when absent (a missing required one
  // is reported) or of another shape.
  std::optional<YAML::Node> Container(const std::string& name) {
    const KeyDef* def = Def(name, Kind::kMapping);
    const bool list = def->kind == Kind::kViews;
    const YAML::Node node = map_[name];
    if (!node.IsDefined()) {
      if (def->required) {
        check_.Problem(owner_, KeyPath(name),
                       list ? "required list is missing" : "required mapping is missing");
      }
      return std::nullopt;
    }
    if (list ? !node.IsSequence() : !node.IsMap()) {
      check_.Problem(node.IsNull() ? KeyMark(map_, name) : node.Mark(), KeyPath(name),
                     std::string(list ? "must be a list" : "must be a mapping") + ", not " +
                         DescribeNode(node));
      return std::nullopt;
    }
    return node;
  }

  // An absent mapping key read as an empty mapping: its keys' defaults.
  std::optional<Section> EmptyChild(const std::string& name) {
    return Section(check_, YAML::Node(YAML::NodeType::Map), KeyPath(name), KeyPath(name),
                   KeyMark(map_, name));
  }

  // A section below this one, its keys checked; nullopt as for Container().
  std::optional<Section> Child(const std::string& name) {
    auto node = Container(name);
    if (!node) return std::nullopt;
    Section child(check_, *node, KeyPath(name), KeyPath(name), KeyMark(map_, name));
    child.CheckKeys();
    return child;
  }

 private:
  static bool Applies(const KeyDef& def, unsigned stores) {
    return def.stores == 0 || (def.stores & stores) != 0;
  }

  // The declared key; every reader names one, so a miss is a bug in this file, caught
  // by the unit tests (every key of the table is read by the full example).
  const KeyDef* Def(const std::string& name, Kind kind) const {
    for (const KeyDef& def : Keys()) {
      if (section_ == def.section && name == def.name && Applies(def, stores_) &&
          (def.kind == kind ||
           (kind == Kind::kMapping && (def.kind == Kind::kStores || def.kind == Kind::kViews)))) {
        return &def;
      }
    }
    static const KeyDef kUndeclared{"", "", Kind::kString, 0, false, "", "undeclared"};
    check_.Problem(owner_, KeyPath(name), "internal error: the key is not declared");
    return &kUndeclared;
  }

  // Whether the value is there to read; reports a required key that is absent or empty.
  bool Present(const KeyDef* def, const YAML::Node& node) {
    if (!node.IsDefined()) {
      if (def->required) check_.Problem(owner_, KeyPath(def->name), "required key is missing");
      return false;
    }
    if (node.IsNull()) {
      // `key:` with nothing after it is a slip (a value lost in an edit), never a way to
      // ask for the default: taken silently, it would change what the view does.
      std::string message = def->required ? "required key has no value" : "key has no value";
      if (!def->required && def->fallback != nullptr && *def->fallback != '\0') {
        message += "; leave it out for the default (" + std::string(def->fallback) + ")";
      } else if (!def->required) {
        message += "; leave it out if it is not wanted";
      }
      check_.Problem(KeyMark(map_, def->name), KeyPath(def->name), message);
      return false;
    }
    return true;
  }

  Checker& check_;
  YAML::Node map_;
  std::string section_;
  std::string path_;
  YAML::Mark owner_;
  unsigned stores_ = kAnyStore;
};

// Where each view writes, for the check that no two views write the same target.
struct Target {
  size_t view = 0;
  std::string store;
  StoreType type = StoreType::kRedis;
  std::string what;  // redis: the key prefix; opensearch: the index; postgres: the table
  YAML::Mark mark;
  std::string key_path;
};

void CheckTargets(Checker& check, const std::vector<Target>& targets,
                  const std::vector<ViewConfig>& views) {
  for (size_t b = 0; b < targets.size(); ++b) {
    for (size_t a = 0; a < b; ++a) {
      const Target& first = targets[a];
      const Target& second = targets[b];
      if (first.store != second.store || first.type != second.type) continue;
      const std::string other = "views[" + std::to_string(first.view) + "] (" +
                                views[first.view].name + ", line " +
                                std::to_string(views[first.view].line) + ")";
      std::string message;
      if (second.type == StoreType::kRedis) {
        if (first.what == second.what) {
          message = "writes the same Redis keys as " + other +
                    ": both key templates start with \"" + second.what +
                    "\" before their first {column}";
        } else if (second.what.starts_with(first.what) || first.what.starts_with(second.what)) {
          message = "key prefix \"" + second.what + "\" overlaps \"" + first.what + "\" of " +
                    other +
                    ": a truncate or rebuild of one view (SCAN MATCH prefix*) would delete the "
                    "other's keys";
        }
      } else if (first.what == second.what) {
        message = (second.type == StoreType::kOpenSearch ? "writes the same index " + second.what
                                                         : "writes the same table " + second.what) +
                  " as " + other + "; each view needs its own";
      }
      if (!message.empty()) {
        check.Problem(second.mark, second.key_path, message);
        break;  // one report per view
      }
    }
  }
}

// The checks of one store beyond the types of its keys.
void CheckStore(Checker& check, Section& s, const StoreConfig& store) {
  if (store.type == StoreType::kPostgres) {
    if (!store.dsn.empty()) {
      if (auto why = DsnProblem(store.dsn)) check.Problem(s.Node("dsn"), s.KeyPath("dsn"), *why);
    }
    return;
  }
  std::optional<Url> url;
  if (!store.url.empty()) {
    std::string why;
    url = Url::Parse(store.url, &why);
    if (!url) {
      check.Problem(s.Node("url"), s.KeyPath("url"), "is not a valid URL: " + why);
    } else if (store.type == StoreType::kRedis) {
      const std::string db = url->path.empty() ? "" : url->path.substr(1);
      if (url->scheme != "redis") {
        check.Problem(s.Node("url"), s.KeyPath("url"),
                      "must start with redis:// (" + url->scheme +
                          ":// is not supported: no TLS in the Debian 12 hiredis 0.14)");
      } else if (!db.empty() && (db.size() > 5 || !std::all_of(db.begin(), db.end(), [](char c) {
                                   return std::isdigit(static_cast<unsigned char>(c));
                                 }))) {
        check.Problem(s.Node("url"), s.KeyPath("url"),
                      "the path must be a database number, e.g. redis://host:6379/0");
      }
    } else if (url->scheme != "http" && url->scheme != "https") {
      check.Problem(s.Node("url"), s.KeyPath("url"), "must start with http:// or https://");
    }
  }
  const bool url_credentials = url && (!url->user.empty() || url->password.has_value());
  if (url_credentials && (s.Has("username") || s.Has("password"))) {
    check.Problem(s.Node(s.Has("username") ? "username" : "password"),
                  s.KeyPath(s.Has("username") ? "username" : "password"),
                  "the url has credentials too: give them either in the url or as "
                  "username/password");
  }
  if (store.type == StoreType::kOpenSearch) {
    if (s.Has("username") != s.Has("password")) {
      const std::string given = s.Has("username") ? "username" : "password";
      check.Problem(s.Node(given), s.KeyPath(given),
                    "basic auth needs both username and password (or neither)");
    }
    if (!store.ca_file.empty()) {
      std::error_code ec;
      if (!std::filesystem::is_regular_file(store.ca_file, ec) ||
          !std::ifstream(store.ca_file).good()) {
        check.Problem(s.Node("ca_file"), s.KeyPath("ca_file"),
                      "cannot read the CA file " + store.ca_file);
      } else if (url && url->scheme != "https") {
        check.Problem(s.Node("ca_file"), s.KeyPath("ca_file"),
                      "is only used over TLS: the url must start with https://");
      }
    }
  } else if (s.Has("username") && !s.Has("password")) {
    check.Problem(s.Node("username"), s.KeyPath("username"),
                  "Redis AUTH with a username needs a password too");
  }
}

}  // namespace

// ---------------------------------------------------------------- public API

std::string StoreConfig::ConnectUrl() const {
  if (username.empty() && password.empty()) return url;
  return AddUserinfo(url, username, password);
}

namespace {
ConfigMark MarkIn(const ConfigMarks& marks, const std::string& key, ConfigMark fallback) {
  auto it = marks.find(key);
  return it == marks.end() ? fallback : it->second;
}
}  // namespace

ConfigMark Config::MarkOf(const std::string& key) const {
  auto it = marks.find(key);
  return it == marks.end() ? ConfigMark{} : it->second;
}

ConfigMark SourceConfig::MarkOf(const std::string& key) const {
  return MarkIn(marks, key, {line, column});
}
ConfigMark StoreConfig::MarkOf(const std::string& key) const {
  return MarkIn(marks, key, {line, column});
}
ConfigMark ViewConfig::MarkOf(const std::string& key) const {
  return MarkIn(marks, key, {line, column});
}
ConfigMark ViewConfig::QueryLineMark(int n) const {
  if (n >= 1 && static_cast<size_t>(n) <= query_lines.size()) return query_lines[n - 1];
  return MarkOf("query");
}

std::vector<std::string> Config::ViewNames() const {
  std::vector<std::string> names;
  for (const ViewConfig& view : views) names.push_back(view.name);
  return names;
}

Result<const ViewConfig*> Config::FindView(const std::string& name) const {
  for (const ViewConfig& view : views) {
    if (view.name == name) return &view;
  }
  return Error(ErrorKind::kPermanent,
               path + ": no view named '" + name + "' " + ValidNames(name, ViewNames(), "views"));
}

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
    result.problems.push_back(ConfigProblem{e.mark.line + 1, e.mark.column + 1, "",
                                            "not valid YAML: " + RedactSecrets(e.msg)});
    return result;
  }
  if (!root.IsMap()) {
    result.problems.push_back(ConfigProblem{0, 0, "", "the file must be a YAML mapping"});
    return result;
  }
  check.DuplicateKeys(root, "");
  const SourceText text(yaml_text);
  Section top(check, root, "", "", root.Mark());
  top.CheckKeys();

  Config config;
  config.path = path;
  config.marks = ValueMarks(root);
  for (const char* section : {"http", "log", "spool", "verify"}) {
    const YAML::Node node = static_cast<const YAML::Node&>(root)[section];
    if (!node || !node.IsMap()) continue;
    for (const auto& [key, mark] : ValueMarks(node)) {
      config.marks[std::string(section) + "." + key] = mark;
    }
  }
  config.pipeline = top.String("pipeline").value_or("");
  if (!config.pipeline.empty() && !IsIdentifier(config.pipeline)) {
    check.Problem(top.Node("pipeline"), "pipeline",
                  "must be lower-case letters, digits and _ (it names the slot and publication)");
  }

  if (auto source = top.Child("source")) {
    const YAML::Mark mark = KeyMark(root, "source");
    config.source.line = LineOf(mark);
    config.source.column = ColumnOf(mark);
    config.source.marks = ValueMarks(source->map());
    config.source.dsn = source->String("dsn").value_or("");
    if (!config.source.dsn.empty()) {
      if (auto why = DsnProblem(config.source.dsn)) {
        check.Problem(source->Node("dsn"), "source.dsn", *why);
      }
    }
    const std::string derived = "pgderive_" + config.pipeline;
    config.source.slot = source->String("slot").value_or(derived);
    config.source.publication = source->String("publication").value_or(derived);
    if (source->Has("slot")) {
      static const std::regex kSlotName("[a-z0-9_]{1,63}");
      if (!std::regex_match(config.source.slot, kSlotName)) {
        check.Problem(source->Node("slot"), "source.slot",
                      "must be 1 to 63 lower-case letters, digits and _ (PostgreSQL's rule for "
                      "slot names)");
      }
    }
    if (source->Has("publication") && config.source.publication.size() > 63) {
      check.Problem(source->Node("publication"), "source.publication",
                    "must fit in 63 bytes (PostgreSQL's limit for names)");
    }
    if ((!source->Has("slot") || !source->Has("publication")) && derived.size() > 63) {
      check.Problem(top.Node("pipeline"), "pipeline",
                    "is too long: the slot and publication name " + derived +
                        " must fit in 63 bytes (or set source.slot and source.publication)");
    }
    config.source.heartbeat_seconds = static_cast<int>(source->Integer("heartbeat_interval"));
    config.source.max_retained_wal_bytes = source->ByteSize("max_retained_wal");
    config.source.snapshot_parallelism = static_cast<int>(source->Integer("snapshot_parallelism"));
  }

  std::set<std::string> untyped_stores;  // of an unknown type: their views are not checked
  if (auto stores = top.Container("stores")) {
    for (const auto& entry : *stores) {
      const std::string name = entry.first.IsScalar() ? entry.first.Scalar() : "";
      const std::string path_key = "stores." + name;
      // A repeated name is reported by DuplicateKeys; the first one counts, as in YAML.
      if (config.stores.contains(name) || untyped_stores.contains(name)) continue;
      if (!entry.second.IsMap()) {
        check.Problem(entry.second.IsNull() ? entry.first.Mark() : entry.second.Mark(), path_key,
                      "must be a mapping with at least `type`, not " + DescribeNode(entry.second));
        untyped_stores.insert(name);
        continue;
      }
      Section s(check, entry.second, "stores.NAME", path_key, entry.first.Mark());
      StoreConfig store;
      store.name = name;
      store.line = LineOf(entry.first.Mark());
      store.column = ColumnOf(entry.first.Mark());
      store.marks = ValueMarks(entry.second);
      const std::string type = s.String("type").value_or("");
      unsigned bit = kAnyStore;
      if (type == "redis" || type == "opensearch" || type == "postgres") {
        store.type = type == "redis"        ? StoreType::kRedis
                     : type == "opensearch" ? StoreType::kOpenSearch
                                            : StoreType::kPostgres;
        bit = StoreBit(store.type);
      } else {
        if (!type.empty()) {
          check.Problem(
              s.Node("type"), path_key + ".type",
              "unknown store type '" + type + "' (expected redis, opensearch or postgres)");
        }
        untyped_stores.insert(name);
      }
      s.CheckKeys(bit);
      if (bit != kAnyStore) {
        if (store.type == StoreType::kPostgres) {
          store.dsn = s.String("dsn").value_or("");
        } else {
          store.url = s.String("url").value_or("");
          store.username = s.String("username").value_or("");
          store.password = s.String("password").value_or("");
          if (store.type == StoreType::kOpenSearch) {
            store.ca_file = s.String("ca_file").value_or("");
            // A relative path is relative to the configuration file, wherever pgderive runs.
            const std::filesystem::path dir = std::filesystem::path(path).parent_path();
            if (!store.ca_file.empty() && std::filesystem::path(store.ca_file).is_relative() &&
                !dir.empty()) {
              store.ca_file = (dir / store.ca_file).string();
            }
          }
        }
        CheckStore(check, s, store);
      }
      config.stores[name] = std::move(store);
    }
  }

  std::vector<Target> targets;
  if (auto views = top.Container("views")) {
    if (views->size() == 0) {
      check.Problem(*views, "views", "lists no view: a pipeline needs at least one");
    }
    std::map<std::string, YAML::Mark> names;
    for (size_t i = 0; i < views->size(); ++i) {
      const YAML::Node node = (*views)[i];
      const std::string path_key = "views[" + std::to_string(i) + "]";
      if (!node.IsMap()) {
        check.Problem(node, path_key,
                      "must be a mapping with name, store and its keys, not " + DescribeNode(node));
        continue;
      }
      Section s(check, node, "views[]", path_key, node.Mark());
      ViewConfig view;
      view.line = LineOf(node.Mark());
      view.column = ColumnOf(node.Mark());
      view.marks = ValueMarks(node);
      view.name = s.String("name").value_or("");
      view.store = s.String("store").value_or("");
      if (!view.name.empty()) {
        auto [first, inserted] = names.emplace(view.name, s.Node("name").Mark());
        if (!inserted) {
          check.Problem(s.Node("name"), path_key + ".name",
                        "another view has the name '" + view.name + "' (line " +
                            std::to_string(LineOf(first->second)) + ")");
        }
      }
      auto store = config.stores.find(view.store);
      if (!view.store.empty() && store == config.stores.end() &&
          !untyped_stores.contains(view.store)) {
        std::vector<std::string> valid;
        for (const auto& [name, unused] : config.stores) valid.push_back(name);
        for (const std::string& name : untyped_stores) valid.push_back(name);
        std::sort(valid.begin(), valid.end());
        check.Problem(s.Node("store"), path_key + ".store",
                      "no store named '" + view.store + "' under stores " +
                          ValidNames(view.store, valid, "stores"));
      }
      // The view's keys depend on its store's type; with no known type, any view key.
      if (store == config.stores.end() || untyped_stores.contains(view.store)) {
        s.CheckKeys(kAnyStore);
        config.views.push_back(std::move(view));
        continue;
      }
      s.CheckKeys(StoreBit(store->second.type));
      // Versions (view_versions.h): OpenSearch and postgres views, and Redis views whose
      // key template changes.
      if (store->second.type == StoreType::kOpenSearch || store->second.type == StoreType::kRedis ||
          store->second.type == StoreType::kPostgres) {
        view.promote_manual = s.Choice("promote") == 1;
        view.retain_previous = std::chrono::seconds(s.Duration("retain_previous"));
      }
      Target target{i, view.store, store->second.type, "", {}, ""};
      // Where the view writes (`what`, from its key `key`): checked against the others.
      auto writes_to = [&](const std::string& key, std::string what) {
        target.what = std::move(what);
        target.mark = s.Node(key).Mark();
        target.key_path = path_key + "." + key;
      };
      switch (store->second.type) {
        case StoreType::kRedis: {
          const std::string key_text = s.String("key").value_or("");
          if (!key_text.empty()) {
            auto key = KeyTemplate::Parse(key_text);
            if (!key.ok()) {
              check.Problem(s.Node("key"), path_key + ".key",
                            "key template " + key.error().message());
            } else {
              // Each {column} where it is written (on the key's line; a template
              // spread over lines keeps the key's mark).
              for (const std::string& column : key.value().columns()) {
                view.placeholder_marks[column] = text.Find(view.MarkOf("key"), "{" + column + "}");
              }
              // pgderive finds a view's keys by their fixed prefix when it empties the
              // view (rebuild, backfill, teardown --views): without one that would be
              // every key of the database; pgderive:... are its own keys.
              const std::string prefix = key.value().Prefix();
              if (prefix.empty()) {
                check.Problem(s.Node("key"), path_key + ".key",
                              "key template " + key_text +
                                  " starts with a column: a Redis view's keys need a fixed "
                                  "prefix (e.g. \"product:{id}\"), by which pgderive finds "
                                  "them when it empties the view (rebuild, backfill, teardown "
                                  "--views); without one that would be every key of the "
                                  "database");
              } else if (prefix.starts_with("pgderive:")) {
                check.Problem(s.Node("key"), path_key + ".key",
                              "key template " + key_text +
                                  ": keys starting with pgderive: are pgderive's own "
                                  "(checkpoints, view states); choose another prefix");
              } else {
                writes_to("key", prefix);
              }
              view.key = std::move(key).value();
            }
          }
          break;
        }
        case StoreType::kOpenSearch:
          view.index = s.String("index").value_or("");
          if (!view.index.empty()) {
            if (auto why = IndexNameProblem(view.index)) {
              check.Problem(s.Node("index"), path_key + ".index", *why);
            } else {
              writes_to("index", view.index);
            }
          }
          break;
        case StoreType::kPostgres:
          view.table = s.String("table").value_or("");
          if (!view.table.empty()) {
            if (auto why = TableNameProblem(view.table)) {
              check.Problem(s.Node("table"), path_key + ".table", *why);
            } else {
              writes_to("table", Qualify(view.table));
            }
          }
          view.query = s.String("query").value_or("");
          view.query_lines = text.LiteralBlock(view.MarkOf("query"));
          view.key_columns = s.StringList("key").value_or(std::vector<std::string>{});
          view.key_column_marks = ItemMarks(s.Node("key"));
          break;
      }
      if (store->second.type != StoreType::kPostgres) {
        view.from = s.String("from").value_or("");
        if (!view.from.empty()) {
          if (auto why = TableNameProblem(view.from)) {
            check.Problem(s.Node("from"), path_key + ".from", *why);
          } else {
            view.from = Qualify(view.from);
          }
        }
        view.columns = s.StringList("columns");
        view.column_marks = ItemMarks(s.Node("columns"));
      }
      if (!target.key_path.empty()) targets.push_back(std::move(target));
      config.views.push_back(std::move(view));
    }
  }
  CheckTargets(check, targets, config.views);

  if (auto snapshot = top.Child("snapshot")) {
    config.snapshot.workers = static_cast<int>(snapshot->Integer("workers"));
  }
  if (const YAML::Node spool = static_cast<const YAML::Node&>(root)["spool"];
      spool.IsDefined() && !spool.IsNull() && spool.IsScalar()) {
    if (spool.Scalar() != "off") {
      check.Problem(spool, "spool",
                    "must be `off` or a mapping of dir, max_bytes, segment_bytes, when_full");
    }
    config.spool.enabled = false;
  } else if (auto section = spool.IsDefined() ? top.Child("spool") : top.EmptyChild("spool")) {
    config.spool.enabled = true;
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    std::error_code ec;
    const std::filesystem::path base =
        parent.empty() ? std::filesystem::current_path(ec) : std::filesystem::absolute(parent, ec);
    const std::string dir = section->String("dir").value_or("pgderive-spool/" + config.pipeline);
    config.spool.dir = (base / dir).lexically_normal().string();
    const std::filesystem::path resolved(config.spool.dir);
    if (dir.empty() || resolved == base.lexically_normal() ||
        resolved == (base / "").lexically_normal()) {
      // A log that cannot be opened is moved aside as a whole directory: never the
      // configuration's own.
      check.Problem(section->Node("dir"), "spool.dir",
                    "must name a directory of its own, not the configuration file's directory");
    } else if (std::filesystem::exists(resolved, ec) &&
               !std::filesystem::is_directory(resolved, ec)) {
      check.Problem(section->Node("dir"), "spool.dir",
                    config.spool.dir + " exists and is not a directory");
    }
    config.spool.max_bytes = section->ByteSize("max_bytes");
    config.spool.segment_bytes = section->ByteSize("segment_bytes");
    config.spool.when_full = static_cast<SpoolConfig::WhenFull>(section->Choice("when_full"));
    if (config.spool.segment_bytes * 2 > config.spool.max_bytes) {
      // At segment_bytes, or at max_bytes when segment_bytes is left at its default.
      const bool segment_given = section->Node("segment_bytes").IsDefined();
      check.Problem(section->Node(segment_given ? "segment_bytes" : "max_bytes"),
                    segment_given ? "spool.segment_bytes" : "spool.max_bytes",
                    segment_given ? "must be at most half of spool.max_bytes"
                                  : "must be at least twice spool.segment_bytes (" +
                                        FormatByteSize(config.spool.segment_bytes) + ")");
    }
  }
  if (const YAML::Node verify = static_cast<const YAML::Node&>(root)["verify"];
      verify.IsDefined() && !verify.IsNull() && verify.IsScalar()) {
    // `verify: off`: no background verifier (as `continuous: off`); `on`: every default.
    if (verify.Scalar() != "off" && verify.Scalar() != "on") {
      check.Problem(verify, "verify",
                    "must be `on`, `off` or a mapping of continuous, rows_per_second, repair");
    }
    config.verify.continuous = verify.Scalar() != "off";
  } else if (auto verify = top.Child("verify")) {
    config.verify.continuous = verify->Choice("continuous") == 0;
    config.verify.rows_per_second = verify->Integer("rows_per_second");
    config.verify.repair = verify->Choice("repair") == 0;
  }
  if (auto http = top.Child("http")) {
    if (auto listen = http->String("listen")) {
      config.http.listen = *listen;
      if (!IsListenAddress(*listen)) {
        check.Problem(http->Node("listen"), "http.listen",
                      "must be HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:9187");
      }
    }
  }
  if (auto log = top.Child("log")) {
    config.log.format = static_cast<LogFormat>(log->Choice("format"));
    config.log.level = static_cast<LogLevel>(log->Choice("level"));
  }

  // File order, so that a reader goes down the file once.
  std::stable_sort(result.problems.begin(), result.problems.end(),
                   [](const ConfigProblem& a, const ConfigProblem& b) {
                     return std::pair(a.line, a.column) < std::pair(b.line, b.column);
                   });
  if (result.problems.empty()) result.config = std::move(config);
  return result;
}

ConfigResult LoadConfigFile(const std::string& path) {
  // The OS's reason ("No such file or directory", "Permission denied"); a directory
  // opens as a stream but reads as nothing.
  std::error_code ec;
  errno = std::filesystem::is_directory(path, ec) ? EISDIR : 0;
  std::ifstream in;
  if (errno == 0) in.open(path);
  if (!in.is_open()) {
    const std::string reason = errno != 0 ? std::strerror(errno) : "unknown error";
    ConfigResult result;
    result.problems.push_back(ConfigProblem{0, 0, "", "cannot read the file: " + reason});
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

std::string ChangeLogOwner(const Config& config) {
  return "pipeline " + config.pipeline + ", slot " + config.source.slot;
}

}  // namespace pgderive
