// The assembler on captured streams: v1 (no streaming), v2 (streamed transactions with
// aborts) and v3 (streaming and two-phase) of one workload must deliver the same
// committed changes in the same order, whatever the memory limit.
#include "cdc/transaction_assembler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "tests/support/fixtures.h"
#include "tests/support/stack_env.h"

namespace pgderive {
namespace {

using testing::LoadCapture;

std::string Render(const TupleData& tuple) {
  std::string out = "(";
  for (const TupleValue& v : tuple.columns) {
    out += static_cast<char>(v.kind);
    if (v.kind == TupleValueKind::kText) out += ":" + std::string(v.data);
    out += ' ';
  }
  return out + ")";
}

// Renders every event as a line, so that two runs can be compared whole.
class Recorder : public ChangeConsumer {
 public:
  Status OnBegin(const TransactionInfo& t) override {
    if (open_) return Error::Corrupt("nested OnBegin");
    open_ = true;
    lines.push_back("BEGIN xid=" + std::to_string(t.xid.value) + " commit=" +
                    t.commit_lsn.ToString() + " time=" + std::to_string(t.commit_time));
    return Status::Ok();
  }
  Status OnChange(const Change& c) override {
    if (!open_) return Error::Corrupt("OnChange outside a transaction");
    std::string line = std::to_string(c.index) + " ";
    for (const auto& r : c.relations) line += r->QualifiedName() + " ";
    std::visit(
        [&](const auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, InsertMessage>) line += "INSERT " + Render(m.new_tuple);
          if constexpr (std::is_same_v<T, UpdateMessage>) {
            line += "UPDATE old" + std::string(1, m.old_kind ? m.old_kind : '-') +
                    Render(m.old_tuple) + " new" + Render(m.new_tuple);
          }
          if constexpr (std::is_same_v<T, DeleteMessage>) line += "DELETE " + Render(m.old_tuple);
          if constexpr (std::is_same_v<T, TruncateMessage>)
            line += "TRUNCATE " + std::to_string(m.flags);
          if constexpr (std::is_same_v<T, LogicalMessage>) {
            line += "MESSAGE " + std::string(m.prefix) + " " + std::string(m.content);
          }
        },
        *c.message);
    lines.push_back(line);
    ++changes;
    return Status::Ok();
  }
  Status OnCommit(const TransactionInfo& t) override {
    if (!open_) return Error::Corrupt("OnCommit without OnBegin");
    open_ = false;
    lines.push_back("COMMIT " + t.commit_lsn.ToString() + " end=" + t.end_lsn.ToString());
    return Status::Ok();
  }
  std::vector<std::string> lines;
  size_t changes = 0;

 private:
  bool open_ = false;
};

std::string SpillDir() {
  return (std::filesystem::temp_directory_path() / testing::UniqueName("pgderive_spill")).string();
}

struct FeedResult {
  std::vector<std::string> lines;
  AssemblerStats max_stats;
  size_t files_left = 0;
};

FeedResult Feed(const std::string& file, size_t memory_limit) {
  const std::string dir = SpillDir();
  Recorder recorder;
  FeedResult run;
  {
    TransactionAssembler assembler({.spill_dir = dir, .memory_limit = memory_limit}, recorder);
    for (const auto& m : LoadCapture("pgoutput/" + file)) {
      Status status = assembler.Process(m.bytes);
      if (!status.ok())
        throw std::runtime_error(file + " at " + m.lsn + ": " + status.error().ToString());
      const AssemblerStats s = assembler.stats();
      run.max_stats.buffered_bytes = std::max(run.max_stats.buffered_bytes, s.buffered_bytes);
      run.max_stats.spilled_bytes = s.spilled_bytes;
      run.max_stats.open_transactions =
          std::max(run.max_stats.open_transactions, s.open_transactions);
    }
    EXPECT_EQ(assembler.stats().open_transactions, 0u) << file;
    EXPECT_EQ(assembler.stats().buffered_bytes, 0u) << file;
    if (std::filesystem::exists(dir)) {
      for ([[maybe_unused]] auto& entry : std::filesystem::directory_iterator(dir))
        ++run.files_left;
    }
  }
  std::filesystem::remove_all(dir);
  run.lines = std::move(recorder.lines);
  return run;
}

TEST(TransactionAssemblerTest, AllProtocolVersionsDeliverTheSameCommittedChanges) {
  const FeedResult v1 = Feed("v1.hex", size_t{64} << 20);
  const FeedResult v2 = Feed("v2_stream.hex", size_t{64} << 20);
  const FeedResult v3 = Feed("v3_twophase.hex", size_t{64} << 20);
  // 700 + 701 + 700 rows of cap_big, the type rows, the messages...
  EXPECT_GT(v1.lines.size(), 2100u);
  EXPECT_EQ(v2.lines, v1.lines);
  EXPECT_EQ(v3.lines, v1.lines);
  EXPECT_EQ(v1.max_stats.open_transactions, 0u);  // v1 never buffers
  EXPECT_GT(v2.max_stats.open_transactions, 0u);
  EXPECT_EQ(v2.max_stats.spilled_bytes, 0u);
  // Nothing of the aborted transaction, the rolled-back savepoint or the rolled-back
  // prepared transaction was delivered.
  for (const std::string& line : v1.lines) {
    EXPECT_EQ(line.find(":aborted "), std::string::npos) << line;
    EXPECT_EQ(line.find(":rolled back "), std::string::npos) << line;
    EXPECT_EQ(line.find("prepared then rolled back"), std::string::npos) << line;
  }
}

TEST(TransactionAssemblerTest, SpillsPastTheMemoryLimitAndStillAgrees) {
  const FeedResult v1 = Feed("v1.hex", size_t{64} << 20);
  constexpr size_t kLimit = 4096;
  const FeedResult v2 = Feed("v2_stream.hex", kLimit);
  const FeedResult v3 = Feed("v3_twophase.hex", kLimit);
  EXPECT_EQ(v2.lines, v1.lines);
  EXPECT_EQ(v3.lines, v1.lines);
  EXPECT_GT(v2.max_stats.spilled_bytes, 50000u);
  // Bounded: never more than the limit plus one message in memory.
  EXPECT_LE(v2.max_stats.buffered_bytes, kLimit + 1024);
  EXPECT_EQ(v2.files_left, 0u);  // spill files are removed once replayed or aborted
  EXPECT_EQ(v3.files_left, 0u);
}

TEST(TransactionAssemblerTest, ResumeSkipsWhatWasDelivered) {
  const FeedResult full = Feed("v2_stream.hex", size_t{64} << 20);
  // Deliver everything once, stopping the consumer's view after the 4th commit.
  std::vector<size_t> commit_lines;
  for (size_t i = 0; i < full.lines.size(); ++i) {
    if (full.lines[i].starts_with("COMMIT ")) commit_lines.push_back(i);
  }
  ASSERT_GT(commit_lines.size(), 6u);
  const std::string fourth = full.lines[commit_lines[3]];
  const Lsn resume = *Lsn::Parse(fourth.substr(7, fourth.find(' ', 7) - 7));

  Recorder recorder;
  const std::string dir = SpillDir();
  TransactionAssembler assembler({.spill_dir = dir, .memory_limit = 4096}, recorder);
  assembler.SetLastCommitted(resume);
  for (const auto& m : LoadCapture("pgoutput/v2_stream.hex"))
    ASSERT_TRUE(assembler.Process(m.bytes).ok());
  const std::vector<std::string> expected(
      full.lines.begin() + static_cast<long>(commit_lines[3]) + 1, full.lines.end());
  EXPECT_EQ(recorder.lines, expected);
  std::filesystem::remove_all(dir);
}

TEST(TransactionAssemblerTest, ReconnectInTheMiddleOfAStreamLosesAndRepeatsNothing) {
  const FeedResult full = Feed("v2_stream.hex", size_t{64} << 20);
  const auto messages = LoadCapture("pgoutput/v2_stream.hex");
  // Cut the connection inside the first streamed transaction, after some chunks.
  size_t cut = 0;
  int starts = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].bytes[0] == 'S' && ++starts == 2) {
      cut = i + 3;
      break;
    }
  }
  ASSERT_GT(cut, 0u);
  Recorder recorder;
  const std::string dir = SpillDir();
  TransactionAssembler assembler({.spill_dir = dir, .memory_limit = 4096}, recorder);
  for (size_t i = 0; i < cut; ++i) ASSERT_TRUE(assembler.Process(messages[i].bytes).ok());
  // Reconnect: half-received state goes; the server resends from the slot's confirmed
  // position, which is at or before what was delivered - here, from the beginning.
  assembler.ResetPartial();
  EXPECT_EQ(assembler.stats().open_transactions, 0u);
  for (const auto& m : messages) ASSERT_TRUE(assembler.Process(m.bytes).ok());
  EXPECT_EQ(recorder.lines, full.lines);
  std::filesystem::remove_all(dir);
}

// A large transaction on tables outside the publication streams chunks without a change
// of ours: Stream Start, Stream Stop, then Stream Commit. It still arrives, as an empty
// transaction (its end moves every store's checkpoint).
TEST(TransactionAssemblerTest, StreamedTransactionWithoutChangesArrivesEmpty) {
  const auto messages = LoadCapture("pgoutput/v2_stream.hex");
  std::vector<uint8_t> start, stop, commit;
  for (const auto& m : messages) {
    if (m.bytes[0] == 'S' && start.empty()) start = m.bytes;
    if (m.bytes[0] == 'E' && stop.empty()) stop = m.bytes;
  }
  ASSERT_FALSE(start.empty());
  ASSERT_FALSE(stop.empty());
  for (const auto& m : messages) {
    // Stream Commit ('c') of the same top-level xid (bytes 1..4 of both).
    if (m.bytes[0] == 'c' &&
        std::equal(m.bytes.begin() + 1, m.bytes.begin() + 5, start.begin() + 1)) {
      commit = m.bytes;
    }
  }
  ASSERT_FALSE(commit.empty());
  Recorder recorder;
  TransactionAssembler assembler({.spill_dir = SpillDir()}, recorder);
  ASSERT_TRUE(assembler.Process(start).ok());
  EXPECT_FALSE(assembler.idle());
  ASSERT_TRUE(assembler.Process(stop).ok());
  Status committed = assembler.Process(commit);
  ASSERT_TRUE(committed.ok()) << committed.error().message();
  ASSERT_EQ(recorder.lines.size(), 2u);
  EXPECT_EQ(recorder.lines[0].rfind("BEGIN xid=", 0), 0u) << recorder.lines[0];
  EXPECT_EQ(recorder.lines[1].rfind("COMMIT ", 0), 0u) << recorder.lines[1];
  EXPECT_TRUE(assembler.idle());
}

TEST(TransactionAssemblerTest, RefusesMessagesOutOfOrder) {
  const auto messages = LoadCapture("pgoutput/v1.hex");
  auto first_of = [&](char type) {
    for (const auto& m : messages) {
      if (m.bytes[0] == static_cast<uint8_t>(type)) return m.bytes;
    }
    throw std::runtime_error("none");
  };
  Recorder recorder;
  TransactionAssembler assembler({.spill_dir = SpillDir(), .memory_limit = 4096}, recorder);
  Status commit = assembler.Process(first_of('C'));
  ASSERT_FALSE(commit.ok());
  EXPECT_EQ(commit.error().kind(), ErrorKind::kCorrupt);
  EXPECT_NE(commit.error().message().find("Commit without Begin"), std::string::npos);
  // An Insert for a relation never described.
  ASSERT_TRUE(assembler.Process(first_of('B')).ok());
  Status insert = assembler.Process(first_of('I'));
  ASSERT_FALSE(insert.ok());
  EXPECT_NE(insert.error().message().find("before its Relation message"), std::string::npos);
  Status nested = assembler.Process(first_of('B'));
  ASSERT_FALSE(nested.ok());
  EXPECT_NE(nested.error().message().find("Begin inside a transaction"), std::string::npos);
}

// Keeps the schema each change was made under, by table.
class SchemaRecorder : public ChangeConsumer {
 public:
  Status OnBegin(const TransactionInfo&) override { return Status::Ok(); }
  Status OnChange(const Change& c) override {
    for (const auto& r : c.relations) schemas[r->relname] = r;
    return Status::Ok();
  }
  Status OnCommit(const TransactionInfo&) override { return Status::Ok(); }
  std::map<std::string, std::shared_ptr<const RelationSchema>> schemas;
};

std::vector<std::string> KeyColumns(const RelationSchema& schema) {
  std::vector<std::string> out;
  for (const ColumnSchema& c : schema.columns) {
    if (c.key) out.push_back(c.name);
  }
  return out;
}

// pgoutput marks every column of a REPLICA IDENTITY FULL table as identity; the row's
// key is its primary key, which the assembler asks for (and only for FULL tables).
TEST(TransactionAssemblerTest, FullIdentityTablesAreKeyedByTheirPrimaryKey) {
  for (bool resolver : {false, true}) {
    SchemaRecorder recorder;
    std::vector<uint32_t> asked;
    AssemblerOptions options{.spill_dir = SpillDir()};
    if (resolver) {
      options.full_identity_key = [&](RelationId id) -> Result<std::vector<std::string>> {
        asked.push_back(id.value);
        return std::vector<std::string>{"id"};
      };
    }
    TransactionAssembler assembler(options, recorder);
    for (const auto& m : LoadCapture("pgoutput/v1.hex"))
      ASSERT_TRUE(assembler.Process(m.bytes).ok());
    ASSERT_TRUE(recorder.schemas.contains("cap_full"));
    const RelationSchema& full = *recorder.schemas.at("cap_full");
    EXPECT_EQ(full.replica_identity, 'f');
    if (resolver) {
      EXPECT_EQ(KeyColumns(full), std::vector<std::string>{"id"});
      // Asked per Relation message of the FULL table, and for no other table.
      ASSERT_FALSE(asked.empty());
      for (uint32_t id : asked) EXPECT_EQ(id, full.id.value);
    } else {
      EXPECT_EQ(KeyColumns(full), (std::vector<std::string>{"id", "v"}));
    }
    // A default identity keeps the message's flags.
    EXPECT_EQ(KeyColumns(*recorder.schemas.at("cap_types")), std::vector<std::string>{"id"});
  }
}

TEST(TransactionAssemblerTest, AFailedKeyLookupFailsTheRelation) {
  SchemaRecorder recorder;
  TransactionAssembler assembler(
      {.spill_dir = SpillDir(),
       .full_identity_key = [](RelationId) -> Result<std::vector<std::string>> {
         return Error::Transient("source gone");
       }},
      recorder);
  Status status = Status::Ok();
  for (const auto& m : LoadCapture("pgoutput/v1.hex")) {
    status = assembler.Process(m.bytes);
    if (!status.ok()) break;
  }
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().kind(), ErrorKind::kTransient);
  EXPECT_FALSE(recorder.schemas.contains("cap_full"));
}

}  // namespace
}  // namespace pgderive
