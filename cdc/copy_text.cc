#include "cdc/copy_text.h"

#include <cstring>
#include <string>

namespace pgderive {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Undoes the escapes of [begin, end) in place (copyfromparse.c, CopyReadAttributesText)
// and returns the new end.
char* Unescape(char* begin, char* end) {
  char* out = begin;
  for (char* in = begin; in < end;) {
    if (*in != '\\' || in + 1 == end) {
      *out++ = *in++;
      continue;
    }
    const char c = in[1];
    in += 2;
    switch (c) {
      case 'b':
        *out++ = '\b';
        break;
      case 'f':
        *out++ = '\f';
        break;
      case 'n':
        *out++ = '\n';
        break;
      case 'r':
        *out++ = '\r';
        break;
      case 't':
        *out++ = '\t';
        break;
      case 'v':
        *out++ = '\v';
        break;
      case 'x': {
        int value = 0, digits = 0;
        while (digits < 2 && in < end && HexDigit(*in) >= 0)
          value = value * 16 + HexDigit(*in++), ++digits;
        if (digits == 0) {
          *out++ = 'x';  // "\x" without a digit is a plain x, as PostgreSQL reads it
        } else {
          *out++ = static_cast<char>(value);
        }
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          int value = c - '0', digits = 1;
          while (digits < 3 && in < end && *in >= '0' && *in <= '7')
            value = value * 8 + (*in++ - '0'), ++digits;
          *out++ = static_cast<char>(value & 0xff);
        } else {
          *out++ = c;  // \\ and any other escaped character stand for themselves
        }
    }
  }
  return out;
}

}  // namespace

Status ParseCopyTextRow(char* row, size_t length, size_t columns, TupleData& out) {
  out.columns.clear();
  if (length > 0 && row[length - 1] == '\n') --length;
  if (columns == 0 && length == 0) return Status::Ok();  // a table without columns
  char* const end = row + length;
  char* field = row;
  while (true) {
    // The common field has no backslash: two memchr scans find its end. Otherwise walk
    // from the first backslash, since an escaped tab does not end the field.
    char* stop = static_cast<char*>(std::memchr(field, '\t', static_cast<size_t>(end - field)));
    if (stop == nullptr) stop = end;
    char* backslash =
        static_cast<char*>(std::memchr(field, '\\', static_cast<size_t>(stop - field)));
    const bool escaped = backslash != nullptr;
    if (escaped) {
      stop = backslash;
      while (stop < end && *stop != '\t') {
        if (*stop == '\\' && stop + 1 < end) ++stop;
        ++stop;
      }
    }
    if (out.columns.size() == columns) {
      return Error::Corrupt("COPY row has more than the " + std::to_string(columns) +
                            " columns expected, at byte " + std::to_string(field - row));
    }
    const size_t size = static_cast<size_t>(stop - field);
    if (size == 2 && field[0] == '\\' && field[1] == 'N') {
      out.columns.push_back(TupleValue{TupleValueKind::kNull, {}});
    } else {
      char* value_end = escaped ? Unescape(field, stop) : stop;
      out.columns.push_back(TupleValue{
          TupleValueKind::kText, std::string_view(field, static_cast<size_t>(value_end - field))});
    }
    if (stop == end) break;
    field = stop + 1;
  }
  if (out.columns.size() != columns) {
    return Error::Corrupt("COPY row has " + std::to_string(out.columns.size()) +
                          " columns, expected " + std::to_string(columns));
  }
  return Status::Ok();
}

void AppendCopyValue(std::string& out, const std::optional<std::string_view>& value) {
  if (!value) {
    out += "\\N";
    return;
  }
  for (char c : *value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        out += c;
    }
  }
}

}  // namespace pgderive
