#include "sinks/redis/redis_sink.h"

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "config/config_change.h"
#include "config/view_record.h"
#include "sinks/common/source_rows.h"
#include "sinks/common/view_list.h"

namespace pgderive {
namespace {

// Pages of 10,000 keys FindForeignKeys looks at per view (a database of millions of
// keys is checked in part: the check must not make validate and run take minutes).
constexpr int kForeignScanPages = 100;
// Keys in one MSET or DEL of a MultiExec.
constexpr size_t kRunKeys = 1024;

Error ReplyError(const std::string& what, const RedisReply& reply) {
  return Error::Transient(what + ": " + reply.str);
}

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Whether `key` matches the glob `pattern` as a KeyTemplate makes it (SCAN MATCH's
// syntax: `*`, and `\` before a literal special character).
bool GlobMatch(std::string_view pattern, std::string_view key) {
  size_t p = 0, k = 0;
  std::optional<size_t> star_p, star_k;
  while (k < key.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star_p = ++p;
      star_k = k;
      continue;
    }
    if (p < pattern.size()) {
      size_t q = p;
      if (pattern[q] == '\\' && q + 1 < pattern.size()) ++q;
      if (pattern[q] == key[k]) {
        p = q + 1;
        ++k;
        continue;
      }
    }
    if (!star_p) return false;
    p = *star_p;
    k = ++*star_k;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

// The characters of `pattern` a key must hold literally: of two patterns a key matches
// ("p:*" and "p:v2:*" both match "p:v2:7"), the key is taken as the one with more.
size_t LiteralLength(std::string_view pattern) {
  size_t out = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '*') continue;
    if (pattern[i] == '\\') ++i;
    ++out;
  }
  return out;
}

bool MatchesAny(const std::vector<std::string>& patterns, std::string_view key) {
  for (const std::string& pattern : patterns) {
    if (GlobMatch(pattern, key)) return true;
  }
  return false;
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
    sink->views_.push_back(std::make_unique<View>(View{
        {view, view.from, ViewShapes(view), {}, false}, {}, 0, 0, false, false, {}, {}, {}, 0}));
    sink->views_.back()->record = ViewRecord(view);
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
  if (!changes.empty()) {
    // The views' versions as the store holds them now (none, when it lost its data): a
    // refill is of the file's definition, never waits behind a version whose keys are gone.
    auto states = ReadStates(*client.value());
    if (!states.ok()) return states.error();
    Status loaded = LoadVersions(*client.value(), states.value());
    if (!loaded.ok()) return loaded.error();
  }
  Status dropped = DropPrevious();
  SyncVersionViews();
  if (!dropped.ok()) return dropped.error();
  return changes;
}

namespace {

// Sends `del` (DEL and its keys); how many keys were deleted.
Result<long long> DeleteKeys(RedisClient& redis, const RedisCommand& del) {
  auto deleted = redis.Command(del);
  if (!deleted.ok()) return deleted.error();
  if (deleted.value().type != RedisReply::Type::kInteger) return ReplyError("DEL", deleted.value());
  return deleted.value().integer;
}

}  // namespace

// DEL of each page of the view's keys.
Result<long long> RedisSink::DeleteView(View& view) {
  return DeleteMatching(view.config.key->Pattern(), view.others);
}

Result<long long> RedisSink::DeleteMatching(const std::string& pattern,
                                            const std::vector<std::string>& keep) {
  auto client = Client();
  if (!client.ok()) return client.error();
  RedisClient& redis = *client.value();
  long long deleted_keys = 0;
  Status status = redis.Scan(pattern, [&](const std::vector<RedisReply>& keys) -> Status {
    RedisCommand del{"DEL"};
    for (const RedisReply& key : keys) {
      if (!MatchesAny(keep, key.str)) del.push_back(key.str);
    }
    if (del.size() == 1) return Status::Ok();
    auto deleted = DeleteKeys(redis, del);
    if (!deleted.ok()) return deleted.error();
    deleted_keys += deleted.value();
    return Status::Ok();
  });
  if (!status.ok()) return status.error();
  return deleted_keys;
}

// Of each page of the view's keys, SMISMEMBER says which keys the mark holds, and DEL
// takes the others. Nothing else writes the view meanwhile: the sweep runs in the store's
// Apply, between two of its changes.
Result<long long> RedisSink::Sweep(View& view, uint64_t generation) {
  auto client = Client();
  if (!client.ok()) return client.error();
  RedisClient& redis = *client.value();
  const std::string mark = MarkKey(view.config.name, generation);
  long long swept = 0;
  Status status =
      redis.Scan(view.config.key->Pattern(), [&](const std::vector<RedisReply>& keys) -> Status {
        // Another version's keys are not the view's to sweep.
        std::vector<const RedisReply*> own;
        for (const RedisReply& key : keys) {
          if (!MatchesAny(view.others, key.str)) own.push_back(&key);
        }
        if (own.empty()) return Status::Ok();
        RedisCommand members{"SMISMEMBER", mark};
        for (const RedisReply* key : own) members.push_back(key->str);
        auto marked = redis.Command(members);
        if (!marked.ok()) return marked.error();
        if (marked.value().type != RedisReply::Type::kArray ||
            marked.value().elements.size() != own.size()) {
          return ReplyError("SMISMEMBER " + mark, marked.value());
        }
        RedisCommand del{"DEL"};
        for (size_t i = 0; i < own.size(); ++i) {
          if (marked.value().elements[i].integer == 0) del.push_back(own[i]->str);
        }
        if (del.size() == 1) return Status::Ok();
        auto deleted = DeleteKeys(redis, del);
        if (!deleted.ok()) return deleted.error();
        swept += deleted.value();
        return Status::Ok();
      });
  if (!status.ok()) return status.error();
  return swept;
}

std::string RedisSink::TemplateOf(const View& view, int n) {
  auto it = view.versions.definitions.find(n);
  if (it == view.versions.definitions.end()) return view.config.key->text();
  std::optional<ViewConfig> config = ViewFromRecord(it->second);
  return config && config->key ? config->key->text() : view.config.key->text();
}

std::vector<std::string> RedisSink::KeptPatterns(const View& view, std::optional<int> except) {
  const std::string own = except ? TemplateOf(view, *except) : view.config.key->text();
  std::vector<std::string> out;
  const Versions& v = view.versions;
  for (const std::optional<int>& n : {v.serving, v.building, v.previous}) {
    if (!n || n == except) continue;
    const std::string text = TemplateOf(view, *n);
    if (text == own) continue;  // the same keys
    auto parsed = KeyTemplate::Parse(text);
    if (!parsed.ok()) continue;
    const std::string pattern = parsed.value().Pattern();
    if (std::find(out.begin(), out.end(), pattern) == out.end()) out.push_back(pattern);
  }
  // The file's template, when no kept version records it (a fill not started yet).
  if (except && view.config.key->text() != own) {
    const std::string pattern = view.config.key->Pattern();
    if (std::find(out.begin(), out.end(), pattern) == out.end()) out.push_back(pattern);
  }
  // A key of both patterns is the more specific one's: a less specific pattern leaves
  // none of this version's keys out.
  auto own_parsed = KeyTemplate::Parse(own);
  if (own_parsed.ok()) {
    const size_t length = LiteralLength(own_parsed.value().Pattern());
    std::erase_if(out, [&](const std::string& p) { return LiteralLength(p) < length; });
  }
  return out;
}

Status RedisSink::LoadVersions(RedisClient& client,
                               const std::map<std::string, ViewState>& states) {
  auto reply = client.Command({"HGETALL", versions_key_});
  if (!reply.ok()) return reply.error();
  const RedisReply& r = reply.value();
  if (r.type != RedisReply::Type::kArray) return ReplyError("HGETALL " + versions_key_, r);
  std::map<std::string, Versions> recorded;
  for (size_t i = 0; i + 1 < r.elements.size(); i += 2) {
    const auto versions = nlohmann::json::parse(r.elements[i + 1].str, nullptr, false);
    if (!versions.is_object()) {
      return Error::Corrupt("Redis hash " + versions_key_ + " holds no versions for " +
                            r.elements[i].str);
    }
    recorded[r.elements[i].str] = VersionsFromJson(versions);
  }
  for (auto& view : views_) {
    const std::string& name = view->config.name;
    if (auto it = recorded.find(name); it != recorded.end()) {
      view->versions = it->second;
      continue;
    }
    // Not recorded yet (a store filled by a pgderive without versions): what the state
    // says. The serving data's definition is the file's when the state was filled with it.
    view->versions = Versions{};
    auto state = states.find(name);
    if (state == states.end() || state->second.removed) continue;
    const int n = static_cast<int>(state->second.generation);
    if (state->second.backfilling) {
      view->versions.building = n;
      view->versions.definitions[n] = view->record;
    } else {
      view->versions.serving = n;
      if (state->second.definition.empty() ||
          state->second.definition == ViewDefinitionFingerprint(view->config)) {
        view->versions.definitions[n] = view->record;
      }
    }
  }
  return Status::Ok();
}

RedisCommand RedisSink::VersionsCommand(const View& view) const {
  return {"HSET", versions_key_, view.config.name, VersionsToJson(view.versions).dump()};
}

Result<bool> RedisSink::StartVersion(View& view, uint64_t next, bool keyless) {
  Versions& v = view.versions;
  const std::string file = view.config.key->text();
  const int n = static_cast<int>(next);
  if (v.building && *v.building != n) {
    // A fill started over, or a newer definition: the version being built is replaced.
    // Its keys go when they are not the file's (refilled) nor a kept version's.
    const int was = *v.building;
    const std::string text = TemplateOf(view, was);
    const bool kept = (v.serving && TemplateOf(view, *v.serving) == text) ||
                      (v.previous && TemplateOf(view, *v.previous) == text);
    if (text != file && !kept) {
      auto parsed = KeyTemplate::Parse(text);
      if (parsed.ok()) {
        auto deleted = DeleteMatching(parsed.value().Pattern(), KeptPatterns(view, was));
        if (!deleted.ok()) return deleted.error();
      }
    }
    v.building.reset();
    if (v.serving != was && v.previous != was) v.definitions.erase(was);
  }
  // A retained version of the file's key template: the fill rewrites its keys in place,
  // so it cannot stay retained.
  if (v.previous && TemplateOf(view, *v.previous) == file) {
    if (v.serving != v.previous) v.definitions.erase(*v.previous);
    v.previous.reset();
    v.drop_at = 0;
  }
  const bool side = v.serving && TemplateOf(view, *v.serving) != file;
  const bool redefined =
      v.serving && v.definitions.contains(*v.serving) && v.definitions[*v.serving] != view.record;
  if (v.serving && !side) {
    // The same keys: rewritten in place from now on, so the serving data becomes the
    // file's definition as the fill goes; no version of the old one can be kept.
    v.definitions[*v.serving] = view.record;
    if (redefined && view.config.promote_manual) {
      notices_.push_back(SinkNotice::Warning(
          "view " + view.config.name +
          ": its definition changed but not its key template, so the new "
          "version shares the keys of the serving one and is rebuilt in place; "
          "`promote: manual` cannot hold it (it serves as each key is rewritten, "
          "and the stale keys are swept when it is complete)"));
    }
  }
  v.building = n;
  v.definitions[n] = view.record;
  v.held = false;
  if (!side) return !keyless;
  // Keys of their own: empty at the start (what a version given up left under the
  // pattern goes), so nothing to mark or sweep.
  view.others = KeptPatterns(view, std::nullopt);
  auto deleted = DeleteMatching(view.config.key->Pattern(), view.others);
  if (!deleted.ok()) return deleted.error();
  notices_.push_back("view " + view.config.name + ": its key template changed (" +
                     TemplateOf(view, *v.serving) + " -> " + file + "): version " +
                     std::to_string(n) + " is built under its own keys while version " +
                     std::to_string(*v.serving) + " keeps serving and streaming");
  return false;
}

Result<std::string> RedisSink::Promote(View& view) {
  std::vector<int> retired;
  const std::optional<int> was = view.versions.serving;
  view.versions =
      AfterPromote(view.versions, NowSeconds(), view.config.retain_previous.count(), retired);
  const std::string file = view.config.key->text();
  std::string said = "view " + view.config.name + ": version " +
                     std::to_string(*view.versions.serving) + " (keys " + file + ") serves";
  for (int n : retired) {
    // A generation of the file's template shared its keys with the one serving now.
    const std::string text = TemplateOf(view, n);
    // The kept versions' keys - the serving one's among them - as seen from this one's
    // (while its definition is still recorded): a key under both patterns is the more
    // specific one's, so a less specific retired pattern never takes the serving keys.
    const std::vector<std::string> keep = KeptPatterns(view, n);
    view.versions.definitions.erase(n);
    if (text == file) continue;
    auto parsed = KeyTemplate::Parse(text);
    if (!parsed.ok()) continue;
    auto deleted = DeleteMatching(parsed.value().Pattern(), keep);
    if (!deleted.ok()) return deleted.error();
  }
  if (view.versions.previous) {
    said += " - readers move to its key template (Redis has no alias); version " +
            std::to_string(*view.versions.previous) + " (keys " +
            TemplateOf(view, *view.versions.previous) + ") is retained until " +
            UnixTimeText(view.versions.drop_at) + ", maintained, for `pgderive rollback -c FILE " +
            "--view " + view.config.name + "`";
  } else if (was && *was != *view.versions.serving) {
    said += " (rebuilt in place: the keys were shared)";
  }
  return said;
}

Status RedisSink::EndVersion(View& view, uint64_t generation) {
  if (!view.versions.building) {
    // Live with no version recorded (filled by a pgderive without versions): it serves.
    if (!view.versions.serving) {
      view.versions.serving = static_cast<int>(generation);
      view.versions.definitions[static_cast<int>(generation)] = view.record;
    }
    return Status::Ok();
  }
  if (SwitchesOnReady(view.versions, view.config.promote_manual)) {
    auto said = Promote(view);
    if (!said.ok()) return said.error();
    notices_.push_back(said.value());
    return Status::Ok();
  }
  notices_.push_back("view " + view.config.name + ": version " +
                     std::to_string(*view.versions.building) + " (keys " + view.config.key->text() +
                     ") is ready; `pgderive promote -c FILE --view " + view.config.name +
                     "` switches readers to it");
  return Status::Ok();
}

Status RedisSink::DropPrevious() {
  const int64_t now = NowSeconds();
  for (auto& view : views_) {
    if (!PreviousDue(view->versions, now)) continue;
    const int n = *view->versions.previous;
    const std::string text = TemplateOf(*view, n);
    // Its keys, unless another kept version shares them: deleted, then its record (a
    // crash in between deletes them again).
    if (text != view->config.key->text()) {
      auto parsed = KeyTemplate::Parse(text);
      if (parsed.ok()) {
        auto deleted = DeleteMatching(parsed.value().Pattern(), KeptPatterns(*view, n));
        if (!deleted.ok()) return deleted.error();
        notices_.push_back("view " + view->config.name + ": the previous version (" +
                           std::to_string(deleted.value()) + " keys " + text +
                           ") was dropped (retain_previous passed)");
      }
    }
    view->versions.previous.reset();
    view->versions.drop_at = 0;
    if (view->versions.serving != n && view->versions.building != n) {
      view->versions.definitions.erase(n);
    }
    auto client = Client();
    if (!client.ok()) return client.error();
    auto reply = client.value()->Command(VersionsCommand(*view));
    if (!reply.ok()) return reply.error();
    if (reply.value().type == RedisReply::Type::kError) return ReplyError("HSET", reply.value());
  }
  return Status::Ok();
}

void RedisSink::SyncVersionViews() {
  std::vector<std::unique_ptr<View>> kept;
  for (const auto& view : views_) {
    for (const auto& [n, record] : OtherDefinitions(view->versions, view->record)) {
      // A version of the file's key template shares its keys: rewritten in place, no
      // version view of its own.
      if (TemplateOf(*view, n) == view->config.key->text()) continue;
      const std::string name = view->config.name + "@" + std::to_string(n);
      std::unique_ptr<View> made;
      for (auto& v : version_views_) {
        if (v && v->config.name == name && v->record == record) made = std::move(v);
      }
      if (!made) {
        std::optional<ViewConfig> config = ViewFromRecord(record);
        if (!config || !config->key) continue;
        config->name = name;
        made = std::make_unique<View>(View{{*config, config->from, ViewShapes(*config), {}, false},
                                           {},
                                           0,
                                           0,
                                           false,
                                           false,
                                           {},
                                           {},
                                           {},
                                           0});
        made->record = record;
        made->version = n;
      }
      made->versions = view->versions;
      made->others = KeptPatterns(*made, n);
      kept.push_back(std::move(made));
    }
    view->others = KeptPatterns(*view, std::nullopt);
  }
  version_views_ = std::move(kept);
  row_views_.clear();
  for (const auto& view : views_) row_views_.push_back(view.get());
  for (const auto& view : version_views_) row_views_.push_back(view.get());
  std::vector<VersionInfo> shown;
  for (const auto& view : views_) {
    for (VersionInfo& info : Describe(view->versions, view->config.name, view->backfilling,
                                      [&](int n) { return "keys " + TemplateOf(*view, n); })) {
      shown.push_back(std::move(info));
    }
  }
  std::lock_guard lock(shown_mutex_);
  shown_ = std::move(shown);
}

std::vector<VersionInfo> RedisSink::ViewVersions() {
  std::lock_guard lock(shown_mutex_);
  return shown_;
}

Result<std::string> RedisSink::SwitchVersion(const std::string& view_name, VersionSwitch what,
                                             double percent) {
  std::lock_guard lock(mutex_);
  View* view = FindView(views_, view_name);
  if (view == nullptr) return Error::Permanent("store " + name_ + " has no view " + view_name);
  const Versions versions = view->versions;
  if (what == VersionSwitch::kPromote && versions.building && view->backfilling &&
      versions.serving && !OtherThanServing(versions)) {
    return Error::Permanent(
        "view " + view_name +
        " is rebuilt in place: its key template is unchanged, so its new "
        "version shares the serving version's keys and serves as they are rewritten - there is "
        "nothing to switch; the stale keys are swept when it is complete. Versions side by side "
        "(promote, rollback) are for a changed key template");
  }
  std::optional<std::string> refusal =
      what == VersionSwitch::kPromote
          ? PromoteRefusal(versions, view_name, view->backfilling, percent)
          : RollbackRefusal(versions, view_name);
  if (refusal) return Error::Permanent(*refusal);
  auto client = Client();
  if (!client.ok()) return client.error();
  std::string said;
  if (what == VersionSwitch::kPromote) {
    auto promoted = Promote(*view);
    if (!promoted.ok()) {
      view->versions = versions;
      return promoted.error();
    }
    said = promoted.value();
    notices_.push_back(said);
  } else {
    const int to = *versions.previous;
    view->versions = AfterRollback(versions);
    said = "view " + view_name + ": rolled back - version " + std::to_string(to) + " (keys " +
           TemplateOf(*view, to) + ") serves again: readers move back to its key template; " +
           "version " + std::to_string(*view->versions.building) + " (keys " +
           TemplateOf(*view, *view->versions.building) +
           ") stays ready and maintained (`pgderive promote -c FILE --view " + view_name +
           "` switches to it again)";
    notices_.push_back(said);
  }
  auto reply = client.value()->Command(VersionsCommand(*view));
  Status status = reply.ok() ? (reply.value().type == RedisReply::Type::kError
                                    ? Status(ReplyError("HSET", reply.value()))
                                    : Status::Ok())
                             : Status(reply.error());
  if (!status.ok()) {
    view->versions = versions;
    SyncVersionViews();
    return status.error();
  }
  SyncVersionViews();
  return said;
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
  Status loaded = LoadVersions(*client.value(), states.value());
  if (!loaded.ok()) return loaded.error();
  for (auto& view : views_) {
    if (!views || (!unrecorded && !states.value().contains(view->config.name))) continue;
    // The keys of its versions of another key template (retained, or serving while the
    // file's is built).
    for (const std::string& pattern : KeptPatterns(*view, std::nullopt)) {
      auto deleted = DeleteMatching(pattern, {view->config.key->Pattern()});
      if (!deleted.ok()) return deleted.error();
      if (deleted.value() > 0) {
        removed.push_back(std::to_string(deleted.value()) + " key(s) of a version of view " +
                          view->config.name + " (" + pattern + ")");
      }
    }
    view->others.clear();
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
  keys.insert(keys.end(), {checkpoint_key_, views_key_, horizon_key_, versions_key_});
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
  RedisCommand del{"DEL", checkpoint_key_, views_key_, horizon_key_, versions_key_};
  for (const auto& [view, state] : states.value()) {
    if (state.sweep) del.push_back(MarkKey(view, state.generation));
  }
  std::vector<RedisCommand> commands{{"MULTI"}, del};
  for (auto& view : views_) {
    view->generation = 0;
    view->sweep = false;
    view->keyless = false;
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
  Status loaded = LoadVersions(*client.value(), states.value());
  if (!loaded.ok()) return loaded;
  for (auto& view : views_) {
    // The keys of its versions of another key template, then its own.
    for (const std::string& pattern : KeptPatterns(*view, std::nullopt)) {
      Status status = DeleteMatching(pattern, {view->config.key->Pattern()}).status();
      if (!status.ok()) return status;
    }
    view->versions = Versions{};
    view->others.clear();
    Status status = DeleteView(*view).status();
    if (!status.ok()) return status;
  }
  SyncVersionViews();
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
  // No state at all may be a store an older pgderive filled without states: its views
  // may have keys.
  for (auto& view : views_) view->keyless = false;
  Status loaded = LoadVersions(*client.value(), states.value());
  if (!loaded.ok()) return loaded.error();
  reload_versions_ = false;
  SyncVersionViews();
  if (states.value().empty()) return std::optional<std::map<std::string, ViewState>>();
  for (auto& view : views_) {
    auto it = states.value().find(view->config.name);
    const bool recorded = it != states.value().end();
    view->backfilling = recorded && it->second.backfilling;
    view->generation = recorded ? it->second.generation : 0;
    view->sweep = recorded && it->second.sweep;
    view->keyless = !recorded;
    view->first_fill = recorded && it->second.first_fill;
  }
  return std::optional<std::map<std::string, ViewState>>(std::move(states).value());
}

Result<std::vector<std::string>> RedisSink::MarkRemovedViews() {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  auto states = ReadStates(*client.value());
  if (!states.ok()) return states.error();
  std::vector<std::string> marked;
  std::vector<RedisCommand> commands{{"MULTI"}};
  for (const auto& [name, state] : states.value()) {
    if (state.removed || FindView(views_, name) != nullptr) continue;
    ViewState removed = state;
    removed.removed = true;
    commands.push_back({"HSET", views_key_, name, removed.ToJson()});
    marked.push_back(name);
  }
  if (marked.empty()) return marked;
  commands.push_back({"EXEC"});
  auto replies = client.value()->Pipeline(commands);
  if (!replies.ok()) return replies.error();
  const RedisReply& result = replies.value().back();
  if (result.type != RedisReply::Type::kArray) return ReplyError("EXEC", result);
  for (const RedisReply& reply : result.elements) {
    if (reply.type == RedisReply::Type::kError) return ReplyError("EXEC", reply);
  }
  return marked;
}

Status RedisSink::WriteViewState(const std::string& view_name, const ViewState& state, bool clear) {
  std::lock_guard lock(mutex_);
  View* view = FindView(views_, view_name);
  if (view == nullptr) return Error::Permanent("no Redis view named " + view_name);
  auto client = Client();
  if (!client.ok()) return client.error();
  view->first_fill = state.first_fill;
  ViewState recorded = state;
  recorded.generation = view->generation;
  recorded.sweep = view->sweep;
  std::vector<RedisCommand> commands{{"MULTI"}};
  const Versions before = view->versions;
  // Whatever fails below, the versions are as recorded.
  auto failed = [&](const Error& error) {
    view->versions = before;
    SyncVersionViews();
    return error;
  };
  if (clear && state.backfilling) {
    // A rebuild begins: the keys stay for readers, and the rebuild's writes are marked
    // (the mark of an unfinished earlier rebuild goes) - unless the view has no keys yet,
    // or its new version has keys of its own (a changed key template).
    if (view->sweep) commands.push_back({"UNLINK", MarkKey(view_name, view->generation)});
    ++recorded.generation;
    auto sweep = StartVersion(*view, recorded.generation, view->keyless);
    if (!sweep.ok()) return failed(sweep.error());
    recorded.sweep = sweep.value();
  } else if (!state.backfilling && view->sweep) {
    // Live again with a sweep pending: it runs before the state says live.
    Status status = Sweep(*view, view->generation).status();
    if (!status.ok()) return status;
    commands.push_back({"UNLINK", MarkKey(view_name, view->generation)});
    recorded.sweep = false;
  } else if (state.backfilling && !state.after && !clear && !view->sweep &&
             !view->versions.building && !view->versions.serving) {
    // A first fill (nothing of the view to keep): its first version, the generation as
    // recorded (a rebuild begins the next one).
    view->versions.building = static_cast<int>(recorded.generation);
    view->versions.definitions[*view->versions.building] = view->record;
  } else if (clear) {
    Status status = DeleteView(*view).status();
    if (!status.ok()) return status;
  }
  if (!state.backfilling) {
    Status status = EndVersion(*view, recorded.generation);
    if (!status.ok()) return failed(status.error());
  }
  commands.push_back({"HSET", views_key_, view_name, WithDefinition(*view, recorded).ToJson()});
  commands.push_back(VersionsCommand(*view));
  commands.push_back({"EXEC"});
  auto replies = client.value()->Pipeline(commands);
  if (!replies.ok()) return failed(replies.error());
  const RedisReply& result = replies.value().back();
  if (result.type != RedisReply::Type::kArray) return failed(ReplyError("EXEC", result));
  for (const RedisReply& reply : result.elements) {
    if (reply.type == RedisReply::Type::kError) return failed(ReplyError("EXEC", reply));
  }
  SyncVersionViews();
  view->backfilling = state.backfilling;
  view->generation = recorded.generation;
  view->sweep = recorded.sweep;
  view->keyless = false;
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
      // A view with no keys (View::keyless) ends its rebuild with only keys it or the
      // stream wrote, each deleted by the stream when its row goes: nothing to sweep,
      // so nothing to mark. Nor a new version under a key template of its own.
      Status status = Exec();  // a new version deletes what its pattern holds first
      if (!status.ok()) return status;
      auto sweep = sink_.StartVersion(view, mark.generation, mark.keyless);
      if (!sweep.ok()) return sweep.error();
      mark.sweep = sweep.value();
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
    if (!control.backfilling) {
      // EndVersion's own commands (a retired version's keys deleted by SCAN) go on the
      // connection directly: the MULTI is sent first (opened, a SCAN would be queued in
      // it and read its OK).
      Status status = Exec();
      if (status.ok()) status = sink_.EndVersion(view, mark.generation);
      if (!status.ok()) return status;
    }
    ViewState state{control.backfilling, control.after, control.columns, control.table_oid};
    state.generation = mark.generation;
    state.sweep = mark.sweep;
    mark.keyless = false;
    // In the same MULTI as the data it describes.
    Status status =
        multi_.Command({"HSET", sink_.views_key_, name, WithDefinition(view, state).ToJson()});
    if (!status.ok()) return status;
    return multi_.Command(sink_.VersionsCommand(view));
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
      view->keyless = mark.keyless;
    }
    return Status::Ok();
  }

 private:
  struct Mark {
    uint64_t generation = 0;
    bool sweep = false;
    bool keyless = false;  // View::keyless
  };
  Mark& MarkOf(View& view) {
    return marks_.try_emplace(&view, Mark{view.generation, view.sweep, view.keyless}).first->second;
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
  if (reload_versions_) {
    // An Apply failed after it changed the views' versions: as Redis records them.
    auto states = ReadStates(client);
    if (!states.ok()) return states.error();
    Status status = LoadVersions(client, states.value());
    if (!status.ok()) return status;
    reload_versions_ = false;
    SyncVersionViews();
  }
  Status status;
  {
    Writer writer(*this, client);
    status = ApplyRows(group, checkpoint, name_, row_views_, EntryKey::kTemplate, source_, writer);
  }
  if (!status.ok()) reload_versions_ = true;
  SyncVersionViews();  // after ApplyRows, which walks row_views_
  return status;
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
  RedisClient& redis = *client.value();
  Status status =
      redis.Scan(view->config.key->Pattern(), [&](const std::vector<RedisReply>& keys) -> Status {
        std::vector<RedisCommand> gets;
        for (const RedisReply& key : keys) {
          if (!MatchesAny(view->others, key.str)) {
            gets.push_back({"GET", key.str});
          }
        }
        if (gets.empty()) return Status::Ok();
        auto values = redis.Pipeline(gets);
        if (!values.ok()) return values.error();
        for (size_t i = 0; i < gets.size(); ++i) {
          // gone meanwhile
          if (values.value()[i].type != RedisReply::Type::kString) continue;
          out.emplace_back(gets[i][1], std::move(values.value()[i].str));
        }
        return Status::Ok();
      });
  if (!status.ok()) return status.error();
  return out;
}

Result<std::vector<ViewInspector::Entry>> RedisSink::ReadEntries(
    const std::string& view_name, const std::vector<std::string>& keys) {
  std::lock_guard lock(mutex_);
  if (FindView(views_, view_name) == nullptr) {
    return Error::Permanent("no Redis view named " + view_name);
  }
  auto client = Client();
  if (!client.ok()) return client.error();
  std::vector<Entry> out;
  constexpr size_t kPerPipeline = 1000;
  for (size_t begin = 0; begin < keys.size(); begin += kPerPipeline) {
    std::vector<RedisCommand> gets;
    for (size_t i = begin; i < std::min(keys.size(), begin + kPerPipeline); ++i) {
      gets.push_back({"GET", keys[i]});
    }
    auto values = client.value()->Pipeline(gets);
    if (!values.ok()) return values.error();
    for (size_t i = 0; i < gets.size(); ++i) {
      if (values.value()[i].type != RedisReply::Type::kString) continue;  // not held
      out.emplace_back(gets[i][1], std::move(values.value()[i].str));
    }
  }
  return out;
}

Result<std::optional<ViewInspector::KeyPage>> RedisSink::ScanKeys(const std::string& view_name,
                                                                  const std::string& cursor,
                                                                  size_t count) {
  std::lock_guard lock(mutex_);
  View* view = FindView(views_, view_name);
  if (view == nullptr) return Error::Permanent("no Redis view named " + view_name);
  auto client = Client();
  if (!client.ok()) return client.error();
  auto theirs = [&](const std::string& key) {
    if (key.starts_with("pgderive:")) return true;   // pgderive's own state
    if (MatchesAny(view->others, key)) return true;  // another version's
    for (const auto& other : views_) {
      if (other.get() != view && GlobMatch(other->config.key->Pattern(), key)) return true;
    }
    return false;
  };
  KeyPage page;
  std::string at = cursor.empty() ? "0" : cursor;
  // A SCAN call may match no key of a sparse pattern: on until some, or the end.
  for (int calls = 0; calls < 64; ++calls) {
    auto reply = client.value()->Command(
        {"SCAN", at, "MATCH", view->config.key->Pattern(), "COUNT", std::to_string(count)});
    if (!reply.ok()) return reply.error();
    const RedisReply& r = reply.value();
    if (r.type != RedisReply::Type::kArray || r.elements.size() != 2 ||
        r.elements[1].type != RedisReply::Type::kArray) {
      return ReplyError("SCAN", r);
    }
    at = r.elements[0].str;
    for (const RedisReply& key : r.elements[1].elements) {
      if (!theirs(key.str)) page.keys.push_back(key.str);
    }
    if (at == "0" || !page.keys.empty()) break;
  }
  page.cursor = at == "0" ? "" : at;
  return std::optional<KeyPage>(std::move(page));
}

Result<std::vector<std::vector<std::string>>> RedisSink::RowKeys(const std::string& view_name,
                                                                 const RelationSchema& schema,
                                                                 const std::string& key) {
  std::lock_guard lock(mutex_);
  View* view = FindView(views_, view_name);
  if (view == nullptr) return Error::Permanent("no Redis view named " + view_name);
  const KeyTemplate& key_template = *view->config.key;
  std::vector<std::vector<std::string>> out;
  for (const std::vector<std::string>& split : key_template.Splits(key)) {
    // The template's values by column; a column named twice must read the same twice.
    std::map<std::string, std::string> values;
    bool same = true;
    for (size_t i = 0; i < split.size() && i < key_template.columns().size(); ++i) {
      auto [it, added] = values.emplace(key_template.columns()[i], split[i]);
      same = same && (added || it->second == split[i]);
    }
    std::vector<std::string> row;
    for (const ColumnSchema& column : schema.columns) {
      if (!column.key) continue;
      auto it = values.find(column.name);
      if (it == values.end()) {
        same = false;
        break;
      }
      row.push_back(it->second);
    }
    if (same && !row.empty()) out.push_back(std::move(row));
  }
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
