#include "config/key_template.h"

namespace pgderive {

Result<KeyTemplate> KeyTemplate::Parse(const std::string& text) {
  KeyTemplate t;
  t.text_ = text;
  std::string literal;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '}') {
      return Error::Permanent("has a '}' without its '{'; braces must balance");
    }
    if (text[i] != '{') {
      literal += text[i];
      continue;
    }
    const size_t close = text.find('}', i);
    const size_t inner = text.find('{', i + 1);
    if (inner != std::string::npos && (close == std::string::npos || inner < close)) {
      return Error::Permanent("has a '{' inside a {column}; braces must balance");
    }
    if (close == std::string::npos) {
      return Error::Permanent("has a '{' that is never closed; braces must balance");
    }
    if (close == i + 1) {
      return Error::Permanent("has an empty {}; write the column's name between the braces");
    }
    if (!literal.empty()) t.parts_.push_back({std::move(literal), ""});
    literal.clear();
    std::string column = text.substr(i + 1, close - i - 1);
    t.parts_.push_back({"", column});
    t.columns_.push_back(std::move(column));
    i = close;
  }
  if (!literal.empty()) t.parts_.push_back({std::move(literal), ""});
  if (t.columns_.empty()) {
    return Error::Permanent(
        "names no {column}: every row would share one key (e.g. \"product:{id}\")");
  }
  return t;
}

std::string KeyTemplate::Pattern() const {
  std::string out;
  for (const Part& part : parts_) {
    if (!part.column.empty()) {
      if (out.empty() || out.back() != '*') out += '*';
      continue;
    }
    for (char c : part.literal) {
      if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
      out += c;
    }
  }
  return out;
}

std::vector<std::vector<std::string>> KeyTemplate::Splits(const std::string& key,
                                                          size_t limit) const {
  std::vector<std::vector<std::string>> out;
  std::vector<std::string> values;
  // Part `i` from `at` on: a literal must be there; a column takes every length that
  // leaves the rest matchable (each tried, shortest first).
  auto walk = [&](auto& self, size_t i, size_t at) -> void {
    if (out.size() >= limit) return;
    if (i == parts_.size()) {
      if (at == key.size()) out.push_back(values);
      return;
    }
    const Part& part = parts_[i];
    if (part.column.empty()) {
      if (key.compare(at, part.literal.size(), part.literal) == 0) {
        self(self, i + 1, at + part.literal.size());
      }
      return;
    }
    // The next literal bounds the value: try each place it occurs (the end when none).
    const std::string* next =
        i + 1 < parts_.size() && parts_[i + 1].column.empty() ? &parts_[i + 1].literal : nullptr;
    for (size_t end = at; end <= key.size(); ++end) {
      if (next != nullptr && key.compare(end, next->size(), *next) != 0) continue;
      if (next == nullptr && i + 1 == parts_.size() && end != key.size()) continue;
      values.push_back(key.substr(at, end - at));
      self(self, i + 1, end);
      values.pop_back();
      if (out.size() >= limit) return;
    }
  };
  walk(walk, 0, 0);
  return out;
}

}  // namespace pgderive
