#pragma once

// The one bounds-checked reader every byte of the replication stream goes through.
// Big-endian integers and NUL-terminated strings as in PostgreSQL's pqformat.c
// (pq_getmsgint, pq_getmsgint64, pq_getmsgstring, pq_getmsgbytes).
//
// Failure is sticky: the first read past the end (or a string without its NUL) records
// the field and the offset, and every later read returns zero or empty. A decoder
// checks ok() before it uses a count or a length and before it returns, so a zero from
// a failed read never escapes as a value.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace pgderive {

class WireReader {
 public:
  explicit WireReader(std::span<const uint8_t> data) : data_(data) {}

  uint8_t ReadUint8(const char* field) {
    if (!Need(1, field)) return 0;
    return data_[offset_++];
  }
  int16_t ReadInt16(const char* field) {
    if (!Need(2, field)) return 0;
    const uint16_t v = static_cast<uint16_t>((data_[offset_] << 8) | data_[offset_ + 1]);
    offset_ += 2;
    return static_cast<int16_t>(v);
  }
  int32_t ReadInt32(const char* field) {
    if (!Need(4, field)) return 0;
    const uint32_t v = (uint32_t{data_[offset_]} << 24) | (uint32_t{data_[offset_ + 1]} << 16) |
                       (uint32_t{data_[offset_ + 2]} << 8) | uint32_t{data_[offset_ + 3]};
    offset_ += 4;
    return static_cast<int32_t>(v);
  }
  uint32_t ReadUint32(const char* field) { return static_cast<uint32_t>(ReadInt32(field)); }
  int64_t ReadInt64(const char* field) {
    if (!Need(8, field)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | data_[offset_ + i];
    offset_ += 8;
    return static_cast<int64_t>(v);
  }
  uint64_t ReadUint64(const char* field) { return static_cast<uint64_t>(ReadInt64(field)); }
  // A NUL-terminated string; the view points into the buffer.
  std::string_view ReadString(const char* field);
  // `length` raw bytes; the view points into the buffer.
  std::string_view ReadBytes(size_t length, const char* field);

  // Records a semantic failure (bad marker, bad flags) at the current offset.
  void Fail(const char* field, std::string detail);

  bool ok() const { return failed_field_ == nullptr; }
  size_t offset() const { return offset_; }
  size_t remaining() const { return data_.size() - offset_; }
  size_t size() const { return data_.size(); }
  // "truncated reading <field> at offset N of M bytes" or the Fail() detail.
  std::string ErrorText() const;

 private:
  // The common case inline; the failure path (recording the field) out of line.
  bool Need(size_t bytes, const char* field) {
    if (ok() && bytes <= remaining()) [[likely]]
      return true;
    return NeedFailed(bytes, field);
  }
  bool NeedFailed(size_t bytes, const char* field);

  std::span<const uint8_t> data_;
  size_t offset_ = 0;
  const char* failed_field_ = nullptr;
  size_t failed_offset_ = 0;
  std::string failed_detail_;
};

}  // namespace pgderive
