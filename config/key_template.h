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
