#pragma once

// The Redis key template grammar, parsed once, here: literal text and {column}
// references, e.g. "product:{id}". The configuration parses a view's template into
// ViewConfig::key; the stores, validate and `verify` use that parsed form and never parse
// the text again, so that what the configuration accepts is exactly what the sink renders.

#include <string>
#include <vector>

#include "base/status.h"

namespace pgderive {

class KeyTemplate {
 public:
  // At least one {column}, braces balanced, no empty {}. A permanent Error says why not,
  // phrased to follow the text's location ("views[0].key: has an empty {} ...").
  static Result<KeyTemplate> Parse(const std::string& text);

  const std::vector<std::string>& columns() const { return columns_; }
  const std::string& text() const { return text_; }
  // The literal text before the first {column}: every key the template makes starts so.
  std::string Prefix() const { return text_.substr(0, text_.find('{')); }
  // A glob (Redis SCAN MATCH) that matches every key the template can make.
  std::string Pattern() const;
  // The template read backwards (a key met in the store, to find its row): every way
  // `key` splits into the literals and a value for each {column}, in the order of
  // columns(), at most `limit` of them; none when the template cannot make it. A value
  // that holds the literal after it makes several ("a:{x}:{y}" reads "a:1:2:3" as
  // (1, 2:3) and (1:2, 3)): the caller looks each up. Two {column}s with no literal
  // between are split everywhere.
  std::vector<std::vector<std::string>> Splits(const std::string& key, size_t limit = 64) const;

  struct Part {
    std::string literal;  // when column is empty
    std::string column;
  };
  const std::vector<Part>& parts() const { return parts_; }

 private:
  std::string text_;
  std::vector<Part> parts_;
  std::vector<std::string> columns_;
};

}  // namespace pgderive
