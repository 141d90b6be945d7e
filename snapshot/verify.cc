// The background verifier (verify.continuous): Redis and OpenSearch views compared with
// their source tables while they serve, and what differs written again.
//
//   VerifyLoop: view after view (live ones), pass after pass
//     VerifyView: the view's table in key order, chunk by chunk, paced to
//                 verify.rows_per_second
//       VerifyChunk: BeginVerify; Emit(L) ...........WAL...........> stream thread: the
//                    WaitForWriters; read the rows; Emit(H) ..WAL..> window records the
//                    the verdict at H; WaitApplied(H): the store      keys changed from L
//                    has applied every change before H; read its      to "checked"
//                    entries for the rows' keys; Emit("checked") --> "checked": closed
//                    EndVerify: the rows no change touched from L to "checked" against
//                    what the store held (VerifyHooks::check logs each difference)
//       RepairChunk (verify.repair: auto, the chunk differs): the same range read again
//                    as a fill's chunk, placed at its H for this view only (the stream
//                    wins over it as over any backfill), the view's state untouched;
//                    then the chunk is compared again
//
// A chunk is compared only when the window says it may be (watermark_window.h, the
// verify window): a busy writer makes its keys "changed", never a false difference. A
// chunk whose window spans a fill of the view's store (a request, a reshape: the view
// may be emptied) is read again, and a view that is not live is skipped.

#include <set>
#include <thread>

#include "base/number.h"
#include "base/table_name.h"
#include "cdc/publication.h"
#include "snapshot/backfill.h"
#include "snapshot/key_range.h"
#include "snapshot/view_state.h"

namespace pgderive {
namespace {

// A chunk whose repair does not hold after this many writes is reported, and the walk
// goes on (the next pass tries again).
constexpr int kRepairAttempts = 3;
constexpr auto kIdle = std::chrono::seconds(1);
// The stores check what they hold every 2 s (an index deleted, a target table dropped,
// a Redis flushed: pipeline/run_monitor.h): a view whose repair does not hold waits two
// rounds of them before it is called failed.
constexpr auto kStoreChecks = std::chrono::seconds(5);
// A round over every view takes at least this long, and a chunk costs the budget at
// least kChunkCost rows (its three watermarks are three commits, each flushed, and each
// decoded by every slot of the database): small tables are not walked in a tight loop.
constexpr auto kMinRound = std::chrono::seconds(2);
constexpr size_t kChunkCost = 64;
// Difference lines a postgres view's comparison logs each pass, then a count.
constexpr size_t kLoggedPerPass = 100;

// Rows a verify chunk reads: about a quarter second of the budget.
size_t ChunkRowsFor(int64_t rows_per_second) {
  return static_cast<size_t>(std::clamp<int64_t>(rows_per_second / 4, 16, 4096));
}

}  // namespace

std::map<std::pair<std::string, std::string>, VerifyProgress> Backfills::Verified() {
  std::lock_guard lock(mutex_);
  return verified_;
}

bool Backfills::Verifiable(const BackfillView& view) {
  {
    std::lock_guard lock(mutex_);
    auto fills = [&](const std::shared_ptr<Job>& job) {
      return job && !job->cancelled && !job->live && job->store == view.store &&
             std::find(job->views.begin(), job->views.end(), view.view) != job->views.end();
    };
    for (const auto& job : queue_) {
      if (fills(job)) return false;
    }
    for (const auto& worker : workers_) {
      if (fills(worker->running)) return false;
    }
  }
  if (options_.failed && options_.failed(view.store)) return false;
  {
    std::lock_guard lock(mutex_);
    auto it = verified_.find({view.store, view.view});
    if (it != verified_.end() && !it->second.failed.empty()) return false;  // until refilled
  }
  return !options_.verify.hooks.ready || options_.verify.hooks.ready(view.store, view.view);
}

Result<bool> Backfills::AfterStoreChecks(Worker& worker, const BackfillView& view) {
  {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, stop_.get_token(), kStoreChecks, [] { return false; });
  }
  return !stopping() && Verifiable(view) && Settled(worker, view);
}

bool Backfills::FailVerified(const BackfillView& view, const std::string& where,
                             const std::string& reason) {
  std::lock_guard lock(mutex_);
  VerifyProgress& progress = verified_[{view.store, view.view}];
  if (progress.unrepaired != where) {
    // The first time: the next pass compares again before the view is failed.
    progress.unrepaired = where;
    log_.Warn("verify could not repair view " + view.view + " (" + reason +
                  "); compared again on the next pass before the view is failed",
              {{"store", view.store}, {"view", view.view}, {"table", view.table}});
    return false;
  }
  progress.failed = reason;
  progress.unrepaired.clear();
  return true;
}

bool Backfills::Settled(Worker& worker, const BackfillView& view) {
  return !options_.verify.hooks.settled ||
         options_.verify.hooks.settled(*worker.sql, view.store, view.view, view.table);
}

void Backfills::Pace(size_t rows) {
  rows = std::max(rows, kChunkCost);
  const auto now = std::chrono::steady_clock::now();
  const auto cost =
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(
          static_cast<double>(rows) / static_cast<double>(options_.verify.rows_per_second)));
  // No credit for idle time beyond one chunk's: the budget is a rate, not a reserve.
  paced_until_ = std::max(paced_until_, now - cost) + cost;
  if (paced_until_ <= now) return;
  std::unique_lock lock(mutex_);
  changed_.wait_until(lock, stop_.get_token(), paced_until_, [] { return false; });
}

void Backfills::VerifyLoop(Worker& worker) {
  const std::stop_token stop = stop_.get_token();
  auto idle = [&](std::chrono::steady_clock::duration wait) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, stop, wait, [] { return false; });
  };
  {
    // Shown (zeros) before their first pass, as a row view is before its first chunk.
    std::lock_guard lock(mutex_);
    for (const auto& [store, view] : options_.verify.hooks.store_checked) {
      verified_.try_emplace({store, view});
    }
  }
  while (!stop.stop_requested()) {
    const auto round = std::chrono::steady_clock::now();
    bool walked = false;
    for (const BackfillView& view : options_.views) {
      if (!view.rows) continue;  // a postgres view's mirrors: not compared here
      if (stop.stop_requested()) return;
      auto pass = VerifyView(worker, view);
      if (!pass.ok()) {
        if (!stop.stop_requested()) {
          log_.Warn("verify of view " + view.view + " interrupted: " + pass.error().message(),
                    {{"store", view.store}});
        }
        worker.types.reset();
        worker.sql.reset();
        idle(kIdle);
        continue;
      }
      walked = walked || pass.value();
    }
    for (const auto& [store, view] : options_.verify.hooks.store_checked) {
      if (stop.stop_requested()) return;
      auto pass = VerifyStoreChecked(store, view);
      if (!pass.ok()) {
        if (!stop.stop_requested()) {
          log_.Warn("verify of view " + view + " interrupted: " + pass.error().message(),
                    {{"store", store}});
        }
        idle(kIdle);
        continue;
      }
      walked = walked || pass.value();
    }
    if (!walked) {
      idle(kIdle);
    } else if (const auto took = std::chrono::steady_clock::now() - round; took < kMinRound) {
      idle(kMinRound - took);
    }
  }
}

Result<bool> Backfills::VerifyView(Worker& worker, const BackfillView& view) {
  if (!Verifiable(view)) return false;
  if (!worker.sql) {
    auto connected = SqlSession::Connect(options_.dsn, "pgderive-verify");
    if (!connected.ok()) return connected.error();
    worker.sql.emplace(std::move(connected).value());
    worker.types = std::make_unique<TypeLearner>(*worker.sql);
    // As the backfill's (RunJob): each watermark waits for its own flush; a lock queued
    // behind is given up after 1 s.
    Status status = worker.sql->Execute("set synchronous_commit = local; set lock_timeout = '1s'");
    if (!status.ok()) return status.error();
  }
  auto key = KeyColumns(*worker.sql, view.table);
  if (!key.ok()) return key.error();
  auto kind = worker.sql->Query("select relkind::text from pg_class where oid = $1::regclass",
                                {TableName::Parse(view.table).Quoted()});
  if (!kind.ok()) return kind.error();
  const bool partitioned =
      !kind.value().rows.empty() && kind.value().rows[0][0].value_or("") == "p";
  const size_t limit = ChunkRowsFor(options_.verify.rows_per_second);
  std::optional<std::string> after;
  while (true) {
    if (stopping() || !Verifiable(view) || !Settled(worker, view)) return false;
    auto schema = DescribeTable(*worker.sql, view.table);
    if (!schema.ok()) return schema.error();
    if (view.follows) {
      // A column added or dropped while the table is idle: the stream meets the new
      // shape with the table's next change, and refills the view then; until then the
      // view holds the old shape, which is not the verifier's to report.
      std::lock_guard lock(mutex_);
      const std::vector<std::string> filled = window_.FilledColumns(view.store, view.view);
      if (!filled.empty() && filled != ColumnsOf(*schema.value())) return false;
    }
    auto checked =
        VerifyChunk(worker, view, schema.value(), key.value(), after, limit, partitioned);
    if (!checked.ok()) return checked.error();
    Pace(checked.value().rows);
    if (!checked.value().done) continue;  // read again
    size_t differing = checked.value().differing;
    if (differing > 0) {
      {
        std::lock_guard lock(mutex_);
        VerifyProgress& progress = verified_[{view.store, view.view}];
        progress.chunks_differing += 1;
        progress.entries_differing += differing;
      }
      if (options_.verify.repair) {
        // Not written at once: a store change (an index deleted, a table dropped) is
        // found by the store's own check and refilled as such - a write into what
        // vanished would fail the store or make an index by dynamic mapping. Then
        // compared again. (A repair that does not hold fails the view only on the
        // second pass in a row: FailVerified.)
        auto settled = AfterStoreChecks(worker, view);
        if (!settled.ok()) return settled.error();
        if (!settled.value()) return false;
        auto still =
            VerifyChunk(worker, view, schema.value(), key.value(), after, limit, partitioned);
        if (!still.ok()) return still.error();
        Pace(still.value().rows);
        if (!still.value().done) return false;  // the next pass compares it again
        differing = still.value().differing;
      }
      if (options_.verify.repair && differing > 0) {
        // Written again, then compared again: the repair holds once the chunk agrees.
        const size_t found = differing;
        for (int attempt = 0; attempt < kRepairAttempts && differing > 0; ++attempt) {
          if (stopping() || !Verifiable(view)) return false;
          auto repaired =
              RepairChunk(worker, view, schema.value(), key.value(), after, limit, partitioned);
          if (!repaired.ok()) return repaired.error();
          Pace(checked.value().rows);
          if (!repaired.value()) continue;
          auto again =
              VerifyChunk(worker, view, schema.value(), key.value(), after, limit, partitioned);
          if (!again.ok()) return again.error();
          Pace(again.value().rows);
          if (again.value().done) differing = again.value().differing;
        }
        if (differing == 0) {
          log_.Info(
              "verify repaired view " + view.view,
              {{"store", view.store}, {"view", view.view}, {"entries", std::to_string(found)}});
          std::lock_guard lock(mutex_);
          verified_[{view.store, view.view}].entries_repaired += found;
        } else {
          // Where: the chunk's keys (each differing key is in its own warn line above).
          // The view is failed: it holds what its source does not say, and writing it
          // again does not hold (an entry written from outside that wins over pgderive's,
          // a store refusing it).
          const std::string reason =
              "verify could not repair it: " + std::to_string(differing) + " entries of table " +
              view.table + " in the keys after " + after.value_or("the start") + " through " +
              checked.value().last.value_or("the end") + " still differ after " +
              std::to_string(kRepairAttempts) + " writes; `pgderive backfill -c FILE --view " +
              view.view + "` fills it again";
          if (FailVerified(
                  view,
                  "after " + after.value_or("") + " through " + checked.value().last.value_or(""),
                  reason)) {
            log_.Error("view " + view.view + " failed: " + reason,
                       {{"store", view.store},
                        {"view", view.view},
                        {"table", view.table},
                        {"after", after.value_or("")},
                        {"through", checked.value().last.value_or("")}});
          }
          return false;
        }
      }
    }
    {
      std::lock_guard lock(mutex_);
      verified_[{view.store, view.view}].rows_checked += checked.value().rows;
    }
    if (checked.value().rows < limit) break;  // the end of the table
    after = checked.value().last;
  }
  // The store's side: entries whose row does not exist.
  {
    auto schema = DescribeTable(*worker.sql, view.table);
    if (!schema.ok()) return schema.error();
    auto walked = WalkExtras(worker, view, schema.value(), key.value());
    if (!walked.ok()) return walked.error();
    if (!walked.value()) return false;
  }
  std::lock_guard lock(mutex_);
  VerifyProgress& progress = verified_[{view.store, view.view}];
  progress.passes += 1;
  progress.last_pass = std::chrono::system_clock::now();
  return true;
}

Result<bool> Backfills::VerifyStoreChecked(const std::string& store, const std::string& name) {
  const VerifyHooks& hooks = options_.verify.hooks;
  const BackfillView view{.store = store, .view = name, .table = ""};
  auto comparable = [&] {
    if (stopping() || (hooks.ready && !hooks.ready(store, name))) return false;
    if (options_.failed && options_.failed(store)) return false;
    std::lock_guard lock(mutex_);
    auto it = verified_.find({store, name});
    return it == verified_.end() || it->second.failed.empty();  // failed: until refilled
  };
  using Check = VerifyHooks::StoreCheck;
  // One comparison, paced; nullopt: not comparable now.
  auto compare = [&]() -> Result<std::optional<Check>> {
    if (!comparable()) return std::optional<Check>();
    auto checked = hooks.store_check(store, name);
    if (!checked.ok()) return checked.error();
    if (checked.value()) Pace(checked.value()->entries);
    return checked;
  };
  auto keys_of = [](const Check& check) {
    std::vector<std::string> keys;
    for (const Check::Difference& d : check.differing) keys.push_back(d.key);
    return keys;
  };
  if (!hooks.store_check) return false;
  auto first = compare();
  if (!first.ok()) return first.error();
  if (!first.value()) return false;
  Check found = std::move(*first.value());
  {
    std::lock_guard lock(mutex_);
    verified_[{store, name}].rows_checked += found.entries;
  }
  if (!found.differing.empty()) {
    // Compared again after the store's own checks (a table dropped is refilled as such,
    // a mirror that began filling is not compared): a difference is one both times.
    {
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, stop_.get_token(), kStoreChecks, [] { return false; });
    }
    auto again = compare();
    if (!again.ok()) return again.error();
    if (!again.value()) return false;
    const std::vector<std::string> listed = keys_of(found);
    const std::set<std::string> before(listed.begin(), listed.end());
    found.at = again.value()->at;
    found.differing.clear();
    for (Check::Difference& d : again.value()->differing) {
      if (before.contains(d.key)) found.differing.push_back(std::move(d));
    }
    // The first kLoggedPerPass each pass, then how many more (a table emptied behind
    // pgderive's back would log a line per row).
    size_t logged = 0;
    for (const Check::Difference& d : found.differing) {
      if (++logged > kLoggedPerPass) {
        log_.Warn("verify found view " + name + " differing from its source at " +
                      std::to_string(found.differing.size() - kLoggedPerPass) +
                      " more keys (not listed)",
                  {{"store", store}, {"view", name}, {"lsn", found.at.ToString()}});
        break;
      }
      log_.Warn("verify found view " + name + " differing from its source at key " + d.key + ": " +
                    d.summary,
                {{"store", store},
                 {"view", name},
                 {"key", d.key},
                 {"difference", d.detail},
                 {"lsn", found.at.ToString()}});
    }
    if (!found.differing.empty()) {
      std::lock_guard lock(mutex_);
      VerifyProgress& progress = verified_[{store, name}];
      progress.chunks_differing += 1;
      progress.entries_differing += found.differing.size();
    }
  }
  std::vector<std::string> differing = keys_of(found);
  if (!differing.empty() && options_.verify.repair && hooks.store_repair) {
    // Written again from the mirrors, then compared again (three writes at most).
    const size_t total = differing.size();
    for (int attempt = 0; attempt < kRepairAttempts && !differing.empty(); ++attempt) {
      if (!comparable()) return false;
      Status repaired = hooks.store_repair(store, name, differing);
      if (!repaired.ok()) return repaired.error();
      auto after = compare();
      if (!after.ok()) return after.error();
      if (!after.value()) return false;
      // Of the keys written, those that still differ (a comparison lists at most so
      // many: others found now are the next pass's).
      const std::vector<std::string> listed = keys_of(*after.value());
      const std::set<std::string> now(listed.begin(), listed.end());
      std::erase_if(differing, [&](const std::string& key) { return !now.contains(key); });
    }
    if (differing.empty()) {
      log_.Info("verify repaired view " + name,
                {{"store", store}, {"view", name}, {"entries", std::to_string(total)}});
      std::lock_guard lock(mutex_);
      verified_[{store, name}].entries_repaired += total;
    } else {
      std::string keys;
      for (size_t i = 0; i < differing.size() && i < 10; ++i) keys += " " + differing[i];
      const std::string reason =
          "verify could not repair it: " + std::to_string(differing.size()) +
          " entries still differ from its query over the store's mirrors after " +
          std::to_string(kRepairAttempts) + " writes (keys" + keys +
          (differing.size() > 10 ? " ..." : "") + "); `pgderive backfill -c FILE --view " + name +
          "` fills it again";
      if (FailVerified(view, keys, reason)) {
        log_.Error("view " + name + " failed: " + reason, {{"store", store}, {"view", name}});
      }
      return false;
    }
  }
  std::lock_guard lock(mutex_);
  VerifyProgress& progress = verified_[{store, name}];
  progress.passes += 1;
  progress.last_pass = std::chrono::system_clock::now();
  return true;
}

Result<Backfills::Checked> Backfills::VerifyChunk(
    Worker& worker, const BackfillView& view, const std::shared_ptr<const RelationSchema>& schema,
    const std::vector<std::pair<std::string, std::string>>& key,
    const std::optional<std::string>& after, size_t limit, bool partitioned,
    const std::function<Result<ChunkRows>()>& read, const Judge& judge) {
  auto job = std::make_shared<BackfillJob>();
  job->store = view.store;
  job->table = view.table;
  job->views = {view.view};
  uint64_t id = 0, generation = 0, fills = 0;
  {
    std::vector<std::string> key_names;
    for (const auto& [name, type] : key) key_names.push_back(name);
    std::lock_guard lock(mutex_);
    id = next_id_++;
    generation = generation_;
    fills = fills_;
    window_.BeginVerify(id, job, schema, std::move(key_names));
    active_.store(true);  // the stream thread records the table's changes
  }
  auto forget = [&] {
    std::lock_guard lock(mutex_);
    WatermarkWindow::VerifyOutcome ended = window_.EndVerify(id);
    SettleActiveLocked();
    return ended;
  };
  Checked checked;
  Status status = Emit(worker, window_.Message("low", id));
  if (status.ok()) status = WaitForWriters(worker, view.table);
  if (!status.ok()) {
    forget();
    return status.error();
  }
  auto rows =
      read ? read() : ReadRows(*worker.sql, view.table, schema, key, after, limit, partitioned);
  if (!rows.ok()) {
    forget();
    return rows.error();
  }
  checked.rows = rows.value().size();
  {
    std::lock_guard lock(mutex_);
    window_.ChunkRead(id, rows.value());
    checked.last = window_.ChunkPosition(id).second;
  }
  status = Emit(worker, window_.Message("high", id));
  if (!status.ok()) {
    forget();
    return status.error();
  }
  Lsn watermark;
  {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, stop_.get_token(),
                  [&] { return window_.ChunkVerdict(id) != Verdict::kPending; });
    if (window_.ChunkVerdict(id) != Verdict::kDone) {
      window_.EndVerify(id);
      SettleActiveLocked();
      return checked;  // read again
    }
    watermark = window_.ChunkWatermark(id);
  }
  // The store has applied every change before H: what it holds now is at least as new.
  if (WaitApplied(view.store, watermark, generation) != Applied::kYes) {
    forget();
    return checked;
  }
  // The table's types as the source has them now (a domain's base type, an enum, an
  // array's element): the entries the rows make are rendered as the stream renders them.
  Status learned = worker.types->Learn(schema->columns);
  if (!learned.ok()) {
    forget();
    return learned.error();
  }
  const std::shared_ptr<const TypeRegistry> types = worker.types->types();
  auto held = options_.verify.hooks.held(view.store, view.view, schema, rows.value(), *types);
  if (!held.ok()) {
    forget();
    return held.error();
  }
  status = Emit(worker, window_.Message("checked", id));
  if (!status.ok()) {
    forget();
    return status.error();
  }
  WatermarkWindow::VerifyOutcome outcome;
  {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, stop_.get_token(),
                  [&] { return window_.VerifyVerdict(id) != Verdict::kPending; });
    outcome = window_.EndVerify(id);
    SettleActiveLocked();
    // A fill of the store began meanwhile (a request empties the view at its position):
    // what the store held is not comparable.
    if (outcome.verdict != Verdict::kDone || fills_ != fills) return checked;
  }
  // The table replaced (or its partitions changed) before or while the chunk was read,
  // its views' refill not asked for yet: the store holds the old table's rows. And a
  // fill of the view queued before the chunk began (a reshape the stream met between
  // the check of the view and the low watermark): its rows are not the store's yet.
  if (!Settled(worker, view) || !Verifiable(view)) return checked;
  auto differing =
      judge ? judge(outcome.comparable, held.value(), outcome.checked)
            : options_.verify.hooks.check(view.store, view.view, schema, outcome.comparable,
                                          held.value(), outcome.checked, *types);
  if (!differing.ok()) return differing.error();
  checked.done = true;
  checked.differing = differing.value();
  return checked;
}

Result<bool> Backfills::RepairChunk(Worker& worker, const BackfillView& view,
                                    const std::shared_ptr<const RelationSchema>& schema,
                                    const std::vector<std::pair<std::string, std::string>>& key,
                                    const std::optional<std::string>& after, size_t limit,
                                    bool partitioned,
                                    const std::function<Result<ChunkRows>()>& read, bool remove) {
  auto job = std::make_shared<Job>();
  job->store = view.store;
  job->table = view.table;
  job->views = {view.view};
  job->columns = ColumnsOf(*schema);
  job->table_oid = schema->id.value;
  job->repair = true;
  job->remove = remove;
  job->live = true;  // not a fill: Progress and Verifiable do not see it (never queued)
  auto flight = ReadChunk(worker, job, schema, key, after, limit, partitioned, /*prev=*/0, read);
  if (!flight.ok()) return flight.error();
  WaitVerdict(flight.value());
  {
    std::lock_guard lock(mutex_);
    SettleActiveLocked();
  }
  if (flight.value().outcome.verdict != Verdict::kDone) return false;
  return WaitApplied(view.store, flight.value().outcome.watermark, flight.value().generation) ==
         Applied::kYes;
}

namespace {

// A row of `schema`'s width with only the key columns set (`values` in `key`'s order):
// what an extra entry's row would be, for the window to track its key.
std::vector<std::optional<std::string>> KeyOnlyRow(
    const RelationSchema& schema, const std::vector<std::pair<std::string, std::string>>& key,
    const std::vector<std::string>& values) {
  std::vector<std::optional<std::string>> row(schema.columns.size());
  for (size_t k = 0; k < key.size() && k < values.size(); ++k) {
    for (size_t i = 0; i < schema.columns.size(); ++i) {
      if (schema.columns[i].name == key[k].first) row[i] = values[k];
    }
  }
  return row;
}

}  // namespace

Result<bool> Backfills::WalkExtras(Worker& worker, const BackfillView& view,
                                   const std::shared_ptr<const RelationSchema>& schema,
                                   const std::vector<std::pair<std::string, std::string>>& key) {
  const VerifyHooks& hooks = options_.verify.hooks;
  if (!hooks.scan || !hooks.row_keys) return true;
  const size_t limit = ChunkRowsFor(options_.verify.rows_per_second);
  std::string cursor;
  do {
    if (stopping() || !Verifiable(view) || !Settled(worker, view)) return false;
    auto page = hooks.scan(view.store, view.view, cursor, limit);
    if (!page.ok()) return page.error();
    if (!page.value()) return true;  // the store cannot page its keys
    cursor = page.value()->second;
    const std::vector<std::string>& keys = page.value()->first;
    Pace(keys.size());
    {
      std::lock_guard lock(mutex_);
      verified_[{view.store, view.view}].keys_checked += keys.size();
    }
    // Each store key with the one row key it reads back to (OrderedRowKey).
    std::vector<std::string> store_keys;
    std::vector<std::vector<std::string>> rows;
    for (const std::string& store_key : keys) {
      auto readings = hooks.row_keys(view.store, view.view, *schema, store_key);
      if (!readings.ok()) return readings.error();
      auto ordered = OrderedRowKey(*schema, key, readings.value());
      if (!ordered) continue;
      store_keys.push_back(store_key);
      rows.push_back(std::move(*ordered));
    }
    auto absent = AbsentKeys(*worker.sql, view.table, key, rows);
    if (!absent.ok()) return absent.error();
    if (absent.value().empty()) continue;
    std::vector<std::string> suspect_keys;
    std::vector<std::vector<std::string>> suspects;
    for (size_t i : absent.value()) {
      suspect_keys.push_back(store_keys[i]);
      suspects.push_back(rows[i]);
    }
    // Confirmed between watermarks: still no row once the window is open, no change of
    // the key in the window, the entry still held once the store passed H.
    std::vector<std::vector<std::string>> extra;
    // `report`: each one confirmed is logged (the first time; again after a repair not).
    auto confirm = [&](const std::vector<std::vector<std::string>>& of,
                       bool report) -> Result<std::vector<std::vector<std::string>>> {
      std::vector<std::vector<std::string>> confirmed;
      std::map<std::string, size_t> by_key;  // KeyJson -> index in `of`
      auto read = [&]() -> Result<ChunkRows> {
        auto gone = AbsentKeys(*worker.sql, view.table, key, of);
        if (!gone.ok()) return gone.error();
        ChunkRows out;
        for (size_t i : gone.value()) {
          out.push_back(KeyOnlyRow(*schema, key, of[i]));
          by_key[RowPosition(*schema, key, out.back())] = i;
        }
        return out;
      };
      auto judge = [&](const ChunkRows& comparable, const std::map<std::string, std::string>& held,
                       Lsn checked) -> Result<size_t> {
        for (const auto& row : comparable) {
          auto it = by_key.find(RowPosition(*schema, key, row));
          if (it == by_key.end()) continue;
          const std::string& store_key =
              suspect_keys[std::find(suspects.begin(), suspects.end(), of[it->second]) -
                           suspects.begin()];
          if (!held.contains(store_key)) continue;  // gone meanwhile
          confirmed.push_back(of[it->second]);
          if (!report) continue;
          log_.Warn("verify found view " + view.view + " differing from its source at key " +
                        store_key + ": extra (no such row in the source)",
                    {{"store", view.store},
                     {"view", view.view},
                     {"key", store_key},
                     {"difference", "view " + view.view + ": extra " + store_key},
                     {"lsn", checked.ToString()}});
        }
        return confirmed.size();
      };
      while (true) {
        if (stopping() || !Verifiable(view) || !Settled(worker, view)) {
          return std::vector<std::vector<std::string>>();
        }
        confirmed.clear();
        by_key.clear();
        auto checked = VerifyChunk(worker, view, schema, key, std::nullopt, of.size(),
                                   /*partitioned=*/false, read, judge);
        if (!checked.ok()) return checked.error();
        Pace(of.size());
        if (checked.value().done) return confirmed;
      }
    };
    auto found = confirm(suspects, /*report=*/true);
    if (!found.ok()) return found.error();
    extra = std::move(found).value();
    if (extra.empty()) continue;
    {
      std::lock_guard lock(mutex_);
      VerifyProgress& progress = verified_[{view.store, view.view}];
      progress.chunks_differing += 1;
      progress.entries_differing += extra.size();
    }
    if (!options_.verify.repair) continue;
    {
      // As for a chunk: the stores' own checks first, then confirmed again.
      auto settled = AfterStoreChecks(worker, view);
      if (!settled.ok()) return settled.error();
      if (!settled.value()) return false;
      auto again = confirm(extra, /*report=*/false);
      if (!again.ok()) return again.error();
      extra = std::move(again).value();
      if (extra.empty()) continue;
    }
    const size_t total = extra.size();
    for (int attempt = 0; attempt < kRepairAttempts && !extra.empty(); ++attempt) {
      if (stopping() || !Verifiable(view)) return false;
      auto removed = RemoveExtras(worker, view, schema, key, extra);
      if (!removed.ok()) return removed.error();
      Pace(extra.size());
      if (!removed.value()) continue;
      auto again = confirm(extra, /*report=*/false);
      if (!again.ok()) return again.error();
      extra = std::move(again).value();
    }
    if (extra.empty()) {
      log_.Info("verify repaired view " + view.view,
                {{"store", view.store}, {"view", view.view}, {"entries", std::to_string(total)}});
      std::lock_guard lock(mutex_);
      verified_[{view.store, view.view}].entries_repaired += total;
      continue;
    }
    const std::string reason = "verify could not repair it: " + std::to_string(extra.size()) +
                               " entries without a row in table " + view.table +
                               " are still in the store after " + std::to_string(kRepairAttempts) +
                               " deletes; `pgderive backfill -c FILE --view " + view.view +
                               "` fills it again";
    std::string where = "extra";
    for (const auto& row : extra) where += " " + KeyJson({row.begin(), row.end()});
    if (FailVerified(view, where, reason)) {
      log_.Error("view " + view.view + " failed: " + reason,
                 {{"store", view.store}, {"view", view.view}, {"table", view.table}});
    }
    return false;
  } while (!cursor.empty());
  return true;
}

Result<bool> Backfills::RemoveExtras(Worker& worker, const BackfillView& view,
                                     const std::shared_ptr<const RelationSchema>& schema,
                                     const std::vector<std::pair<std::string, std::string>>& key,
                                     const std::vector<std::vector<std::string>>& rows) {
  // Between L and H: the rows still absent, as key-only rows placed as deletes.
  auto read = [&]() -> Result<ChunkRows> {
    auto gone = AbsentKeys(*worker.sql, view.table, key, rows);
    if (!gone.ok()) return gone.error();
    ChunkRows out;
    for (size_t i : gone.value()) out.push_back(KeyOnlyRow(*schema, key, rows[i]));
    return out;
  };
  return RepairChunk(worker, view, schema, key, std::nullopt, rows.size(), /*partitioned=*/false,
                     read, /*remove=*/true);
}

}  // namespace pgderive
