#pragma once

// Backfill of views while the stream keeps flowing (SPEC.md §1.4): the watermark method
// of Netflix's DBLog (Debezium's "incremental snapshot"), with no exported snapshot held
// open and no lock taken on the source. This is the driver: the backfill thread, its SQL
// and its job queue. What the stream thread does with the watermarks - the window
// between them, which rows are placed where - is the pure snapshot/watermark_window.h.
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
// The stream thread sees L, the changes between, and H, in commit order; at H the
// window places the chunk's rows not changed between L and H, with the views' state
// (watermark_window.h says why that is exact), or decides the chunk is read again.
//
//   Add -> queue -> Loop (one thread and connection per worker,
//                         source.snapshot_parallelism of them) -> RunJob: the key, a size;
//                         then per chunk, up to kChunksInFlight ahead
//                            ReadChunk: BeginChunk; Emit(L) .....WAL.....> stream thread:
//                                       WaitForWriters; COPY (SELECT ... OnChange, the
//                                       LIMIT); ChunkRead; Emit(H) ..WAL..> window places
//                                                                          the rows at H
//                            the oldest chunk in flight: its verdict, WaitApplied (the
//                            store's checkpoint passed H); a chunk read again has every
//                            later one in flight read again
//                          Emit("done") ...........WAL...........> the views live at it;
//                          WaitApplied, then every chunk durable: the job ends
//
// Chunks are pipelined: while the store applies chunk n, chunk n+1 (and up to
// kChunksInFlight in all, about 8 MB each) is read, each with its own watermarks; the
// window places a chunk only after the one it follows, so the `after` recorded with a
// chunk's rows never claims a key whose row is not in that store transaction or an
// earlier one. A crash re-reads at most the chunks in flight. A stream restart before a
// chunk is applied (a reconnect, a store rejoining) loses what was not dispatched, so
// that chunk and the ones after it are read again. Jobs of different stores or tables
// run at once, one a worker. After the last chunk, a
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
#include <stop_token>
#include <string>
#include <vector>

#include "base/log.h"
#include "base/stoppable_thread.h"
#include "cdc/change_batch.h"
#include "cdc/sql_session.h"
#include "cdc/type_catalog.h"
#include "snapshot/watermark_window.h"

namespace pgderive {

// The background verifier (verify.continuous; snapshot/verify.cc) compares Redis and
// OpenSearch views with their tables through the stores, which this layer does not see:
// the pipeline gives it these (sinks/common/view_compare.h does the comparing).
struct VerifyHooks {
  // What `store` holds for `view` under the keys `rows` make there: key -> JSON.
  // `types`: the column types of `schema` (domains, enums, arrays), learned by the
  // verifier on its own session.
  std::function<Result<std::map<std::string, std::string>>(
      const std::string& store, const std::string& view,
      const std::shared_ptr<const RelationSchema>& schema, const ChunkRows& rows,
      const TypeRegistry& types)>
      held;
  // `comparable` (rows no change touched in the window) against `held`: logs each
  // difference (with `checked`, the position the store was read at) and returns how many
  // entries differ.
  std::function<Result<size_t>(
      const std::string& store, const std::string& view,
      const std::shared_ptr<const RelationSchema>& schema, const ChunkRows& comparable,
      const std::map<std::string, std::string>& held, Lsn checked, const TypeRegistry& types)>
      check;
  // Whether the view can be compared now (its store answers, the view is not failed).
  std::function<bool(const std::string& store, const std::string& view)> ready;
  // Whether `table`, read on `sql` now, is as the pipeline last accepted it: a table
  // replaced, unpublished, attached, detached or rewritten gets its views refilled, and
  // until that refill is asked for they are not compared (nor repaired). Unset: always.
  std::function<bool(SqlSession& sql, const std::string& store, const std::string& view,
                     const std::string& table)>
      settled;
  // A page of the keys `store` holds for `view` (ViewInspector::ScanKeys): the keys, the
  // cursor to go on from (empty: the end); nullopt when the store cannot page them.
  std::function<Result<std::optional<std::pair<std::vector<std::string>, std::string>>>(
      const std::string& store, const std::string& view, const std::string& cursor, size_t count)>
      scan;
  // The row keys a key of the view can be made from (ViewInspector::RowKeys): each the
  // values of `schema`'s row key columns, in column order.
  std::function<Result<std::vector<std::vector<std::string>>>(
      const std::string& store, const std::string& view, const RelationSchema& schema,
      const std::string& key)>
      row_keys;
  // Views their store compares on its own, whole, each pass (a postgres view: its table
  // against its query over the store's mirrors, in one snapshot of the store's database,
  // by digests: sinks/common/view_audit.h), as (store, view).
  std::vector<std::pair<std::string, std::string>> store_checked = {};
  // One comparison of such a view: the entries compared and each difference (its key,
  // "missing" / "extra" / "different (columns)", the lines saying what differs), at the
  // store's checkpoint `at`. nullopt: not comparable now (a mirror it reads fills).
  struct StoreCheck {
    struct Difference {
      std::string key;
      std::string summary;
      std::string detail;
    };
    uint64_t entries = 0;
    std::vector<Difference> differing;
    Lsn at;
  };
  std::function<Result<std::optional<StoreCheck>>(const std::string& store,
                                                  const std::string& view)>
      store_check = {};
  // Writes the entries of `keys` again from what the store holds (its mirrors).
  std::function<Status(const std::string& store, const std::string& view,
                       const std::vector<std::string>& keys)>
      store_repair = {};
};

struct ContinuousVerifyOptions {
  bool continuous = false;
  int64_t rows_per_second = 1000;  // source rows read a second, every view together
  bool repair = true;              // a chunk that differs is written again
  VerifyHooks hooks;
};

// What the verifier found in a view since the start.
struct VerifyProgress {
  uint64_t rows_checked = 0;
  uint64_t keys_checked = 0;  // the store's keys looked up in the source (extra entries)
  uint64_t chunks_differing = 0;
  uint64_t entries_differing = 0;
  uint64_t entries_repaired = 0;
  uint64_t passes = 0;
  std::optional<std::chrono::system_clock::time_point> last_pass;  // the last full pass's end
  // A chunk still differed after its repairs (verify.repair: auto): why, naming the
  // table and the keys. The view is failed with it (/status, /readyz) and not walked
  // until a fill of it is queued (`pgderive backfill --view`, a refill); empty: not.
  std::string failed;
  // The keys of a chunk (or the extra entries) that still differed after its repairs on
  // the last pass: the view fails when the next pass meets the same again (a store
  // change, an index deleted, is refilled meanwhile instead).
  std::string unrepaired;
};

struct BackfillOptions {
  std::string dsn;
  std::string pipeline;
  std::vector<BackfillView> views;
  size_t chunk_rows = 16384;  // at most; fewer when rows are wide (about 8 MB a chunk)
  // Jobs at once, each on a connection of its own (source.snapshot_parallelism).
  int parallelism = 1;
  // Chunks of a job read ahead of the one the store is applying, this one included.
  size_t chunks_in_flight = 4;
  // The checkpoint the store has applied (the end of its last transaction), the one it
  // has made durable, and whether it stopped on a permanent error.
  std::function<Lsn(const std::string& store)> checkpoint;
  std::function<Lsn(const std::string& store)> durable;
  std::function<bool(const std::string& store)> failed;
  ContinuousVerifyOptions verify = {};
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
  // What the background verifier found, per (store, view) it walked.
  std::map<std::pair<std::string, std::string>, VerifyProgress> Verified();

 private:
  // The window's job (store, table, views, columns; cancelled, restart), and where the
  // backfill thread is.
  struct Job : BackfillJob {
    std::optional<std::string> after;
    // The store applied the "done" state: the views are live; the job waits only for
    // its chunks to be durable (read again, and not live, if the store lost them).
    bool live = false;
    std::chrono::steady_clock::time_point filled_at;  // the last chunk applied
    // Where the worker's time went: reading chunks (L, writers, rows, H), waiting for the
    // stream to place the oldest one, waiting for its store to apply it.
    struct {
      std::chrono::duration<double> read{}, verdict{}, applied{};
      // The read's parts: the table's description, the watermarks, the writers, the rows.
      std::chrono::duration<double> describe{}, watermarks{}, writers{}, rows{};
    } timing;
    BackfillProgress progress;
  };
  using Verdict = WatermarkWindow::Verdict;
  // A chunk read (its H written), until the store applied it.
  struct Flight {
    uint64_t id = 0;
    uint64_t generation = 0;  // the stream's when it started
    size_t asked = 0;         // its limit
    bool decided = false;     // the window's verdict taken: kDone, `outcome` set
    WatermarkWindow::ChunkOutcome outcome;
  };
  // A worker: its thread, its connection, its job.
  struct Worker {
    StoppableThread thread;
    std::optional<SqlSession> sql;
    std::shared_ptr<Job> running;
    // The verifier's: the types of the tables it compares, learned on `sql` (reset
    // with it).
    std::unique_ptr<TypeLearner> types;
  };

  void Loop(Worker& worker);
  // Runs one job to its end (or cancellation, or stop). Transient errors are retried.
  Status RunJob(Worker& worker, const std::shared_ptr<Job>& job);
  // One chunk, after the key `after` (from the start when unset): L, wait for writers,
  // read, H. Its verdict comes later (WaitVerdict).
  Result<Flight> ReadChunk(Worker& worker, const std::shared_ptr<Job>& job,
                           const std::shared_ptr<const RelationSchema>& schema,
                           const std::vector<std::pair<std::string, std::string>>& key,
                           const std::optional<std::string>& after, size_t limit, bool partitioned,
                           uint64_t prev, const std::function<Result<ChunkRows>()>& read = {});
  // Waits for the window's verdict on `flight` and forgets the chunk.
  void WaitVerdict(Flight& flight);
  // Forgets the chunks in flight (each is read again); under the lock.
  void AbandonLocked(std::deque<Flight>& flights);
  Status Emit(Worker& worker, const std::string& content);
  // ---- the background verifier (snapshot/verify.cc) ----

  void VerifyLoop(Worker& worker);
  // One full pass over `view` (false: not comparable now, or stopped).
  Result<bool> VerifyView(Worker& worker, const BackfillView& view);
  // One comparison of a view its store checks on its own (VerifyHooks::store_check),
  // repaired when it differs (false: not comparable now, or stopped).
  Result<bool> VerifyStoreChecked(const std::string& store, const std::string& view);
  // A chunk compared: its rows, the key of the last, the entries that differ.
  struct Checked {
    bool done = false;  // false: read again (a spoiled window, a restart, a fill began)
    size_t rows = 0;
    std::optional<std::string> last;
    size_t differing = 0;
  };
  // Writes `keys` of the view again as deletes (their rows found absent again between
  // L and H); true once its store applied them.
  Result<bool> RemoveExtras(Worker& worker, const BackfillView& view,
                            const std::shared_ptr<const RelationSchema>& schema,
                            const std::vector<std::pair<std::string, std::string>>& key,
                            const std::vector<std::vector<std::string>>& rows);
  // `read` (unset: the chunk after `after`) gives the rows between L and H; `judge` (unset:
  // VerifyHooks::check) counts what differs among the rows no change touched in the
  // window, against what the store held.
  using Judge = std::function<Result<size_t>(
      const ChunkRows& comparable, const std::map<std::string, std::string>& held, Lsn checked)>;
  Result<Checked> VerifyChunk(Worker& worker, const BackfillView& view,
                              const std::shared_ptr<const RelationSchema>& schema,
                              const std::vector<std::pair<std::string, std::string>>& key,
                              const std::optional<std::string>& after, size_t limit,
                              bool partitioned, const std::function<Result<ChunkRows>()>& read = {},
                              const Judge& judge = {});
  // The walk of the store's keys of `view` after a pass (VerifyHooks::scan): an entry
  // whose row does not exist is extra - confirmed between watermarks, reported, and
  // with verify.repair deleted at a watermark (the stream wins over it). False: not
  // comparable now, or stopped.
  Result<bool> WalkExtras(Worker& worker, const BackfillView& view,
                          const std::shared_ptr<const RelationSchema>& schema,
                          const std::vector<std::pair<std::string, std::string>>& key);
  // Writes the chunk after `after` again through the backfill (placed at its H, the
  // view's state untouched); true once its store applied it. `read` (unset: the chunk
  // after `after`) gives the rows between L and H; `remove`: they are placed as deletes
  // of their entries (BackfillJob::remove).
  Result<bool> RepairChunk(Worker& worker, const BackfillView& view,
                           const std::shared_ptr<const RelationSchema>& schema,
                           const std::vector<std::pair<std::string, std::string>>& key,
                           const std::optional<std::string>& after, size_t limit, bool partitioned,
                           const std::function<Result<ChunkRows>()>& read = {},
                           bool remove = false);
  // Whether `view` is live (no fill of its store and table queued or running) and ready.
  bool Verifiable(const BackfillView& view);
  // A view the verifier could not repair at `where` (the chunk's keys, the extra
  // entries): failed (VerifyProgress::failed, true) when the last pass could not repair
  // the same either; else remembered for the next pass (false).
  bool FailVerified(const BackfillView& view, const std::string& where, const std::string& reason);
  // Waits for the stores' own checks to have run (kStoreChecks); whether the view is
  // still to be compared then (no refill of it asked for or under way).
  Result<bool> AfterStoreChecks(Worker& worker, const BackfillView& view);
  // VerifyHooks::settled for the view's table, on the verifier's session.
  bool Settled(Worker& worker, const BackfillView& view);
  // Waits until `rows` more rows fit the budget (verify.rows_per_second).
  void Pace(size_t rows);
  // active_ from what is queued and in flight; under the lock.
  void SettleActiveLocked();
  Status WaitForWriters(Worker& worker, const std::string& table);
  // Waits until the store applied `watermark` (kYes) or the stream restarted since
  // `generation` (kNo, even when the store's checkpoint passed the watermark: the rows
  // placed before the restart may have been dropped), or Stop.
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
  bool stopping() const { return stop_.stop_requested(); }

  BackfillOptions options_;
  Logger& log_;
  // Something is queued or in flight (the stream thread's fast path skips the lock).
  std::atomic<bool> active_{false};
  std::stop_source stop_;  // every worker's

  std::mutex mutex_;  // guards what follows, the window included
  std::condition_variable_any changed_;
  std::deque<std::shared_ptr<Job>> queue_;
  uint64_t next_id_ = 1;
  uint64_t generation_ = 0;  // stream restarts
  WatermarkWindow window_;
  std::vector<std::unique_ptr<Worker>> workers_;  // fixed at Start
  uint64_t fills_ = 0;                            // jobs added: a verify chunk spanning one is
                                                  // not compared
  std::map<std::pair<std::string, std::string>, VerifyProgress> verified_;
  std::unique_ptr<Worker> verifier_;                   // verify.continuous
  std::chrono::steady_clock::time_point paced_until_;  // the verifier's thread only
};

}  // namespace pgderive
