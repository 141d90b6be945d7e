#pragma once

// Backfill of views while the stream keeps flowing (SPEC.md §1.4): the watermark method
// of Netflix's DBLog (Debezium's "incremental snapshot"), with no exported snapshot held
// open and no lock taken on the source.
//
// A job fills some views of one store, all reading one table, chunk by chunk in primary
// key order. For each chunk, on its own connection, the backfiller
//   1. writes a low watermark L into the WAL (a transactional logical message);
//   2. waits until every transaction that held a write lock on the table when L was
//      written has ended - what CREATE INDEX CONCURRENTLY waits for. A transaction's
//      commit record comes before it leaves the server's list of running transactions,
//      and that before it releases its locks; so once they are gone, every write to the
//      table whose commit record precedes L is visible to any snapshot taken after;
//   3. reads the next chunk of rows (key > the last chunk's, in key order, a limit);
//   4. writes a high watermark H.
// The stream thread sees L, the changes between, and H, in commit order. Between L and
// H it records the keys of the table's rows that change. At H, the chunk's rows minus
// those keys are the table's rows exactly as of H: each was read after every change
// before L was visible (2), and no change between L and H touched it. They are placed
// into the stream at H, for the job's views only, with a state change recording how
// far the backfill got. Rows changed in the window reach the views through their own
// changes, which are applied as for any view. A chunk whose window holds a truncate of
// the table, a change whose key cannot be read, or an update that leaves a TOASTed
// value out (the view may not hold the row to take it from), is read again.
//
// Once a chunk's watermark is applied by its store (the store's checkpoint passed H)
// the next one starts; a stream restart before that (a reconnect, a store rejoining)
// loses what was not dispatched, so the chunk is read again. After the last chunk, a
// "done" message marks the views live at its position. A crash leaves the views'
// recorded state "backfilling" with the last chunk applied; the next start resumes after
// it. Chunks are re-read idempotently: a row is always written with its value at its
// chunk's watermark.
//
// Requests arrive the same way: `pgderive backfill` writes a "request" message, which
// the stream thread turns, at its position, into a cleared view and a job.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/log.h"
#include "cdc/change_batch.h"
#include "cdc/pg_connection.h"

namespace pgderive {

// The prefix of every logical message the backfill writes (and `pgderive backfill`).
inline constexpr const char* kBackfillPrefix = "pgderive-backfill";

// A view as the backfill sees it.
struct BackfillView {
  std::string store;
  std::string view;
  std::string table;     // schema.table it reads (row views)
  bool rows = false;     // filled row by row (Redis, OpenSearch); else a query (postgres)
  bool follows = false;  // no `columns`: follows its table's columns
};

struct BackfillOptions {
  std::string dsn;
  std::string pipeline;
  std::vector<BackfillView> views;
  size_t chunk_rows = 16384;  // at most; fewer when rows are wide (about 8 MB a chunk)
  // The checkpoint the store has applied (the end of its last transaction), the one it
  // has made durable, and whether it stopped on a permanent error.
  std::function<Lsn(const std::string& store)> checkpoint;
  std::function<Lsn(const std::string& store)> durable;
  std::function<bool(const std::string& store)> failed;
};

struct BackfillProgress {
  uint64_t rows_done = 0;
  uint64_t rows_estimated = 0;
};

class Backfills {
 public:
  Backfills(BackfillOptions options, Logger& log);
  ~Backfills();

  void Start();
  void Stop();

  // Fills `views` of `store` (reading `table`) from the row after the key `after` (from
  // the start when unset). A job already queued or running for the same store and table
  // is replaced, from the start, by one for both sets of views.
  void Add(const std::string& store, const std::string& table, std::vector<std::string> views,
           std::optional<std::string> after);
  // The columns a following view was last filled with (its recorded state, or the table
  // as it is at start).
  void SetColumns(const std::string& store, const std::string& view,
                  std::vector<std::string> columns);

  // On the stream thread, for every decoded change, in order. A backfill message yields
  // the changes to place at its position (`out`); a schema change of a table that views
  // follow yields their state change (to place before it) and a job; a row change is
  // recorded against the open windows.
  void OnChange(const Change& change, std::vector<OwnedChange>& out);
  // The stream restarts from the slot: what was not dispatched comes again, without the
  // rows of a chunk; every chunk in flight is read again.
  void OnStreamRestart();

  // Views being backfilled (queued or running), with their progress.
  std::map<std::pair<std::string, std::string>, BackfillProgress> Progress();

 private:
  struct Job {
    uint64_t id = 0;
    std::string store;
    std::string table;
    std::vector<std::string> views;
    std::optional<std::string> after;
    bool cancelled = false;
    bool restart = false;  // from the start: a row moved behind the frontier
    // The store applied the "done" state: the views are live; the job waits only for
    // its chunks to be durable (read again, and not live, if the store lost them).
    bool live = false;
    std::chrono::steady_clock::time_point filled_at;  // the last chunk applied
    BackfillProgress progress;
    std::vector<std::string> columns;  // ColumnsOf the table as the last chunk read it
    uint32_t table_oid = 0;            // and its OID
  };
  enum class Verdict { kPending, kDone, kRetry };
  struct Chunk {
    uint64_t id = 0;
    std::shared_ptr<Job> job;
    std::shared_ptr<const RelationSchema> schema;
    std::vector<std::string> key;  // the pagination key's columns
    bool open = false;             // L seen
    bool spoiled = false;          // read again
    std::set<std::string> changed;
    bool read = false;
    std::vector<std::vector<std::optional<std::string>>> rows;
    std::optional<std::string> last;  // key of the last row read
    Verdict verdict = Verdict::kPending;
    size_t limit = 0;         // rows asked for
    size_t bytes = 0;         // the values' bytes read
    Lsn watermark;            // H's commit LSN once placed
    uint64_t generation = 0;  // of the stream when the chunk started
  };

  void Loop();
  // Runs one job to its end (or cancellation, or stop). Transient errors are retried.
  Status RunJob(const std::shared_ptr<Job>& job);
  // One chunk: L, wait for writers, read, H, verdict. Returns the chunk decided.
  Result<std::shared_ptr<Chunk>> RunChunk(
      const std::shared_ptr<Job>& job, const std::shared_ptr<const RelationSchema>& schema,
      const std::vector<std::pair<std::string, std::string>>& key, size_t limit, bool partitioned);
  Status Emit(const std::string& content);
  Status WaitForWriters(const std::string& table);
  // Waits until the store applied `watermark` (true) or the stream restarted since
  // `generation` (false), or Stop.
  enum class Applied { kYes, kNo, kStoreFailed };
  Applied WaitApplied(const std::string& store, Lsn watermark, uint64_t generation);
  // A chunk applied and not yet durable: where the job was before it.
  struct Unsure {
    Lsn watermark;
    std::optional<std::string> after;
    uint64_t rows_done = 0;
  };
  // Drops what is durable; when the store no longer covers a chunk, moves the job back
  // to before it (true).
  bool Rewind(Job& job, std::deque<Unsure>& unsure);
  bool stopping();

  std::string Message(const std::string& mark, uint64_t id) const;
  void Place(Chunk& chunk, Lsn commit_lsn, uint32_t index, std::vector<OwnedChange>& out);
  void Record(const Change& change);
  void DetectSchemaChange(const Change& change, std::vector<OwnedChange>& out);

  BackfillOptions options_;
  Logger& log_;
  const std::string run_;    // this run's nonce, in its messages
  bool has_follow_ = false;  // some row view follows its table
  // Something is queued or in flight (the stream thread's fast path skips the lock).
  std::atomic<bool> active_{false};
  std::optional<PgConnection> sql_;  // the backfill thread's

  std::mutex mutex_;
  std::condition_variable changed_;
  bool stopping_ = false;
  std::deque<std::shared_ptr<Job>> queue_;
  std::shared_ptr<Job> running_;
  std::map<uint64_t, std::shared_ptr<Chunk>> chunks_;  // in flight
  // "done" messages in flight: job id -> (verdict, watermark).
  std::map<uint64_t, std::pair<Verdict, Lsn>> done_;
  uint64_t next_id_ = 1;
  uint64_t generation_ = 0;  // stream restarts
  // (store, view) -> the columns a following view was filled with.
  std::map<std::pair<std::string, std::string>, std::vector<std::string>> columns_;
  std::thread thread_;

  // The stream thread's: the schema of the last change seen (schema changes).
  const RelationSchema* last_seen_ = nullptr;
  std::map<const RelationSchema*, std::shared_ptr<const RelationSchema>> seen_;
};

}  // namespace pgderive
