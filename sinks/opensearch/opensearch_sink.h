#pragma once

// OpenSearch views (SPEC.md §3): one document per row in the view's index, `_id` the
// primary key's text (a composite key: the JSON array of its texts), `_source` the
// JSON object of the view's columns, written with `_bulk`.
//
// Idempotence and order under retries: every write carries external versioning with
// `version_type=external_gte` and the version = the commit LSN of its transaction (the
// snapshot's LSN for snapshot rows). A retried or replayed write older than what the
// document holds is refused with a version conflict, which counts as success; writes
// of one transaction share a version, and `_gte` lets the later of them win in order.
//
// Requests: an Apply's actions, one per document (bulk_buffer.h), go in `_bulk`
// requests of at most a few MB, several in flight at once on connections of their own
// (documents apart, so their order does not matter); the next step (a truncate, the
// views' states, the checkpoint) waits for every one of them.
//
// Fills: while an Apply carries a catch-up's worth of changes (a backlog, a large
// transaction, a backfill), the views' indexes refresh every 30 s instead of every
// second (an index whose own interval is -1 is left alone): a refresh writes a segment,
// and at thousands of documents a second refreshing each second takes as much of the
// node as the indexing does. Realtime GETs are unaffected; searches see the fill at
// most 30 s late. The first small Apply (the stream caught up) puts the index's own
// setting back. Each index's setting is recorded, before it is changed, in the
// checkpoint index (`<pipeline>.<store>/refresh/<index>`), so that a start after a crash
// or a stop mid-fill restores it.
//
// Indexes and the alias: the view's `index:` names an alias; the documents live in a
// concrete index `<index>-<n>`, n a generation recorded in the view's state document
// (`generations`: serving, building, last, retired). A rebuild (a view new or refilled,
// `pgderive backfill`, its table reshaped, a store that lost its data: a view state
// that starts a fill from the start) makes generation n+1 with pgderive's mapping,
// recorded before it is created; backfill rows go into it alone, the stream's writes
// into both, so the served index stays complete and current. When the view's state
// goes back to live, one `_aliases` call moves the alias (removing it from whatever it
// pointed to), then the state records the new generation and the old index is deleted.
// A crash in between resumes the fill into the recorded index; the alias moves only at
// the end. A view with nothing served yet (new, or its index gone) serves its first
// generation at once. An index of the view's name made by a pgderive before aliases
// (its state document has no generations) is migrated once by `run`: filled into
// `<index>-1` the same way, and the switch deletes the old index and adds the alias in
// one `_aliases` call (remove_index). An index or alias of the view's name that this
// pipeline has no record of is someone else's: refused, never written or deleted.
//
// Versions (sinks/common/view_versions.h): each generation's definition is recorded with
// it (`definitions`). A view whose definition changed is built into the next generation
// while the serving one keeps its recorded definition: a version view (the recorded
// ViewConfig, named `<view>@<n>`) maintains it from the stream, the view of the file's
// definition writes the new generation. Ready, it is promoted at once (`promote: auto`)
// or by `pgderive promote` (SwitchVersion); the generation switched away from is
// retained (`previous`, until `drop_at`, still maintained by its version view), so
// that `pgderive rollback` moves the alias back in one _aliases call; then it is deleted.
// A switch whose record a crash prevented is completed from where the alias points.
//
// Checkpoint: the document `<pipeline>.<store>` of the index `pgderive-checkpoints`,
// written after the batch's `_bulk` requests succeeded item by item (OpenSearch has no
// transaction across documents; the versions make the replay after a crash between the
// two a no-op). An index that went missing means the store lost data: no checkpoint.

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>
#include <vector>

#include "config/config.h"
#include "sinks/common/row_store_apply.h"
#include "sinks/common/sink.h"
#include "sinks/common/source_rows.h"
#include "sinks/common/view_inspector.h"
#include "sinks/common/view_list.h"
#include "sinks/common/view_shape.h"
#include "sinks/opensearch/opensearch_client.h"

namespace pgderive {

class OpenSearchSink : public Sink, public ViewInspector {
 public:
  static Result<std::unique_ptr<OpenSearchSink>> Make(const Config& config,
                                                      const StoreConfig& store);

  const std::string& name() const override { return name_; }
  // Learns the types of the views' columns (domains to their base types) for the
  // index mappings, made before any row is read.
  Status Resolve(SqlSession& source, bool checked = false) override;
  Status Check(const std::shared_ptr<const RelationSchema>& schema) override;
  Result<std::optional<Lsn>> ReadCheckpoint() override;
  std::string missing_checkpoint_reason() override {
    std::lock_guard lock(mutex_);
    return missing_reason_;
  }
  // Reads each view's generations; refuses (permanent error, nothing created) an index
  // or alias of a view's name that the pipeline has no record of.
  Status Connect() override;
  // Starts the migration of the views whose index was made by a pgderive before aliases.
  Status Migrate() override;
  // Each view's served index against the UUID recorded when pgderive connected or
  // created it: an index deleted (or deleted and created again, by hand or by a write
  // that auto-created it with a dynamic mapping) is reported once, until the view is
  // refilled into a new generation. The alias: put back when deleted; pointed elsewhere
  // by someone else (a rollover), said once in a notice, not refilled - pgderive keeps
  // writing its own index, and its next rebuild moves the alias back.
  Result<std::vector<StoreChange>> CheckStore() override;
  std::vector<SinkNotice> TakeNotices() override {
    std::lock_guard lock(mutex_);
    return std::exchange(notices_, {});
  }
  Status BeginRebuild(Lsn snapshot_lsn) override;
  Status ApplySnapshotRows(const std::shared_ptr<const RelationSchema>& schema,
                           std::span<const TupleData> rows, const TypeRegistry& types) override;
  Status EndRebuild(Lsn snapshot_lsn) override;
  Status UndoRebuild() override;
  Status Apply(const BatchGroup& group, Lsn checkpoint) override;
  bool backfills_rows() const override { return true; }
  std::vector<SourceRead> TakeSourceReads() override { return source_.Take(); }
  Result<std::optional<std::map<std::string, ViewState>>> ReadViewStates() override;
  Status WriteViewState(const std::string& view, const ViewState& state, bool clear) override;
  // The state documents of views not in the configuration (found by reading the
  // checkpoint index, which is small and shared), rewritten with the state "removed"
  // (their generations kept: the view's indexes stay the pipeline's).
  Result<std::vector<std::string>> MarkRemovedViews() override;
  // The pipeline's documents in pgderive-checkpoints (checkpoint, views' states,
  // horizon, refresh records; the index itself is shared by pipelines and stays); with
  // `views`, each view's recorded generations (the alias goes with them), never an
  // index the pipeline did not make.
  Result<std::vector<std::string>> Teardown(bool views) override;
  std::vector<VersionInfo> ViewVersions() override;
  Result<std::string> SwitchVersion(const std::string& view, VersionSwitch what,
                                    double percent) override;
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
  Result<std::optional<KeyPage>> ScanKeys(const std::string& view, const std::string& cursor,
                                          size_t count) override;
  Result<std::vector<std::vector<std::string>>> RowKeys(const std::string& view,
                                                        const RelationSchema& schema,
                                                        const std::string& key) override;

  // The index mapping for a view's columns: text searchable with a keyword field for
  // sorting, numbers numeric, timestamps dates, json as stored objects. Values a type
  // cannot hold ("NaN", "infinity") are kept in _source and left out of the index
  // (ignore_malformed); `dynamic: false` keeps columns added later without rejecting.
  static nlohmann::json Mapping(const RelationSchema& schema, const std::vector<size_t>& columns,
                                const TypeRegistry& types);

  struct View : RowView {
    explicit View(RowView row) : RowView(std::move(row)) {}
    std::shared_ptr<const RelationSchema> schema = nullptr;  // from Check, for the mapping
    // The served index's UUID as pgderive last saw it (nullopt: absent), once known.
    std::optional<std::string> uuid;
    bool uuid_known = false;
    bool change_reported = false;  // until a new generation serves
    // Generations (above); 0 is the index of the view's own name (a pgderive before
    // aliases). Loaded from the store at the first Connect (or Teardown).
    std::optional<int> serving;
    std::optional<int> building;
    std::vector<int> retired;  // switched away from; deleted after the switch is recorded
    // When the last switch happened: the retired indexes are kept kRetain after it, for
    // the requests a reader sent them just before.
    std::chrono::steady_clock::time_point switched_at{};
    int last = 0;  // the highest generation made
    bool loaded = false;
    bool migrate = false;      // serving is generation 0, and the store records its state
    bool alias_moved = false;  // said once: the alias points elsewhere
    // BeginRebuild of this process made the index it serves, with nothing served before:
    // it is empty, so the fill that follows goes into it rather than into another one.
    bool fresh = false;
    std::optional<ViewState> state;  // as last recorded
    // Versions (above), beside serving and building.
    std::optional<int> previous;
    int64_t drop_at = 0;
    bool held = false;
    std::map<int, std::string> definitions;
    std::string record;  // ViewRecord(config): the definition this view writes
    // A version view: maintains generation `version` (0: the view of the file's
    // definition) with its recorded definition.
    int version = 0;
  };

 private:
  OpenSearchSink(std::string name, std::string url, std::string checkpoint_id,
                 std::string source_dsn)
      : name_(std::move(name)),
        url_(std::move(url)),
        checkpoint_id_(std::move(checkpoint_id)),
        source_(std::move(source_dsn)) {}
  // One Apply's writes (RowStore): _bulk requests, then the views' states, then the
  // checkpoint.
  class Writer;

  Result<OpenSearchClient*> Client();
  Result<OpenSearchClient> MakeClient() const;
  // Sends `ndjson` as one _bulk and judges every item (a version conflict is a replay).
  static Status SendBulk(OpenSearchClient& client, std::string& ndjson);
  // Sends requests about disjoint documents, several at once (`client` and senders_),
  // and returns once every one is answered: the first failure, else success.
  Status SendChunks(OpenSearchClient& client, std::vector<std::string>& chunks);
  Status WriteCheckpoint(OpenSearchClient& client, std::optional<Lsn> lsn);
  // Fills (above): relaxes the views' refresh intervals for a group of `changes` changes,
  // or restores them for a small one.
  Status PaceRefresh(OpenSearchClient& client, size_t changes);
  std::string RelaxedId(const std::string& index) const {
    return checkpoint_id_ + "/refresh/" + index;
  }
  // Generations (above). The concrete index of generation n.
  static std::string Concrete(const View& view, int n) {
    return n == 0 ? view.config.index : view.config.index + "-" + std::to_string(n);
  }
  // The indexes the stream writes (served and being built), the one a backfill row goes
  // to, the one read back (the served one: complete).
  static std::vector<std::string> Targets(const View& view);
  static std::string FillTarget(const View& view);
  static std::string ReadTarget(const View& view);
  // The index verify reads for `view` (ReadView, ReadEntries).
  std::string VerifyIndex(const View& view) const;
  // Reads the generations of the views not loaded yet; with `refuse`, an index or alias
  // of a view's name the pipeline did not make is a permanent error.
  Status LoadGenerations(OpenSearchClient& client, bool refuse);
  // A fill from the start begins: records and creates the next generation (or empties
  // the one being built); with nothing served, it serves at once.
  Status StartGeneration(OpenSearchClient& client, View& view, const ViewState& state);
  // The alias onto the generation being built, in one _aliases call.
  Status SwitchGeneration(OpenSearchClient& client, View& view);
  // Deletes the retired generations kept long enough (all of them with `now`) and
  // records that they are gone.
  Status DropRetired(OpenSearchClient& client, bool now = false);
  // Moves the alias onto generation `to`, the index refreshed first, in one _aliases call.
  Status MoveAlias(OpenSearchClient& client, View& view, int to);
  static Versions VersionsOf(const View& view);
  static void SetVersions(View& view, const Versions& versions);
  // Whether generation n holds the definition `view` writes (not recorded: taken so).
  static bool Own(const View& view, int n);
  // The version views the kept generations of another definition need (made, or
  // dropped with their generation); row_views_ follows. Never while ApplyRows runs.
  void SyncVersionViews();
  // Each view's state document (in the checkpoint index, next to the checkpoint).
  std::string StateId(const View& view) const {
    return checkpoint_id_ + "/view/" + view.config.name;
  }
  std::string StateAction(View& view, const ViewState& state) const;
  // The document saying that the store records views' states.
  std::string RegistryAction() const;
  Result<std::optional<std::map<std::string, ViewState>>> ReadStates(OpenSearchClient& client);

  std::string name_;
  std::string url_;  // with credentials: never logged
  std::string ca_file_;
  std::string checkpoint_id_;
  std::vector<std::unique_ptr<View>> views_;
  // Version views (above), by generation of another definition.
  std::vector<std::unique_ptr<View>> version_views_;
  std::vector<RowView*> row_views_;  // the views and version views, for ApplyRows
  // What ViewVersions shows, as of the last SyncVersionViews (its own lock: status reads
  // it while an Apply holds mutex_).
  std::mutex shown_mutex_;
  std::vector<VersionInfo> shown_;
  // The indexes BeginRebuild made in this process (UndoRebuild deletes them).
  std::vector<std::string> rebuilt_;
  std::vector<SinkNotice> notices_;  // TakeNotices
  std::mutex mutex_;
  std::optional<OpenSearchClient> client_;
  std::vector<OpenSearchClient> senders_;  // the other requests in flight (SendChunks)
  SourceRows source_;  // rows read again (an unchanged TOASTed value the index lacks)
  // Its horizon is the document <checkpoint_id>/reread of the checkpoint index.
  bool horizon_loaded_ = false;
  // The indexes whose refresh interval a fill relaxed, with their own setting to put
  // back (nullopt: none, the default); read from the checkpoint index after a connect.
  std::map<std::string, std::optional<std::string>> relaxed_;
  bool relaxed_loaded_ = false;
  bool relax_refused_ = false;  // the node refused a settings change: fills go without
  std::string missing_reason_;  // why the last ReadCheckpoint found none
  // The types the mappings are made from: learned in Resolve, completed with what each
  // applied group's registry knows.
  std::shared_ptr<const TypeRegistry> types_ = std::make_shared<TypeRegistry>();
  std::shared_ptr<const TypeRegistry> merged_;  // the last registry merged into types_
};

}  // namespace pgderive
