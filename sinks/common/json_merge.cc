#include "sinks/common/json_merge.h"

#include <simdjson.h>

#include <map>

#include "cdc/value_json.h"

namespace pgderive {

Result<std::string> MergeUnchanged(std::string_view partial, std::string_view previous,
                                   const std::vector<std::string>& unchanged) {
  if (unchanged.empty()) return std::string(partial);
  if (previous.empty()) {
    return Error::Permanent("column " + unchanged.front() +
                            " is unchanged (TOAST) but the store holds no previous value");
  }
  std::map<std::string, std::string, std::less<>> found;
  simdjson::ondemand::parser parser;
  simdjson::padded_string padded(previous);
  simdjson::ondemand::document doc;
  simdjson::ondemand::object object;
  if (parser.iterate(padded).get(doc) || doc.get_object().get(object)) {
    return Error::Corrupt("the store's previous value is not a JSON object");
  }
  for (auto field : object) {
    std::string_view key;
    std::string_view raw;
    simdjson::ondemand::value value;
    simdjson::ondemand::json_type type;
    if (field.unescaped_key().get(key) || field.value().get(value) || value.type().get(type)) {
      return Error::Corrupt("the store's previous value is not valid JSON");
    }
    // simdjson 3.0: objects and arrays give their whole text, scalars their token.
    simdjson::error_code error = simdjson::SUCCESS;
    if (type == simdjson::ondemand::json_type::object) {
      simdjson::ondemand::object inner;
      error = value.get_object().get(inner);
      if (!error) error = inner.raw_json().get(raw);
    } else if (type == simdjson::ondemand::json_type::array) {
      simdjson::ondemand::array inner;
      error = value.get_array().get(inner);
      if (!error) error = inner.raw_json().get(raw);
    } else {
      raw = value.raw_json_token();
    }
    if (error) return Error::Corrupt("the store's previous value is not valid JSON");
    for (const std::string& name : unchanged) {
      if (name == key) found.emplace(name, std::string(raw));
    }
  }
  std::string out(partial);
  if (out.empty() || out.back() != '}') return Error::Corrupt("a row value is not a JSON object");
  out.pop_back();
  for (const std::string& name : unchanged) {
    auto it = found.find(name);
    if (it == found.end()) {
      return Error::Permanent("column " + name +
                              " is unchanged (TOAST) but the store's previous value lacks it");
    }
    if (out.size() > 1) out += ',';
    AppendJsonString(out, name);
    out += ':';
    // raw_json() keeps trailing whitespace; trim it.
    std::string_view raw = it->second;
    while (!raw.empty() &&
           (raw.back() == ' ' || raw.back() == '\n' || raw.back() == '\t' || raw.back() == '\r')) {
      raw.remove_suffix(1);
    }
    out += raw;
  }
  out += '}';
  return out;
}

}  // namespace pgderive
