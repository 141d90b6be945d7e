#include "cdc/value_json.h"

#include <array>
#include <cstring>

namespace pgderive {
namespace {

// Built-in type OIDs (src/include/catalog/pg_type.dat).
constexpr uint32_t kBool = 16, kBytea = 17, kInt8 = 20, kInt2 = 21, kInt4 = 23, kOid = 26,
                   kJson = 114, kFloat4 = 700, kFloat8 = 701, kDate = 1082, kTimestamp = 1114,
                   kTimestampTz = 1184, kNumeric = 1700, kJsonb = 3802;

const TypeInfo kUnknown{};

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// bytea in hex output format: "\x" followed by two hex digits per byte.
bool DecodeByteaHex(std::string_view text, std::string& bytes) {
  if (text.size() < 2 || text[0] != '\\' || text[1] != 'x' || text.size() % 2 != 0) return false;
  bytes.reserve((text.size() - 2) / 2);
  for (size_t i = 2; i < text.size(); i += 2) {
    const int hi = HexDigit(text[i]);
    const int lo = HexDigit(text[i + 1]);
    if (hi < 0 || lo < 0) return false;
    bytes.push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

bool IsInfinity(std::string_view text) { return text == "infinity" || text == "-infinity"; }

// PostgreSQL's ISO output to ISO 8601: "2024-02-29 13:45:00.5" -> "2024-02-29T13:45:00.5",
// and for a timestamptz "...+00" -> "...Z" (the session is pinned to UTC, so any other
// offset means the pin failed and the instant would be misread: false). Infinities and
// BC dates stay as PostgreSQL prints them (ISO 8601 has no single agreed form for BC).
bool AppendIsoTimestamp(std::string& out, std::string_view text, bool with_zone) {
  if (IsInfinity(text) || text.ends_with(" BC")) {
    AppendJsonString(out, text);
    return true;
  }
  std::string_view local = text;
  if (with_zone) {
    if (!text.ends_with("+00")) return false;
    local = text.substr(0, text.size() - 3);
  }
  const size_t space = local.find(' ');
  if (space == std::string_view::npos) return false;
  out += '"';
  out.append(local.substr(0, space));
  out += 'T';
  out.append(local.substr(space + 1));
  out += with_zone ? "Z\"" : "\"";
  return true;
}

// Parses PostgreSQL's array output (array_out): optional "[lb:ub]..=" dimensions, then
// nested braces; elements separated by the type's delimiter; an element is either
// double-quoted (backslash escapes) or bare (NULL, case-insensitive, is SQL null).
class ArrayParser {
 public:
  ArrayParser(std::string_view text, const TypeInfo& array, const TypeRegistry& types)
      : text_(text), delimiter_(array.delimiter), element_oid_(array.element_oid), types_(types) {}

  Status Parse(std::string& out) {
    if (!text_.empty() && text_.front() == '[') {
      const size_t eq = text_.find('=');
      if (eq == std::string_view::npos) return Fail("dimension decoration without '='");
      pos_ = eq + 1;
    }
    Status status = ParseLevel(out, 0);
    if (!status.ok()) return status;
    if (pos_ != text_.size()) return Fail("text after the closing brace");
    return Status::Ok();
  }

 private:
  Status Fail(const std::string& why) const {
    return Error::Corrupt("malformed array literal (" + why + ") at offset " +
                          std::to_string(pos_) + " of " + std::to_string(text_.size()));
  }

  Status ParseLevel(std::string& out, int depth) {
    if (depth > 6) return Fail("more than 6 dimensions");  // MAXDIM
    if (pos_ >= text_.size() || text_[pos_] != '{') return Fail("expected '{'");
    ++pos_;
    out += '[';
    if (pos_ < text_.size() && text_[pos_] == '}') {
      ++pos_;
      out += ']';
      return Status::Ok();
    }
    while (true) {
      if (pos_ >= text_.size()) return Fail("unterminated array");
      if (text_[pos_] == '{') {
        Status status = ParseLevel(out, depth + 1);
        if (!status.ok()) return status;
      } else {
        Status status = ParseElement(out);
        if (!status.ok()) return status;
      }
      if (pos_ >= text_.size()) return Fail("unterminated array");
      if (text_[pos_] == '}') {
        ++pos_;
        out += ']';
        return Status::Ok();
      }
      if (text_[pos_] != delimiter_) return Fail("expected a delimiter or '}'");
      ++pos_;
      out += ',';
    }
  }

  Status ParseElement(std::string& out) {
    element_.clear();
    if (text_[pos_] == '"') {
      ++pos_;
      while (true) {
        if (pos_ >= text_.size()) return Fail("unterminated quoted element");
        const char c = text_[pos_++];
        if (c == '"') break;
        if (c == '\\') {
          if (pos_ >= text_.size()) return Fail("backslash at the end");
          element_ += text_[pos_++];
        } else {
          element_ += c;
        }
      }
      return AppendJsonValue(out, element_, element_oid_, types_);
    }
    const size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] != delimiter_ && text_[pos_] != '}') {
      if (text_[pos_] == '"' || text_[pos_] == '{') return Fail("unexpected character");
      ++pos_;
    }
    std::string_view bare = text_.substr(start, pos_ - start);
    if (bare.empty()) return Fail("empty element");
    if (bare.size() == 4 && (bare[0] | 0x20) == 'n' && (bare[1] | 0x20) == 'u' &&
        (bare[2] | 0x20) == 'l' && (bare[3] | 0x20) == 'l') {
      out += "null";
      return Status::Ok();
    }
    // Elements map like a column of the element type. A nested array type gets its own
    // ArrayParser, so element_ is never shared and needs no copy.
    return AppendJsonValue(out, bare, element_oid_, types_);
  }

  std::string_view text_;
  char delimiter_;
  uint32_t element_oid_;
  const TypeRegistry& types_;
  size_t pos_ = 0;
  std::string element_;  // a quoted element, unescaped
};

}  // namespace

TypeRegistry::TypeRegistry() {
  const std::array<std::pair<uint32_t, JsonKind>, 14> scalars = {{
      {kBool, JsonKind::kBool},
      {kBytea, JsonKind::kBytea},
      {kInt8, JsonKind::kInteger},
      {kInt2, JsonKind::kInteger},
      {kInt4, JsonKind::kInteger},
      {kOid, JsonKind::kInteger},
      {kJson, JsonKind::kJson},
      {kFloat4, JsonKind::kFloat},
      {kFloat8, JsonKind::kFloat},
      {kDate, JsonKind::kDate},
      {kTimestamp, JsonKind::kTimestamp},
      {kTimestampTz, JsonKind::kTimestampTz},
      {kNumeric, JsonKind::kNumeric},
      {kJsonb, JsonKind::kJson},
  }};
  for (const auto& [oid, kind] : scalars) types_[oid] = TypeInfo{kind};
  // Array type OID -> element type OID, for the built-in types.
  const std::array<std::pair<uint32_t, uint32_t>, 30> arrays = {{
      {1000, kBool},    {1001, kBytea}, {1002, 18},    {1003, 19},         {1005, kInt2},
      {1007, kInt4},    {1016, kInt8},  {1028, kOid},  {1021, kFloat4},    {1022, kFloat8},
      {1231, kNumeric}, {1009, 25},     {1014, 1042},  {1015, 1043},       {2951, 2950},
      {199, kJson},     {3807, kJsonb}, {1182, kDate}, {1115, kTimestamp}, {1185, kTimestampTz},
      {1183, 1083},     {1270, 1266},   {1187, 1186},  {1041, 869},        {651, 650},
      {1040, 829},      {775, 774},     {1017, 600},   {1263, 2275},       {1020, 603},
  }};
  for (const auto& [array_oid, element_oid] : arrays) {
    types_[array_oid] = TypeInfo{JsonKind::kArray, element_oid, array_oid == 1020 ? ';' : ','};
  }
}

const TypeInfo& TypeRegistry::Lookup(uint32_t oid) const {
  auto it = types_.find(oid);
  return it == types_.end() ? kUnknown : it->second;
}

void AppendBase64(std::string& out, std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t n = static_cast<uint32_t>(static_cast<uint8_t>(bytes[i])) << 16;
    if (i + 1 < bytes.size()) n |= static_cast<uint32_t>(static_cast<uint8_t>(bytes[i + 1])) << 8;
    if (i + 2 < bytes.size()) n |= static_cast<uint8_t>(bytes[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kAlphabet[n & 63] : '=';
  }
}

Status AppendJsonValue(std::string& out, std::string_view text, uint32_t type_oid,
                       const TypeRegistry& types) {
  const TypeInfo& type = types.Lookup(type_oid);
  switch (type.kind) {
    case JsonKind::kString:
    case JsonKind::kNumeric:  // exact, as a string: "12.50", "NaN"
    case JsonKind::kDate:     // ISO already: "2024-02-29", "infinity"
      AppendJsonString(out, text);
      return Status::Ok();
    case JsonKind::kInteger:
      out.append(text);
      return Status::Ok();
    case JsonKind::kFloat:
      if (text == "NaN" || text == "Infinity" || text == "-Infinity") {
        AppendJsonString(out, text);
      } else {
        out.append(text);
      }
      return Status::Ok();
    case JsonKind::kBool:
      if (text == "t") {
        out += "true";
      } else if (text == "f") {
        out += "false";
      } else {
        return Error::Corrupt("boolean text output '" + std::string(text.substr(0, 16)) + "'");
      }
      return Status::Ok();
    case JsonKind::kJson:
      out.append(text);
      return Status::Ok();
    case JsonKind::kTimestamp:
    case JsonKind::kTimestampTz: {
      const bool with_zone = type.kind == JsonKind::kTimestampTz;
      if (!AppendIsoTimestamp(out, text, with_zone)) {
        return Error::Permanent(std::string(with_zone ? "timestamptz '" : "timestamp '") +
                                std::string(text.substr(0, 40)) +
                                (with_zone ? "' is not in UTC: the session's TimeZone is not pinned"
                                           : "' is not in ISO format: the session's DateStyle is "
                                             "not pinned"));
      }
      return Status::Ok();
    }
    case JsonKind::kBytea: {
      std::string bytes;
      if (!DecodeByteaHex(text, bytes)) {
        return Error::Corrupt("bytea text output is not in hex format (bytea_output=hex)");
      }
      out += '"';
      AppendBase64(out, bytes);
      out += '"';
      return Status::Ok();
    }
    case JsonKind::kArray: {
      const size_t mark = out.size();
      Status status = ArrayParser(text, type, types).Parse(out);
      if (!status.ok()) {
        out.resize(mark);
        return Error(status.error().kind(),
                     "type " + std::to_string(type_oid) + ": " + status.error().message());
      }
      return Status::Ok();
    }
  }
  return Status::Ok();
}

}  // namespace pgderive
