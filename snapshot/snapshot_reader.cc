#include "snapshot/snapshot_reader.h"

#include <algorithm>
#include <mutex>
#include <optional>
#include <thread>

#include "base/number.h"
#include "base/redact.h"
#include "cdc/copy_text.h"
#include "cdc/publication.h"

namespace pgderive {
namespace {

struct CopyBufferDeleter {
  void operator()(char* buffer) const { PQfreemem(buffer); }
};
using CopyBuffer = std::unique_ptr<char, CopyBufferDeleter>;

// Joins a worker: in the destructor, so that an early return cannot leave one running.
class Workers {
 public:
  ~Workers() {
    for (std::thread& t : threads_) t.join();
  }
  template <typename F>
  void Start(F&& f) {
    threads_.emplace_back(std::forward<F>(f));
  }

 private:
  std::vector<std::thread> threads_;
};

}  // namespace

SnapshotReader::~SnapshotReader() = default;

Result<std::unique_ptr<SnapshotReader>> SnapshotReader::Open(const SnapshotOptions& options) {
  std::unique_ptr<SnapshotReader> reader(new SnapshotReader(options));
  auto connect = [&]() -> Result<PgConnection> {
    auto connected =
        PgConnection::Connect(options.dsn, PgConnection::Mode::kSql, "pgderive-snapshot");
    if (!connected.ok()) return connected.error();
    PgConnection& c = connected.value();
    Status status = c.Execute("begin isolation level repeatable read read only");
    if (status.ok()) {
      status = c.Execute("set transaction snapshot " + c.QuoteLiteral(options.snapshot_name));
    }
    if (!status.ok()) return status.error();
    return std::move(connected).value();
  };
  auto first = connect();
  if (!first.ok()) return first.error();
  reader->connections_.push_back(std::move(first).value());
  Status planned = reader->Plan(reader->connections_.front());
  if (!planned.ok()) return planned.error();
  const size_t wanted =
      std::min(static_cast<size_t>(std::max(options.workers, 1)), reader->chunks_.size());
  while (reader->connections_.size() < wanted) {
    auto more = connect();
    if (!more.ok()) return more.error();
    reader->connections_.push_back(std::move(more).value());
  }
  return reader;
}

// The shape of each table as pgoutput would describe it (no dropped or generated
// columns; key flags from the replica identity), and its chunks.
Status SnapshotReader::Plan(PgConnection& c) {
  const bool tid_range_scan = c.server_version() >= 140000;
  for (const std::string& table : options_.tables) {
    auto described = DescribeTable(c, table);
    if (!described.ok()) return described.error();
    auto schema = std::move(described).value();
    auto info = c.Query(
        // reltuples per relpages (as of the last ANALYZE or VACUUM) times the pages now,
        // as the planner estimates; -1 when never analyzed (see SnapshotProgress).
        "select c.relkind, case when c.reltuples < 0 or (c.relpages = 0 and c.reltuples = 0 "
        "and pg_relation_size(c.oid) > 0) then -1 when c.relpages = 0 then "
        "c.reltuples::bigint else (c.reltuples / c.relpages * (pg_relation_size(c.oid) / "
        "current_setting('block_size')::bigint))::bigint end, "
        "pg_relation_size(c.oid) / current_setting('block_size')::bigint from pg_class c "
        "where c.oid = " +
        std::to_string(schema->id.value));
    if (!info.ok()) return info.error();
    if (info.value().rows.size() != 1) return Error::Permanent("table " + table + " not found");
    const auto& row = info.value().rows[0];
    const bool unestimated = row[1].value_or("") == "-1";
    auto rows_estimated =
        ParseServerNumber<uint64_t>(unestimated ? std::optional<std::string>("0") : row[1]);
    auto relpages = ParseServerNumber<uint64_t>(row[2]);
    if (!rows_estimated.ok() || !relpages.ok()) {
      return Error::Corrupt(
          "size of table " + table + ": " +
          (rows_estimated.ok() ? relpages.status() : rows_estimated.status()).error().message());
    }
    std::string column_list;
    for (const ColumnSchema& col : schema->columns) {
      if (!column_list.empty()) column_list += ", ";
      column_list += c.QuoteIdentifier(col.name);
    }
    const size_t index = schemas_.size();
    schemas_.push_back(std::move(schema));
    column_lists_.push_back(column_list.empty() ? "" : column_list);

    progress_.rows_estimated += rows_estimated.value();
    if (unestimated) ++progress_.rows_unestimated_tables;
    const uint64_t pages = relpages.value();
    const bool partitioned = row[0].value_or("") == "p";
    const uint64_t step = std::max<uint64_t>(options_.chunk_pages, 1);
    if (!tid_range_scan || partitioned || pages <= step) {
      chunks_.push_back(Chunk{index, 0, std::nullopt});
      continue;
    }
    for (uint64_t first = 0; first < pages; first += step) {
      std::optional<uint64_t> end;
      if (first + step < pages) end = first + step;  // the last chunk is open-ended
      chunks_.push_back(Chunk{index, first, end});
    }
  }
  // Largest tables' chunks are interleaved with the others' in table order; the
  // workers take them first come, first served.
  progress_.chunks_total = chunks_.size();
  return Status::Ok();
}

Status SnapshotReader::ReadChunk(PgConnection& c, const Chunk& chunk, SnapshotConsumer& consumer) {
  const RelationSchema& schema = *schemas_[chunk.table];
  const bool partitioned_or_whole = chunk.first_page == 0 && !chunk.end_page;
  std::string sql = "copy (select " + column_lists_[chunk.table] + " from " +
                    (partitioned_or_whole ? "" : "only ") + c.QuoteIdentifier(schema.nspname) +
                    "." + c.QuoteIdentifier(schema.relname);
  if (!partitioned_or_whole) {
    sql += " where ctid >= '(" + std::to_string(chunk.first_page) + ",0)'::tid";
    if (chunk.end_page) sql += " and ctid < '(" + std::to_string(*chunk.end_page) + ",0)'::tid";
  }
  sql += ") to stdout";
  const std::string table = schema.QualifiedName();
  {
    PgResultPtr started(PQexec(c.get(), sql.c_str()));
    if (started == nullptr || PQresultStatus(started.get()) != PGRES_COPY_OUT) {
      return Error::Transient("snapshot read of " + table +
                              " failed: " + RedactSecrets(PQerrorMessage(c.get())));
    }
  }
  std::vector<CopyBuffer> buffers;
  std::vector<TupleData> rows;
  size_t count = 0, bytes = 0;
  auto hand_over = [&]() -> Status {
    if (count == 0) return Status::Ok();
    Status status = consumer.OnRows(schema, std::span<const TupleData>(rows.data(), count));
    progress_.rows_read += count;
    progress_.bytes_read += bytes;
    buffers.clear();
    count = bytes = 0;
    return status;
  };
  while (true) {
    char* data = nullptr;
    const int length = PQgetCopyData(c.get(), &data, 0);
    if (length == -1) break;  // the end of the COPY
    if (length < 0) {
      return Error::Transient("snapshot read of " + table +
                              " failed: " + RedactSecrets(PQerrorMessage(c.get())));
    }
    buffers.emplace_back(data);
    if (rows.size() == count) rows.emplace_back();
    Status parsed =
        ParseCopyTextRow(data, static_cast<size_t>(length), schema.columns.size(), rows[count]);
    if (!parsed.ok()) {
      return Error::Corrupt("snapshot read of " + table + ": " + parsed.error().message());
    }
    ++count;
    bytes += static_cast<size_t>(length);
    if (bytes >= options_.batch_bytes) {
      Status status = hand_over();
      if (!status.ok()) return status;
      if (options_.stop != nullptr && options_.stop->load()) {
        return Error::Transient("snapshot stopped");
      }
    }
  }
  Status status = hand_over();
  if (!status.ok()) return status;
  PgResultPtr finished(PQgetResult(c.get()));
  if (finished == nullptr || PQresultStatus(finished.get()) != PGRES_COMMAND_OK) {
    return Error::Transient(
        "snapshot read of " + table + " failed: " +
        RedactSecrets(finished ? PQresultErrorMessage(finished.get()) : PQerrorMessage(c.get())));
  }
  while (PgResultPtr rest{PQgetResult(c.get())}) {
  }
  ++progress_.chunks_done;
  return Status::Ok();
}

Status SnapshotReader::Run(SnapshotConsumer& consumer) {
  for (const auto& schema : schemas_) {
    Status status = consumer.OnTable(schema);
    if (!status.ok()) return status;
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;
  std::optional<Error> first_error;
  {
    Workers workers;
    for (PgConnection& connection : connections_) {
      workers.Start([&, conn = &connection] {
        while (!failed.load()) {
          if (options_.stop != nullptr && options_.stop->load()) return;
          const size_t i = next.fetch_add(1);
          if (i >= chunks_.size()) return;
          Status status = ReadChunk(*conn, chunks_[i], consumer);
          if (!status.ok()) {
            std::lock_guard lock(mutex);
            if (!first_error) first_error = status.error();
            failed = true;
            return;
          }
        }
      });
    }
  }
  if (first_error) return *first_error;
  if (options_.stop != nullptr && options_.stop->load()) {
    return Error::Transient("snapshot stopped");
  }
  for (PgConnection& connection : connections_) {
    Status status = connection.Execute("commit");
    if (!status.ok()) return status;
  }
  return Status::Ok();
}

Status TypedSnapshotConsumer::OnTable(const std::shared_ptr<const RelationSchema>& schema) {
  schemas_[schema.get()] = schema;
  Status status = learner_.Learn(schema->columns);
  types_ = learner_.types();
  return status;
}

}  // namespace pgderive
