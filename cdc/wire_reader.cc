#include "cdc/wire_reader.h"

#include <cstring>

namespace pgderive {

bool WireReader::Need(size_t bytes, const char* field) {
  if (!ok()) return false;
  if (bytes > remaining()) {
    failed_field_ = field;
    failed_offset_ = offset_;
    failed_detail_ = "truncated: " + std::to_string(bytes) + " bytes needed, " +
                     std::to_string(remaining()) + " left";
    return false;
  }
  return true;
}

void WireReader::Fail(const char* field, std::string detail) {
  if (!ok()) return;  // keep the first failure: it is the cause
  failed_field_ = field;
  failed_offset_ = offset_;
  failed_detail_ = std::move(detail);
}

uint8_t WireReader::ReadUint8(const char* field) {
  if (!Need(1, field)) return 0;
  return data_[offset_++];
}

int16_t WireReader::ReadInt16(const char* field) {
  if (!Need(2, field)) return 0;
  const uint16_t v = static_cast<uint16_t>((data_[offset_] << 8) | data_[offset_ + 1]);
  offset_ += 2;
  return static_cast<int16_t>(v);
}

int32_t WireReader::ReadInt32(const char* field) {
  if (!Need(4, field)) return 0;
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | data_[offset_ + i];
  offset_ += 4;
  return static_cast<int32_t>(v);
}

int64_t WireReader::ReadInt64(const char* field) {
  if (!Need(8, field)) return 0;
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | data_[offset_ + i];
  offset_ += 8;
  return static_cast<int64_t>(v);
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
