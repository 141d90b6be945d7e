// The decoder against malformed input: every prefix of every real message, and
// targeted corruptions of real messages. Each must be a kCorrupt error that names the
// message and where it went wrong, never a crash and never a partial message.
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "cdc/pgoutput.h"
#include "tests/support/fixtures.h"

namespace pgderive {
namespace {

using testing::LoadCapture;

std::vector<uint8_t> FirstOfType(const std::string& file, char type, size_t skip = 0) {
  for (const auto& m : LoadCapture("pgoutput/" + file)) {
    if (!m.bytes.empty() && m.bytes[0] == static_cast<uint8_t>(type) && skip-- == 0) return m.bytes;
  }
  throw std::runtime_error(std::string("no message of type ") + type + " in " + file);
}

void ExpectCorrupt(const std::vector<uint8_t>& bytes, const std::string& expect_in_message,
                   DecodeContext context = {}) {
  auto decoded = DecodePgOutput(bytes, context);
  ASSERT_FALSE(decoded.ok()) << "expected an error containing '" << expect_in_message << "'";
  EXPECT_EQ(decoded.error().kind(), ErrorKind::kCorrupt);
  EXPECT_NE(decoded.error().message().find(expect_in_message), std::string::npos)
      << decoded.error().message();
}

TEST(PgOutputCorruptTest, EveryTruncationOfEveryMessageTypeFails) {
  // One real message of each type from the three captures; every proper prefix of it
  // must be refused (all fields are mandatory), naming the message.
  size_t checked = 0;
  for (const char* file : {"v1.hex", "v2_stream.hex", "v3_twophase.hex"}) {
    std::map<uint8_t, bool> seen;
    DecodeContext context;
    for (const auto& m : LoadCapture(std::string("pgoutput/") + file)) {
      const uint8_t type = m.bytes[0];
      if (type == 'S') context.in_stream = true;
      if (type == 'E') context.in_stream = false;
      if (seen[type] || type == 'E') continue;  // Stream Stop has no fields to cut
      seen[type] = true;
      for (size_t length = 0; length < m.bytes.size(); ++length) {
        std::vector<uint8_t> prefix(m.bytes.begin(), m.bytes.begin() + static_cast<long>(length));
        auto decoded = DecodePgOutput(prefix, context);
        ASSERT_FALSE(decoded.ok()) << file << " type " << type << " cut at " << length;
        EXPECT_EQ(decoded.error().kind(), ErrorKind::kCorrupt);
        if (length > 0) {
          EXPECT_NE(decoded.error().message().find(std::string(PgOutputMessageName(type))),
                    std::string::npos)
              << decoded.error().message();
        }
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 1000u);
}

TEST(PgOutputCorruptTest, TruncatedTupleNamesTheField) {
  std::vector<uint8_t> insert = FirstOfType("v1.hex", 'I');
  insert.resize(insert.size() - 3);
  ExpectCorrupt(insert, "Insert message: tuple column data at offset");
}

// Offset of the first text column's Int32 length in an Insert: type(1) relid(4) 'N'(1)
// ncols(2), then kind(1).
constexpr size_t kFirstColumnLength = 1 + 4 + 1 + 2 + 1;

TEST(PgOutputCorruptTest, NegativeColumnLength) {
  std::vector<uint8_t> insert = FirstOfType("v1.hex", 'I');
  ASSERT_EQ(insert[kFirstColumnLength - 1], 't');
  std::memset(&insert[kFirstColumnLength], 0xFF, 4);  // -1
  ExpectCorrupt(insert, "negative length -1");
}

TEST(PgOutputCorruptTest, HugeColumnLength) {
  std::vector<uint8_t> insert = FirstOfType("v1.hex", 'I');
  insert[kFirstColumnLength] = 0x7F;  // 2 GB column in a small message
  ExpectCorrupt(insert,
                "tuple column data at offset 13 of 461 bytes: truncated: 2130706433 bytes needed");
}

TEST(PgOutputCorruptTest, UnknownTupleMarker) {
  std::vector<uint8_t> insert = FirstOfType("v1.hex", 'I');
  insert[kFirstColumnLength - 1] = 'x';
  ExpectCorrupt(insert, "unrecognized tuple data kind 120");
}

TEST(PgOutputCorruptTest, UnknownTupleAction) {
  std::vector<uint8_t> insert = FirstOfType("v1.hex", 'I');
  insert[5] = 'K';  // an Insert must say 'N'
  ExpectCorrupt(insert, "expected one of 'N'");
  std::vector<uint8_t> del = FirstOfType("v1.hex", 'D');
  del[5] = 'N';  // a Delete must say 'K' or 'O'
  ExpectCorrupt(del, "expected one of 'KO'");
}

TEST(PgOutputCorruptTest, NegativeColumnCount) {
  std::vector<uint8_t> insert = FirstOfType("v1.hex", 'I');
  insert[6] = 0xFF;
  insert[7] = 0xF0;
  ExpectCorrupt(insert, "invalid column count -16");
}

TEST(PgOutputCorruptTest, ColumnCountBeyondTheMessage) {
  std::vector<uint8_t> insert = FirstOfType("v1.hex", 'I');
  insert[6] = 0x06;  // 1536 columns
  insert[7] = 0x00;
  ExpectCorrupt(insert, "cannot fit");
}

TEST(PgOutputCorruptTest, UnknownMessageType) {
  ExpectCorrupt({'Z', 0, 0, 0, 1}, "unknown message type 90");
  ExpectCorrupt({}, "empty message");
}

TEST(PgOutputCorruptTest, TrailingBytes) {
  std::vector<uint8_t> commit = FirstOfType("v1.hex", 'C');
  commit.push_back(0);
  ExpectCorrupt(
      commit,
      "Commit message: end of message at offset 26 of 27 bytes: 1 unexpected trailing bytes");
}

TEST(PgOutputCorruptTest, FlagsCheckedAsStrictlyAsPostgres) {
  std::vector<uint8_t> commit = FirstOfType("v1.hex", 'C');
  commit[1] = 1;
  ExpectCorrupt(commit, "Commit message: flags at offset 2 of 26 bytes: unrecognized flags 1");
  std::vector<uint8_t> truncate = FirstOfType("v1.hex", 'T');
  truncate[5] = 4;
  ExpectCorrupt(truncate, "Truncate message: truncate flags");
  std::vector<uint8_t> commit_prepared = FirstOfType("v3_twophase.hex", 'K');
  commit_prepared[1] = 2;
  ExpectCorrupt(commit_prepared, "Commit Prepared message: flags");
}

TEST(PgOutputCorruptTest, UnsetLsnWhereOneIsRequired) {
  std::vector<uint8_t> begin = FirstOfType("v1.hex", 'B');
  std::memset(&begin[1], 0, 8);
  ExpectCorrupt(begin, "Begin message: final_lsn at offset 9 of 21 bytes: LSN not set (0/0)");
  std::vector<uint8_t> rollback = FirstOfType("v3_twophase.hex", 'r');
  std::memset(&rollback[2], 0, 8);
  ExpectCorrupt(rollback, "Rollback Prepared message: prepare_end_lsn");
}

TEST(PgOutputCorruptTest, RelationWithBadCountsOrIdentity) {
  std::vector<uint8_t> relation = FirstOfType("v1.hex", 'R');
  // Layout: 'R' relid(4) "public\0" relname\0 identity(1) natts(2) ...
  const size_t nsp_end = 5 + std::strlen(reinterpret_cast<const char*>(&relation[5])) + 1;
  const size_t rel_end =
      nsp_end + std::strlen(reinterpret_cast<const char*>(&relation[nsp_end])) + 1;
  std::vector<uint8_t> identity = relation;
  identity[rel_end] = 'x';
  ExpectCorrupt(identity, "unrecognized replica identity");
  std::vector<uint8_t> natts = relation;
  natts[rel_end + 1] = 0x7F;
  ExpectCorrupt(natts, "invalid attribute count");
  std::vector<uint8_t> no_nul = relation;
  no_nul.resize(7);  // inside "public", no NUL
  ExpectCorrupt(no_nul, "string without its terminating NUL");
}

TEST(PgOutputCorruptTest, StreamedMessageReadOutsideItsStreamIsCaught) {
  // Inside a stream, an Insert carries an xid; decoded as if outside, the bytes no
  // longer line up and the decoder must notice rather than invent a relation.
  std::vector<uint8_t> streamed;
  bool in_stream = false;
  for (const auto& m : LoadCapture("pgoutput/v2_stream.hex")) {
    if (m.bytes[0] == 'S') in_stream = true;
    if (m.bytes[0] == 'E') in_stream = false;
    if (in_stream && m.bytes[0] == 'I') {
      streamed = m.bytes;
      break;
    }
  }
  ASSERT_FALSE(streamed.empty());
  ASSERT_TRUE(DecodePgOutput(streamed, {.in_stream = true}).ok());
  EXPECT_FALSE(DecodePgOutput(streamed, {.in_stream = false}).ok());
}

}  // namespace
}  // namespace pgderive
