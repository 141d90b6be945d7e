// libFuzzer entry point for ParseCopyTextRow. Input: one byte, the expected column
// count (mod 16), then the row. Beyond "no crash, no sanitizer report" it checks the
// parser's promises: on success there is one value per column, every value lies inside
// the row, and re-escaping the values and parsing again gives the same values.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "cdc/copy_text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t columns = data[0] % 16;
  std::string row(reinterpret_cast<const char*>(data + 1), size - 1);
  pgderive::TupleData tuple;
  if (!pgderive::ParseCopyTextRow(row.data(), row.size(), columns, tuple).ok()) return 0;
  if (tuple.columns.size() != columns) std::abort();
  std::vector<std::pair<bool, std::string>> values;
  std::string again;
  for (const pgderive::TupleValue& value : tuple.columns) {
    if (!value.data.empty() && (value.data.data() < row.data() ||
                                value.data.data() + value.data.size() > row.data() + row.size())) {
      std::abort();
    }
    const bool null = value.kind == pgderive::TupleValueKind::kNull;
    values.emplace_back(null, std::string(value.data));
    if (!again.empty() || values.size() > 1) again += '\t';
    pgderive::AppendCopyValue(again, null ? std::nullopt : std::optional(value.data));
  }
  again += '\n';
  pgderive::TupleData reparsed;
  if (!pgderive::ParseCopyTextRow(again.data(), again.size(), columns, reparsed).ok()) std::abort();
  for (size_t i = 0; i < columns; ++i) {
    const bool null = reparsed.columns[i].kind == pgderive::TupleValueKind::kNull;
    if (null != values[i].first || reparsed.columns[i].data != values[i].second) std::abort();
  }
  return 0;
}
