// The parallel initial snapshot on PostgreSQL 15: several workers, many ctid-range
// chunks, all reading the slot's exported snapshot while the table changes underneath.
#include <gtest/gtest.h>

#include <map>
#include <mutex>

#include "snapshot/snapshot_reader.h"
#include "tests/support/pg.h"
#include "tests/support/stack_env.h"

namespace pgderive {
namespace {

using testing::MustConnect;
using testing::MustExecute;
using testing::Scalar;
using testing::UniqueName;

// Collects rows as "col=value|..." text per table, keyed by the first column.
class Collector : public SnapshotConsumer {
 public:
  Status OnTable(const std::shared_ptr<const RelationSchema>& schema) override {
    schemas[schema->QualifiedName()] = schema;
    return Status::Ok();
  }
  Status OnRows(const RelationSchema& schema, std::span<const TupleData> rows) override {
    std::lock_guard lock(mutex);
    ++batches;
    for (const TupleData& row : rows) {
      std::string text;
      for (size_t i = 0; i < row.columns.size(); ++i) {
        text += schema.columns[i].name + "=";
        text += row.columns[i].kind == TupleValueKind::kNull ? "<null>"
                                                             : std::string(row.columns[i].data);
        text += "|";
      }
      const std::string key = std::string(row.columns[0].data);
      auto& table = rows_by_table[schema.QualifiedName()];
      if (!table.emplace(key, text).second) ++duplicates;
    }
    if (fail_after_batches && batches >= *fail_after_batches) {
      return Error::Permanent("consumer refuses batch " + std::to_string(batches));
    }
    return Status::Ok();
  }

  std::mutex mutex;
  std::map<std::string, std::shared_ptr<const RelationSchema>> schemas;
  std::map<std::string, std::map<std::string, std::string>> rows_by_table;
  size_t batches = 0;
  size_t duplicates = 0;
  std::optional<size_t> fail_after_batches;
};

// The same "col=value|" text for every row of a query, by the first column.
std::map<std::string, std::string> Expected(PgConnection& sql, const std::string& query) {
  auto rows = sql.Query(query);
  EXPECT_TRUE(rows.ok());
  std::map<std::string, std::string> out;
  for (const auto& row : rows.value().rows) {
    std::string text;
    for (size_t i = 0; i < row.size(); ++i) {
      text += rows.value().columns[i] + "=" + row[i].value_or("<null>") + "|";
    }
    out.emplace(*row[0], text);
  }
  return out;
}

class SnapshotTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (!slot_.empty() && stack_ != nullptr) {
      PgConnection sql = MustConnect(stack_->pg_dsn());
      IgnoreError(sql.Execute("select pg_drop_replication_slot('" + slot_ + "')"),
                  "the slot may be gone already");
    }
  }
  // A slot with an exported snapshot; the replication connection stays open (and idle)
  // so that the snapshot stays importable.
  std::string ExportSnapshot(PgConnection& repl) {
    slot_ = UniqueName("pgderive_snap");
    auto created = repl.CreateLogicalSlot(slot_, "pgoutput", false, SlotSnapshot::kExport);
    EXPECT_TRUE(created.ok()) << created.error().ToString();
    return created.ok() ? created.value().snapshot_name.value_or("") : "";
  }
  const testing::StackEnv* stack_ = nullptr;
  std::string slot_;
};

TEST_F(SnapshotTest, ParallelChunksSeeExactlyTheExportedSnapshot) {
  PGDERIVE_REQUIRE_STACK();
  stack_ = &stack;
  PgConnection sql = MustConnect(stack.pg_dsn());
  const std::string table = UniqueName("snap_src");
  const std::string quoted = UniqueName("Snap Mixed");
  MustExecute(sql, "create table " + table +
                       " (id int primary key, dropped text, v text, n numeric, a int[], "
                       "doubled int generated always as (id * 2) stored)");
  MustExecute(sql, "alter table " + table + " drop column dropped");
  MustExecute(sql, "insert into " + table +
                       " select g, repeat('x', g % 200) || E'\\t\\\\' || g, g / 7.0, "
                       "array[g, null] from generate_series(1, 20000) g");
  // Holes and moved row versions: deleted rows, updated rows (new versions at the end).
  MustExecute(sql, "delete from " + table + " where id % 10 = 3");
  MustExecute(sql, "update " + table + " set v = null where id % 10 = 5");
  MustExecute(sql, "create table \"" + quoted + "\" (k text, w int)");
  MustExecute(sql, "alter table \"" + quoted + "\" replica identity full");
  MustExecute(sql, "insert into \"" + quoted + "\" values ('a', 1), ('b', null)");
  const auto expected = Expected(sql, "select id, v, n, a from " + table);
  ASSERT_EQ(expected.size(), 18000u);

  PgConnection repl = MustConnect(stack.pg_dsn(), PgConnection::Mode::kReplication);
  const std::string snapshot = ExportSnapshot(repl);
  SnapshotOptions options{.dsn = stack.pg_dsn(),
                          .snapshot_name = snapshot,
                          .tables = {"public." + table, "public." + quoted},
                          .workers = 3,
                          .chunk_pages = 4,
                          .batch_bytes = 4096};
  auto reader = SnapshotReader::Open(options);
  ASSERT_TRUE(reader.ok()) << reader.error().ToString();
  // The export ends with the walsender's next command; the workers hold their own copy.
  ASSERT_TRUE(repl.IdentifySystem().ok());
  // Everything after the snapshot point must stay invisible to the snapshot.
  MustExecute(sql, "update " + table + " set v = 'changed', n = -1");
  MustExecute(sql, "delete from " + table + " where id < 1000");
  MustExecute(sql, "insert into " + table +
                       " (id, v) select g, 'new' from generate_series(20001, 25000) g");
  MustExecute(sql, "insert into \"" + quoted + "\" values ('c', 3)");

  Collector collector;
  Status status = reader.value()->Run(collector);
  ASSERT_TRUE(status.ok()) << status.error().ToString();
  EXPECT_EQ(collector.duplicates, 0u);
  EXPECT_EQ(collector.rows_by_table["public." + table], expected);
  const auto& progress = reader.value()->progress();
  EXPECT_GT(progress.chunks_total.load(), 20u);
  EXPECT_EQ(progress.chunks_done.load(), progress.chunks_total.load());
  EXPECT_EQ(progress.rows_read.load(), 18002u);
  EXPECT_GT(collector.batches, 10u);

  // The shape pgoutput would send: no dropped or generated column; key flags name the
  // row's key (the primary key, also under FULL; none for FULL without one).
  const auto& schema = *collector.schemas.at("public." + table);
  ASSERT_EQ(schema.columns.size(), 4u);
  EXPECT_EQ(schema.columns[0].name, "id");
  EXPECT_TRUE(schema.columns[0].key);
  EXPECT_FALSE(schema.columns[1].key);
  EXPECT_EQ(schema.id.value, std::stoul(Scalar(sql, "select '" + table + "'::regclass::oid")));
  const auto& full = *collector.schemas.at("public." + quoted);
  EXPECT_EQ(full.replica_identity, 'f');
  EXPECT_FALSE(full.columns[0].key || full.columns[1].key);
  EXPECT_EQ(collector.rows_by_table["public." + quoted],
            (std::map<std::string, std::string>{{"a", "k=a|w=1|"}, {"b", "k=b|w=<null>|"}}));
}

TEST_F(SnapshotTest, ConsumerErrorStopsEveryWorker) {
  PGDERIVE_REQUIRE_STACK();
  stack_ = &stack;
  PgConnection sql = MustConnect(stack.pg_dsn());
  const std::string table = UniqueName("snap_fail");
  MustExecute(sql, "create table " + table + " (id int primary key, v text)");
  MustExecute(
      sql, "insert into " + table + " select g, repeat('y', 100) from generate_series(1, 20000) g");
  PgConnection repl = MustConnect(stack.pg_dsn(), PgConnection::Mode::kReplication);
  auto reader = SnapshotReader::Open({.dsn = stack.pg_dsn(),
                                      .snapshot_name = ExportSnapshot(repl),
                                      .tables = {"public." + table},
                                      .workers = 2,
                                      .chunk_pages = 2,
                                      .batch_bytes = 1024});
  ASSERT_TRUE(reader.ok()) << reader.error().ToString();
  Collector collector;
  collector.fail_after_batches = 3;
  Status status = reader.value()->Run(collector);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message().find("consumer refuses batch"), std::string::npos);
  EXPECT_LT(reader.value()->progress().chunks_done.load(),
            reader.value()->progress().chunks_total.load());
}

TEST_F(SnapshotTest, UnknownSnapshotOrTableIsAClearError) {
  PGDERIVE_REQUIRE_STACK();
  auto bad_snapshot = SnapshotReader::Open(
      {.dsn = stack.pg_dsn(), .snapshot_name = "00000003-00000002-1", .tables = {"public.x"}});
  ASSERT_FALSE(bad_snapshot.ok());
  EXPECT_NE(bad_snapshot.error().message().find("snapshot"), std::string::npos)
      << bad_snapshot.error().message();
  PgConnection sql = MustConnect(stack.pg_dsn());
  MustExecute(sql, "begin isolation level repeatable read");
  const std::string exported = Scalar(sql, "select pg_export_snapshot()");
  auto missing = SnapshotReader::Open(
      {.dsn = stack.pg_dsn(), .snapshot_name = exported, .tables = {"public.no_such_table"}});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("no_such_table"), std::string::npos)
      << missing.error().message();
  MustExecute(sql, "commit");
}

}  // namespace
}  // namespace pgderive
