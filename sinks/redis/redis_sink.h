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
// Keys the pipeline did not write: FindForeignKeys (validate --connect, run) refuses a
// view whose pattern matches keys while the store records no state for it.

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
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
  // The checkpoint, views' states and horizon keys; with `views`, every key of each view
  // (its key template's pattern).
  Result<std::vector<std::string>> Teardown(bool views) override;

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
  Result<std::optional<Entry>> Expected(const std::string& view,
                                        const std::shared_ptr<const RelationSchema>& schema,
                                        const TupleData& row, const TypeRegistry& types) override;

  // RowView::config.key is set (Make refuses a view without it).
  struct View : RowView {
    std::vector<std::string> filled_columns;  // of the rows a rebuild wrote
    uint32_t filled_oid = 0;                  // and their table's OID
    // As recorded in the view's state: its generation, and whether the rebuild of that
    // generation is marking its writes for a sweep.
    uint64_t generation = 0;
    bool sweep = false;
  };

 private:
  RedisSink(std::string name, std::string url, const std::string& prefix, std::string source_dsn)
      : name_(std::move(name)),
        url_(std::move(url)),
        checkpoint_key_(prefix + "checkpoint"),
        views_key_(prefix + "views"),
        horizon_key_(prefix + "reread"),
        mark_prefix_(prefix + "mark:"),
        source_(std::move(source_dsn)) {}
  // One Apply's writes (RowStore): one MULTI ... EXEC.
  class Writer;

  // Deletes every key of the view's pattern; returns how many there were.
  Result<long long> DeleteView(View& view);
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
  std::string views_key_;    // a hash: view name -> ViewState JSON
  std::string horizon_key_;  // the LSN of SourceRows' horizon (source_rows.h)
  std::string mark_prefix_;  // + view:generation: a rebuild's mark (MarkKey)
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
