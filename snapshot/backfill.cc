#include "snapshot/backfill.h"

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <random>
#include <variant>

#include "base/backoff.h"
#include "cdc/publication.h"
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

// The key of a row as the backfill names it: the JSON array of the key columns' text.
std::string KeyJson(const std::vector<std::optional<std::string_view>>& values) {
  nlohmann::json key = nlohmann::json::array();
  for (const auto& v : values) key.push_back(v ? nlohmann::json(std::string(*v)) : nullptr);
  return key.dump();
}

// The table `regclass` (an SQL expression) and, when partitioned, its partitions, as a
// subquery of OIDs. (pg_partition_tree returns no row at all for a plain table.)
std::string TableAndPartitions(const std::string& regclass) {
  return "(select " + regclass + "::oid union select relid::oid from pg_partition_tree(" +
         regclass + "))";
}

// A run's messages carry a nonce: messages of an earlier run, replayed from the slot,
// are not this run's chunks.
std::string RunNonce() {
  std::random_device device;
  return std::to_string(getpid()) + "-" + std::to_string(device());
}

}  // namespace

Backfills::Backfills(BackfillOptions options, Logger& log)
    : options_(std::move(options)), log_(log), run_(RunNonce()) {
  for (const BackfillView& v : options_.views) has_follow_ = has_follow_ || (v.rows && v.follows);
}

Backfills::~Backfills() { Stop(); }

void Backfills::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { Loop(); });
}

void Backfills::Stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Backfills::stopping() {
  std::lock_guard lock(mutex_);
  return stopping_;
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
  if (same(running_)) {
    merge(running_);
    after.reset();
    running_->cancelled = true;
  }
  auto job = std::make_shared<Job>();
  job->id = next_id_++;
  job->store = store;
  job->table = table;
  job->views = std::move(views);
  job->after = std::move(after);
  queue_.push_back(std::move(job));
  active_.store(true);
  changed_.notify_all();
}

void Backfills::SetColumns(const std::string& store, const std::string& view,
                           std::vector<std::string> columns) {
  std::lock_guard lock(mutex_);
  columns_[{store, view}] = std::move(columns);
}

std::map<std::pair<std::string, std::string>, BackfillProgress> Backfills::Progress() {
  std::lock_guard lock(mutex_);
  std::map<std::pair<std::string, std::string>, BackfillProgress> out;
  auto add = [&](const std::shared_ptr<Job>& job) {
    if (!job || job->cancelled || job->live) return;
    // The planner's estimate (0 for a table never analyzed) is at least what was read.
    BackfillProgress progress = job->progress;
    progress.rows_estimated = std::max(progress.rows_estimated, progress.rows_done);
    for (const std::string& v : job->views) out[{job->store, v}] = progress;
  };
  add(running_);
  for (const auto& job : queue_) add(job);
  return out;
}

std::string Backfills::Message(const std::string& mark, uint64_t id) const {
  return nlohmann::json{{"pipeline", options_.pipeline}, {"run", run_}, {"mark", mark}, {"id", id}}
      .dump();
}

// ---- the backfill thread ----

void Backfills::Loop() {
  while (true) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = queue_.front();
      queue_.pop_front();
      running_ = job;
    }
    std::string views;
    for (const std::string& v : job->views) views += (views.empty() ? "" : ",") + v;
    log_.Info("backfill started", {{"store", job->store},
                                   {"views", views},
                                   {"table", job->table},
                                   {"after", job->after.value_or("")}});
    const auto started = std::chrono::steady_clock::now();
    Backoff backoff(std::chrono::milliseconds(200), std::chrono::seconds(10));
    bool failed = false;
    while (true) {
      Status status = RunJob(job);
      if (status.ok()) break;
      if (status.error().kind() != ErrorKind::kTransient) {
        failed = true;
        log_.Error("backfill failed: " + status.error().message() +
                       "; the views stay backfilling until it is fixed and pgderive restarted",
                   {{"store", job->store}, {"views", views}});
        break;
      }
      sql_.reset();
      const auto wait = backoff.Next();
      log_.Warn("backfill interrupted: " + status.error().message() + "; retrying in " +
                    std::to_string(wait.count()) + " ms",
                {{"store", job->store}, {"views", views}});
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, wait, [&] { return stopping_ || job->cancelled; });
    }
    std::lock_guard lock(mutex_);
    if (job->cancelled) {
      log_.Info("backfill replaced by one for a newer shape or request",
                {{"store", job->store}, {"views", views}});
    } else if (!stopping_ && !failed) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      // Filled: the last chunk applied; done: every chunk durable and the views live.
      const double filled = std::chrono::duration<double>(job->filled_at - started).count();
      log_.Info("backfill done", {{"store", job->store},
                                  {"views", views},
                                  {"rows", std::to_string(job->progress.rows_done)},
                                  {"filled_seconds", std::to_string(filled)},
                                  {"seconds", std::to_string(seconds)}});
    }
    running_.reset();
    active_.store(!queue_.empty() || !chunks_.empty());
  }
}

Status Backfills::Emit(const std::string& content) {
  auto done =
      sql_->Query("select pg_logical_emit_message(true, " + sql_->QuoteLiteral(kBackfillPrefix) +
                  ", " + sql_->QuoteLiteral(content) + ")");
  if (!done.ok()) return done.error();
  return Status::Ok();
}

Status Backfills::WaitForWriters(const std::string& table) {
  const std::string locks =
      "from pg_locks where locktype = 'relation' and database = (select oid from pg_database "
      "where datname = current_database()) and relation in " +
      TableAndPartitions(sql_->QuoteLiteral(sql_->QuoteTableName(table)) + "::regclass") +
      " and mode in ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', "
      "'AccessExclusiveLock') and pid is distinct from pg_backend_pid()";
  auto holders =
      sql_->Query("select coalesce(array_agg(distinct virtualtransaction), '{}')::text " + locks);
  if (!holders.ok()) return holders.error();
  const std::string set = holders.value().rows[0][0].value_or("{}");
  if (set == "{}") return Status::Ok();
  const auto started = std::chrono::steady_clock::now();
  auto logged = started;
  while (!stopping()) {
    auto left = sql_->Query("select count(*) " + locks + " and virtualtransaction = any(" +
                            sql_->QuoteLiteral(set) + "::text[])");
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
    if (options_.checkpoint(store) > watermark) return Applied::kYes;
    if (options_.failed && options_.failed(store)) return Applied::kStoreFailed;
    std::unique_lock lock(mutex_);
    if (stopping_ || generation_ != generation) return Applied::kNo;
    changed_.wait_for(lock, std::chrono::milliseconds(5));
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

Status Backfills::RunJob(const std::shared_ptr<Job>& job) {
  if (!sql_) {
    auto connected =
        PgConnection::Connect(options_.dsn, PgConnection::Mode::kSql, "pgderive-backfill");
    if (!connected.ok()) return connected.error();
    sql_.emplace(std::move(connected).value());
    // A watermark is sent to the stream once flushed: each waits for its own flush
    // (`local`: never for a synchronous standby), rather than for the WAL writer's next
    // round. A lock the chunk's read queues behind (an ALTER TABLE waiting) is given up
    // after 1 s and retried, so that a stop never waits on it.
    Status status = sql_->Execute("set synchronous_commit = local; set lock_timeout = '1s'");
    if (!status.ok()) return status;
  }
  // Any failure of the source below is retried from the last chunk applied.
  auto transient = [](const Error& error) { return Error::Transient(error.message()); };
  // The key the chunks follow: the replica identity's index when it names one (its
  // columns are what a delete carries), else the primary key.
  const std::string regclass = sql_->QuoteLiteral(sql_->QuoteTableName(job->table)) + "::regclass";
  auto key = sql_->Query(
      "select a.attname, format_type(a.atttypid, a.atttypmod) from (select indkey::int2[] k "
      "from pg_index where indrelid = " +
      regclass +
      " and (indisprimary or indisreplident) order by indisreplident desc, indisprimary desc "
      "limit 1) i, unnest(i.k) with ordinality u(attnum, n) join pg_attribute a on a.attrelid = " +
      regclass + " and a.attnum = u.attnum order by u.n");
  if (!key.ok()) return transient(key.error());
  std::vector<std::pair<std::string, std::string>> key_columns;
  for (const auto& row : key.value().rows) {
    key_columns.emplace_back(row[0].value_or(""), row[1].value_or(""));
  }
  if (key_columns.empty()) {
    return Error::Permanent("table " + job->table +
                            " has neither a primary key nor a replica identity index to read it "
                            "by in chunks; rebuild the store instead");
  }
  // A partitioned table is read through its root; its writers lock the partitions.
  auto estimate = sql_->Query(
      "select sum(greatest(c.reltuples, 0))::bigint, (sum(pg_table_size(c.oid)) / "
      "nullif(sum(greatest(c.reltuples, 0)), 0))::bigint, bool_or(c.oid = " +
      regclass + " and c.relkind = 'p') from pg_class c where c.oid in " +
      TableAndPartitions(regclass));
  if (!estimate.ok()) return transient(estimate.error());
  size_t limit = options_.chunk_rows;
  bool partitioned = false;
  {
    std::lock_guard lock(mutex_);
    job->progress.rows_estimated = std::stoull(estimate.value().rows[0][0].value_or("0"));
    const size_t width = std::stoull(estimate.value().rows[0][1].value_or("0"));
    if (width > 0) limit = std::clamp(kChunkBytes / width, kMinChunkRows, options_.chunk_rows);
    partitioned = estimate.value().rows[0][2].value_or("f") == "t";
  }
  std::deque<Unsure> unsure;
  while (true) {
    // The chunks, from `after` to the end of the table.
    while (true) {
      {
        std::lock_guard lock(mutex_);
        if (stopping_ || job->cancelled) return Status::Ok();
        if (job->restart) {
          // An update moved a row the view does not hold behind the frontier.
          job->restart = false;
          job->after.reset();
          job->progress.rows_done = 0;
          unsure.clear();
        }
      }
      if (Rewind(*job, unsure)) {
        log_.Warn("store " + job->store + " lost backfilled rows; reading again after " +
                  job->after.value_or("the start"));
      }
      auto schema = DescribeTable(*sql_, job->table);
      if (!schema.ok()) return transient(schema.error());
      {
        // A following view must not end with rows of two shapes: a change of the
        // table's columns restarts the job.
        std::lock_guard lock(mutex_);
        const std::vector<std::string> columns = ColumnsOf(*schema.value());
        if (!job->columns.empty() && job->columns != columns) {
          job->after.reset();
          job->progress.rows_done = 0;
          unsure.clear();
        }
        job->columns = columns;
        job->table_oid = schema.value()->id.value;
      }
      auto chunk = RunChunk(job, schema.value(), key_columns, limit, partitioned);
      if (!chunk.ok()) return transient(chunk.error());
      const Chunk& c = *chunk.value();
      // The next chunk weighs about kChunkBytes; a chunk read again is halved (a hot
      // row in its window).
      const size_t read = c.rows.size();
      if (c.verdict != Verdict::kDone) {
        limit = std::max(kMinChunkRows, limit / 2);
        continue;
      }
      if (read > 0 && c.bytes > 0) {
        const size_t fits = std::max<size_t>(1, kChunkBytes * read / c.bytes);
        limit = std::clamp(std::min(fits, limit * 2), kMinChunkRows, options_.chunk_rows);
      }
      const Applied applied = WaitApplied(job->store, c.watermark, c.generation);
      if (applied == Applied::kStoreFailed) {
        return Error::Permanent("store " + job->store + " stopped on an error");
      }
      if (applied == Applied::kNo) continue;
      std::lock_guard lock(mutex_);
      unsure.push_back(Unsure{c.watermark, job->after, job->progress.rows_done});
      job->progress.rows_done += read;
      if (read < c.limit) {
        job->filled_at = std::chrono::steady_clock::now();
        break;
      }
      job->after = c.last;
    }
    // The last chunk is applied: mark the views live at a position of their own, once
    // every chunk is durable.
    bool rewound = false;
    while (!rewound) {
      uint64_t generation;
      {
        std::lock_guard lock(mutex_);
        if (stopping_ || job->cancelled) return Status::Ok();
        done_[job->id] = {Verdict::kPending, Lsn{}};
        generation = generation_;
      }
      Status status = Emit(Message("done", job->id));
      if (!status.ok()) {
        std::lock_guard lock(mutex_);
        done_.erase(job->id);
        return transient(status.error());
      }
      std::pair<Verdict, Lsn> verdict;
      {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] { return stopping_ || done_[job->id].first != Verdict::kPending; });
        verdict = done_[job->id];
        done_.erase(job->id);
        if (stopping_) return Status::Ok();
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
        if (stopping_ || job->cancelled) return Status::Ok();
        if (job->restart) {
          job->live = false;
          rewound = true;
          break;
        }
        changed_.wait_for(lock, std::chrono::milliseconds(50));
      }
    }
  }
}

Result<std::shared_ptr<Backfills::Chunk>> Backfills::RunChunk(
    const std::shared_ptr<Job>& job, const std::shared_ptr<const RelationSchema>& schema,
    const std::vector<std::pair<std::string, std::string>>& key, size_t limit, bool partitioned) {
  auto chunk = std::make_shared<Chunk>();
  chunk->limit = limit;
  std::optional<std::string> after;
  {
    std::lock_guard lock(mutex_);
    chunk->id = next_id_++;
    chunk->job = job;
    chunk->schema = schema;
    for (const auto& [name, type] : key) chunk->key.push_back(name);
    chunk->generation = generation_;
    chunks_[chunk->id] = chunk;
    active_.store(true);
    after = job->after;
  }
  auto forget = [&] {
    std::lock_guard lock(mutex_);
    chunks_.erase(chunk->id);
  };
  Status status = Emit(Message("low", chunk->id));
  if (status.ok()) status = WaitForWriters(job->table);
  if (!status.ok()) {
    forget();
    return status.error();
  }
  // The rows after the last chunk's, in key order.
  std::string columns, order, where;
  for (const ColumnSchema& c : schema->columns) {
    columns += (columns.empty() ? "" : ", ") + sql_->QuoteIdentifier(c.name);
  }
  for (const auto& [name, type] : key) {
    order += (order.empty() ? "" : ", ") + sql_->QuoteIdentifier(name);
  }
  if (after) {
    auto values = nlohmann::json::parse(*after, nullptr, /*allow_exceptions=*/false);
    if (!values.is_array() || values.size() != key.size() ||
        !std::all_of(values.begin(), values.end(), [](const auto& v) { return v.is_string(); })) {
      forget();
      return Error::Corrupt("backfill of " + job->table + ": the recorded position " + *after +
                            " does not match the key (" + order + ")");
    }
    std::string literals;
    for (size_t i = 0; i < key.size(); ++i) {
      literals +=
          (i ? ", " : "") + sql_->QuoteLiteral(values[i].get<std::string>()) + "::" + key[i].second;
    }
    where = " where (" + order + ") > (" + literals + ")";
  }
  auto rows = sql_->Query("select " + columns + " from " + (partitioned ? "" : "only ") +
                          sql_->QuoteTableName(job->table) + where + " order by " + order +
                          " limit " + std::to_string(limit));
  if (!rows.ok()) {
    forget();
    return rows.error();
  }
  {
    std::lock_guard lock(mutex_);
    chunk->rows = std::move(rows.value().rows);
    for (const auto& row : chunk->rows) {
      for (const auto& value : row) chunk->bytes += value ? value->size() : 0;
    }
    if (!chunk->rows.empty()) {
      std::vector<std::optional<std::string_view>> values;
      for (const auto& [name, type] : key) {
        for (size_t i = 0; i < schema->columns.size(); ++i) {
          if (schema->columns[i].name == name) values.push_back(chunk->rows.back()[i]);
        }
      }
      chunk->last = KeyJson(values);
    }
    chunk->read = true;
  }
  status = Emit(Message("high", chunk->id));
  if (!status.ok()) {
    forget();
    return status.error();
  }
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return stopping_ || chunk->verdict != Verdict::kPending; });
  chunks_.erase(chunk->id);
  if (chunk->verdict == Verdict::kPending) chunk->verdict = Verdict::kRetry;  // stopping
  return chunk;
}

// ---- the stream thread ----

void Backfills::OnChange(const Change& change, std::vector<OwnedChange>& out) {
  const auto* message = std::get_if<LogicalMessage>(change.message);
  if (message == nullptr) {
    if (has_follow_) DetectSchemaChange(change, out);
    if (active_.load()) Record(change);
    return;
  }
  if (message->prefix != kBackfillPrefix) return;
  auto content = nlohmann::json::parse(message->content, nullptr, /*allow_exceptions=*/false);
  if (!content.is_object()) return;
  // Whatever the message holds (anyone with the right may write one): no exceptions.
  auto text = [&](const char* key) {
    auto it = content.find(key);
    return it != content.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  if (text("pipeline") != options_.pipeline) return;
  const std::string mark = text("mark");
  if (mark == "request") {
    // `pgderive backfill`: at this position the view is emptied (a postgres view is
    // recomputed) and filled again. A store past it has done so already.
    const std::string name = text("view");
    for (const BackfillView& v : options_.views) {
      if (v.view != name) continue;
      if (change.commit_lsn < options_.checkpoint(v.store)) return;
      auto control = std::make_shared<ViewControl>();
      control->store = v.store;
      control->views = {v.view};
      control->backfilling = v.rows;
      control->clear = true;
      {
        std::lock_guard lock(mutex_);
        auto it = columns_.find({v.store, v.view});
        if (it != columns_.end()) control->columns = it->second;
      }
      out.push_back(ViewStateChange(change.commit_lsn, change.index, std::move(control)));
      log_.Info("backfill of view " + name + " requested", {{"store", v.store}});
      if (v.rows) Add(v.store, v.table, {v.view}, std::nullopt);
      return;
    }
    log_.Warn("backfill requested for view " + name + ", which this configuration does not have");
    return;
  }
  if (text("run") != run_) return;  // an earlier run's, replayed
  auto at = content.find("id");
  if (at == content.end() || !at->is_number_unsigned()) return;
  const uint64_t id = at->get<uint64_t>();
  std::lock_guard lock(mutex_);
  if (mark == "low") {
    auto it = chunks_.find(id);
    if (it != chunks_.end()) it->second->open = true;
    return;
  }
  if (mark == "high") {
    auto it = chunks_.find(id);
    if (it == chunks_.end()) return;
    Chunk& chunk = *it->second;
    if (chunk.verdict != Verdict::kPending) return;
    if (!chunk.open || chunk.spoiled || !chunk.read || chunk.job->cancelled) {
      chunk.verdict = Verdict::kRetry;
    } else {
      Place(chunk, change.commit_lsn, change.index, out);
      chunk.verdict = Verdict::kDone;
      chunk.watermark = change.commit_lsn;
    }
    changed_.notify_all();
    return;
  }
  if (mark == "done") {
    auto it = done_.find(id);
    if (it == done_.end() || it->second.first != Verdict::kPending) return;
    std::shared_ptr<Job> job = running_ && running_->id == id ? running_ : nullptr;
    if (!job || job->cancelled) {
      it->second.first = Verdict::kRetry;
    } else {
      auto control = std::make_shared<ViewControl>();
      control->store = job->store;
      control->views = job->views;
      control->columns = job->columns;
      control->table_oid = job->table_oid;
      out.push_back(ViewStateChange(change.commit_lsn, change.index, std::move(control)));
      for (const std::string& v : job->views) columns_[{job->store, v}] = job->columns;
      it->second = {Verdict::kDone, change.commit_lsn};
    }
    changed_.notify_all();
  }
}

// The chunk's rows, minus those changed in its window, at its high watermark; then the
// views' state with the new position.
void Backfills::Place(Chunk& chunk, Lsn commit_lsn, uint32_t index, std::vector<OwnedChange>& out) {
  const Job& job = *chunk.job;
  auto control = std::make_shared<ViewControl>();
  control->store = job.store;
  control->views = job.views;
  std::vector<size_t> key;
  for (const std::string& name : chunk.key) {
    for (size_t i = 0; i < chunk.schema->columns.size(); ++i) {
      if (chunk.schema->columns[i].name == name) key.push_back(i);
    }
  }
  TupleData tuple;
  uint32_t n = index;
  for (const auto& row : chunk.rows) {
    std::vector<std::optional<std::string_view>> values;
    for (size_t k : key) values.push_back(row[k]);
    if (chunk.changed.contains(KeyJson(values))) continue;
    tuple.columns.assign(row.size(), TupleValue{});
    for (size_t i = 0; i < row.size(); ++i) {
      if (row[i]) tuple.columns[i] = TupleValue{TupleValueKind::kText, *row[i]};
    }
    out.push_back(BackfillRow(commit_lsn, ++n, chunk.schema, tuple, control));
  }
  auto state = std::make_shared<ViewControl>(*control);
  state->backfilling = true;
  state->after = chunk.last;
  state->columns = job.columns;
  state->table_oid = chunk.schema->id.value;
  out.push_back(ViewStateChange(commit_lsn, ++n, std::move(state)));
}

// A row change of a table with chunks in flight: its keys join their windows.
void Backfills::Record(const Change& change) {
  std::lock_guard lock(mutex_);
  if (running_ && !running_->cancelled && !change.relations.empty() &&
      change.relations.front()->QualifiedName() == running_->table) {
    // A key change that leaves a TOASTed value out: the views may not hold the row to
    // take it from, and its new key may be behind the chunks read; read it all again.
    // (An old key logged because the key itself is TOASTed, with the key unchanged, is
    // no key change.)
    if (const auto* update = std::get_if<UpdateMessage>(change.message);
        update != nullptr && update->old_kind != '\0') {
      TupleData filled = update->new_tuple;
      const RelationSchema& schema = *change.relations.front();
      if (FillUnchangedFromOld(schema, update->old_kind, update->old_tuple, filled) > 0 &&
          KeyChanged(schema, update->old_tuple, filled)) {
        running_->restart = true;
      }
    }
  }
  if (chunks_.empty()) return;
  for (auto& [id, chunk] : chunks_) {
    if (!chunk->open || chunk->spoiled) continue;
    const std::string table = chunk->job->table;
    bool touches = false;
    for (const auto& relation : change.relations) {
      touches = touches || relation->QualifiedName() == table;
    }
    if (!touches) continue;
    const TupleData* new_tuple = nullptr;
    const TupleData* old_tuple = nullptr;
    TupleData filled;  // an update's new tuple with what its old tuple carries
    std::visit(
        [&](const auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, InsertMessage>) {
            new_tuple = &m.new_tuple;
          } else if constexpr (std::is_same_v<T, UpdateMessage>) {
            new_tuple = &m.new_tuple;
            if (m.old_kind != '\0') {
              old_tuple = &m.old_tuple;
              filled = m.new_tuple;
              FillUnchangedFromOld(*change.relations.front(), m.old_kind, m.old_tuple, filled);
              new_tuple = &filled;
            }
          } else if constexpr (std::is_same_v<T, DeleteMessage>) {
            old_tuple = &m.old_tuple;
          }
        },
        *change.message);
    if (new_tuple == nullptr && old_tuple == nullptr) {
      chunk->spoiled = true;  // a truncate
      continue;
    }
    const RelationSchema& schema = *change.relations.front();
    auto key_of = [&](const TupleData& tuple) -> std::optional<std::string> {
      std::vector<std::optional<std::string_view>> values;
      for (const std::string& name : chunk->key) {
        bool found = false;
        for (size_t i = 0; i < schema.columns.size() && i < tuple.columns.size(); ++i) {
          if (schema.columns[i].name != name) continue;
          if (tuple.columns[i].kind != TupleValueKind::kText) return std::nullopt;
          values.push_back(tuple.columns[i].data);
          found = true;
        }
        if (!found) return std::nullopt;
      }
      return KeyJson(values);
    };
    for (const TupleData* tuple : {new_tuple, old_tuple}) {
      if (tuple == nullptr) continue;
      for (const TupleValue& v : tuple->columns) {
        // The view may not hold the row to take an unchanged TOASTed value from.
        if (tuple == new_tuple && v.kind == TupleValueKind::kUnchanged) chunk->spoiled = true;
      }
      auto key = key_of(*tuple);
      if (!key) {
        chunk->spoiled = true;
        continue;
      }
      chunk->changed.insert(std::move(*key));
    }
  }
}

// Views that follow their table are backfilled when its columns change (ADD or DROP
// COLUMN, a type change), from the first change made under the new shape that their
// store has not applied yet.
void Backfills::DetectSchemaChange(const Change& change, std::vector<OwnedChange>& out) {
  if (change.relations.empty()) return;
  const RelationSchema* schema = change.relations.front().get();
  if (schema == last_seen_) return;
  last_seen_ = schema;
  // Each schema is looked at once (kept, so that its address is never another's).
  if (!seen_.emplace(schema, change.relations.front()).second) return;
  const std::string table = schema->QualifiedName();
  const std::vector<std::string> columns = ColumnsOf(*schema);
  std::map<std::string, std::vector<std::string>> by_store;
  {
    std::lock_guard lock(mutex_);
    for (const BackfillView& v : options_.views) {
      if (!v.rows || !v.follows || v.table != table) continue;
      auto& known = columns_[{v.store, v.view}];
      if (known.empty()) known = columns;
      if (known == columns) continue;
      if (change.commit_lsn < options_.checkpoint(v.store)) continue;  // applied already
      known = columns;
      by_store[v.store].push_back(v.view);
    }
  }
  for (auto& [store, views] : by_store) {
    auto control = std::make_shared<ViewControl>();
    control->store = store;
    control->views = views;
    control->backfilling = true;
    control->columns = columns;
    control->table_oid = schema->id.value;
    out.push_back(ViewStateChange(change.commit_lsn, change.index, std::move(control)));
    std::string names;
    for (const std::string& v : views) names += (names.empty() ? "" : ",") + v;
    log_.Info("the columns of " + table + " changed: backfilling the views that follow it",
              {{"store", store}, {"views", names}});
    Add(store, table, std::move(views), std::nullopt);
  }
}

void Backfills::OnStreamRestart() {
  std::lock_guard lock(mutex_);
  ++generation_;
  for (auto& [id, chunk] : chunks_) {
    if (chunk->verdict == Verdict::kPending) chunk->verdict = Verdict::kRetry;
  }
  for (auto& [id, done] : done_) {
    if (done.first == Verdict::kPending) done.first = Verdict::kRetry;
  }
  changed_.notify_all();
}

}  // namespace pgderive
