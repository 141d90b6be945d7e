#include "cdc/internal/wire_reader.h"

#include <cstring>

namespace pgderive {

bool WireReader::NeedFailed(size_t bytes, const char* field) {
  if (!ok()) return false;  // keep the first failure: it is the cause
  failed_field_ = field;
  failed_offset_ = offset_;
  failed_detail_ = "truncated: " + std::to_string(bytes) + " bytes needed, " +
                   std::to_string(remaining()) + " left";
  return false;
}

void WireReader::Fail(const char* field, std::string detail) {
  if (!ok()) return;  // keep the first failure: it is the cause
  failed_field_ = field;
  failed_offset_ = offset_;
  failed_detail_ = std::move(detail);
}

std::string_view WireReader::ReadString(const char* field) {
  if (!ok()) return {};
  const void* nul = std::memchr(data_.data() + offset_, 0, remaining());
  if (nul == nullptr) {
    Fail(field, "string without its terminating NUL");
    return {};
  }
  const size_t length = static_cast<const uint8_t*>(nul) - (data_.data() + offset_);
  std::string_view out(reinterpret_cast<const char*>(data_.data() + offset_), length);
  offset_ += length + 1;
  return out;
}

std::string_view WireReader::ReadBytes(size_t length, const char* field) {
  if (!Need(length, field)) return {};
  std::string_view out(reinterpret_cast<const char*>(data_.data() + offset_), length);
  offset_ += length;
  return out;
}

std::string WireReader::ErrorText() const {
  if (ok()) return "no error";
  return std::string(failed_field_) + " at offset " + std::to_string(failed_offset_) + " of " +
         std::to_string(data_.size()) + " bytes: " + failed_detail_;
}

}  // namespace pgderive
