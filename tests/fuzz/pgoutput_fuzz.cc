// libFuzzer entry point for DecodePgOutput. Beyond "no crash, no sanitizer report", it
// checks what the decoder promises: every view it returns lies inside the input, and
// decoding is deterministic.
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string_view>

#include "cdc/pgoutput.h"

namespace {

void CheckInside(std::string_view view, const uint8_t* begin, size_t size) {
  if (view.empty()) return;
  const auto* p = reinterpret_cast<const uint8_t*>(view.data());
  if (p < begin || p + view.size() > begin + size) std::abort();
}

void CheckTuple(const pgderive::TupleData& tuple, const uint8_t* begin, size_t size) {
  for (const pgderive::TupleValue& value : tuple.columns) CheckInside(value.data, begin, size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const pgderive::DecodeContext context{.in_stream = (data[0] & 1) != 0};
  const std::span<const uint8_t> message(data + 1, size - 1);
  auto decoded = pgderive::DecodePgOutput(message, context);
  auto again = pgderive::DecodePgOutput(message, context);
  if (decoded.ok() != again.ok()) std::abort();
  if (!decoded.ok()) {
    if (decoded.error().kind() != pgderive::ErrorKind::kCorrupt) std::abort();
    return 0;
  }
  const uint8_t* begin = message.data();
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, pgderive::InsertMessage>) {
          CheckTuple(m.new_tuple, begin, message.size());
        } else if constexpr (std::is_same_v<T, pgderive::UpdateMessage>) {
          CheckTuple(m.old_tuple, begin, message.size());
          CheckTuple(m.new_tuple, begin, message.size());
        } else if constexpr (std::is_same_v<T, pgderive::DeleteMessage>) {
          CheckTuple(m.old_tuple, begin, message.size());
        } else if constexpr (std::is_same_v<T, pgderive::RelationMessage>) {
          for (const auto& a : m.attributes) CheckInside(a.name, begin, message.size());
        } else if constexpr (std::is_same_v<T, pgderive::LogicalMessage>) {
          CheckInside(m.content, begin, message.size());
        }
      },
      decoded.value());
  return 0;
}
