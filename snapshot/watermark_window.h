#pragma once

// The watermark window of a backfill (DBLog; the driver that reads the chunks is
// snapshot/backfill.h): what the stream thread does with the backfill's messages and
// with the changes that come between them. Pure: no SQL, no threads, no logging. It is
// fed the decoded changes in commit order and the chunks as the driver reads them, and
// yields the changes to place into the stream and a verdict per chunk.
//
//   backfill thread (driver)                stream thread, commit order (OnChange)
//   ------------------------                --------------------------------------
//   BeginChunk(id, job, schema, key)
//   write L ------------- WAL ------------> L: the chunk's window opens
//   wait for the table's writers            a change of the table: its key(s) join
//   read the chunk; ChunkRead(id, rows)       the window's `changed` (or spoil it)
//   write H ------------- WAL ------------> H: the rows minus `changed` placed at H,
//   wait for ChunkVerdict(id) != kPending      then the views' state: kDone; a spoiled
//   EndChunk(id): the outcome                  window, or none, or a cancelled job: kRetry
//
// The stream thread sees L, the changes between, and H, in commit order. Between L and
// H it records the keys of the table's rows that change. At H, the chunk's rows minus
// those keys are the table's rows exactly as of H: each was read after every change
// before L was visible (the driver waits for the table's writers after writing L), and
// no change between L and H touched it. They are placed into the stream at H, for the
// job's views only, with a state change recording how far the backfill got (the last key
// read). Rows changed in the window reach the views through their own changes, which
// are applied as for any view. A chunk whose window holds a truncate of the table, a
// change whose key cannot be read, or an update that leaves a TOASTed value out (the
// view may not hold the row to take it from), is read again. So is every chunk in flight
// when the stream restarts (OnStreamRestart): what was not dispatched is lost, and the
// stream comes again without the chunk's rows.
//
// The other messages of the backfill's prefix: "done" (a job's last chunk applied)
// yields the views' state "live" at its position; "request" (`pgderive backfill`)
// yields, at its position, a cleared view and a job. A change made under a new shape of
// a table that views follow (no `columns`: ADD or DROP COLUMN, a type change) yields
// their state change, placed before it, and a job. An update of the running job's table
// that moves a row to another key and leaves a TOASTed value out marks the job to start
// again (its new key may be behind the chunks read, and the view may not hold the row).
//
// Several windows may be open at once: jobs of different tables or stores run side by
// side, and a job pipelines its chunks (chunk n+1 is read while the store applies chunk
// n). Each chunk's window is its own; a change is recorded against every open window of
// its table. A pipelined chunk names the chunk before it (`prev`): it is placed only if
// that one was, since its state claims every key up to its last; a chunk read again
// (at its H, at a restart, or given up by the driver) has every later chunk of its
// sequence read again too.
//
// Threads: none here. The driver calls every method under one lock of its own, except
// Concerns and Message, which read only what the stream thread itself writes.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cdc/change_batch.h"

namespace pgderive {

// The prefix of every logical message the backfill writes (and `pgderive backfill`).
inline constexpr const char* kBackfillPrefix = "pgderive-backfill";

// The content of a "request" message (written under kBackfillPrefix with
// pg_logical_emit_message): the running pipeline `pipeline` empties `view` at the
// message's position and fills it again. `pgderive backfill` and the run monitor (a
// source table replaced) write it; WatermarkWindow reads it.
std::string BackfillRequestMessage(const std::string& pipeline, const std::string& view);

// A view as the backfill sees it.
struct BackfillView {
  std::string store;
  std::string view;
  std::string table;     // schema.table it reads (row views)
  bool rows = false;     // filled row by row (Redis, OpenSearch); else a query (postgres)
  bool follows = false;  // no `columns`: follows its table's columns
  // ViewDefinitionFingerprint of the view as configured now (empty: not compared).
  std::string definition = {};
  // A postgres view: the fills of the mirrors of the tables it reads (TableFillName). A
  // backfill request for the view refills them from the source too (its table is then
  // built again from them), so that the view is derived again from the source, not
  // from what the mirrors hold.
  std::vector<std::string> fills = {};
};

// A job as the window sees it: views of one store, all reading one table. The driver
// owns it (and extends it); the window reads it when it places a chunk and sets
// `restart`.
struct BackfillJob {
  uint64_t id = 0;  // the id its "done" message carries
  std::string store;
  std::string table;
  std::vector<std::string> views;
  std::vector<std::string> columns;  // ColumnsOf the table as the last chunk read it
  uint32_t table_oid = 0;            // and its OID
  bool cancelled = false;            // replaced by a newer job: nothing more is placed
  bool restart = false;              // from the start: a row moved behind the frontier
  // A repair of the background verifier: the chunk's rows are placed, the views' state
  // is left as it is (they are live; a fill's chunk records how far it got).
  bool repair = false;
  // A repair of entries whose row does not exist (found extra): the chunk's rows (their
  // key columns only) are placed as deletes of those entries.
  bool remove = false;
};

// A chunk's rows as read, in the table's column order (the text of each value).
using ChunkRows = std::vector<std::vector<std::optional<std::string>>>;

// The key of a row as the backfill names it: the JSON array of the key columns' text
// (what a view's recorded state `after` holds).
std::string KeyJson(const std::vector<std::optional<std::string_view>>& values);

class WatermarkWindow {
 public:
  struct Options {
    std::string pipeline;
    std::string run;  // this run's nonce: messages of an earlier run are not its chunks
    std::vector<BackfillView> views;
    // The checkpoint a store has applied: a request or a reshape it has passed already
    // is not acted on again.
    std::function<Lsn(const std::string& store)> checkpoint;
  };

  enum class Verdict { kPending, kDone, kRetry };

  // What a chunk came to, once the stream met its H (or restarted).
  struct ChunkOutcome {
    Verdict verdict = Verdict::kRetry;
    Lsn watermark;                    // kDone: H's commit LSN
    size_t rows = 0;                  // rows read (placed or not)
    size_t bytes = 0;                 // the values' bytes read
    std::optional<std::string> last;  // the key of the last row read (KeyJson)
  };

  // What a change asks of the driver, beside the changes to place.
  struct Events {
    // Views a `pgderive backfill` request named, as (store, view); a view this
    // configuration does not have comes with an empty store.
    std::vector<std::pair<std::string, std::string>> requested;
    // Jobs to queue, in order: views of a store to fill from the start of `table`.
    struct Job {
      std::string store;
      std::string table;
      std::vector<std::string> views;
      bool reshaped = false;  // the table's columns changed (else requested)
    };
    std::vector<Job> jobs;
    // A chunk's or a job's "done" verdict was reached: the driver waits for it.
    bool decided = false;
  };

  explicit WatermarkWindow(Options options);

  // The content of a backfill message (`mark`: "low", "high" or "done"; `id`: the
  // chunk's, or the job's for "done").
  std::string Message(const std::string& mark, uint64_t id) const;

  // Whether OnChange could do anything with `change` (`active`: a job is queued or a
  // chunk in flight). False for most changes; reads only what OnChange writes, so the
  // stream thread may ask without the driver's lock.
  bool Concerns(const Change& change, bool active) const;

  // The stream thread, for every decoded change, in order. A backfill message yields
  // the changes to place at its position (`out`); a change under a new schema of a
  // table that views follow yields their state change (to place before it) and a job;
  // a row change is recorded against the open windows.
  void OnChange(const Change& change, std::vector<OwnedChange>& out, Events& events);
  // The stream restarts from the slot: every chunk and "done" in flight is decided
  // kRetry (what was not dispatched comes again, without their rows).
  void OnStreamRestart();

  // The columns a following view was last filled with (its recorded state, or the
  // table as it is at start).
  void SetColumns(const std::string& store, const std::string& view,
                  std::vector<std::string> columns);
  // The columns ("name type_oid") `view` of `store` was last filled or reshaped with, as
  // the stream knows them; empty when not known.
  std::vector<std::string> FilledColumns(const std::string& store, const std::string& view) const;
  // The jobs whose chunks are being read: one more, one less. SetRunning(job) makes
  // `job` the only one (null: none).
  void AddRunning(std::shared_ptr<BackfillJob> job);
  void RemoveRunning(uint64_t job_id);
  void SetRunning(std::shared_ptr<BackfillJob> job);

  // Chunk `id` of `job`, read with `schema` in the order of the `key` columns, before
  // its L is written. `prev`: the chunk in flight it follows (its rows start after
  // that one's last key), 0 when it follows what is placed already. A `prev` no longer
  // in flight must have been placed (EndChunk of one that was not spoils its
  // followers).
  // `after`: the key the chunk reads after (unset: the table's start), the fill's
  // position when the chunk reads no row.
  void BeginChunk(uint64_t id, std::shared_ptr<const BackfillJob> job,
                  std::shared_ptr<const RelationSchema> schema, std::vector<std::string> key,
                  uint64_t prev = 0, std::optional<std::string> after = std::nullopt);
  // Its rows, read after L, before H is written.
  void ChunkRead(uint64_t id, ChunkRows rows);
  // The rows it read and the key of the last (KeyJson), once read.
  std::pair<size_t, std::optional<std::string>> ChunkPosition(uint64_t id) const;
  Verdict ChunkVerdict(uint64_t id) const;
  // The commit LSN of its H, once its verdict is kDone (a fill's or a verify chunk's).
  Lsn ChunkWatermark(uint64_t id) const;
  // Forgets the chunk (its verdict taken, or given up); kPending comes back as kRetry,
  // and a chunk not placed has the chunks that follow it read again.
  ChunkOutcome EndChunk(uint64_t id);
  size_t chunks_in_flight() const { return chunks_.size(); }

  // The verify window: a chunk read to be compared with a store, not placed (the
  // background verifier, `pgderive verify`). It is read between its L and H like a
  // fill's chunk, and ChunkVerdict says kDone at its H (kRetry when spoiled, as a
  // fill's), with nothing placed. Its window stays open past H until its "checked" mark,
  // which the driver writes once it has read the store's entries for the chunk, after
  // the store's checkpoint passed H. A row whose key no change touched between L and
  // "checked" was, when the store was read, what it was in the source when it was read:
  // every change the store had applied by then committed before "checked", and none of
  // them touched it; so it is comparable. A key changed in between is not compared (the
  // store may hold it from any moment of the window: the stream wins). A truncate, an
  // unreadable key or a TOAST-unchanged value in the window spoils the whole chunk, and
  // so does a stream restart before "checked" (what the stream met may come again out
  // of order with the read): it is read again.
  void BeginVerify(uint64_t id, std::shared_ptr<const BackfillJob> job,
                   std::shared_ptr<const RelationSchema> schema, std::vector<std::string> key);
  // kPending until "checked" is met; then kDone, or kRetry when the window was spoiled.
  Verdict VerifyVerdict(uint64_t id) const;
  struct VerifyOutcome {
    Verdict verdict = Verdict::kRetry;
    Lsn watermark;  // H's commit LSN
    Lsn checked;    // "checked"'s commit LSN
    // The rows read whose key no change touched in the window, in key order.
    ChunkRows comparable;
    // The keys (KeyJson) changed in the window: not compared (neither as missing nor
    // as extra).
    std::set<std::string> changed;
    size_t rows = 0;                  // rows read
    std::optional<std::string> last;  // the key of the last row read (KeyJson)
  };
  // Forgets the verify chunk: its outcome (kRetry unless "checked" was met unspoiled).
  VerifyOutcome EndVerify(uint64_t id);

  // Job `job_id`'s "done", before it is written.
  void BeginDone(uint64_t job_id);
  Verdict DoneVerdict(uint64_t job_id) const;
  // Forgets it: the verdict and, kDone, its position.
  std::pair<Verdict, Lsn> EndDone(uint64_t job_id);

 private:
  struct Chunk {
    std::shared_ptr<const BackfillJob> job;
    std::shared_ptr<const RelationSchema> schema;
    std::vector<std::string> key;  // the pagination key's columns
    uint64_t prev = 0;             // the chunk it follows, in flight (0: none)
    bool open = false;             // L seen
    bool spoiled = false;          // read again
    std::set<std::string> changed;
    bool read = false;
    ChunkRows rows;  // freed once placed
    size_t row_count = 0;
    std::optional<std::string> last;
    std::optional<std::string> after;  // the key it reads after (unset: from the start)
    size_t bytes = 0;
    Verdict verdict = Verdict::kPending;
    Lsn watermark;
    bool verify = false;   // a verify chunk: compared, never placed
    bool checked = false;  // its "checked" mark met: its window closed
    Lsn checked_at;
  };

  void OnMessage(const Change& change, const LogicalMessage& message, std::vector<OwnedChange>& out,
                 Events& events);
  void Place(Chunk& chunk, Lsn commit_lsn, uint32_t index, std::vector<OwnedChange>& out);
  void Record(const Change& change);
  // Whether a change of the chunk's table is recorded against it: its window is open
  // (L met, not spoiled) and not closed (a fill's at H, a verify chunk's at "checked").
  static bool Recording(const Chunk& chunk);
  // The positions of the chunk's key columns in its schema.
  static std::vector<size_t> KeyIndexes(const Chunk& chunk);
  void DetectSchemaChange(const Change& change, std::vector<OwnedChange>& out, Events& events);
  // The chunks that follow `id` (directly or not) are read again.
  void SpoilFollowers(uint64_t id);

  const Options options_;
  const bool has_follow_;  // some row view follows its table

  std::map<uint64_t, std::shared_ptr<BackfillJob>> running_;  // by job id
  std::map<uint64_t, Chunk> chunks_;                          // in flight
  // "done" messages in flight: job id -> (verdict, watermark).
  std::map<uint64_t, std::pair<Verdict, Lsn>> done_;
  // (store, view) -> the columns a following view was filled with.
  std::map<std::pair<std::string, std::string>, std::vector<std::string>> columns_;

  // The schema of the last change seen, and every schema looked at (kept, so that an
  // address is never another's).
  const RelationSchema* last_seen_ = nullptr;
  std::map<const RelationSchema*, std::shared_ptr<const RelationSchema>> seen_;
};

}  // namespace pgderive
