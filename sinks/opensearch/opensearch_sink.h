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
// Checkpoint: the document `<pipeline>.<store>` of the index `pgderive-checkpoints`,
// written after the batch's `_bulk` requests succeeded item by item (OpenSearch has no
// transaction across documents; the versions make the replay after a crash between the
// two a no-op). An index that went missing means the store lost data: no checkpoint.

#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
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
  Status Connect() override;
  Result<std::optional<Lsn>> ReadCheckpoint() override;
  std::string missing_checkpoint_reason() override {
    std::lock_guard lock(mutex_);
    return missing_reason_;
  }
  // Each view's index against the UUID recorded when pgderive connected or created it:
  // an index deleted (or deleted and created again, by hand or by a write that
  // auto-created it with a dynamic mapping) is reported once, until the view is emptied
  // (RecreateIndex) and refilled.
  Result<std::vector<StoreChange>> CheckStore() override;
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
  // The pipeline's documents in pgderive-checkpoints (checkpoint, views' states,
  // horizon), and that index once no pipeline has a document in it; with `views`, each
  // view's index.
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

  // The index mapping for a view's columns: text searchable with a keyword field for
  // sorting, numbers numeric, timestamps dates, json as stored objects. Values a type
  // cannot hold ("NaN", "infinity") are kept in _source and left out of the index
  // (ignore_malformed); `dynamic: false` keeps columns added later without rejecting.
  static nlohmann::json Mapping(const RelationSchema& schema, const std::vector<size_t>& columns,
                                const TypeRegistry& types);

  struct View : RowView {
    std::shared_ptr<const RelationSchema> schema;  // from Check, for the mapping
    // The index's UUID as pgderive last saw it (nullopt: absent), once known.
    std::optional<std::string> uuid;
    bool uuid_known = false;
    bool change_reported = false;  // until RecreateIndex makes the index again
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
  // Deletes the view's index and creates it again, empty, with the view's mapping.
  Status RecreateIndex(OpenSearchClient& client, View& view);
  // Each view's state document (in the checkpoint index, next to the checkpoint).
  std::string StateId(const View& view) const {
    return checkpoint_id_ + "/view/" + view.config.name;
  }
  std::string StateAction(const View& view, const ViewState& state) const;
  // The document saying that the store records views' states.
  std::string RegistryAction() const;
  Result<std::optional<std::map<std::string, ViewState>>> ReadStates(OpenSearchClient& client);

  std::string name_;
  std::string url_;  // with credentials: never logged
  std::string ca_file_;
  std::string checkpoint_id_;
  std::vector<std::unique_ptr<View>> views_;
  std::vector<RowView*> row_views_;  // the same views, for ApplyRows
  bool rebuilt_ = false;             // BeginRebuild (re)created the views' indexes in this process
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
