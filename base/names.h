#pragma once

// Messages about a name that is not there: what is there instead, and the one meant
// when a valid name is close ("no view named 'product_cahce' (views: product_cache,
// product_search; did you mean product_cache?)"). Pure.

#include <optional>
#include <string>
#include <vector>

namespace pgderive {

// Levenshtein distance (insert, delete, substitute; a swap of neighbours counts 1).
size_t EditDistance(const std::string& a, const std::string& b);

// The valid name closest to `name` when it is close enough to be a typo: at most one
// edit for short names, a third of the length for longer ones; nullopt otherwise or
// when two are equally close.
std::optional<std::string> ClosestName(const std::string& name,
                                       const std::vector<std::string>& valid);

// "(views: a, b, c; did you mean a?)", or "(there are no views)"; `plural` names the
// kind ("views", "stores", "columns").
std::string ValidNames(const std::string& name, const std::vector<std::string>& valid,
                       const std::string& plural);

}  // namespace pgderive
