// SPEC.md §3 value mapping: PostgreSQL text output -> JSON.
#include "cdc/value_json.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cdc/pgoutput.h"
#include "tests/support/fixtures.h"

namespace pgderive {
namespace {

using nlohmann::json;

std::string Map(std::string_view text, uint32_t oid) {
  static const TypeRegistry types;
  std::string out;
  Status status = AppendJsonValue(out, text, oid, types);
  EXPECT_TRUE(status.ok()) << text << " (oid " << oid << "): " << status.error().ToString();
  return out;
}

Error MapError(std::string_view text, uint32_t oid) {
  static const TypeRegistry types;
  std::string out = "prefix";
  Status status = AppendJsonValue(out, text, oid, types);
  EXPECT_EQ(out, "prefix") << "output must be unchanged on error";
  if (status.ok()) throw std::runtime_error(std::string(text) + " mapped but should not");
  return status.error();
}

TEST(ValueJsonTest, Numbers) {
  EXPECT_EQ(Map("-32768", 21), "-32768");
  EXPECT_EQ(Map("9223372036854775807", 20), "9223372036854775807");
  EXPECT_EQ(Map("4294967295", 26), "4294967295");
  EXPECT_EQ(Map("0.1", 701), "0.1");
  EXPECT_EQ(Map("1e+30", 701), "1e+30");
  EXPECT_EQ(Map("-0", 700), "-0");
  EXPECT_EQ(Map("NaN", 701), "\"NaN\"");
  EXPECT_EQ(Map("Infinity", 700), "\"Infinity\"");
  EXPECT_EQ(Map("-Infinity", 701), "\"-Infinity\"");
  EXPECT_EQ(Map("12.50", 1700), "\"12.50\"");
  EXPECT_EQ(Map("NaN", 1700), "\"NaN\"");
  EXPECT_EQ(Map("-123456789012345678901234567890.000001", 1700),
            "\"-123456789012345678901234567890.000001\"");
}

TEST(ValueJsonTest, BoolJsonAndStrings) {
  EXPECT_EQ(Map("t", 16), "true");
  EXPECT_EQ(Map("f", 16), "false");
  EXPECT_EQ(MapError("yes", 16).kind(), ErrorKind::kCorrupt);
  EXPECT_EQ(Map("{\"a\": [1, 2]}", 3802), "{\"a\": [1, 2]}");
  EXPECT_EQ(Map("null", 114), "null");
  EXPECT_EQ(Map("caf\xC3\xA9 \"q\" \\ \n\t\x01", 25),
            "\"caf\xC3\xA9 \\\"q\\\" \\\\ \\n\\t\\u0001\"");
  EXPECT_EQ(Map("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 2950),
            "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"");
  EXPECT_EQ(Map("happy", 99999), "\"happy\"");  // an enum (unknown OID): its text
}

// Byte-by-byte reference for AppendJsonString, whose fast path scans 8 bytes at a time.
std::string ReferenceEscape(std::string_view text) {
  std::string out = "\"";
  char buf[8];
  for (unsigned char c : text) {
    if (c == '"')
      out += "\\\"";
    else if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\b')
      out += "\\b";
    else if (c == '\f')
      out += "\\f";
    else if (c < 0x20) {
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

TEST(ValueJsonTest, EscapingAgreesWithReferenceAtEveryPosition) {
  const std::string specials =
      std::string("\"\\\n\x01\x1f\x7f\xc3\xa9 !~", 12) + std::string(1, '\0');
  for (size_t length = 0; length <= 40; ++length) {
    for (size_t position = 0; position < std::max<size_t>(length, 1); ++position) {
      for (char special : specials) {
        std::string text(length, 'a');
        if (length > 0) text[position] = special;
        std::string out;
        AppendJsonString(out, text);
        ASSERT_EQ(out, ReferenceEscape(text)) << "length " << length << " position " << position
                                              << " byte " << static_cast<int>(special);
      }
    }
  }
}

TEST(ValueJsonTest, DatesAndTimes) {
  EXPECT_EQ(Map("2024-02-29", 1082), "\"2024-02-29\"");
  EXPECT_EQ(Map("infinity", 1082), "\"infinity\"");
  EXPECT_EQ(Map("2024-02-29 13:45:00.123456", 1114), "\"2024-02-29T13:45:00.123456\"");
  EXPECT_EQ(Map("2024-02-29 13:45:00", 1114), "\"2024-02-29T13:45:00\"");
  EXPECT_EQ(Map("-infinity", 1114), "\"-infinity\"");
  EXPECT_EQ(Map("2024-02-29 12:45:00.123456+00", 1184), "\"2024-02-29T12:45:00.123456Z\"");
  EXPECT_EQ(Map("infinity", 1184), "\"infinity\"");
  EXPECT_EQ(Map("13:45:00", 1083), "\"13:45:00\"");
  EXPECT_EQ(Map("13:45:00+02", 1266), "\"13:45:00+02\"");
  EXPECT_EQ(Map("1 year 2 mons 3 days 04:05:06.7", 1186), "\"1 year 2 mons 3 days 04:05:06.7\"");
  Error not_utc = MapError("2024-02-29 13:45:00+01", 1184);
  EXPECT_EQ(not_utc.kind(), ErrorKind::kPermanent);
  EXPECT_NE(not_utc.message().find("not in UTC"), std::string::npos);
}

TEST(ValueJsonTest, ByteaAsBase64) {
  EXPECT_EQ(Map("\\x", 17), "\"\"");
  EXPECT_EQ(Map("\\x00ff10", 17), "\"AP8Q\"");
  EXPECT_EQ(Map("\\x4d", 17), "\"TQ==\"");
  EXPECT_EQ(Map("\\x4d61", 17), "\"TWE=\"");
  EXPECT_EQ(Map("\\x4d616e", 17), "\"TWFu\"");
  EXPECT_EQ(MapError("\\000abc", 17).kind(), ErrorKind::kCorrupt);  // escape format
  EXPECT_EQ(MapError("\\x0", 17).kind(), ErrorKind::kCorrupt);
}

TEST(ValueJsonTest, Arrays) {
  EXPECT_EQ(Map("{}", 1007), "[]");
  EXPECT_EQ(Map("{1,NULL,3}", 1007), "[1,null,3]");
  EXPECT_EQ(Map("{{1,2},{3,4}}", 1007), "[[1,2],[3,4]]");
  EXPECT_EQ(Map("[0:1]={7,8}", 1007), "[7,8]");
  EXPECT_EQ(Map("[1:1][1:2]={{7,8}}", 1007), "[[7,8]]");
  EXPECT_EQ(Map("{\"a b\",\"c,d\",\"e\\\"f\",NULL,\"NULL\",null}", 1009),
            "[\"a b\",\"c,d\",\"e\\\"f\",null,\"NULL\",null]");
  EXPECT_EQ(Map("{NaN,1.5,-Infinity}", 1022), "[\"NaN\",1.5,\"-Infinity\"]");
  EXPECT_EQ(Map("{t,f}", 1000), "[true,false]");
  EXPECT_EQ(Map("{12.50,NaN}", 1231), "[\"12.50\",\"NaN\"]");
  EXPECT_EQ(Map("{\"2024-01-01 00:00:00+00\",infinity}", 1185),
            "[\"2024-01-01T00:00:00Z\",\"infinity\"]");
  EXPECT_EQ(Map("{\"\\\\x00ff\"}", 1001), "[\"AP8=\"]");
  EXPECT_EQ(Map("{\"{\\\"a\\\": 1}\",NULL}", 3807), "[{\"a\": 1},null]");
  EXPECT_EQ(Map("{(1,1),(0,0);(2,2),(1,1)}", 1020), "[\"(1,1),(0,0)\",\"(2,2),(1,1)\"]");
}

TEST(ValueJsonTest, MalformedArraysAreRefused) {
  for (const char* bad : {"", "1,2", "{1,2", "{1,,2}", "{\"a}", "{1}x", "{{1}", "[0:1]{1,2}",
                          "{a\"b}", "{{{{{{{{1}}}}}}}}"}) {
    Error error = MapError(bad, 1007);
    EXPECT_EQ(error.kind(), ErrorKind::kCorrupt) << bad;
    EXPECT_NE(error.message().find("malformed array literal"), std::string::npos)
        << error.message();
    EXPECT_NE(error.message().find("type 1007"), std::string::npos) << error.message();
  }
}

TEST(ValueJsonTest, RegistryAddsCatalogKnowledge) {
  TypeRegistry types;
  // A domain over numeric maps like numeric; an array of an enum maps element-wise.
  types.Add(50001, TypeInfo{JsonKind::kNumeric});
  types.Add(50002, TypeInfo{JsonKind::kArray, 50003, ','});
  std::string out;
  ASSERT_TRUE(AppendJsonValue(out, "1.10", 50001, types).ok());
  out += ' ';
  ASSERT_TRUE(AppendJsonValue(out, "{sad,happy}", 50002, types).ok());
  EXPECT_EQ(out, "\"1.10\" [\"sad\",\"happy\"]");
}

// The captured rows of cap_types (tests/capture/capture_pgoutput.sh), mapped column by
// column with the OIDs of their Relation message, as the SPEC says they must look.
TEST(ValueJsonTest, CapturedRowsMapAsSpecified) {
  auto capture = testing::LoadCapture("pgoutput/v1.hex");
  const TypeRegistry types;
  std::optional<RelationMessage> relation;
  std::vector<json> rows;
  for (const auto& raw : capture) {
    auto message = DecodePgOutput(raw.bytes, {});
    ASSERT_TRUE(message.ok());
    if (auto* r = std::get_if<RelationMessage>(&message.value()); r && r->relname == "cap_types") {
      relation = *r;
    }
    auto* insert = std::get_if<InsertMessage>(&message.value());
    if (!insert || !relation || insert->relation_id != relation->relation_id) continue;
    std::string object = "{";
    for (size_t c = 0; c < insert->new_tuple.columns.size(); ++c) {
      if (c > 0) object += ',';
      AppendJsonString(object, relation->attributes[c].name);
      object += ':';
      const TupleValue& value = insert->new_tuple.columns[c];
      if (value.kind == TupleValueKind::kNull) {
        object += "null";
      } else {
        ASSERT_TRUE(
            AppendJsonValue(object, value.data, relation->attributes[c].type_oid, types).ok());
      }
    }
    object += '}';
    rows.push_back(json::parse(object));  // throws if we produced invalid JSON
  }
  ASSERT_EQ(rows.size(), 3u);
  const json expected_row1 = json::parse(R"({
    "id": 1, "c_int2": 32767, "c_int4": -2147483648, "c_int8": 9223372036854775807,
    "c_oid": 4294967295, "c_float4": 1.5, "c_float8": 0.1, "c_numeric": "12.50",
    "c_bool": true, "c_text": "caf\u00e9 \u2615 \"quoted\" \\ back", "c_varchar": "varchar",
    "c_char": "ab ", "c_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "c_inet": "192.168.0.1/24", "c_json": {"a": [1, 2]}, "c_jsonb": {"b": {"c": null}},
    "c_date": "2024-02-29", "c_ts": "2024-02-29T13:45:00.123456",
    "c_tstz": "2024-02-29T12:45:00.5Z", "c_time": "13:45:00",
    "c_interval": "1 year 2 mons 3 days 04:05:06.7", "c_bytea": "AP8Q",
    "c_int4_arr": [1, null, 3], "c_text_arr": ["a b", "c,d", "e\"f", null, "NULL"],
    "c_mood": "happy"})");
  EXPECT_EQ(rows[0], expected_row1) << rows[0].dump();
  const json expected_row2 = json::parse(R"({
    "id": 2, "c_int2": null, "c_int4": null, "c_int8": null, "c_oid": null,
    "c_float4": "NaN", "c_float8": "-Infinity", "c_numeric": "NaN", "c_bool": false,
    "c_text": "", "c_varchar": null, "c_char": null, "c_uuid": null, "c_inet": null,
    "c_json": null, "c_jsonb": [], "c_date": "infinity", "c_ts": "-infinity",
    "c_tstz": "infinity", "c_time": null, "c_interval": null, "c_bytea": "",
    "c_int4_arr": [], "c_text_arr": [["x", "y"], ["z", null]], "c_mood": null})");
  EXPECT_EQ(rows[1], expected_row2) << rows[1].dump();
}

}  // namespace
}  // namespace pgderive
