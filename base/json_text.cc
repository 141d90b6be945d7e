#include "base/json_text.h"

#include <array>
#include <cstdint>
#include <cstring>

namespace pgderive {

namespace {

// 1 for the bytes JSON requires escaped: control characters, '"' and '\\'.
constexpr std::array<uint8_t, 256> MakeEscapeTable() {
  std::array<uint8_t, 256> table{};
  for (int c = 0; c < 0x20; ++c) table[c] = 1;
  table['"'] = 1;
  table['\\'] = 1;
  return table;
}
constexpr std::array<uint8_t, 256> kNeedsEscape = MakeEscapeTable();

}  // namespace

void AppendJsonString(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.reserve(out.size() + text.size() + 2);
  out += '"';
  const auto* data = reinterpret_cast<const unsigned char*>(text.data());
  size_t run = 0;  // start of the pending run of bytes that need no escape
  size_t i = 0;
  while (i < text.size()) {
    // Eight bytes at a time while none of them needs escaping. SWAR tests, each exact
    // for "some byte of the word": below 0x20, equal to '"', equal to '\\'.
    if (i + 8 <= text.size()) {
      uint64_t word;
      std::memcpy(&word, data + i, 8);
      constexpr uint64_t kOnes = 0x0101010101010101ull;
      constexpr uint64_t kHigh = 0x8080808080808080ull;
      const uint64_t quote = word ^ (kOnes * '"');
      const uint64_t backslash = word ^ (kOnes * '\\');
      const uint64_t below_space = (word - kOnes * 0x20) & ~word & kHigh;
      const uint64_t has_quote = (quote - kOnes) & ~quote & kHigh;
      const uint64_t has_backslash = (backslash - kOnes) & ~backslash & kHigh;
      if ((below_space | has_quote | has_backslash) == 0) {
        i += 8;
        continue;
      }
    }
    if (!kNeedsEscape[data[i]]) {
      ++i;
      continue;
    }
    const unsigned char c = data[i];
    out.append(text.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 15];
    }
    ++i;
  }
  out.append(text.data() + run, text.size() - run);
  out += '"';
}

}  // namespace pgderive
