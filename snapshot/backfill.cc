#include "snapshot/backfill.h"

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <tuple>

#include "base/number.h"
#include "base/retry.h"
#include "base/table_name.h"
#include "cdc/publication.h"
#include "snapshot/key_range.h"
#include "snapshot/view_state.h"

namespace pgderive {
namespace {

constexpr auto kPoll = std::chrono::milliseconds(2);
// A chunk's rows are held in memory until placed: about this many bytes each (the
// first chunk sized from the table's average row, TOAST included; then from what the
// last chunk weighed).
constexpr size_t kChunkBytes = size_t{8} << 20;
constexpr size_t kMinChunkRows = 16;
constexpr auto kWaitLogEvery = std::chrono::seconds(10);

// A run's messages carry a nonce: messages of an earlier run, replayed from the slot,
// are not this run's chunks.
std::string RunNonce() {
  std::random_device device;
  return std::to_string(getpid()) + "-" + std::to_string(device());
}

}  // namespace

Backfills::Backfills(BackfillOptions options, Logger& log)
    : options_(std::move(options)),
      log_(log),
      window_({.pipeline = options_.pipeline,
               .run = RunNonce(),
               .views = options_.views,
               .checkpoint = options_.checkpoint}) {}

Backfills::~Backfills() { Stop(); }

void Backfills::Start() {
  {
    std::lock_guard lock(mutex_);  // Add and Progress read the workers
    if (!workers_.empty()) return;
    const int n = std::max(1, options_.parallelism);
    for (int i = 0; i < n; ++i) workers_.push_back(std::make_unique<Worker>());
  }
  for (auto& worker : workers_) {
    worker->thread.Start([this, w = worker.get()](std::stop_token) { Loop(*w); });
  }
  if (options_.verify.continuous && !verifier_) {
    verifier_ = std::make_unique<Worker>();
    verifier_->thread.Start([this](std::stop_token) { VerifyLoop(*verifier_); });
  }
}

void Backfills::Stop() {
  stop_.request_stop();
  for (auto& worker : workers_) worker->thread.Stop();
  if (verifier_) verifier_->thread.Stop();
}

void Backfills::Add(const std::string& store, const std::string& table,
                    std::vector<std::string> views, std::optional<std::string> after) {
  std::lock_guard lock(mutex_);
  auto same = [&](const std::shared_ptr<Job>& job) {
    return job && !job->cancelled && job->store == store && job->table == table;
  };
  auto merge = [&](const std::shared_ptr<Job>& job) {
    for (const std::string& v : job->views) {
      if (std::find(views.begin(), views.end(), v) == views.end()) views.push_back(v);
    }
    if (job->after != after) after.reset();  // both from the start
  };
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (same(*it)) {
      merge(*it);
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& worker : workers_) {
    if (same(worker->running)) {
      merge(worker->running);
      after.reset();
      worker->running->cancelled = true;
    }
  }
  auto job = std::make_shared<Job>();
  job->id = next_id_++;
  job->store = store;
  job->table = table;
  job->views = std::move(views);
  job->after = std::move(after);
  // A view the verifier failed is filled again: failed no longer.
  for (const std::string& v : job->views) {
    if (auto it = verified_.find({store, v}); it != verified_.end()) it->second.failed.clear();
  }
  // The views their store checks (a postgres store's, made from the mirrors it fills).
  for (const auto& [s, v] : options_.verify.hooks.store_checked) {
    if (auto it = verified_.find({s, v}); s == store && it != verified_.end()) {
      it->second.failed.clear();
    }
  }
  queue_.push_back(std::move(job));
  ++fills_;
  active_.store(true);
  changed_.notify_all();
}

void Backfills::SetColumns(const std::string& store, const std::string& view,
                           std::vector<std::string> columns) {
  std::lock_guard lock(mutex_);
  window_.SetColumns(store, view, std::move(columns));
}

std::map<std::pair<std::string, std::string>, BackfillProgress> Backfills::Progress() {
  std::lock_guard lock(mutex_);
  std::map<std::pair<std::string, std::string>, BackfillProgress> out;
  auto add = [&](const std::shared_ptr<Job>& job) {
    if (!job || job->cancelled || job->live) return;
    // The planner's estimate is at least what was read.
    BackfillProgress progress = job->progress;
    progress.rows_estimated = std::max(progress.rows_estimated, progress.rows_done);
    for (const std::string& v : job->views) out[{job->store, v}] = progress;
  };
  for (const auto& worker : workers_) add(worker->running);
  for (const auto& job : queue_) add(job);
  return out;
}

// ---- the backfill thread ----

void Backfills::Loop(Worker& worker) {
  const std::stop_token stop = stop_.get_token();
  while (true) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mutex_);
      // A job of a store and table another worker runs waits for it (a replaced job is
      // cancelled, and ends soon).
      auto runnable = [&]() -> std::deque<std::shared_ptr<Job>>::iterator {
        for (auto it = queue_.begin(); it != queue_.end(); ++it) {
          bool busy = false;
          for (const auto& w : workers_) {
            busy = busy || (w->running && w->running->store == (*it)->store &&
                            w->running->table == (*it)->table);
          }
          if (!busy) return it;
        }
        return queue_.end();
      };
      changed_.wait(lock, stop, [&] { return runnable() != queue_.end(); });
      if (stop.stop_requested()) return;
      auto it = runnable();
      job = *it;
      queue_.erase(it);
      worker.running = job;
      window_.AddRunning(job);
    }
    std::string views;
    for (const std::string& v : job->views) views += (views.empty() ? "" : ",") + v;
    log_.Info("backfill started", {{"store", job->store},
                                   {"views", views},
                                   {"table", job->table},
                                   {"after", job->after.value_or("")}});
    const auto started = std::chrono::steady_clock::now();
    bool retrying = false;
    const Status status = RetryTransient(
        [&] {
          if (retrying) worker.sql.reset();
          retrying = true;
          return RunJob(worker, job);
        },
        [&] {
          std::lock_guard lock(mutex_);
          return stop.stop_requested() || job->cancelled;
        },
        [&](const std::string& m) {
          log_.Warn("backfill interrupted: " + m, {{"store", job->store}, {"views", views}});
        },
        [&](std::chrono::milliseconds wait) {
          std::unique_lock lock(mutex_);
          changed_.wait_for(lock, stop, wait, [&] { return job->cancelled; });
        });
    const bool failed = !status.ok() && status.error().kind() != ErrorKind::kTransient;
    if (failed) {
      log_.Error("backfill failed: " + status.error().message() +
                     "; the views stay backfilling until it is fixed and pgderive restarted",
                 {{"store", job->store}, {"views", views}});
    }
    std::lock_guard lock(mutex_);
    if (job->cancelled) {
      log_.Info("backfill replaced by one for a newer shape or request",
                {{"store", job->store}, {"views", views}});
    } else if (!stop.stop_requested() && !failed) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      // Filled: the last chunk applied; done: every chunk durable and the views live.
      const double filled = std::chrono::duration<double>(job->filled_at - started).count();
      log_.Info("backfill done",
                {{"store", job->store},
                 {"views", views},
                 {"rows", std::to_string(job->progress.rows_done)},
                 {"filled_seconds", std::to_string(filled)},
                 {"seconds", std::to_string(seconds)},
                 {"read_seconds", std::to_string(job->timing.read.count())},
                 {"describe_seconds", std::to_string(job->timing.describe.count())},
                 {"watermark_seconds", std::to_string(job->timing.watermarks.count())},
                 {"writers_wait_seconds", std::to_string(job->timing.writers.count())},
                 {"rows_seconds", std::to_string(job->timing.rows.count())},
                 {"verdict_wait_seconds", std::to_string(job->timing.verdict.count())},
                 {"apply_wait_seconds", std::to_string(job->timing.applied.count())}});
    }
    worker.running.reset();
    window_.RemoveRunning(job->id);
    SettleActiveLocked();
    changed_.notify_all();  // a job of the same store and table may wait for this one
  }
}

void Backfills::SettleActiveLocked() {
  bool running = false;
  for (const auto& w : workers_) running = running || w->running != nullptr;
  active_.store(running || !queue_.empty() || window_.chunks_in_flight() > 0);
}

Status Backfills::Emit(Worker& worker, const std::string& content) {
  auto done = worker.sql->Query("select pg_logical_emit_message(true, $1::text, $2::text)",
                                {kBackfillPrefix, content});
  if (!done.ok()) return done.error();
  return Status::Ok();
}

Status Backfills::WaitForWriters(Worker& worker, const std::string& table) {
  const std::string locks =
      "from pg_locks where locktype = 'relation' and database = (select oid from pg_database "
      "where datname = current_database()) and relation in " +
      TableAndPartitions("$1::regclass") +
      " and mode in ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', "
      "'AccessExclusiveLock') and pid is distinct from pg_backend_pid()";
  auto holders = worker.sql->Query(
      "select coalesce(array_agg(distinct virtualtransaction), '{}')::text " + locks,
      {TableName::Parse(table).Quoted()});
  if (!holders.ok()) return holders.error();
  const std::string set = holders.value().rows[0][0].value_or("{}");
  if (set == "{}") return Status::Ok();
  const auto started = std::chrono::steady_clock::now();
  auto logged = started;
  while (!stopping()) {
    auto left =
        worker.sql->Query("select count(*) " + locks + " and virtualtransaction = any($2::text[])",
                          {TableName::Parse(table).Quoted(), set});
    if (!left.ok()) return left.error();
    if (left.value().rows[0][0].value_or("0") == "0") return Status::Ok();
    if (std::chrono::steady_clock::now() - logged >= kWaitLogEvery) {
      logged = std::chrono::steady_clock::now();
      log_.Info("backfill waits for transactions writing " + table + " to end",
                {{"transactions", set}});
    }
    std::this_thread::sleep_for(kPoll);
  }
  return Status::Ok();
}

Backfills::Applied Backfills::WaitApplied(const std::string& store, Lsn watermark,
                                          uint64_t generation) {
  while (true) {
    std::unique_lock lock(mutex_);
    // The stream restarted since the rows were placed: whether the store got them is
    // unknown (a detached store drops what it is offered, and once it rejoins, the
    // stream from its checkpoint carries it past the watermark without the rows, which
    // are not in the WAL). Read again - never taken as applied because the checkpoint
    // passed. Checked under the lock the restart takes, before the checkpoint.
    if (stopping() || generation_ != generation) return Applied::kNo;
    if (options_.checkpoint(store) > watermark) return Applied::kYes;
    if (options_.failed && options_.failed(store)) return Applied::kStoreFailed;
    changed_.wait_for(lock, stop_.get_token(), std::chrono::milliseconds(5),
                      [&] { return generation_ != generation; });
  }
}

// Chunks applied but not yet durable in their store (Redis counts a write durable 2 s
// after EXEC): a store that comes back without its last writes replays the stream from
// the slot, but a chunk's rows are not in the WAL, so the job reads again from the
// first chunk the store no longer covers.
bool Backfills::Rewind(Job& job, std::deque<Unsure>& unsure) {
  const Lsn applied = options_.checkpoint(job.store);
  const Lsn durable = options_.durable ? options_.durable(job.store) : applied;
  while (!unsure.empty() && durable > unsure.front().watermark) unsure.pop_front();
  for (auto it = unsure.begin(); it != unsure.end(); ++it) {
    if (applied > it->watermark) continue;
    std::lock_guard lock(mutex_);
    job.live = false;
    job.after = it->after;
    job.progress.rows_done = it->rows_done;
    unsure.erase(it, unsure.end());
    return true;
  }
  return false;
}

Status Backfills::RunJob(Worker& worker, const std::shared_ptr<Job>& job) {
  if (!worker.sql) {
    auto connected = SqlSession::Connect(options_.dsn, "pgderive-backfill");
    if (!connected.ok()) return connected.error();
    worker.sql.emplace(std::move(connected).value());
    // A watermark is sent to the stream once flushed: each waits for its own flush
    // (`local`: never for a synchronous standby), rather than for the WAL writer's next
    // round. A lock the chunk's read queues behind (an ALTER TABLE waiting) is given up
    // after 1 s and retried, so that a stop never waits on it.
    Status status = worker.sql->Execute("set synchronous_commit = local; set lock_timeout = '1s'");
    if (!status.ok()) return status;
  }
  // Any failure of the source below is retried from the last chunk applied.
  auto transient = [](const Error& error) { return Error::Transient(error.message()); };
  // The key the chunks follow: the replica identity's index when it names one (its
  // columns are what a delete carries), else the primary key.
  auto key = KeyColumns(*worker.sql, job->table);
  if (!key.ok())
    return key.error().kind() == ErrorKind::kPermanent ? key.error() : transient(key.error());
  const std::vector<std::pair<std::string, std::string>> key_columns = std::move(key).value();
  // A partitioned table is read through its root; its writers lock the partitions.
  auto estimate = EstimateTable(*worker.sql, job->table);
  if (!estimate.ok()) {
    return estimate.error().kind() == ErrorKind::kCorrupt ? estimate.error()
                                                          : transient(estimate.error());
  }
  size_t limit = options_.chunk_rows;
  if (estimate.value().row_bytes > 0) {
    limit =
        std::clamp(kChunkBytes / estimate.value().row_bytes, kMinChunkRows, options_.chunk_rows);
  }
  const bool partitioned = estimate.value().partitioned;
  {
    std::lock_guard lock(mutex_);
    job->progress.rows_estimated = estimate.value().rows;
  }
  std::deque<Unsure> unsure;
  std::deque<Flight> flights;  // read, not yet applied, in key order
  // Abandons the chunks in flight: the job goes on after the last one applied.
  auto abandon = [&] {
    std::lock_guard lock(mutex_);
    AbandonLocked(flights);
  };
  while (true) {
    // The chunks, from `after` to the end of the table: up to chunks_in_flight read
    // ahead of the one the store applies.
    std::optional<std::string> next = job->after;  // where the next chunk read starts
    bool end = false;                              // the last chunk is read
    while (true) {
      {
        std::lock_guard lock(mutex_);
        if (stopping() || job->cancelled) {
          AbandonLocked(flights);
          return Status::Ok();
        }
        if (job->restart) {
          // An update moved a row the view does not hold behind the frontier.
          job->restart = false;
          job->after.reset();
          job->progress.rows_done = 0;
          unsure.clear();
          AbandonLocked(flights);
          next.reset();
          end = false;
        }
      }
      if (Rewind(*job, unsure)) {
        log_.Warn("store " + job->store + " lost backfilled rows; reading again after " +
                  job->after.value_or("the start"));
        abandon();
        next = job->after;
        end = false;
      }
      if (!end && flights.size() < std::max<size_t>(1, options_.chunks_in_flight)) {
        const auto describe_started = std::chrono::steady_clock::now();
        auto schema = DescribeTable(*worker.sql, job->table);
        job->timing.describe += std::chrono::steady_clock::now() - describe_started;
        if (!schema.ok()) {
          abandon();
          return transient(schema.error());
        }
        {
          // A following view must not end with rows of two shapes: a change of the
          // table's columns restarts the job.
          std::lock_guard lock(mutex_);
          const std::vector<std::string> columns = ColumnsOf(*schema.value());
          if (!job->columns.empty() && job->columns != columns) {
            job->after.reset();
            job->progress.rows_done = 0;
            unsure.clear();
            AbandonLocked(flights);
            next.reset();
            end = false;
          }
          job->columns = columns;
          job->table_oid = schema.value()->id.value;
        }
        const uint64_t prev = flights.empty() ? 0 : flights.back().id;
        const auto read_started = std::chrono::steady_clock::now();
        auto flight =
            ReadChunk(worker, job, schema.value(), key_columns, next, limit, partitioned, prev);
        job->timing.read += std::chrono::steady_clock::now() - read_started;
        if (!flight.ok()) {
          abandon();
          return transient(flight.error());
        }
        std::optional<std::string> last;
        size_t read = 0;
        {
          std::lock_guard lock(mutex_);
          std::tie(read, last) = window_.ChunkPosition(flight.value().id);
        }
        if (read < limit) end = true;
        if (read > 0) next = last;
        flights.push_back(std::move(flight).value());
        // Keep reading while the window and the store catch up.
        if (!end && flights.size() < options_.chunks_in_flight) continue;
      }
      if (flights.empty()) break;  // every chunk applied
      // The oldest chunk in flight: its verdict, then its store.
      Flight& front = flights.front();
      const auto wait_started = std::chrono::steady_clock::now();
      if (!front.decided) WaitVerdict(front);
      job->timing.verdict += std::chrono::steady_clock::now() - wait_started;
      const WatermarkWindow::ChunkOutcome& c = front.outcome;
      if (c.verdict != Verdict::kDone) {
        // Read again, and the chunks after it (a hot row in its window: halved).
        limit = std::max(kMinChunkRows, front.asked / 2);
        abandon();
        next = job->after;
        end = false;
        continue;
      }
      if (c.rows > 0 && c.bytes > 0) {
        // The next chunks weigh about kChunkBytes.
        const size_t fits = std::max<size_t>(1, kChunkBytes * c.rows / c.bytes);
        limit = std::clamp(std::min(fits, limit * 2), kMinChunkRows, options_.chunk_rows);
      }
      const auto apply_started = std::chrono::steady_clock::now();
      const Applied applied = WaitApplied(job->store, c.watermark, front.generation);
      job->timing.applied += std::chrono::steady_clock::now() - apply_started;
      if (applied == Applied::kStoreFailed) {
        abandon();
        return Error::Permanent("store " + job->store + " stopped on an error");
      }
      if (applied == Applied::kNo) {
        abandon();
        next = job->after;
        end = false;
        continue;
      }
      std::lock_guard lock(mutex_);
      unsure.push_back(Unsure{c.watermark, job->after, job->progress.rows_done});
      job->progress.rows_done += c.rows;
      if (c.last) job->after = c.last;
      const bool last_chunk = c.rows < front.asked;
      flights.pop_front();
      if (last_chunk) {
        AbandonLocked(flights);  // none: nothing is read after the end
        job->filled_at = std::chrono::steady_clock::now();
        break;
      }
    }
    // The last chunk is applied: mark the views live at a position of their own, once
    // every chunk is durable.
    bool rewound = false;
    while (!rewound) {
      uint64_t generation;
      {
        std::lock_guard lock(mutex_);
        if (stopping() || job->cancelled) return Status::Ok();
        window_.BeginDone(job->id);
        generation = generation_;
      }
      Status status = Emit(worker, window_.Message("done", job->id));
      if (!status.ok()) {
        std::lock_guard lock(mutex_);
        window_.EndDone(job->id);
        return transient(status.error());
      }
      std::pair<Verdict, Lsn> verdict;
      {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, stop_.get_token(),
                      [&] { return window_.DoneVerdict(job->id) != Verdict::kPending; });
        verdict = window_.EndDone(job->id);
        if (stopping()) return Status::Ok();
        if (job->cancelled) return Status::Ok();
      }
      if (verdict.first != Verdict::kDone) continue;
      const Applied applied = WaitApplied(job->store, verdict.second, generation);
      if (applied == Applied::kStoreFailed) {
        return Error::Permanent("store " + job->store + " stopped on an error");
      }
      if (applied == Applied::kNo) continue;
      {
        // The store records the views live: so does the progress, while the job waits
        // for the chunks to be durable.
        std::lock_guard lock(mutex_);
        unsure.push_back(Unsure{verdict.second, job->after, job->progress.rows_done});
        job->live = true;
      }
      // Done once durable; a store that lost them meanwhile has the job read again.
      while (true) {
        if (Rewind(*job, unsure)) {
          log_.Warn("store " + job->store + " lost backfilled rows; reading again after " +
                    job->after.value_or("the start"));
          rewound = true;
          break;
        }
        if (unsure.empty()) return Status::Ok();
        std::unique_lock lock(mutex_);
        if (stopping() || job->cancelled) return Status::Ok();
        if (job->restart) {
          job->live = false;
          rewound = true;
          break;
        }
        changed_.wait_for(lock, stop_.get_token(), std::chrono::milliseconds(50),
                          [&] { return job->cancelled || job->restart; });
      }
    }
  }
}

Result<Backfills::Flight> Backfills::ReadChunk(
    Worker& worker, const std::shared_ptr<Job>& job,
    const std::shared_ptr<const RelationSchema>& schema,
    const std::vector<std::pair<std::string, std::string>>& key,
    const std::optional<std::string>& after, size_t limit, bool partitioned, uint64_t prev,
    const std::function<Result<ChunkRows>()>& read) {
  Flight flight;
  flight.asked = limit;
  {
    std::vector<std::string> key_names;
    for (const auto& [name, type] : key) key_names.push_back(name);
    std::lock_guard lock(mutex_);
    flight.id = next_id_++;
    flight.generation = generation_;
    window_.BeginChunk(flight.id, job, schema, std::move(key_names), prev, after);
    active_.store(true);
  }
  auto forget = [&] {
    std::lock_guard lock(mutex_);
    window_.EndChunk(flight.id);
  };
  using Clock = std::chrono::steady_clock;
  auto step = Clock::now();
  // Adds the time since the last step to `total`.
  auto lap = [&](std::chrono::duration<double>& total) {
    const auto now = Clock::now();
    total += now - step;
    step = now;
  };
  Status status = Emit(worker, window_.Message("low", flight.id));
  lap(job->timing.watermarks);
  if (status.ok()) status = WaitForWriters(worker, job->table);
  lap(job->timing.writers);
  if (!status.ok()) {
    forget();
    return status.error();
  }
  auto rows =
      read ? read() : ReadRows(*worker.sql, job->table, schema, key, after, limit, partitioned);
  if (!rows.ok()) {
    forget();
    return rows.error();
  }
  {
    std::lock_guard lock(mutex_);
    window_.ChunkRead(flight.id, std::move(rows).value());
  }
  lap(job->timing.rows);
  status = Emit(worker, window_.Message("high", flight.id));
  lap(job->timing.watermarks);
  if (!status.ok()) {
    forget();
    return status.error();
  }
  return flight;
}

void Backfills::WaitVerdict(Flight& flight) {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, stop_.get_token(),
                [&] { return window_.ChunkVerdict(flight.id) != Verdict::kPending; });
  // Still pending when stopping: kRetry.
  flight.outcome = window_.EndChunk(flight.id);
  flight.decided = true;
}

void Backfills::AbandonLocked(std::deque<Flight>& flights) {
  for (const Flight& flight : flights) {
    if (!flight.decided) window_.EndChunk(flight.id);
  }
  flights.clear();
}

// ---- the stream thread ----

void Backfills::OnChange(const Change& change, std::vector<OwnedChange>& out) {
  // Most changes concern no backfill: they pass without the lock.
  if (!window_.Concerns(change, active_.load())) return;
  WatermarkWindow::Events events;
  {
    std::lock_guard lock(mutex_);
    window_.OnChange(change, out, events);
    if (events.decided) changed_.notify_all();
  }
  for (const auto& [store, view] : events.requested) {
    if (store.empty()) {
      log_.Warn("backfill requested for view " + view + ", which this configuration does not have");
    } else {
      log_.Info("backfill of view " + view + " requested", {{"store", store}});
    }
  }
  for (WatermarkWindow::Events::Job& job : events.jobs) {
    if (job.reshaped) {
      std::string names;
      for (const std::string& v : job.views) names += (names.empty() ? "" : ",") + v;
      log_.Info("the columns of " + job.table + " changed: backfilling the views that follow it",
                {{"store", job.store}, {"views", names}});
    }
    Add(job.store, job.table, std::move(job.views), std::nullopt);
  }
}

void Backfills::OnStreamRestart() {
  std::lock_guard lock(mutex_);
  ++generation_;
  window_.OnStreamRestart();
  changed_.notify_all();
}

}  // namespace pgderive
