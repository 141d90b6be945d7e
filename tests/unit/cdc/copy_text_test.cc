// The COPY text-format row parser, on rows PostgreSQL 15 wrote
// (tests/capture/capture_copy_text.sh) and on hand-made escapes it also accepts.
#include "cdc/copy_text.h"

#include <gtest/gtest.h>

#include "tests/support/fixtures.h"

namespace pgderive {
namespace {

std::vector<std::string> CapturedRows() {
  std::vector<std::string> rows;
  const std::string all = testing::ReadFixture("copy/escapes.copy");
  for (size_t start = 0; start < all.size();) {
    const size_t end = all.find('\n', start);
    rows.push_back(all.substr(start, end - start + 1));  // with its newline, as PQgetCopyData
    start = end + 1;
  }
  return rows;
}

// The values of one parsed row; "<null>" for NULL.
std::vector<std::string> Values(std::string row, size_t columns) {
  TupleData tuple;
  Status status = ParseCopyTextRow(row.data(), row.size(), columns, tuple);
  EXPECT_TRUE(status.ok()) << status.error().message();
  std::vector<std::string> out;
  for (const TupleValue& v : tuple.columns) {
    out.push_back(v.kind == TupleValueKind::kNull ? "<null>" : std::string(v.data));
  }
  return out;
}

TEST(CopyTextTest, CapturedRowsFromPostgres) {
  const auto rows = CapturedRows();
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(Values(rows[0], 4), (std::vector<std::string>{"1", "tab\there", "plain", "<null>"}));
  // A literal backslash-N string is not NULL.
  EXPECT_EQ(Values(rows[1], 4),
            (std::vector<std::string>{"2", "line\nbreak\r\n", "back\\slash", "\\N"}));
  // Control characters other than \b\f\n\r\t\v come through raw; unicode untouched.
  EXPECT_EQ(Values(rows[2], 4),
            (std::vector<std::string>{"3", "bell\x07 and \x01", "", "Grüße, 東京 🐘"}));
  EXPECT_EQ(Values(rows[3], 4), (std::vector<std::string>{"4", "<null>", R"({"a	b","c\\d",NULL})",
                                                          R"({"k": "v\\"q"})"}));
}

TEST(CopyTextTest, EveryEscapePostgresReads) {
  EXPECT_EQ(Values("\\b\\f\\v\\\\\\t\t\\101\\x41\\x4a1\\q\\7\n", 2),
            (std::vector<std::string>{"\b\f\v\\\t", "AAJ1q\x07"}));
  EXPECT_EQ(Values("\\x\tend\\", 2), (std::vector<std::string>{"x", "end\\"}));
  EXPECT_EQ(Values("\\N\t\\N", 2), (std::vector<std::string>{"<null>", "<null>"}));
  EXPECT_EQ(Values("\t\n", 2), (std::vector<std::string>{"", ""}));
  EXPECT_EQ(Values("\n", 0), std::vector<std::string>{});
}

TEST(CopyTextTest, WrongColumnCountIsCorrupt) {
  for (const auto& [row, columns] : std::vector<std::pair<std::string, size_t>>{
           {"1\t2\t3\n", 2}, {"1\n", 2}, {"a\\\tb\n", 2}, {"\n", 1 + 1}}) {
    std::string copy = row;
    TupleData tuple;
    Status status = ParseCopyTextRow(copy.data(), copy.size(), columns, tuple);
    ASSERT_FALSE(status.ok()) << row;
    EXPECT_EQ(status.error().kind(), ErrorKind::kCorrupt);
    EXPECT_NE(status.error().message().find("COPY row has"), std::string::npos);
  }
}

}  // namespace
}  // namespace pgderive
