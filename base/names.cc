#include "base/names.h"

#include <algorithm>

namespace pgderive {

size_t EditDistance(const std::string& a, const std::string& b) {
  // Optimal string alignment: Levenshtein plus the transposition of two neighbours,
  // the commonest typo ("cahce").
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

std::optional<std::string> ClosestName(const std::string& name,
                                       const std::vector<std::string>& valid) {
  const size_t limit = std::max<size_t>(1, name.size() / 3);
  std::optional<std::string> best;
  size_t best_distance = limit + 1;
  bool tie = false;
  for (const std::string& candidate : valid) {
    const size_t distance = EditDistance(name, candidate);
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
      tie = false;
    } else if (distance == best_distance && best && *best != candidate) {
      tie = true;
    }
  }
  if (tie || best_distance == 0) return std::nullopt;
  return best;
}

std::string ValidNames(const std::string& name, const std::vector<std::string>& valid,
                       const std::string& plural) {
  if (valid.empty()) return "(there are no " + plural + ")";
  std::string out = "(" + plural + ": ";
  for (size_t i = 0; i < valid.size(); ++i) out += (i == 0 ? "" : ", ") + valid[i];
  if (auto closest = ClosestName(name, valid)) out += "; did you mean " + *closest + "?";
  return out + ")";
}

}  // namespace pgderive
