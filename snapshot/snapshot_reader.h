#pragma once

// The initial snapshot (SPEC.md §1.1): every row of the source tables as one exported
// snapshot sees them, read by several connections in parallel, chunk by chunk, with
// `COPY (SELECT ... WHERE ctid range) TO STDOUT`.
//
// Consistency. The slot's CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT names a snapshot
// that sees exactly the transactions committed before the slot's consistent point.
// Every worker connection imports it (SET TRANSACTION SNAPSHOT) inside Open, so all of
// them read the same state, and the exporter may move on (START_REPLICATION ends the
// export) as soon as Open has returned. Rows of the snapshot plus the changes the slot
// streams from its consistent point are the table's whole history, nothing twice.
//
// Chunks. A table is split into ranges of heap pages; each is one COPY with a
// `ctid >= '(a,0)' and ctid < '(b,0)'` predicate, which PostgreSQL 14+ runs as a TID
// range scan (only those pages are read). The last range is open-ended, so a row is
// never missed whatever the table's size when it was measured. Servers before 14 would
// scan the whole table for each range; they get one chunk per table. Memory is bounded:
// a worker holds one batch of rows (about 1 MB) at a time.

#include <atomic>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cdc/change_stream.h"
#include "cdc/pg_connection.h"
#include "cdc/type_catalog.h"

namespace pgderive {

struct SnapshotOptions {
  std::string dsn;
  std::string snapshot_name;                // from CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT
  std::vector<std::string> tables;          // schema-qualified
  int workers = 4;                          // connections reading in parallel
  uint64_t chunk_pages = 2048;              // heap pages per chunk (16 MB of 8 kB pages)
  size_t batch_bytes = size_t{1} << 20;     // rows handed over at once, about this much
  const std::atomic<bool>* stop = nullptr;  // set to abandon the read
};

// Receives the rows. OnTable runs on the calling thread, once per table, before any
// row is read; OnRows runs on the worker threads, concurrently, so it must be
// thread-safe. Rows of one table arrive in no particular order.
class SnapshotConsumer {
 public:
  virtual ~SnapshotConsumer() = default;
  virtual Status OnTable(const std::shared_ptr<const RelationSchema>& schema) = 0;
  // `rows` (and the bytes they point into) are valid during the call only.
  virtual Status OnRows(const RelationSchema& schema, std::span<const TupleData> rows) = 0;
};

// A consumer that needs each table's column types to render its rows: OnTable learns
// them (TypeLearner) and keeps the shared schema; rows arrive with both.
class TypedSnapshotConsumer : public SnapshotConsumer {
 public:
  explicit TypedSnapshotConsumer(TypeLearner& learner) : learner_(learner) {}

  Status OnTable(const std::shared_ptr<const RelationSchema>& schema) final;
  Status OnRows(const RelationSchema& schema, std::span<const TupleData> rows) final {
    return OnTypedRows(schemas_.at(&schema), rows, *types_);
  }

 protected:
  // From several threads at once, like OnRows.
  virtual Status OnTypedRows(const std::shared_ptr<const RelationSchema>& schema,
                             std::span<const TupleData> rows, const TypeRegistry& types) = 0;

 private:
  TypeLearner& learner_;
  std::map<const RelationSchema*, std::shared_ptr<const RelationSchema>> schemas_;
  std::shared_ptr<const TypeRegistry> types_;
};

// Progress, readable from any thread while Run works (for logs, metrics and status).
struct SnapshotProgress {
  // Sum of the tables' pg_class.reltuples, scaled to their size now. A table never
  // analyzed (nor vacuumed) has no estimate (reltuples -1 since PostgreSQL 14, 0 before
  // with relpages 0): it adds nothing here and counts in rows_unestimated_tables.
  std::atomic<uint64_t> rows_estimated{0};
  std::atomic<uint64_t> rows_unestimated_tables{0};
  std::atomic<uint64_t> rows_read{0};
  std::atomic<uint64_t> bytes_read{0};
  std::atomic<uint64_t> chunks_total{0};
  std::atomic<uint64_t> chunks_done{0};
};

class SnapshotReader {
 public:
  // Connects the workers, imports the snapshot into each, and plans the chunks. The
  // exported snapshot is no longer needed once this has returned.
  static Result<std::unique_ptr<SnapshotReader>> Open(const SnapshotOptions& options);
  ~SnapshotReader();

  // Reads every chunk, handing rows to `consumer`. The first error (from a worker or
  // from the consumer) stops all workers and is returned.
  Status Run(SnapshotConsumer& consumer);

  const SnapshotProgress& progress() const { return progress_; }
  const std::vector<std::shared_ptr<const RelationSchema>>& schemas() const { return schemas_; }

 private:
  struct Chunk {
    size_t table = 0;  // index into schemas_
    uint64_t first_page = 0;
    std::optional<uint64_t> end_page;  // exclusive; none: to the end of the table
  };
  explicit SnapshotReader(SnapshotOptions options) : options_(std::move(options)) {}
  Status Plan(PgConnection& connection);
  Status ReadChunk(PgConnection& connection, const Chunk& chunk, SnapshotConsumer& consumer);

  SnapshotOptions options_;
  std::vector<PgConnection> connections_;
  std::vector<std::shared_ptr<const RelationSchema>> schemas_;
  std::vector<std::string> column_lists_;  // per table: "a","b",...
  std::vector<Chunk> chunks_;
  SnapshotProgress progress_;
};

}  // namespace pgderive
