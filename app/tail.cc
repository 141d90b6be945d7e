#include "app/tail.h"

#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "base/redact.h"
#include "base/retry.h"
#include "cdc/change_batch.h"
#include "cdc/pg_connection.h"
#include "cdc/publication.h"
#include "cdc/replication_stream.h"
#include "cdc/row_json.h"
#include "cdc/sql_session.h"
#include "cdc/transaction_assembler.h"
#include "cdc/type_catalog.h"
#include "config/config.h"
#include "snapshot/snapshot_reader.h"

namespace pgderive {
namespace {

constexpr size_t kOutputChunk = size_t{1} << 20;
constexpr auto kFlushInterval = std::chrono::milliseconds(100);

std::string FormatTimestamp(PgTimestamp timestamp) {
  const auto time = FromPgTimestamp(timestamp);
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(micros / 1000000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[48];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06lldZ", static_cast<long long>(micros % 1000000));
  return buf;
}

// Prints changes as JSON lines. Output is buffered and written in 1 MB pieces (and
// at every commit when stdout is a terminal).
class Printer : public ChangeConsumer {
 public:
  Printer(const TailOptions& options, SqlSession& sql) : options_(options), sql_(sql) {
    interactive_ = isatty(fileno(options.out)) != 0;
  }
  ~Printer() override { Flush(); }

  Status OnBegin(const TransactionInfo& transaction) override {
    // What every change of the transaction repeats, formatted once.
    commit_lsn_text_ = "{\"commit_lsn\":\"" + transaction.commit_lsn.ToString() + "\",\"index\":";
    transaction_fields_ = ",\"xid\":" + std::to_string(transaction.xid.value);
    if (transaction.commit_time != 0) {
      transaction_fields_ +=
          ",\"commit_time\":\"" + FormatTimestamp(transaction.commit_time) + "\"";
    }
    return Status::Ok();
  }

  Status OnChange(const Change& change) override {
    if (done_) return Status::Ok();
    // pgderive's own WAL markers (verify's catch-up marker, the benchmark's end mark)
    // are not the database's changes.
    if (const auto* message = std::get_if<LogicalMessage>(change.message);
        message != nullptr && message->prefix.starts_with("pgderive")) {
      return Status::Ok();
    }
    for (const auto& relation : change.relations) {
      if (relation == last_learned_) continue;  // held, so its address cannot be reused
      Status status = LearnTypes(relation->columns);
      if (!status.ok()) return status;
      last_learned_ = relation;
    }
    line_.clear();
    line_ += commit_lsn_text_;
    line_ += std::to_string(change.index);
    line_ += transaction_fields_;
    std::vector<std::string> unchanged;
    Status status = std::visit(
        [&](const auto& m) -> Status {
          using T = std::decay_t<decltype(m)>;
          const RelationSchema* schema =
              change.relations.empty() ? nullptr : change.relations[0].get();
          if constexpr (std::is_same_v<T, InsertMessage>) {
            Relation(*schema, "insert");
            line_ += ",\"new\":";
            return AppendRowJson(line_, *schema, m.new_tuple, types(), &unchanged);
          } else if constexpr (std::is_same_v<T, UpdateMessage>) {
            Relation(*schema, "update");
            line_ += ",\"new\":";
            // A TOASTed key left unchanged is in the old key PostgreSQL logs with it.
            TupleData filled = m.new_tuple;
            if (m.old_kind != '\0') FillUnchangedFromOld(*schema, m.old_kind, m.old_tuple, filled);
            Status s = AppendRowJson(line_, *schema, filled, types(), &unchanged);
            if (s.ok() && m.old_kind != '\0') {
              line_ += m.old_kind == 'K' ? ",\"old_key\":" : ",\"old\":";
              s = AppendOld(*schema, m.old_tuple, m.old_kind);
            }
            return s;
          } else if constexpr (std::is_same_v<T, DeleteMessage>) {
            Relation(*schema, "delete");
            line_ += m.old_kind == 'K' ? ",\"old_key\":" : ",\"old\":";
            return AppendOld(*schema, m.old_tuple, m.old_kind);
          } else if constexpr (std::is_same_v<T, TruncateMessage>) {
            line_ += ",\"op\":\"truncate\",\"relations\":[";
            for (size_t i = 0; i < change.relations.size(); ++i) {
              if (i) line_ += ',';
              line_ += change.relations[i]->json_name;
            }
            line_ += std::string("],\"cascade\":") + (m.cascade() ? "true" : "false") +
                     ",\"restart_identity\":" + (m.restart_identity() ? "true" : "false");
            return Status::Ok();
          } else if constexpr (std::is_same_v<T, LogicalMessage>) {
            line_ += ",\"op\":\"message\",\"prefix\":";
            AppendJsonString(line_, m.prefix);
            line_ += std::string(",\"transactional\":") + (m.transactional() ? "true" : "false") +
                     ",\"content_base64\":\"";
            AppendBase64(line_, m.content);
            line_ += '"';
            return Status::Ok();
          } else {
            return Error::Corrupt("unexpected change message");
          }
        },
        *change.message);
    if (!status.ok()) return status;
    if (!unchanged.empty()) {
      line_ += ",\"unchanged\":[";
      for (size_t i = 0; i < unchanged.size(); ++i) {
        if (i) line_ += ',';
        AppendJsonString(line_, unchanged[i]);
      }
      line_ += ']';
    }
    line_ += "}\n";
    Emit();
    return Status::Ok();
  }

  Status OnCommit(const TransactionInfo& transaction) override {
    if (options_.until && transaction.commit_lsn >= *options_.until) done_ = true;
    // Latency bound for a trickle of changes into a pipe: at least every 100 ms. At bulk
    // rates the 1 MB chunks flush first and this costs one clock read per commit.
    if (interactive_ || std::chrono::steady_clock::now() - last_flush_ > kFlushInterval) Flush();
    return Status::Ok();
  }

  // Whole lines rendered elsewhere (snapshot rows), `ends` the offset after each; from
  // any thread. Stops at the --limit.
  void PrintLines(std::string_view block, std::span<const size_t> ends) {
    std::lock_guard lock(mutex_);
    if (done_ || ends.empty()) return;
    const uint64_t room = options_.limit.value_or(UINT64_MAX) - printed_;
    const size_t take = static_cast<size_t>(std::min<uint64_t>(room, ends.size()));
    if (take == 0) return;
    pending_.append(block.substr(0, ends[take - 1]));
    printed_ += take;
    if (printed_ >= options_.limit.value_or(UINT64_MAX)) done_ = true;
    if (pending_.size() >= kOutputChunk) Flush();
  }

  // Asks the catalog about each type OID once (domains, user-defined arrays). The
  // registry pointer is refreshed here, off the per-change path.
  Status LearnTypes(const std::vector<ColumnSchema>& columns) {
    Status status = learner_.Learn(columns);
    types_holder_ = learner_.types();
    return status;
  }
  const TypeRegistry& types() const { return *types_holder_; }

  void Flush() {
    last_flush_ = std::chrono::steady_clock::now();
    if (!pending_.empty()) {
      std::fwrite(pending_.data(), 1, pending_.size(), options_.out);
      pending_.clear();
    }
    std::fflush(options_.out);
  }
  bool done() const {
    std::lock_guard lock(mutex_);
    return done_;
  }

 private:
  void Relation(const RelationSchema& schema, const char* op) {
    line_ += ",\"relation\":";
    if (!schema.json_name.empty()) {
      line_ += schema.json_name;
    } else {
      AppendJsonString(line_, schema.QualifiedName());
    }
    line_ += ",\"op\":\"";
    line_ += op;
    line_ += '"';
  }

  // An old key ('K') holds the identity columns (nulls for the rest); an old row ('O',
  // REPLICA IDENTITY FULL) all of them.
  Status AppendOld(const RelationSchema& schema, const TupleData& tuple, char old_kind) {
    return AppendRowJson(line_, schema, tuple, types(), nullptr,
                         old_kind == 'K' ? RowColumns::kKeyOnly : RowColumns::kAll);
  }

  void Emit() {
    pending_ += line_;
    if (++printed_ >= options_.limit.value_or(UINT64_MAX)) done_ = true;
    if (pending_.size() >= kOutputChunk) Flush();
  }

  const TailOptions& options_;
  SqlSession& sql_;
  TypeLearner learner_{sql_};
  std::shared_ptr<const TypeRegistry> types_holder_ = learner_.types();
  std::shared_ptr<const RelationSchema> last_learned_;
  std::string commit_lsn_text_;
  std::string transaction_fields_;
  std::string line_;
  std::string pending_;
  uint64_t printed_ = 0;
  bool interactive_ = false;
  std::chrono::steady_clock::time_point last_flush_ = std::chrono::steady_clock::now();
  bool done_ = false;
  mutable std::mutex mutex_;  // PrintLines comes from the snapshot's workers
};

int Fail(const std::string& message) {
  std::fprintf(stderr, "pgderive tail: %s\n", message.c_str());
  return 1;
}

// Prints the snapshot's rows ("op":"read"). Workers render their batch in parallel and
// hand the printer whole lines.
class SnapshotPrinter : public SnapshotConsumer {
 public:
  SnapshotPrinter(Printer& printer, Lsn snapshot_lsn)
      : printer_(printer), snapshot_lsn_(snapshot_lsn.ToString()) {}

  Status OnTable(const std::shared_ptr<const RelationSchema>& schema) override {
    return printer_.LearnTypes(schema->columns);
  }

  Status OnRows(const RelationSchema& schema, std::span<const TupleData> rows) override {
    std::string block;
    std::vector<size_t> ends;
    ends.reserve(rows.size());
    for (const TupleData& row : rows) {
      block += "{\"snapshot_lsn\":\"" + snapshot_lsn_ + "\",\"relation\":";
      block += schema.json_name;
      block += ",\"op\":\"read\",\"new\":";
      Status rendered = AppendRowJson(block, schema, row, printer_.types());
      if (!rendered.ok()) return rendered;
      block += "}\n";
      ends.push_back(block.size());
    }
    printer_.PrintLines(block, ends);
    return Status::Ok();
  }

 private:
  Printer& printer_;
  const std::string snapshot_lsn_;
};

}  // namespace

int RunTail(const TailOptions& options) {
  const std::optional<Config> loaded = LoadConfigOrReport(options.config_path, stderr);
  if (!loaded) return 2;
  const Config& config = *loaded;
  if (options.snapshot && !options.slot.empty()) {
    return Fail(
        "--snapshot needs the temporary slot of the session; it cannot be used with --slot");
  }
  auto sql = SqlSession::Connect(config.source.dsn, "pgderive-tail");
  if (!sql.ok()) return Fail(sql.error().message());
  const std::vector<std::string> tables = config.SourceTables();
  Status status = CheckSourceTables(sql.value(), tables);
  if (status.ok()) status = EnsurePublication(sql.value(), config.source.publication, tables);
  if (!status.ok()) return Fail(status.error().message());

  auto repl =
      PgConnection::Connect(config.source.dsn, PgConnection::Mode::kReplication, "pgderive-tail");
  if (!repl.ok()) return Fail(repl.error().message());
  Printer printer(options, sql.value());
  StreamOptions stream_options;
  stream_options.publication = config.source.publication;
  const bool temporary = options.slot.empty();
  if (temporary) {
    stream_options.slot = "pgderive_tail_" + std::to_string(getpid());
    auto slot = repl.value().CreateLogicalSlot(
        stream_options.slot, "pgoutput", /*temporary=*/true,
        options.snapshot ? SlotSnapshot::kExport : SlotSnapshot::kNoExport);
    if (!slot.ok()) return Fail(slot.error().message());
    stream_options.start = slot.value().consistent_point;
    // The snapshot is exported by the replication connection and lives until its next
    // command, START_REPLICATION: the snapshot workers import it first. It is read to
    // the end before streaming starts (the walsender would time out waiting for
    // replies otherwise). Together the snapshot rows and the stream from
    // consistent_point are the table's full history, with nothing twice.
    if (options.snapshot) {
      auto reader = SnapshotReader::Open({.dsn = config.source.dsn,
                                          .snapshot_name = *slot.value().snapshot_name,
                                          .tables = tables,
                                          .workers = config.snapshot.workers,
                                          .stop = options.stop});
      if (!reader.ok()) return Fail(reader.error().message());
      SnapshotPrinter snapshot_printer(printer, slot.value().consistent_point);
      status = reader.value()->Run(snapshot_printer);
      if (!status.ok()) return Fail(status.error().message());
      printer.Flush();
    }
  } else {
    stream_options.slot = options.slot;
  }
  auto started = ReplicationStream::Start(std::move(repl).value(), stream_options);
  if (!started.ok()) return Fail(started.error().message());
  std::optional<ReplicationStream> stream(std::move(started).value());

  const std::string spill_dir =
      (std::filesystem::temp_directory_path() / ("pgderive-tail-" + std::to_string(getpid())))
          .string();
  TransactionAssembler assembler({.spill_dir = spill_dir}, printer);
  auto stopped = [&] { return options.stop != nullptr && options.stop->load(); };
  while (!printer.done() && !stopped()) {
    if (!stream) {
      // Reconnect to the existing slot: the server resends from its confirmed position
      // (tail never moves it), and the assembler skips every transaction it already
      // printed, by commit LSN.
      Result<ReplicationStream> reopened = RetryTransient(
          [&]() -> Result<ReplicationStream> {
            auto connection = PgConnection::Connect(
                config.source.dsn, PgConnection::Mode::kReplication, "pgderive-tail");
            if (!connection.ok()) return connection.error();
            return ReplicationStream::Start(std::move(connection).value(), stream_options);
          },
          stopped,
          [](const std::string& m) { std::fprintf(stderr, "pgderive tail: %s\n", m.c_str()); });
      if (!reopened.ok()) {
        if (stopped()) break;
        return Fail(reopened.error().message());
      }
      stream.emplace(std::move(reopened).value());
      std::fprintf(stderr, "pgderive tail: reconnected to slot %s\n", stream_options.slot.c_str());
    }
    auto next = stream->Next(std::chrono::milliseconds(500));
    if (!next.ok()) {
      if (temporary) {
        return Fail(next.error().message() +
                    " (a temporary slot ends with its connection; use --slot NAME for a tail "
                    "that survives reconnects)");
      }
      if (next.error().kind() != ErrorKind::kTransient) return Fail(next.error().message());
      std::fprintf(stderr, "pgderive tail: %s; reconnecting\n", next.error().message().c_str());
      printer.Flush();
      stream.reset();
      assembler.ResetPartial();
      continue;
    }
    if (!next.value()) {
      printer.Flush();
      continue;
    }
    status = assembler.Process(next.value()->data);
    if (!status.ok()) return Fail(status.error().message());
    // A temporary slot dies with the session; confirming what was printed lets the
    // server recycle WAL meanwhile. An existing slot is never moved.
    if (temporary) stream->ConfirmFlushed(assembler.last_committed());
  }
  printer.Flush();
  std::filesystem::remove_all(spill_dir);
  return 0;
}

}  // namespace pgderive
