#include "base/number.h"

namespace pgderive::number_detail {

std::string Excerpt(std::string_view text) {
  constexpr size_t kShown = 40;
  if (text.size() <= kShown) return std::string(text);
  return std::string(text.substr(0, kShown)) + "...";
}

}  // namespace pgderive::number_detail
