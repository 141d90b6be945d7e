#pragma once

// PostgreSQL's COPY text format, one row (PostgreSQL docs, "COPY", File Formats, Text
// Format): columns separated by a tab, the row ended by a newline, `\N` for NULL, and
// backslash escapes for a backslash, the separator and control characters. Pure, like
// the pgoutput decoder: no libpq, so it is tested and fuzzed on its own.

#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "cdc/pgoutput.h"

namespace pgderive {

// Splits one COPY text row (as PQgetCopyData returns it, with or without its final
// newline) into `out`, one text or null value per column. Escapes are undone in
// place - an unescaped value is never longer than its escaped form - so the values
// point into `row`. A row whose column count is not `columns` is corrupt.
Status ParseCopyTextRow(char* row, size_t length, size_t columns, TupleData& out);

// Appends one value in COPY's text format (copyto.c, CopyAttributeOutText): backslash,
// tab, newline and carriage return escaped; nullopt as \N.
void AppendCopyValue(std::string& out, const std::optional<std::string_view>& value);

}  // namespace pgderive
