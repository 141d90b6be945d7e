#pragma once

// Redis views (SPEC.md §3): one string key per row, from the view's key template; the
// value is the JSON object of the view's columns (SET). A delete deletes the key, a key
// change deletes the old key, a truncate deletes every key of the view, an unchanged
// TOASTed column keeps the value the key held (the old key's, when the key changed; read
// from the source when the store lacks it).
//
// Checkpoint: the key `pgderive:<pipeline>:checkpoint` holds the LSN up to which the
// store is complete. Each batch is one MULTI ... EXEC, pipelined in one round trip,
// with the checkpoint SET inside it, so data and checkpoint land together or not at all.
// Inside it, a run of SETs is one MSET and a run of DELs one DEL (same effect, far less
// work for Redis), sent while the rest of the batch is prepared.
//
// A rebuild (a view cleared: `pgderive backfill --view`, a view new to the store, its
// table replaced) keeps the view's keys for readers: it rewrites them in place and, when
// the view goes back to live, sweeps the keys it did not write.
//
//   clear          the view's generation g+1 recorded (state backfilling, sweep), its
//                  keys left as they are
//   every SET      of the view while it sweeps: SADD of the key to its mark, the set
//                  pgderive:<pipeline>:mark:<view>:<g+1>, in the same MULTI as the SET
//   live           SCAN the view's pattern; DEL each key not in the mark; UNLINK the
//                  mark; the state live (generation g+1) recorded
//
// The mark lands with the data it marks, and the sweep runs before the state that ends
// it: a crash at any point leaves the state saying "sweep" with a mark exactly as durable
// as the keys, and the resumed rebuild sweeps at its end what was not written since it
// began. A stream delete removes the key; nothing puts it back. The mark of 1,000,000
// keys takes about 56 MB in Redis while the rebuild runs (docs/architecture.md).
//
// Versions (sinks/common/view_versions.h): each generation's definition is recorded with
// the view (the hash pgderive:<pipeline>:versions, view -> serving, building, previous,
// drop_at, held, definitions), in the same MULTI as the state it goes with. A view whose
// KEY TEMPLATE changed is a new version with its own keys: generation g+1 is backfilled
// under the new template (its keys empty at the start: leftovers under its pattern are
// deleted, nothing is marked) while a version view (`<view>@<g>`, the recorded
// ViewConfig) keeps the serving generation's keys current from the stream. Ready, the
// new version serves at once (`promote: auto`) or by `pgderive promote`; a switch only
// records which version serves - Redis has no alias: readers move to the new key
// template themselves. The version switched away from is retained (`retain_previous`),
// still maintained, for `pgderive rollback`; when its time is up its keys are deleted
// (SCAN of its template's pattern). A change that keeps the key template (a column
// added) cannot be side by side - the versions would share their keys: it is the
// rebuild in place above, shown as a version building then serving, and it switches
// when complete whatever `promote` says (a promote of it is refused, explained).
// Patterns of two versions may overlap ("p:*" matches "p:v2:7"): every scan of a
// version's pattern (sweep, truncate, drop, verify) leaves the keys that match another
// kept version's pattern.
//
// Keys the pipeline did not write: FindForeignKeys (validate --connect, run) refuses a
// view whose pattern matches keys while the store records no state for it.

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "config/config.h"
#include "sinks/common/row_store_apply.h"
#include "sinks/common/sink.h"
#include "sinks/common/source_rows.h"
#include "sinks/common/view_inspector.h"
#include "sinks/common/view_list.h"
#include "sinks/common/view_shape.h"
#include "sinks/redis/redis_client.h"

namespace pgderive {

class RedisSink : public Sink, public ViewInspector {
 public:
  // The views of `store` in `config`; fails (permanent) on a bad key template.
  static Result<std::unique_ptr<RedisSink>> Make(const Config& config, const StoreConfig& store);

  const std::string& name() const override { return name_; }
  Status Check(const std::shared_ptr<const RelationSchema>& schema) override;
  Status Connect() override;
  Result<std::optional<Lsn>> ReadCheckpoint() override;
  std::string missing_checkpoint_reason() override {
    return "key " + checkpoint_key_ + " is missing";
  }
  // The checkpoint key and each view's field of the state hash, against what the last
  // call saw: the checkpoint gone (FLUSHALL, FLUSHDB) is the whole store's data lost; a
  // view's recorded state gone is that view's.
  Result<std::vector<StoreChange>> CheckStore() override;
  Status BeginRebuild(Lsn snapshot_lsn) override;
  Status ApplySnapshotRows(const std::shared_ptr<const RelationSchema>& schema,
                           std::span<const TupleData> rows, const TypeRegistry& types) override;
  Status EndRebuild(Lsn snapshot_lsn) override;
  Status UndoRebuild() override;
  Status Apply(const BatchGroup& group, Lsn checkpoint) override;
  // Redis answers EXEC before its append-only file is fsynced (appendfsync everysec).
  std::chrono::milliseconds durability_delay() const override { return std::chrono::seconds(2); }
  std::vector<SourceRead> TakeSourceReads() override { return source_.Take(); }
  bool backfills_rows() const override { return true; }
  Result<std::optional<std::map<std::string, ViewState>>> ReadViewStates() override;
  Status WriteViewState(const std::string& view, const ViewState& state, bool clear) override;
  // The fields of the state hash of views not in the configuration, rewritten with the
  // state "removed" (their generation and pending sweep kept for the rebuild).
  Result<std::vector<std::string>> MarkRemovedViews() override;
  // The checkpoint, views' states and horizon keys; with `views`, every key of each view
  // (its key template's pattern).
  Result<std::vector<std::string>> Teardown(bool views) override;
  std::vector<VersionInfo> ViewVersions() override;
  Result<std::string> SwitchVersion(const std::string& view, VersionSwitch what,
                                    double percent) override;
  std::vector<SinkNotice> TakeNotices() override {
    std::lock_guard lock(mutex_);
    return std::exchange(notices_, {});
  }

  std::vector<std::pair<std::string, std::string>> failed_views() override {
    std::lock_guard lock(mutex_);
    return FailedViews(views_);
  }
  std::vector<std::pair<std::string, std::vector<std::string>>> view_sources() const override {
    return ViewSources(views_);
  }

  // ViewInspector (verify).
  std::vector<std::string> views() const override;
  Result<std::vector<Entry>> ReadView(const std::string& view) override;
  Result<std::vector<Entry>> ReadEntries(const std::string& view,
                                         const std::vector<std::string>& keys) override;
  Result<std::optional<Entry>> Expected(const std::string& view,
                                        const std::shared_ptr<const RelationSchema>& schema,
                                        const TupleData& row, const TypeRegistry& types) override;
  // SCAN of the view's pattern, without pgderive's own keys and the keys another view
  // of the store could make.
  Result<std::optional<KeyPage>> ScanKeys(const std::string& view, const std::string& cursor,
                                          size_t count) override;
  Result<std::vector<std::vector<std::string>>> RowKeys(const std::string& view,
                                                        const RelationSchema& schema,
                                                        const std::string& key) override;

  // RowView::config.key is set (Make refuses a view without it).
  struct View : RowView {
    std::vector<std::string> filled_columns;  // of the rows a rebuild wrote
    uint32_t filled_oid = 0;                  // and their table's OID
    // As recorded in the view's state: its generation, and whether the rebuild of that
    // generation is marking its writes for a sweep.
    uint64_t generation = 0;
    bool sweep = false;
    // The store records states of other views but none of this one, so it has no keys
    // (`run` refuses a pattern that matches keys no state owns): its rebuild has
    // nothing to sweep. False once a state is written, and whenever unsure.
    bool keyless = false;
    // Versions (above): the definition this view writes (ViewRecord), its versions as
    // recorded, and the key patterns of its other kept versions (left by its scans).
    std::string record;
    Versions versions;
    std::vector<std::string> others;
    // A version view: maintains generation `version` (0: the view of the file's
    // definition) with its recorded definition.
    int version = 0;
  };

 private:
  RedisSink(std::string name, std::string url, const std::string& prefix, std::string source_dsn)
      : name_(std::move(name)),
        url_(std::move(url)),
        checkpoint_key_(prefix + "checkpoint"),
        views_key_(prefix + "views"),
        horizon_key_(prefix + "reread"),
        mark_prefix_(prefix + "mark:"),
        versions_key_(prefix + "versions"),
        source_(std::move(source_dsn)) {}
  // One Apply's writes (RowStore): one MULTI ... EXEC.
  class Writer;

  // Deletes every key of the view's pattern (but its other versions'); returns how many.
  Result<long long> DeleteView(View& view);
  // Deletes every key under `pattern` that matches none of `keep`; returns how many.
  Result<long long> DeleteMatching(const std::string& pattern,
                                   const std::vector<std::string>& keep);
  // Versions (above). The key template text of generation n (the file's when unrecorded).
  static std::string TemplateOf(const View& view, int n);
  // The patterns of the view's kept versions other than generation `n`'s keys.
  static std::vector<std::string> KeptPatterns(const View& view, std::optional<int> except);
  // Reads the recorded versions of the views (and what a store without them implies
  // from `states`).
  Status LoadVersions(RedisClient& client, const std::map<std::string, ViewState>& states);
  // The HSET recording the view's versions (inside the caller's MULTI).
  RedisCommand VersionsCommand(const View& view) const;
  // A fill from the start of the view begins as generation `next`: returns whether it
  // marks for a sweep (in place) or fills keys of their own (a new key template).
  Result<bool> StartVersion(View& view, uint64_t next, bool keyless);
  // The view is complete and caught up: switched (auto), or said ready; with no version
  // recorded, `generation` serves.
  Status EndVersion(View& view, uint64_t generation);
  // The building version serves; the keys of a generation retired (not retained) go.
  // Returns what it did, for the log.
  Result<std::string> Promote(View& view);
  // The retained version whose time is up: its keys deleted, then its record.
  Status DropPrevious();
  // The version views the kept generations of another key template need; row_views_
  // follows, and what ViewVersions shows. Never while ApplyRows runs.
  void SyncVersionViews();
  // The set of keys the rebuild of `view`'s generation `generation` wrote.
  std::string MarkKey(const std::string& view, uint64_t generation) const {
    return mark_prefix_ + view + ":" + std::to_string(generation);
  }
  // Deletes every key of the view's pattern that is not in the mark of `generation`;
  // returns how many.
  Result<long long> Sweep(View& view, uint64_t generation);
  // The recorded states (empty: none), read for teardown and a rebuild from a snapshot.
  Result<std::map<std::string, ViewState>> ReadStates(RedisClient& client);
  // Deletes the checkpoint and the horizon and records every view backfilling (its keys
  // stay the pipeline's), then deletes every view's keys; without `rebuild` (for
  // UndoRebuild), then the views' states too.
  Status DeleteAll(bool rebuild);
  Result<RedisClient*> Client();

  std::string name_;
  std::string url_;
  std::string checkpoint_key_;
  std::string views_key_;     // a hash: view name -> ViewState JSON
  std::string horizon_key_;   // the LSN of SourceRows' horizon (source_rows.h)
  std::string mark_prefix_;   // + view:generation: a rebuild's mark (MarkKey)
  std::string versions_key_;  // a hash: view name -> its versions (JSON)
  // Version views (above), and what ViewVersions shows (its own lock: status reads it
  // while an Apply holds mutex_).
  std::vector<std::unique_ptr<View>> version_views_;
  std::mutex shown_mutex_;
  std::vector<VersionInfo> shown_;
  std::vector<SinkNotice> notices_;  // TakeNotices
  bool reload_versions_ = false;     // an Apply failed: the record is read again
  bool horizon_loaded_ = false;
  std::vector<std::unique_ptr<View>> views_;
  std::vector<RowView*> row_views_;  // the same views, for ApplyRows
  bool rebuilt_ = false;             // BeginRebuild ran in this process
  // What CheckStore saw last (unset before its first call).
  std::optional<bool> checkpoint_seen_;
  std::set<std::string> state_fields_seen_;
  std::mutex mutex_;  // the client, for snapshot rows arriving from several threads
  std::optional<RedisClient> client_;
  SourceRows source_;  // rows read again (an unchanged TOASTed value the store lacks)
};

// Keys already under the pattern of a view that this pipeline did not write: the store
// records no state for the view in pgderive:<pipeline>:views (a store filled by a
// pgderive that recorded no states - the hash absent while the checkpoint exists - owns
// them). `example`: one such key. Looks at the first 1,000,000 keys of the database
// per view (SCAN walks the whole keyspace).
struct ForeignKeys {
  std::string view;
  std::string pattern;
  std::string example;
};
Result<std::vector<ForeignKeys>> FindForeignKeys(RedisClient& client, const Config& config,
                                                 const StoreConfig& store);

}  // namespace pgderive
