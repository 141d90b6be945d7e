#include "base/status.h"

namespace pgderive {

std::string_view ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kTransient:
      return "transient";
    case ErrorKind::kPermanent:
      return "permanent";
    case ErrorKind::kCorrupt:
      return "corrupt";
  }
  return "unknown";
}

std::string Error::ToString() const {
  std::string out(ErrorKindName(kind_));
  out += ": ";
  out += message_;
  return out;
}

}  // namespace pgderive
