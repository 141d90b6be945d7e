#include "snapshot/watermark_window.h"

#include <nlohmann/json.hpp>
#include <type_traits>
#include <variant>

#include "snapshot/view_state.h"

namespace pgderive {

std::string KeyJson(const std::vector<std::optional<std::string_view>>& values) {
  nlohmann::json key = nlohmann::json::array();
  for (const auto& v : values) key.push_back(v ? nlohmann::json(std::string(*v)) : nullptr);
  return key.dump();
}

namespace {

bool AnyRowViewFollows(const std::vector<BackfillView>& views) {
  for (const BackfillView& v : views) {
    if (v.rows && v.follows) return true;
  }
  return false;
}

}  // namespace

std::string BackfillRequestMessage(const std::string& pipeline, const std::string& view) {
  return nlohmann::json{{"pipeline", pipeline}, {"mark", "request"}, {"view", view}}.dump();
}

WatermarkWindow::WatermarkWindow(Options options)
    : options_(std::move(options)), has_follow_(AnyRowViewFollows(options_.views)) {}

std::string WatermarkWindow::Message(const std::string& mark, uint64_t id) const {
  return nlohmann::json{
      {"pipeline", options_.pipeline}, {"run", options_.run}, {"mark", mark}, {"id", id}}
      .dump();
}

bool WatermarkWindow::Concerns(const Change& change, bool active) const {
  if (active || std::get_if<LogicalMessage>(change.message) != nullptr) return true;
  return has_follow_ && !change.relations.empty() && change.relations.front().get() != last_seen_;
}

void WatermarkWindow::SetColumns(const std::string& store, const std::string& view,
                                 std::vector<std::string> columns) {
  columns_[{store, view}] = std::move(columns);
}

std::vector<std::string> WatermarkWindow::FilledColumns(const std::string& store,
                                                        const std::string& view) const {
  auto it = columns_.find({store, view});
  return it == columns_.end() ? std::vector<std::string>() : it->second;
}

void WatermarkWindow::AddRunning(std::shared_ptr<BackfillJob> job) {
  if (job) running_[job->id] = std::move(job);
}

void WatermarkWindow::RemoveRunning(uint64_t job_id) { running_.erase(job_id); }

void WatermarkWindow::SetRunning(std::shared_ptr<BackfillJob> job) {
  running_.clear();
  AddRunning(std::move(job));
}

void WatermarkWindow::BeginChunk(uint64_t id, std::shared_ptr<const BackfillJob> job,
                                 std::shared_ptr<const RelationSchema> schema,
                                 std::vector<std::string> key, uint64_t prev,
                                 std::optional<std::string> after) {
  Chunk& chunk = chunks_[id];
  chunk = Chunk{};
  chunk.job = std::move(job);
  chunk.schema = std::move(schema);
  chunk.key = std::move(key);
  chunk.prev = prev;
  chunk.after = std::move(after);
}

void WatermarkWindow::SpoilFollowers(uint64_t id) {
  for (auto& [other, chunk] : chunks_) {
    if (chunk.prev != id || chunk.spoiled) continue;
    chunk.spoiled = true;
    SpoilFollowers(other);
  }
}

void WatermarkWindow::ChunkRead(uint64_t id, ChunkRows rows) {
  auto it = chunks_.find(id);
  if (it == chunks_.end()) return;
  Chunk& chunk = it->second;
  chunk.rows = std::move(rows);
  chunk.row_count = chunk.rows.size();
  for (const auto& row : chunk.rows) {
    for (const auto& value : row) chunk.bytes += value ? value->size() : 0;
  }
  if (!chunk.rows.empty()) {
    std::vector<std::optional<std::string_view>> values;
    for (const std::string& name : chunk.key) {
      for (size_t i = 0; i < chunk.schema->columns.size(); ++i) {
        if (chunk.schema->columns[i].name == name) values.push_back(chunk.rows.back()[i]);
      }
    }
    chunk.last = KeyJson(values);
  }
  chunk.read = true;
}

std::pair<size_t, std::optional<std::string>> WatermarkWindow::ChunkPosition(uint64_t id) const {
  auto it = chunks_.find(id);
  if (it == chunks_.end()) return {0, std::nullopt};
  return {it->second.row_count, it->second.last};
}

WatermarkWindow::Verdict WatermarkWindow::ChunkVerdict(uint64_t id) const {
  auto it = chunks_.find(id);
  return it == chunks_.end() ? Verdict::kRetry : it->second.verdict;
}

Lsn WatermarkWindow::ChunkWatermark(uint64_t id) const {
  auto it = chunks_.find(id);
  return it == chunks_.end() ? Lsn{} : it->second.watermark;
}

WatermarkWindow::ChunkOutcome WatermarkWindow::EndChunk(uint64_t id) {
  ChunkOutcome outcome;
  auto it = chunks_.find(id);
  if (it == chunks_.end()) return outcome;
  const Chunk& chunk = it->second;
  outcome.verdict = chunk.verdict == Verdict::kPending ? Verdict::kRetry : chunk.verdict;
  outcome.watermark = chunk.watermark;
  outcome.rows = chunk.row_count;
  outcome.bytes = chunk.bytes;
  outcome.last = chunk.last;
  chunks_.erase(it);
  if (outcome.verdict != Verdict::kDone) SpoilFollowers(id);
  return outcome;
}

void WatermarkWindow::BeginVerify(uint64_t id, std::shared_ptr<const BackfillJob> job,
                                  std::shared_ptr<const RelationSchema> schema,
                                  std::vector<std::string> key) {
  BeginChunk(id, std::move(job), std::move(schema), std::move(key));
  chunks_[id].verify = true;
}

WatermarkWindow::Verdict WatermarkWindow::VerifyVerdict(uint64_t id) const {
  auto it = chunks_.find(id);
  if (it == chunks_.end() || !it->second.verify) return Verdict::kRetry;
  const Chunk& chunk = it->second;
  if (chunk.verdict != Verdict::kDone || chunk.spoiled) {
    return chunk.verdict == Verdict::kPending && !chunk.spoiled ? Verdict::kPending
                                                                : Verdict::kRetry;
  }
  return chunk.checked ? Verdict::kDone : Verdict::kPending;
}

WatermarkWindow::VerifyOutcome WatermarkWindow::EndVerify(uint64_t id) {
  VerifyOutcome outcome;
  auto it = chunks_.find(id);
  if (it == chunks_.end()) return outcome;
  Chunk& chunk = it->second;
  outcome.rows = chunk.row_count;
  outcome.last = chunk.last;
  outcome.watermark = chunk.watermark;
  outcome.checked = chunk.checked_at;
  if (chunk.verify && VerifyVerdict(id) == Verdict::kDone) {
    outcome.verdict = Verdict::kDone;
    const std::vector<size_t> key = KeyIndexes(chunk);
    for (auto& row : chunk.rows) {
      if (!chunk.changed.empty()) {
        std::vector<std::optional<std::string_view>> values;
        for (size_t k : key) values.push_back(row[k]);
        if (chunk.changed.contains(KeyJson(values))) continue;
      }
      outcome.comparable.push_back(std::move(row));
    }
    outcome.changed = std::move(chunk.changed);
  }
  chunks_.erase(it);
  return outcome;
}

void WatermarkWindow::BeginDone(uint64_t job_id) { done_[job_id] = {Verdict::kPending, Lsn{}}; }

WatermarkWindow::Verdict WatermarkWindow::DoneVerdict(uint64_t job_id) const {
  auto it = done_.find(job_id);
  return it == done_.end() ? Verdict::kRetry : it->second.first;
}

std::pair<WatermarkWindow::Verdict, Lsn> WatermarkWindow::EndDone(uint64_t job_id) {
  auto it = done_.find(job_id);
  if (it == done_.end()) return {Verdict::kRetry, Lsn{}};
  auto verdict = it->second;
  done_.erase(it);
  if (verdict.first == Verdict::kPending) verdict.first = Verdict::kRetry;
  return verdict;
}

void WatermarkWindow::OnStreamRestart() {
  for (auto& [id, chunk] : chunks_) {
    if (chunk.verdict == Verdict::kPending) chunk.verdict = Verdict::kRetry;
    // A verify chunk's window is open until "checked": it saw the stream only in part.
    if (chunk.verify && !chunk.checked) chunk.spoiled = true;
  }
  for (auto& [id, done] : done_) {
    if (done.first == Verdict::kPending) done.first = Verdict::kRetry;
  }
}

void WatermarkWindow::OnChange(const Change& change, std::vector<OwnedChange>& out,
                               Events& events) {
  const auto* message = std::get_if<LogicalMessage>(change.message);
  if (message == nullptr) {
    if (has_follow_) DetectSchemaChange(change, out, events);
    Record(change);
    return;
  }
  OnMessage(change, *message, out, events);
}

void WatermarkWindow::OnMessage(const Change& change, const LogicalMessage& message,
                                std::vector<OwnedChange>& out, Events& events) {
  if (message.prefix != kBackfillPrefix) return;
  auto content = nlohmann::json::parse(message.content, nullptr, /*allow_exceptions=*/false);
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
      if (!v.fills.empty()) {
        // A postgres view: the mirrors it reads are filled again from the source, each
        // emptied at this position as a row view is; the store builds the view's table
        // from them again once the last is filled (its table keeps what it held until
        // then).
        events.requested.emplace_back(v.store, v.view);
        for (const std::string& fill : v.fills) {
          for (const BackfillView& m : options_.views) {
            if (m.store != v.store || m.view != fill || !m.rows) continue;
            auto refill = std::make_shared<ViewControl>();
            refill->store = m.store;
            refill->views = {m.view};
            refill->backfilling = true;
            refill->clear = true;
            if (auto c = columns_.find({m.store, m.view}); c != columns_.end()) {
              refill->columns = c->second;
            }
            out.push_back(ViewStateChange(change.commit_lsn, change.index, std::move(refill)));
            events.requested.emplace_back(m.store, m.view);
            events.jobs.push_back({m.store, m.table, {m.view}, /*reshaped=*/false});
          }
        }
        return;
      }
      auto control = std::make_shared<ViewControl>();
      control->store = v.store;
      control->views = {v.view};
      control->backfilling = v.rows;
      control->clear = true;
      auto it = columns_.find({v.store, v.view});
      if (it != columns_.end()) control->columns = it->second;
      out.push_back(ViewStateChange(change.commit_lsn, change.index, std::move(control)));
      events.requested.emplace_back(v.store, v.view);
      if (v.rows) events.jobs.push_back({v.store, v.table, {v.view}, /*reshaped=*/false});
      return;
    }
    events.requested.emplace_back(std::string(), name);
    return;
  }
  if (text("run") != options_.run) return;  // an earlier run's, replayed
  auto at = content.find("id");
  if (at == content.end() || !at->is_number_unsigned()) return;
  const uint64_t id = at->get<uint64_t>();
  if (mark == "low") {
    auto it = chunks_.find(id);
    if (it != chunks_.end()) it->second.open = true;
    return;
  }
  if (mark == "high") {
    auto it = chunks_.find(id);
    if (it == chunks_.end()) return;
    Chunk& chunk = it->second;
    if (chunk.verdict != Verdict::kPending) return;
    if (chunk.verify) {
      // Nothing placed: the window stays open until "checked".
      const bool usable = chunk.open && !chunk.spoiled && chunk.read && !chunk.job->cancelled;
      chunk.verdict = usable ? Verdict::kDone : Verdict::kRetry;
      chunk.watermark = change.commit_lsn;
      events.decided = true;
      return;
    }
    // A chunk follows one in flight: placed only after it (its state claims the keys
    // up to its own last).
    auto prev = chunk.prev != 0 ? chunks_.find(chunk.prev) : chunks_.end();
    const bool after_unplaced = prev != chunks_.end() && prev->second.verdict != Verdict::kDone;
    if (!chunk.open || chunk.spoiled || !chunk.read || chunk.job->cancelled || after_unplaced) {
      chunk.verdict = Verdict::kRetry;
      SpoilFollowers(id);
    } else {
      Place(chunk, change.commit_lsn, change.index, out);
      chunk.verdict = Verdict::kDone;
      chunk.watermark = change.commit_lsn;
    }
    events.decided = true;
    return;
  }
  if (mark == "checked") {
    auto it = chunks_.find(id);
    if (it == chunks_.end()) return;
    Chunk& chunk = it->second;
    if (!chunk.verify || chunk.verdict != Verdict::kDone || chunk.checked) return;
    chunk.checked = true;
    chunk.checked_at = change.commit_lsn;
    events.decided = true;
    return;
  }
  if (mark == "done") {
    auto it = done_.find(id);
    if (it == done_.end() || it->second.first != Verdict::kPending) return;
    auto running = running_.find(id);
    const BackfillJob* job = running != running_.end() ? running->second.get() : nullptr;
    if (job == nullptr || job->cancelled) {
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
    events.decided = true;
  }
}

// The chunk's rows, minus those changed in its window, at its high watermark; then the
// views' state with the new position.
void WatermarkWindow::Place(Chunk& chunk, Lsn commit_lsn, uint32_t index,
                            std::vector<OwnedChange>& out) {
  const BackfillJob& job = *chunk.job;
  auto control = std::make_shared<ViewControl>();
  control->store = job.store;
  control->views = job.views;
  control->remove = job.remove;
  const std::vector<size_t> key = KeyIndexes(chunk);
  TupleData tuple;
  uint32_t n = index;
  for (const auto& row : chunk.rows) {
    if (!chunk.changed.empty()) {
      std::vector<std::optional<std::string_view>> values;
      for (size_t k : key) values.push_back(row[k]);
      if (chunk.changed.contains(KeyJson(values))) continue;
    }
    tuple.columns.assign(row.size(), TupleValue{});
    for (size_t i = 0; i < row.size(); ++i) {
      if (row[i]) tuple.columns[i] = TupleValue{TupleValueKind::kText, *row[i]};
    }
    out.push_back(BackfillRow(commit_lsn, ++n, chunk.schema, tuple, control));
  }
  if (job.repair) {
    // The views are live: their state stays.
    ChunkRows().swap(chunk.rows);
    std::set<std::string>().swap(chunk.changed);
    return;
  }
  // The position after this chunk. A chunk that read no row (the end of the table,
  // reached after a resume or by a chunk of exactly the limit before it) leaves the
  // position where it was: a state without one says "from the start", which a store
  // takes as a new fill (OpenSearch begins a new index) - and at the very start of an
  // empty table the start's own state has said that already.
  const std::optional<std::string> position = chunk.last ? chunk.last : chunk.after;
  if (!position) {
    ChunkRows().swap(chunk.rows);
    std::set<std::string>().swap(chunk.changed);
    return;
  }
  auto state = std::make_shared<ViewControl>(*control);
  state->backfilling = true;
  state->after = position;
  state->columns = job.columns;
  state->table_oid = chunk.schema->id.value;
  out.push_back(ViewStateChange(commit_lsn, ++n, std::move(state)));
  // The placed changes hold their own copies.
  ChunkRows().swap(chunk.rows);
  std::set<std::string>().swap(chunk.changed);
}

bool WatermarkWindow::Recording(const Chunk& chunk) {
  if (!chunk.open || chunk.spoiled) return false;
  if (chunk.verify) return chunk.verdict != Verdict::kRetry && !chunk.checked;
  return chunk.verdict == Verdict::kPending;
}

std::vector<size_t> WatermarkWindow::KeyIndexes(const Chunk& chunk) {
  std::vector<size_t> key;
  for (const std::string& name : chunk.key) {
    for (size_t i = 0; i < chunk.schema->columns.size(); ++i) {
      if (chunk.schema->columns[i].name == name) key.push_back(i);
    }
  }
  return key;
}

// A row change of a table with chunks in flight: its keys join their windows.
void WatermarkWindow::Record(const Change& change) {
  for (auto& [job_id, running] : running_) {
    if (running->cancelled || change.relations.empty() ||
        change.relations.front()->QualifiedName() != running->table) {
      continue;
    }
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
        running->restart = true;
      }
    }
  }
  for (auto& [id, chunk] : chunks_) {
    if (!Recording(chunk)) continue;
    const std::string& table = chunk.job->table;
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
      chunk.spoiled = true;  // a truncate
      continue;
    }
    const RelationSchema& schema = *change.relations.front();
    auto key_of = [&](const TupleData& tuple) -> std::optional<std::string> {
      std::vector<std::optional<std::string_view>> values;
      for (const std::string& name : chunk.key) {
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
        if (tuple == new_tuple && v.kind == TupleValueKind::kUnchanged) chunk.spoiled = true;
      }
      auto key = key_of(*tuple);
      if (!key) {
        chunk.spoiled = true;
        continue;
      }
      chunk.changed.insert(std::move(*key));
    }
  }
}

// Views that follow their table are backfilled when its columns change (ADD or DROP
// COLUMN, a type change), from the first change made under the new shape that their
// store has not applied yet.
void WatermarkWindow::DetectSchemaChange(const Change& change, std::vector<OwnedChange>& out,
                                         Events& events) {
  if (change.relations.empty()) return;
  const RelationSchema* schema = change.relations.front().get();
  if (schema == last_seen_) return;
  last_seen_ = schema;
  // Each schema is looked at once (kept, so that its address is never another's).
  if (!seen_.emplace(schema, change.relations.front()).second) return;
  const std::string table = schema->QualifiedName();
  const std::vector<std::string> columns = ColumnsOf(*schema);
  std::map<std::string, std::vector<std::string>> by_store;
  for (const BackfillView& v : options_.views) {
    if (!v.rows || !v.follows || v.table != table) continue;
    auto& known = columns_[{v.store, v.view}];
    if (known.empty()) known = columns;
    if (known == columns) continue;
    if (change.commit_lsn < options_.checkpoint(v.store)) continue;  // applied already
    known = columns;
    by_store[v.store].push_back(v.view);
  }
  for (auto& [store, views] : by_store) {
    auto control = std::make_shared<ViewControl>();
    control->store = store;
    control->views = views;
    control->backfilling = true;
    control->columns = columns;
    control->table_oid = schema->id.value;
    out.push_back(ViewStateChange(change.commit_lsn, change.index, std::move(control)));
    events.jobs.push_back({store, table, std::move(views), /*reshaped=*/true});
  }
}

}  // namespace pgderive
