#include "sinks/redis/redis_sink.h"

#include "sinks/common/source_rows.h"
#include "sinks/common/view_list.h"

namespace pgderive {
namespace {

constexpr size_t kScanCount = 1000;
// Pages of 10,000 keys FindForeignKeys looks at per view (a database of millions of
// keys is checked in part: the check must not make validate and run take minutes).
constexpr int kForeignScanPages = 100;
// Keys in one MSET or DEL of a MultiExec.
constexpr size_t kRunKeys = 1024;

Error ReplyError(const std::string& what, const RedisReply& reply) {
  return Error::Transient(what + ": " + reply.str);
}

// The SET that puts a whole row (a snapshot's or a backfill chunk's) in a view.
Result<RedisCommand> SetRow(const ViewShape& shape, const TupleData& row,
                            const TypeRegistry& types) {
  auto key = shape.Key(row);
  if (!key.ok()) return key.error();
  std::string value;
  Status status = shape.AppendValue(value, row, types, nullptr);
  if (!status.ok()) return status.error();
  return RedisCommand{"SET", std::move(key).value(), std::move(value)};
}

// The writes of one Apply as MULTI ... EXEC, sent while they are prepared (Append).
// A run of SETs goes as one MSET and a run of DELs as one DEL: the same effect, since
// MSET sets its keys in order (of two values for one key the later stays, as with two
// SETs) and the runs keep their order, but Redis parses, queues and answers one command
// instead of a thousand, which is most of its work on rows of a few hundred bytes.
class MultiExec {
 public:
  explicit MultiExec(RedisClient& client) : client_(client) {}
  // Gave up before Exec (an error): what reached Redis of the MULTI must never run.
  ~MultiExec() {
    if (open_) client_.Abandon();
  }
  MultiExec(const MultiExec&) = delete;
  MultiExec& operator=(const MultiExec&) = delete;

  // Nothing written since the last Exec.
  bool empty() const { return !open_; }

  Status Set(std::string key, std::string value) {
    if (run_ != Run::kSet) {
      Status status = Switch(Run::kSet);
      if (!status.ok()) return status;
    }
    run_args_.push_back(std::move(key));
    run_args_.push_back(std::move(value));
    return run_args_.size() >= 2 * kRunKeys ? EndRun() : Status::Ok();
  }
  Status Del(std::string key) {
    if (run_ != Run::kDel) {
      Status status = Switch(Run::kDel);
      if (!status.ok()) return status;
    }
    run_args_.push_back(std::move(key));
    return run_args_.size() >= kRunKeys ? EndRun() : Status::Ok();
  }
  // Any other command, in its place - inside the MULTI like every write, so that it is
  // atomic with the data and its reply is read by Exec (a command sent before the MULTI
  // opened left its reply unread: the next direct command, a SCAN, read it instead).
  Status Command(const RedisCommand& command) {
    Status status = Switch(Run::kNone);
    if (status.ok()) status = Open();
    if (!status.ok()) return status;
    args_.assign(command.begin(), command.end());
    return client_.Append(args_);
  }
  // Sends EXEC and checks that every command ran.
  Status Exec() {
    Status status = Switch(Run::kNone);
    if (!status.ok()) return status;
    if (!open_) return Status::Ok();
    static constexpr std::string_view kExec[] = {"EXEC"};
    status = client_.Append(kExec);
    if (!status.ok()) return status;
    auto replies = client_.Replies();
    open_ = false;
    if (!replies.ok()) return replies.error();
    const RedisReply& result = replies.value().back();
    if (result.type != RedisReply::Type::kArray) return ReplyError("EXEC", result);
    for (const RedisReply& reply : result.elements) {
      if (reply.type == RedisReply::Type::kError) return ReplyError("EXEC", reply);
    }
    return Status::Ok();
  }

 private:
  enum class Run { kNone, kSet, kDel };

  // Ends the run in progress; opens the MULTI at the first write.
  Status Switch(Run next) {
    Status status = EndRun();
    if (!status.ok()) return status;
    if (!open_ && next != Run::kNone) status = Open();
    run_ = next;
    return status;
  }
  Status Open() {
    if (open_) return Status::Ok();
    open_ = true;
    static constexpr std::string_view kMulti[] = {"MULTI"};
    return client_.Append(kMulti);
  }
  Status EndRun() {
    if (run_args_.empty()) return Status::Ok();
    Status status = Open();
    if (!status.ok()) return status;
    args_.clear();
    args_.push_back(run_ == Run::kSet ? "MSET" : "DEL");
    args_.insert(args_.end(), run_args_.begin(), run_args_.end());
    status = client_.Append(args_);
    run_args_.clear();
    return status;
  }

  RedisClient& client_;
  bool open_ = false;  // MULTI sent, EXEC not yet
  Run run_ = Run::kNone;
  std::vector<std::string> run_args_;
  std::vector<std::string_view> args_;
};

}  // namespace

Result<std::unique_ptr<RedisSink>> RedisSink::Make(const Config& config, const StoreConfig& store) {
  std::unique_ptr<RedisSink> sink(new RedisSink(
      store.name, store.ConnectUrl(), "pgderive:" + config.pipeline + ":", config.source.dsn));
  for (const ViewConfig& view : config.views) {
    if (view.store != store.name) continue;
    if (!view.key) return Error::Permanent("view " + view.name + " has no key template");
    sink->views_.push_back(std::make_unique<View>(
        View{{view, view.from, ViewShapes(view), {}, false}, {}, 0, 0, false}));
    sink->row_views_.push_back(sink->views_.back().get());
  }
  return sink;
}

Status RedisSink::Check(const std::shared_ptr<const RelationSchema>& schema) {
  std::lock_guard lock(mutex_);
  std::string problems;
  for (auto& view : views_) {
    if (view->table != schema->QualifiedName()) continue;
    auto shape = view->shapes.For(schema);
    if (!shape.ok()) problems += (problems.empty() ? "" : "; ") + shape.error().message();
  }
  if (!problems.empty()) return Error::Permanent(problems);
  return Status::Ok();
}

Status RedisSink::Connect() {
  std::lock_guard lock(mutex_);
  client_.reset();
  horizon_loaded_ = false;
  auto client = RedisClient::Connect(url_);
  if (!client.ok()) return client.error();
  client_.emplace(std::move(client).value());
  return Status::Ok();
}

Result<RedisClient*> RedisSink::Client() {
  if (!client_ || client_->broken()) {
    client_.reset();
    auto client = RedisClient::Connect(url_);
    if (!client.ok()) return client.error();
    client_.emplace(std::move(client).value());
  }
  return &*client_;
}

Result<std::optional<Lsn>> RedisSink::ReadCheckpoint() {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  auto reply = client.value()->Command({"GET", checkpoint_key_});
  if (!reply.ok()) return reply.error();
  if (reply.value().type == RedisReply::Type::kNil) return std::optional<Lsn>();
  if (reply.value().type != RedisReply::Type::kString) {
    return ReplyError("GET " + checkpoint_key_, reply.value());
  }
  auto lsn = Lsn::Parse(reply.value().str);
  if (!lsn) {
    return Error::Corrupt("Redis key " + checkpoint_key_ + " holds \"" + reply.value().str +
                          "\", not an LSN");
  }
  return std::optional<Lsn>(*lsn);
}

Result<std::vector<StoreChange>> RedisSink::CheckStore() {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  auto exists = client.value()->Command({"EXISTS", checkpoint_key_});
  if (!exists.ok()) return exists.error();
  if (exists.value().type != RedisReply::Type::kInteger) {
    return ReplyError("EXISTS " + checkpoint_key_, exists.value());
  }
  auto fields = client.value()->Command({"HKEYS", views_key_});
  if (!fields.ok()) return fields.error();
  if (fields.value().type != RedisReply::Type::kArray) {
    return ReplyError("HKEYS " + views_key_, fields.value());
  }
  const bool checkpoint = exists.value().integer > 0;
  std::set<std::string> now;
  for (const RedisReply& field : fields.value().elements) now.insert(field.str);
  std::vector<StoreChange> changes;
  if (checkpoint_seen_.value_or(false) && !checkpoint) {
    changes.push_back({"", "key " + checkpoint_key_ +
                               " (the store's checkpoint) is gone: the database was flushed or "
                               "the key deleted"});
  } else if (checkpoint_seen_) {
    for (auto& view : views_) {
      const std::string& name = view->config.name;
      if (!view->failed.empty() || !state_fields_seen_.contains(name) || now.contains(name)) {
        continue;
      }
      changes.push_back({name, "field " + name + " of hash " + views_key_ +
                                   " (the view's recorded state) is gone: the view's keys were "
                                   "deleted with it, or the database was flushed"});
    }
  }
  checkpoint_seen_ = checkpoint;
  state_fields_seen_ = std::move(now);
  return changes;
}

// SCAN for the view's key pattern and DEL what it finds, a page at a time.
Result<long long> RedisSink::DeleteView(View& view) {
  auto client = Client();
  if (!client.ok()) return client.error();
  long long deleted_keys = 0;
  const std::string pattern = view.config.key->Pattern();
  std::string cursor = "0";
  do {
    auto reply = client.value()->Command(
        {"SCAN", cursor, "MATCH", pattern, "COUNT", std::to_string(kScanCount)});
    if (!reply.ok()) return reply.error();
    const RedisReply& r = reply.value();
    if (r.type != RedisReply::Type::kArray || r.elements.size() != 2) {
      return ReplyError("SCAN " + pattern, r);
    }
    cursor = r.elements[0].str;
    if (!r.elements[1].elements.empty()) {
      RedisCommand del{"DEL"};
      for (const RedisReply& key : r.elements[1].elements) del.push_back(key.str);
      auto deleted = client.value()->Command(del);
      if (!deleted.ok()) return deleted.error();
      if (deleted.value().type == RedisReply::Type::kError) {
        return ReplyError("DEL", deleted.value());
      }
      deleted_keys += deleted.value().integer;
    }
  } while (cursor != "0");
  return deleted_keys;
}

// SCAN for the view's key pattern; of each page, SMISMEMBER says which keys the mark
// holds, and DEL takes the others. Nothing else writes the view meanwhile: the sweep runs
// in the store's Apply, between two of its changes.
Result<long long> RedisSink::Sweep(View& view, uint64_t generation) {
  auto client = Client();
  if (!client.ok()) return client.error();
  const std::string pattern = view.config.key->Pattern();
  const std::string mark = MarkKey(view.config.name, generation);
  long long swept = 0;
  std::string cursor = "0";
  do {
    auto reply = client.value()->Command(
        {"SCAN", cursor, "MATCH", pattern, "COUNT", std::to_string(kScanCount)});
    if (!reply.ok()) return reply.error();
    const RedisReply& r = reply.value();
    if (r.type != RedisReply::Type::kArray || r.elements.size() != 2) {
      return ReplyError("SCAN " + pattern, r);
    }
    cursor = r.elements[0].str;
    const std::vector<RedisReply>& keys = r.elements[1].elements;
    if (keys.empty()) continue;
    RedisCommand members{"SMISMEMBER", mark};
    for (const RedisReply& key : keys) members.push_back(key.str);
    auto marked = client.value()->Command(members);
    if (!marked.ok()) return marked.error();
    if (marked.value().type != RedisReply::Type::kArray ||
        marked.value().elements.size() != keys.size()) {
      return ReplyError("SMISMEMBER " + mark, marked.value());
    }
    RedisCommand del{"DEL"};
    for (size_t i = 0; i < keys.size(); ++i) {
      if (marked.value().elements[i].integer == 0) del.push_back(keys[i].str);
    }
    if (del.size() == 1) continue;
    auto deleted = client.value()->Command(del);
    if (!deleted.ok()) return deleted.error();
    if (deleted.value().type != RedisReply::Type::kInteger) {
      return ReplyError("DEL", deleted.value());
    }
    swept += deleted.value().integer;
  } while (cursor != "0");
  return swept;
}

Result<std::map<std::string, ViewState>> RedisSink::ReadStates(RedisClient& client) {
  auto reply = client.Command({"HGETALL", views_key_});
  if (!reply.ok()) return reply.error();
  const RedisReply& r = reply.value();
  if (r.type != RedisReply::Type::kArray) return ReplyError("HGETALL " + views_key_, r);
  std::map<std::string, ViewState> out;
  for (size_t i = 0; i + 1 < r.elements.size(); i += 2) {
    auto state = ViewState::FromJson(r.elements[i + 1].str);
    if (!state) {
      return Error::Corrupt("Redis hash " + views_key_ + " holds no view state for " +
                            r.elements[i].str);
    }
    out[r.elements[i].str] = *state;
  }
  return out;
}

Result<std::vector<std::string>> RedisSink::Teardown(bool views) {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  std::vector<std::string> removed;
  // The views' keys first, while their states still say they are the pipeline's (a
  // teardown stopped midway is done again); only the keys of a view whose state the
  // pipeline recorded (or all, for a store filled by a pgderive that recorded none).
  auto states = ReadStates(*client.value());
  if (!states.ok()) return states.error();
  auto checkpoint = client.value()->Command({"EXISTS", checkpoint_key_});
  if (!checkpoint.ok()) return checkpoint.error();
  const bool unrecorded = states.value().empty() && checkpoint.value().integer > 0;
  for (auto& view : views_) {
    if (!views || (!unrecorded && !states.value().contains(view->config.name))) continue;
    auto deleted = DeleteView(*view);
    if (!deleted.ok()) return deleted.error();
    if (deleted.value() > 0) {
      removed.push_back(std::to_string(deleted.value()) + " key(s) of view " + view->config.name +
                        " (" + view->config.key->Pattern() + ")");
    }
  }
  std::vector<std::string> keys;
  for (const auto& [view, state] : states.value()) {
    if (state.sweep) keys.push_back(MarkKey(view, state.generation));
  }
  keys.insert(keys.end(), {checkpoint_key_, views_key_, horizon_key_});
  for (const std::string& key : keys) {
    auto reply = client.value()->Command({"UNLINK", key});
    if (!reply.ok()) return reply.error();
    if (reply.value().type != RedisReply::Type::kInteger) {
      return ReplyError("UNLINK", reply.value());
    }
    if (reply.value().integer > 0) removed.push_back("key " + key);
  }
  horizon_loaded_ = false;
  return removed;
}

Status RedisSink::BeginRebuild(Lsn) {
  std::lock_guard lock(mutex_);
  return DeleteAll(/*rebuild=*/true);
}

Status RedisSink::UndoRebuild() {
  std::lock_guard lock(mutex_);
  if (!rebuilt_) return Status::Ok();
  return DeleteAll(/*rebuild=*/false);
}

Status RedisSink::DeleteAll(bool rebuild) {
  auto client = Client();
  if (!client.ok()) return client.error();
  auto states = ReadStates(*client.value());
  if (!states.ok()) return states.error();
  // The checkpoint goes first: a crash during the rebuild leaves no checkpoint, and the
  // next start rebuilds again. The views are recorded as backfilling before their keys
  // go (the keys under their patterns are the pipeline's: FindForeignKeys); an undo
  // removes the states after the keys.
  RedisCommand del{"DEL", checkpoint_key_, views_key_, horizon_key_};
  for (const auto& [view, state] : states.value()) {
    if (state.sweep) del.push_back(MarkKey(view, state.generation));
  }
  std::vector<RedisCommand> commands{{"MULTI"}, del};
  for (auto& view : views_) {
    view->generation = 0;
    view->sweep = false;
    commands.push_back(
        {"HSET", views_key_, view->config.name, ViewState{true, std::nullopt, {}}.ToJson()});
  }
  commands.push_back({"EXEC"});
  auto replies = client.value()->Pipeline(commands);
  source_.SetHorizon(Lsn{});  // every view from one snapshot: nothing newer than the stream
  horizon_loaded_ = true;
  if (!replies.ok()) return replies.error();
  if (replies.value().back().type != RedisReply::Type::kArray) {
    return ReplyError("EXEC", replies.value().back());
  }
  rebuilt_ = rebuilt_ || rebuild;  // from here on, UndoRebuild has something to undo
  for (auto& view : views_) {
    Status status = DeleteView(*view).status();
    if (!status.ok()) return status;
  }
  if (rebuild) return Status::Ok();
  auto reply = client.value()->Command({"DEL", views_key_});
  if (!reply.ok()) return reply.error();
  if (reply.value().type != RedisReply::Type::kInteger) return ReplyError("DEL", reply.value());
  return Status::Ok();
}

Status RedisSink::ApplySnapshotRows(const std::shared_ptr<const RelationSchema>& schema,
                                    std::span<const TupleData> rows, const TypeRegistry& types) {
  const std::string table = schema->QualifiedName();
  std::vector<RedisCommand> commands;
  for (auto& view : views_) {
    if (view->table != table) continue;
    std::shared_ptr<const ViewShape> shape;
    {
      std::lock_guard lock(mutex_);
      if (!view->failed.empty()) continue;  // stopped on its own; the others are rebuilt
    }
    {
      std::lock_guard lock(mutex_);  // the shape cache is shared
      auto made = view->shapes.For(schema);
      if (!made.ok()) return made.error();
      shape = made.value();
    }
    {
      std::lock_guard lock(mutex_);
      view->filled_columns = ColumnsOf(*schema);
      view->filled_oid = schema->id.value;
    }
    for (const TupleData& row : rows) {
      auto set = SetRow(*shape, row, types);
      if (!set.ok()) return set.error();
      commands.push_back(std::move(set).value());
    }
  }
  if (commands.empty()) return Status::Ok();
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  auto replies = client.value()->Pipeline(commands);
  if (!replies.ok()) return replies.error();
  for (const RedisReply& reply : replies.value()) {
    if (reply.type == RedisReply::Type::kError) return ReplyError("SET", reply);
  }
  return Status::Ok();
}

Status RedisSink::EndRebuild(Lsn snapshot_lsn) {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  // Every view is live as of the snapshot, recorded with the checkpoint.
  std::vector<RedisCommand> commands{{"MULTI"}};
  for (auto& view : views_) {
    view->backfilling = false;
    commands.push_back({"HSET", views_key_, view->config.name,
                        WithDefinition(*view, ViewState{false, std::nullopt, view->filled_columns,
                                                        view->filled_oid})
                            .ToJson()});
  }
  commands.push_back({"SET", checkpoint_key_, snapshot_lsn.ToString()});
  commands.push_back({"EXEC"});
  auto replies = client.value()->Pipeline(commands);
  if (!replies.ok()) return replies.error();
  const RedisReply& result = replies.value().back();
  if (result.type != RedisReply::Type::kArray) return ReplyError("EXEC", result);
  return Status::Ok();
}

Result<std::optional<std::map<std::string, ViewState>>> RedisSink::ReadViewStates() {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  auto states = ReadStates(*client.value());
  if (!states.ok()) return states.error();
  if (states.value().empty()) return std::optional<std::map<std::string, ViewState>>();
  for (auto& view : views_) {
    auto it = states.value().find(view->config.name);
    const bool recorded = it != states.value().end();
    view->backfilling = recorded && it->second.backfilling;
    view->generation = recorded ? it->second.generation : 0;
    view->sweep = recorded && it->second.sweep;
  }
  return std::optional<std::map<std::string, ViewState>>(std::move(states).value());
}

Status RedisSink::WriteViewState(const std::string& view_name, const ViewState& state, bool clear) {
  std::lock_guard lock(mutex_);
  View* view = FindView(views_, view_name);
  if (view == nullptr) return Error::Permanent("no Redis view named " + view_name);
  auto client = Client();
  if (!client.ok()) return client.error();
  ViewState recorded = state;
  recorded.generation = view->generation;
  recorded.sweep = view->sweep;
  std::vector<RedisCommand> commands{{"MULTI"}};
  if (clear && state.backfilling) {
    // A rebuild begins: the keys stay for readers, and the rebuild's writes are marked
    // (the mark of an unfinished earlier rebuild goes).
    if (view->sweep) commands.push_back({"UNLINK", MarkKey(view_name, view->generation)});
    ++recorded.generation;
    recorded.sweep = true;
  } else if (!state.backfilling && view->sweep) {
    // Live again with a sweep pending: it runs before the state says live.
    Status status = Sweep(*view, view->generation).status();
    if (!status.ok()) return status;
    commands.push_back({"UNLINK", MarkKey(view_name, view->generation)});
    recorded.sweep = false;
  } else if (clear) {
    Status status = DeleteView(*view).status();
    if (!status.ok()) return status;
  }
  commands.push_back({"HSET", views_key_, view_name, WithDefinition(*view, recorded).ToJson()});
  commands.push_back({"EXEC"});
  auto replies = client.value()->Pipeline(commands);
  if (!replies.ok()) return replies.error();
  const RedisReply& result = replies.value().back();
  if (result.type != RedisReply::Type::kArray) return ReplyError("EXEC", result);
  for (const RedisReply& reply : result.elements) {
    if (reply.type == RedisReply::Type::kError) return ReplyError("EXEC", reply);
  }
  view->backfilling = state.backfilling;
  view->generation = recorded.generation;
  view->sweep = recorded.sweep;
  return Status::Ok();
}

// The writes of one Apply go in one MULTI ... EXEC with the checkpoint, pipelined in one
// round trip; a read of a previous value, a truncate, a view cleared and a sweep send
// what is queued first, so they see it.
//
// A rebuild's writes are marked in the same MULTI as the keys they write (a SADD per
// kRunKeys of them, queued before each EXEC). The stream always wins over an older chunk
// here with no version to compare: the watermark window places a chunk's rows at its high
// watermark H, in stream order, and only the rows no change between its low watermark L
// and H touched; each was read after every change committed before L was visible. So a
// chunk's row is the row as of H, and every later change of it comes after it in the
// stream and is applied after it - the SET of a chunk never overwrites a newer value,
// and never brings back a key a change before H deleted (such a row is not in the chunk,
// or is the changed key set the window leaves out).
class RedisSink::Writer : public RowStore {
 public:
  Writer(RedisSink& sink, RedisClient& client) : sink_(sink), client_(client), multi_(client) {}

  Result<std::optional<std::string>> Read(RowView&, const std::string& key) override {
    Status status = Exec();
    if (!status.ok()) return status.error();
    auto previous = client_.Command({"GET", key});
    if (!previous.ok()) return previous.error();
    if (previous.value().type != RedisReply::Type::kString) return std::optional<std::string>();
    return std::optional<std::string>(std::move(previous.value().str));
  }
  Status Put(RowView& row_view, std::string key, std::string value, Lsn) override {
    View& view = static_cast<View&>(row_view);  // every RowView is a View
    const Mark& mark = MarkOf(view);
    if (mark.sweep) {
      std::vector<std::string>& members = marked_[&view];
      members.push_back(key);
      if (members.size() >= kRunKeys) {
        Status status = SendMark(view, members);
        if (!status.ok()) return status;
      }
    }
    return multi_.Set(std::move(key), std::move(value));
  }
  Status Delete(RowView&, std::string key, Lsn) override { return multi_.Del(std::move(key)); }
  Status Truncate(RowView& view) override {
    Status status = Exec();
    if (!status.ok()) return status;
    return sink_.DeleteView(static_cast<View&>(view)).status();
  }
  Status RecordState(RowView& row_view, const ViewControl& control) override {
    View& view = static_cast<View&>(row_view);
    Mark& mark = MarkOf(view);
    const std::string& name = view.config.name;
    if (control.clear && control.backfilling) {
      // A rebuild begins: the keys stay; its writes are marked from here on (the mark
      // of an unfinished earlier rebuild goes).
      if (mark.sweep) {
        Status status = SendMark(view, marked_[&view]);  // queued for the earlier mark
        if (!status.ok()) return status;
        status = multi_.Command({"UNLINK", sink_.MarkKey(name, mark.generation)});
        if (!status.ok()) return status;
      }
      ++mark.generation;
      mark.sweep = true;
    } else if (control.clear) {
      Status status = Truncate(view);
      if (!status.ok()) return status;
    } else if (!control.backfilling && mark.sweep) {
      // The rebuild is complete: what it did not write goes, then the state says live.
      Status status = Exec();
      if (!status.ok()) return status;
      status = sink_.Sweep(view, mark.generation).status();
      if (!status.ok()) return status;
      status = multi_.Command({"UNLINK", sink_.MarkKey(name, mark.generation)});
      if (!status.ok()) return status;
      mark.sweep = false;
    }
    ViewState state{control.backfilling, control.after, control.columns, control.table_oid};
    state.generation = mark.generation;
    state.sweep = mark.sweep;
    // In the same MULTI as the data it describes.
    return multi_.Command({"HSET", sink_.views_key_, name, WithDefinition(view, state).ToJson()});
  }
  Status RaiseHorizon(Lsn horizon) override {
    // With the data read, in the same MULTI.
    return multi_.Set(sink_.horizon_key_, horizon.ToString());
  }
  Status Finish(std::optional<Lsn> checkpoint) override {
    Status status = SendMarks();
    if (!status.ok()) return status;
    if (checkpoint) {
      status = multi_.Set(sink_.checkpoint_key_, checkpoint->ToString());
      if (!status.ok()) return status;
    }
    status = multi_.Exec();
    if (!status.ok()) return status;
    // Applied: the views' marks are what Redis records. Before that they stay as they
    // were, so that the group applied again (after an error) makes the same ones.
    for (const auto& [view, mark] : marks_) {
      view->generation = mark.generation;
      view->sweep = mark.sweep;
    }
    return Status::Ok();
  }

 private:
  struct Mark {
    uint64_t generation = 0;
    bool sweep = false;
  };
  Mark& MarkOf(View& view) {
    return marks_.try_emplace(&view, Mark{view.generation, view.sweep}).first->second;
  }
  Status SendMark(View& view, std::vector<std::string>& members) {
    if (members.empty()) return Status::Ok();
    RedisCommand sadd{"SADD", sink_.MarkKey(view.config.name, MarkOf(view).generation)};
    sadd.insert(sadd.end(), std::make_move_iterator(members.begin()),
                std::make_move_iterator(members.end()));
    members.clear();
    return multi_.Command(sadd);
  }
  Status SendMarks() {
    for (auto& [view, members] : marked_) {
      Status status = SendMark(*view, members);
      if (!status.ok()) return status;
    }
    return Status::Ok();
  }
  // Sends what is queued, the marks with it.
  Status Exec() {
    Status status = SendMarks();
    if (!status.ok()) return status;
    return multi_.Exec();
  }

  RedisSink& sink_;
  RedisClient& client_;
  MultiExec multi_;
  std::map<View*, Mark> marks_;                       // the views' marks as this Apply left them
  std::map<View*, std::vector<std::string>> marked_;  // keys written, not yet in a SADD
};

Status RedisSink::Apply(const BatchGroup& group, Lsn checkpoint) {
  std::lock_guard lock(mutex_);
  auto connected = Client();
  if (!connected.ok()) return connected.error();
  RedisClient& client = *connected.value();
  if (!horizon_loaded_) {
    auto horizon = client.Command({"GET", horizon_key_});
    if (!horizon.ok()) return horizon.error();
    source_.SetHorizon(Lsn::Parse(horizon.value().str).value_or(Lsn{}));
    horizon_loaded_ = true;
  }
  Writer writer(*this, client);
  return ApplyRows(group, checkpoint, name_, row_views_, EntryKey::kTemplate, source_, writer);
}

std::vector<std::string> RedisSink::views() const { return ViewNames(views_); }

Result<std::optional<ViewInspector::Entry>> RedisSink::Expected(
    const std::string& view_name, const std::shared_ptr<const RelationSchema>& schema,
    const TupleData& row, const TypeRegistry& types) {
  return ExpectedRowEntry(mutex_, views_, view_name, schema, row, types, EntryKey::kTemplate);
}

Result<std::vector<ViewInspector::Entry>> RedisSink::ReadView(const std::string& view_name) {
  std::lock_guard lock(mutex_);
  View* view = FindView(views_, view_name);
  if (view == nullptr) return Error::Permanent("no Redis view named " + view_name);
  auto client = Client();
  if (!client.ok()) return client.error();
  std::vector<Entry> out;
  std::string cursor = "0";
  do {
    auto reply = client.value()->Command({"SCAN", cursor, "MATCH", view->config.key->Pattern(),
                                          "COUNT", std::to_string(kScanCount)});
    if (!reply.ok()) return reply.error();
    const RedisReply& r = reply.value();
    if (r.type != RedisReply::Type::kArray || r.elements.size() != 2) {
      return ReplyError("SCAN", r);
    }
    cursor = r.elements[0].str;
    std::vector<RedisCommand> gets;
    for (const RedisReply& key : r.elements[1].elements) gets.push_back({"GET", key.str});
    if (gets.empty()) continue;
    auto values = client.value()->Pipeline(gets);
    if (!values.ok()) return values.error();
    for (size_t i = 0; i < gets.size(); ++i) {
      if (values.value()[i].type != RedisReply::Type::kString) continue;  // gone meanwhile
      out.emplace_back(gets[i][1], std::move(values.value()[i].str));
    }
  } while (cursor != "0");
  return out;
}

Result<std::vector<ForeignKeys>> FindForeignKeys(RedisClient& client, const Config& config,
                                                 const StoreConfig& store) {
  const std::string prefix = "pgderive:" + config.pipeline + ":";
  auto fields = client.Command({"HKEYS", prefix + "views"});
  if (!fields.ok()) return fields.error();
  if (fields.value().type != RedisReply::Type::kArray) {
    return ReplyError("HKEYS " + prefix + "views", fields.value());
  }
  std::set<std::string> recorded;
  for (const RedisReply& field : fields.value().elements) recorded.insert(field.str);
  if (recorded.empty()) {
    auto checkpoint = client.Command({"EXISTS", prefix + "checkpoint"});
    if (!checkpoint.ok()) return checkpoint.error();
    if (checkpoint.value().integer > 0) return std::vector<ForeignKeys>{};  // states unrecorded
  }
  std::vector<ForeignKeys> out;
  for (const ViewConfig& view : config.views) {
    if (view.store != store.name || !view.key || recorded.contains(view.name)) continue;
    const std::string pattern = view.key->Pattern();
    std::string cursor = "0";
    int pages = 0;
    do {
      // A bounded look (Redis finds keys by pattern only by walking the keyspace): the
      // first kForeignScanPages * 10,000 keys of the database.
      if (++pages > kForeignScanPages) break;
      auto reply = client.Command({"SCAN", cursor, "MATCH", pattern, "COUNT", "10000"});
      if (!reply.ok()) return reply.error();
      const RedisReply& r = reply.value();
      if (r.type != RedisReply::Type::kArray || r.elements.size() != 2) {
        return ReplyError("SCAN " + pattern, r);
      }
      cursor = r.elements[0].str;
      if (!r.elements[1].elements.empty()) {
        out.push_back({view.name, pattern, r.elements[1].elements.front().str});
        break;
      }
    } while (cursor != "0");
  }
  return out;
}

}  // namespace pgderive
