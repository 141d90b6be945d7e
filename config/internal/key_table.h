#pragma once

// The key table: every key of the configuration file, declared once with its section,
// type, the stores it applies to, whether it is required, its default and its meaning.
// ParseConfig (config.cc) reads each key through it and rejects any key it does not list;
// the key reference of docs/configuration.md is rendered from it (ConfigKeyTableMarkdown,
// checked by a unit test). Private to config/.

#include <string>
#include <vector>

#include "config/config.h"

namespace pgderive::config_keys {

// What a key holds; the reader of each kind reports a value of another shape.
enum class Kind {
  kMapping,     // a section of further keys
  kStores,      // mapping of store name -> store settings
  kViews,       // list of view settings
  kString,      // a scalar, ${NAME} expanded
  kInteger,     // a whole number in [min, max]
  kByteSize,    // "1GB", "512MB", "64kB" or bytes
  kChoice,      // one of `choices`
  kStringList,  // [a, b]
  kDuration,    // "1h", "30m", "90s", "2d" or seconds
};

// Store types a key of `stores.NAME` or `views[]` belongs to (0: not store-specific).
constexpr unsigned kRedis = 1;
constexpr unsigned kOpenSearch = 2;
constexpr unsigned kPostgres = 4;
constexpr unsigned kAnyStore = kRedis | kOpenSearch | kPostgres;

// The bit of a store type in KeyDef::stores.
unsigned StoreBit(StoreType type);

struct KeyDef {
  const char* section;
  const char* name;
  Kind kind;
  unsigned stores;  // for stores.NAME and views[]: the store types that take the key
  bool required;
  const char* fallback;  // documented default; parsed as the value for numbers and choices
  const char* meaning;
  long long min = 0;  // kInteger
  long long max = 0;
  const char* choices = "";  // kChoice: "a|b|c"
};

// Every key pgderive reads, once.
const std::vector<KeyDef>& Keys();
// The type column of the key table ("integer", "list of views").
const char* KindName(Kind kind);
// The store types of `stores` in words ("redis, postgres"); empty for all or none.
std::string StoreNames(unsigned stores);
// "a|b|c" -> {a, b, c}.
std::vector<std::string> SplitChoices(const char* choices);

}  // namespace pgderive::config_keys
