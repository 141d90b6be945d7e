#include "sinks/opensearch/opensearch_sink.h"

#include <atomic>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "cdc/publication.h"
#include "cdc/sql_session.h"
#include "cdc/type_catalog.h"
#include "sinks/common/source_rows.h"
#include "sinks/common/view_list.h"
#include "sinks/opensearch/bulk_buffer.h"

namespace pgderive {
namespace {

constexpr const char* kCheckpointIndex = "pgderive-checkpoints";
// An Apply's _bulk requests: cut by size (a group of 20,000 changes made one request
// of 9 MB, or 25 MB mid-transaction, for the node to hold whole in its heap), several
// in flight, so that the node indexes one while another is on the wire or being
// answered, and on as many write threads as it has.
constexpr size_t kBulkBytes = size_t{2} << 20;
constexpr size_t kBulksInFlight = 3;
// Fills (opensearch_sink.h): an Apply of at least this many changes relaxes the views'
// refresh interval to kFillRefresh; one of fewer than kRestoreBelow restores it. Live
// streaming groups a few milliseconds of changes (tens to hundreds); a catch-up's
// groups are of up to 20,000 changes or 16 MB.
constexpr size_t kRelaxAtChanges = 5000;
constexpr size_t kRestoreBelow = 500;
constexpr const char* kFillRefresh = "30s";

// {"<action>":{"_index":..,"_id":..,"version":..,"version_type":"external_gte"}}
void AppendAction(std::string& out, const char* action, const std::string& index,
                  std::string_view id, Lsn version) {
  out += "{\"";
  out += action;
  out += "\":{\"_index\":";
  AppendJsonString(out, index);
  out += ",\"_id\":";
  AppendJsonString(out, id);
  out += ",\"version\":";
  out += std::to_string(version.value);
  out += ",\"version_type\":\"external_gte\"}}\n";
}

nlohmann::json FieldMapping(uint32_t oid, const TypeRegistry& types, int depth = 0) {
  const TypeInfo& info = types.Lookup(oid);
  switch (info.kind) {
    case JsonKind::kInteger:
      return {{"type", "long"}, {"ignore_malformed", true}};
    case JsonKind::kFloat:
    case JsonKind::kNumeric:
      return {{"type", "double"}, {"ignore_malformed", true}};
    case JsonKind::kBool:
      return {{"type", "boolean"}};
    case JsonKind::kJson:
      // Any shape, changing from row to row: kept in _source, not indexed.
      return {{"type", "object"}, {"enabled", false}};
    case JsonKind::kDate:
    case JsonKind::kTimestamp:
    case JsonKind::kTimestampTz:
      return {{"type", "date"}, {"ignore_malformed", true}};
    case JsonKind::kBytea:
      return {{"type", "binary"}};
    case JsonKind::kArray:
      // OpenSearch fields are multi-valued: an array maps as its element.
      if (depth < 8) return FieldMapping(info.element_oid, types, depth + 1);
      return {{"type", "object"}, {"enabled", false}};
    case JsonKind::kString:
      break;
  }
  switch (BaseTypeOid(oid, info)) {  // a domain over uuid maps as uuid
    case 2950:                       // uuid
    case 869:                        // inet
    case 650:                        // cidr
    case 829:                        // macaddr
    case 774:                        // macaddr8
      return {{"type", "keyword"}, {"ignore_above", 8191}};
    default:
      // Text: searchable, with a keyword field to sort and aggregate on.
      return {{"type", "text"},
              {"fields", {{"keyword", {{"type", "keyword"}, {"ignore_above", 8191}}}}}};
  }
}

}  // namespace

nlohmann::json OpenSearchSink::Mapping(const RelationSchema& schema,
                                       const std::vector<size_t>& columns,
                                       const TypeRegistry& types) {
  nlohmann::json properties = nlohmann::json::object();
  for (size_t i : columns) {
    properties[schema.columns[i].name] = FieldMapping(schema.columns[i].type_oid, types);
  }
  return {{"mappings", {{"dynamic", false}, {"properties", properties}}}};
}

Result<std::unique_ptr<OpenSearchSink>> OpenSearchSink::Make(const Config& config,
                                                             const StoreConfig& store) {
  std::unique_ptr<OpenSearchSink> sink(new OpenSearchSink(
      store.name, store.ConnectUrl(), config.pipeline + "." + store.name, config.source.dsn));
  sink->ca_file_ = store.ca_file;
  for (const ViewConfig& view : config.views) {
    if (view.store != store.name) continue;
    sink->views_.push_back(std::make_unique<View>(
        View{{view, view.from, ViewShapes(view), {}, false}, nullptr, std::nullopt, false, false}));
    sink->row_views_.push_back(sink->views_.back().get());
  }
  return sink;
}

Status OpenSearchSink::Resolve(SqlSession& source, bool) {
  std::vector<uint32_t> oids;
  for (const std::string& table : tables()) {
    auto schema = DescribeTable(source, table);
    if (!schema.ok()) continue;  // a missing table is reported where it matters
    for (const ColumnSchema& column : schema.value()->columns) oids.push_back(column.type_oid);
  }
  auto types = std::make_shared<TypeRegistry>(*types_);
  Status status = ResolveTypes(source, oids, *types);
  if (!status.ok()) return status;
  std::lock_guard lock(mutex_);
  types_ = std::move(types);
  return Status::Ok();
}

std::vector<std::string> OpenSearchSink::views() const { return ViewNames(views_); }

Status OpenSearchSink::Check(const std::shared_ptr<const RelationSchema>& schema) {
  std::lock_guard lock(mutex_);
  std::string problems;
  for (auto& view : views_) {
    if (view->table != schema->QualifiedName()) continue;
    auto shape = view->shapes.For(schema);
    if (!shape.ok()) {
      problems += (problems.empty() ? "" : "; ") + shape.error().message();
      continue;
    }
    bool has_key = false;
    for (const ColumnSchema& c : schema->columns) has_key = has_key || c.key;
    if (!has_key) {
      problems += (problems.empty() ? "" : "; ") +
                  ("view " + view->config.name + ": table " + schema->QualifiedName() +
                   " has no key columns for the document _id");
    }
    view->schema = schema;
  }
  if (!problems.empty()) return Error::Permanent(problems);
  return Status::Ok();
}

Result<OpenSearchClient> OpenSearchSink::MakeClient() const {
  HttpClient::Options options;
  options.url = url_;
  options.ca_file = ca_file_;
  return OpenSearchClient::Create(options);
}

Result<OpenSearchClient*> OpenSearchSink::Client() {
  if (!client_) {
    auto client = MakeClient();
    if (!client.ok()) return client.error();
    client_.emplace(std::move(client).value());
  }
  return &*client_;
}

Status OpenSearchSink::Connect() {
  std::lock_guard lock(mutex_);
  client_.reset();
  senders_.clear();
  horizon_loaded_ = false;
  relaxed_loaded_ = false;
  auto client = Client();
  if (!client.ok()) return client.error();
  auto version = client.value()->ServerVersion();
  if (!version.ok()) return version.error();
  // The indexes as they are now: CheckStore compares against these.
  for (auto& view : views_) {
    if (view->uuid_known) continue;  // a reconnect: CheckStore judges what changed
    auto uuid = client.value()->IndexUuid(view->config.index);
    if (!uuid.ok()) return uuid.error();
    if (!uuid.value()) continue;  // made by the rebuild or the view's first backfill
    view->uuid = uuid.value();
    view->uuid_known = true;
  }
  return Status::Ok();
}

Result<std::vector<StoreChange>> OpenSearchSink::CheckStore() {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  std::vector<StoreChange> changes;
  for (auto& view : views_) {
    auto uuid = client.value()->IndexUuid(view->config.index);
    if (!uuid.ok()) return uuid.error();
    if (!view->uuid_known) {
      if (!uuid.value()) continue;  // not made yet
      view->uuid = uuid.value();
      view->uuid_known = true;
      continue;
    }
    if (uuid.value() == view->uuid) continue;
    const std::string was = view->uuid.value_or("none");
    view->uuid = uuid.value();
    if (view->change_reported || !view->failed.empty()) continue;
    view->change_reported = true;
    changes.push_back(
        {view->config.name,
         "index " + view->config.index +
             (uuid.value() ? " was replaced (UUID " + was + ", now " + *uuid.value() +
                                 "; an index made by a write has OpenSearch's dynamic mapping)"
                           : " (UUID " + was + ") was deleted")});
  }
  return changes;
}

std::string OpenSearchSink::StateAction(const View& view, const ViewState& state) const {
  std::string out = "{\"index\":{\"_index\":\"" + std::string(kCheckpointIndex) + "\",\"_id\":";
  AppendJsonString(out, StateId(view));
  out += "}}\n{\"view_state\":";
  AppendJsonString(out, WithDefinition(view, state).ToJson());
  out += "}\n";
  return out;
}

std::string OpenSearchSink::RegistryAction() const {
  std::string out = "{\"index\":{\"_index\":\"" + std::string(kCheckpointIndex) + "\",\"_id\":";
  AppendJsonString(out, checkpoint_id_ + "/views");
  out += "}}\n{\"view_states\":true}\n";
  return out;
}

Result<std::optional<std::map<std::string, ViewState>>> OpenSearchSink::ReadStates(
    OpenSearchClient& client) {
  // The store records views' states once it has this document (a store filled by a
  // pgderive without per-view state has none).
  auto registry = client.Get(kCheckpointIndex, checkpoint_id_ + "/views");
  if (!registry.ok()) return registry.error();
  if (!registry.value()) return std::optional<std::map<std::string, ViewState>>();
  std::map<std::string, ViewState> out;
  for (auto& view : views_) {
    auto document = client.Get(kCheckpointIndex, StateId(*view));
    if (!document.ok()) return document.error();
    if (!document.value()) continue;
    auto state = ViewState::FromJson(document.value()->source.value("view_state", ""));
    if (!state) {
      return Error::Corrupt("OpenSearch document " + std::string(kCheckpointIndex) + "/" +
                            StateId(*view) + " holds no view state");
    }
    view->backfilling = state->backfilling;
    out[view->config.name] = *state;
  }
  return std::optional<std::map<std::string, ViewState>>(std::move(out));
}

Result<std::optional<std::map<std::string, ViewState>>> OpenSearchSink::ReadViewStates() {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  return ReadStates(*client.value());
}

Status OpenSearchSink::WriteViewState(const std::string& view_name, const ViewState& state,
                                      bool clear) {
  std::lock_guard lock(mutex_);
  View* view = FindView(views_, view_name);
  if (view == nullptr) return Error::Permanent("no OpenSearch view named " + view_name);
  auto client = Client();
  if (!client.ok()) return client.error();
  if (clear) {
    Status status = RecreateIndex(*client.value(), *view);
    if (!status.ok()) return status;
  }
  std::string ndjson = StateAction(*view, state) + RegistryAction();
  Status status = SendBulk(*client.value(), ndjson);
  if (status.ok()) view->backfilling = state.backfilling;
  return status;
}

Result<std::vector<std::string>> OpenSearchSink::Teardown(bool views) {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  std::vector<std::string> ids{checkpoint_id_, checkpoint_id_ + "/views",
                               checkpoint_id_ + "/reread"};
  for (const auto& view : views_) ids.push_back(StateId(*view));
  std::vector<std::string> removed;
  for (const std::string& id : ids) {
    auto deleted = client.value()->DeleteDocument(kCheckpointIndex, id);
    if (!deleted.ok()) return deleted.error();
    if (deleted.value()) removed.push_back("document " + std::string(kCheckpointIndex) + "/" + id);
  }
  horizon_loaded_ = false;
  if (views) {
    for (const auto& view : views_) {
      auto exists = client.value()->IndexExists(view->config.index);
      if (!exists.ok()) return exists.error();
      if (!exists.value()) continue;
      Status status = client.value()->DeleteIndex(view->config.index, /*if_exists=*/true);
      if (!status.ok()) return status.error();
      removed.push_back("index " + view->config.index + " (view " + view->config.name + ")");
    }
  }
  // The checkpoints' index, once no pipeline keeps anything in it (refreshed: the count
  // sees every document written so far).
  auto exists = client.value()->IndexExists(kCheckpointIndex);
  if (!exists.ok()) return exists.error();
  if (exists.value()) {
    Status refreshed = client.value()->Refresh(kCheckpointIndex);
    if (!refreshed.ok()) return refreshed.error();
    auto count = client.value()->Count(kCheckpointIndex);
    if (!count.ok()) return count.error();
    if (count.value() == 0) {
      Status status = client.value()->DeleteIndex(kCheckpointIndex, /*if_exists=*/true);
      if (!status.ok()) return status.error();
      removed.push_back("index " + std::string(kCheckpointIndex) + " (no pipeline left in it)");
    }
  }
  return removed;
}

Status OpenSearchSink::RecreateIndex(OpenSearchClient& client, View& view) {
  Status status = client.DeleteIndex(view.config.index, /*if_exists=*/true);
  if (!status.ok()) return status;
  nlohmann::json body = nlohmann::json::object();
  if (view.schema) {
    auto shape = view.shapes.For(view.schema);
    if (!shape.ok()) return shape.error();
    body = Mapping(*view.schema, shape.value()->columns(), *types_);
  }
  status = client.CreateIndex(view.config.index, body, /*if_missing=*/false);
  if (!status.ok()) return status;
  auto uuid = client.IndexUuid(view.config.index);
  if (!uuid.ok()) return uuid.error();
  view.uuid = uuid.value();
  view.uuid_known = true;
  view.change_reported = false;
  return Status::Ok();
}

Result<std::optional<Lsn>> OpenSearchSink::ReadCheckpoint() {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  // A view the store records (or every view, when it records none) whose index is gone
  // lost its data. A view it does not record is new: it is backfilled on its own.
  missing_reason_.clear();
  auto states = ReadStates(*client.value());
  if (!states.ok()) return states.error();
  for (const auto& view : views_) {
    if (states.value() && !states.value()->contains(view->config.name)) continue;
    auto exists = client.value()->IndexExists(view->config.index);
    if (!exists.ok()) return exists.error();
    if (!exists.value()) {  // the index is gone: data lost
      missing_reason_ =
          "index " + view->config.index + " of view " + view->config.name + " is missing";
      return std::optional<Lsn>();
    }
  }
  auto document = client.value()->Get(kCheckpointIndex, checkpoint_id_);
  if (!document.ok()) return document.error();
  if (!document.value()) {
    missing_reason_ =
        "document " + std::string(kCheckpointIndex) + "/" + checkpoint_id_ + " is missing";
    return std::optional<Lsn>();
  }
  const auto lsn = Lsn::Parse(document.value()->source.value("lsn", ""));
  if (!lsn) {
    return Error::Corrupt("OpenSearch document " + std::string(kCheckpointIndex) + "/" +
                          checkpoint_id_ + " holds no LSN");
  }
  return std::optional<Lsn>(*lsn);
}

Status OpenSearchSink::SendBulk(OpenSearchClient& client, std::string& ndjson) {
  if (ndjson.empty()) return Status::Ok();
  auto result = client.Bulk(ndjson);
  ndjson.clear();
  if (!result.ok()) return result.error();
  for (const BulkItemError& failure : result.value().failures) {
    // Already applied: a write older than the document's version is a replay.
    if (failure.status == 409 && failure.type == "version_conflict_engine_exception") continue;
    std::string message = "OpenSearch refused " + failure.action + " of document " + failure.id +
                          ": " + failure.type + ": " + failure.reason;
    if (failure.status == 429 || failure.status >= 500) return Error::Transient(message);
    return Error::Permanent(message);
  }
  return Status::Ok();
}

Status OpenSearchSink::SendChunks(OpenSearchClient& client, std::vector<std::string>& chunks) {
  const size_t workers = std::min(chunks.size(), kBulksInFlight);
  while (senders_.size() + 1 < workers) {
    auto sender = MakeClient();
    if (!sender.ok()) return sender.error();
    senders_.push_back(std::move(sender).value());
  }
  std::vector<Status> results(chunks.size());
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  auto send = [&](OpenSearchClient& with) {
    for (size_t i = 0; !failed.load() && (i = next.fetch_add(1)) < chunks.size();) {
      results[i] = SendBulk(with, chunks[i]);
      if (!results[i].ok()) failed.store(true);
    }
  };
  std::vector<std::thread> threads;
  for (size_t w = 0; w + 1 < workers; ++w) {
    try {
      threads.emplace_back(send, std::ref(senders_[w]));
    } catch (const std::system_error&) {
      break;  // no thread to spare: fewer requests in flight
    }
  }
  send(client);
  for (std::thread& thread : threads) thread.join();
  chunks.clear();
  for (Status& result : results) {
    if (!result.ok()) return result;
  }
  return Status::Ok();
}

Status OpenSearchSink::WriteCheckpoint(OpenSearchClient& client, std::optional<Lsn> lsn) {
  std::string ndjson;
  if (lsn) {
    ndjson += "{\"index\":{\"_index\":\"" + std::string(kCheckpointIndex) + "\",\"_id\":";
    AppendJsonString(ndjson, checkpoint_id_);
    ndjson += "}}\n{\"lsn\":\"" + lsn->ToString() + "\"}\n";
  } else {
    ndjson += "{\"delete\":{\"_index\":\"" + std::string(kCheckpointIndex) + "\",\"_id\":";
    AppendJsonString(ndjson, checkpoint_id_);
    ndjson += "}}\n";
  }
  return SendBulk(client, ndjson);
}

Status OpenSearchSink::PaceRefresh(OpenSearchClient& client, size_t changes) {
  std::set<std::string> indexes;
  for (const auto& view : views_) indexes.insert(view->config.index);
  if (!relaxed_loaded_) {
    // What an earlier run relaxed and did not restore (a crash, a stop mid-fill).
    relaxed_.clear();
    for (const std::string& index : indexes) {
      auto marker = client.Get(kCheckpointIndex, RelaxedId(index));
      if (!marker.ok()) return marker.error();
      if (!marker.value()) continue;
      const nlohmann::json& own =
          marker.value()->source.value("refresh_interval", nlohmann::json());
      relaxed_[index] =
          own.is_string() ? std::optional<std::string>(own.get<std::string>()) : std::nullopt;
    }
    relaxed_loaded_ = true;
  }
  auto marker_action = [&](const std::string& index,
                           const std::optional<std::optional<std::string>>& own) {
    std::string ndjson = std::string("{\"") + (own ? "index" : "delete") + "\":{\"_index\":\"" +
                         kCheckpointIndex + "\",\"_id\":";
    AppendJsonString(ndjson, RelaxedId(index));
    ndjson += "}}\n";
    if (own) {
      ndjson += "{\"index\":";
      AppendJsonString(ndjson, index);
      ndjson += ",\"refresh_interval\":";
      if (*own) {
        AppendJsonString(ndjson, **own);
      } else {
        ndjson += "null";
      }
      ndjson += "}\n";
    }
    return ndjson;
  };
  if (changes >= kRelaxAtChanges && !relax_refused_) {
    for (const std::string& index : indexes) {
      if (relaxed_.contains(index)) continue;
      auto own = client.RefreshInterval(index);
      if (own.ok() && own.value() == "-1") continue;  // refreshes off already
      Status status = own.ok() ? Status::Ok() : Status(own.error());
      if (status.ok()) {
        // Recorded first: a crash after the change finds it at the next start.
        std::string ndjson = marker_action(index, own.value());
        status = SendBulk(client, ndjson);
      }
      if (status.ok()) {
        auto set = client.SetRefreshInterval(index, std::string(kFillRefresh));
        if (set.ok()) {
          relaxed_[index] = own.value();
          continue;
        }
        status = set.error();
        if (status.error().kind() != ErrorKind::kTransient) {
          std::string ndjson = marker_action(index, std::nullopt);
          IgnoreError(SendBulk(client, ndjson), "a marker left behind restores the own setting");
        }
      }
      if (status.error().kind() == ErrorKind::kTransient) return status;
      relax_refused_ = true;  // not allowed (a user without the settings privilege): no more tries
      break;
    }
  } else if (changes < kRestoreBelow) {
    for (auto it = relaxed_.begin(); it != relaxed_.end();) {
      auto set = client.SetRefreshInterval(it->first, it->second);  // false: the index is gone
      if (!set.ok()) return set.error();
      std::string ndjson = marker_action(it->first, std::nullopt);
      Status status = SendBulk(client, ndjson);
      if (!status.ok()) return status;
      it = relaxed_.erase(it);
    }
  }
  return Status::Ok();
}

Status OpenSearchSink::BeginRebuild(Lsn) {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  Status status = client.value()->CreateIndex(
      kCheckpointIndex,
      {{"mappings", {{"dynamic", false}, {"properties", {{"lsn", {{"type", "keyword"}}}}}}}},
      /*if_missing=*/true);
  if (status.ok()) status = WriteCheckpoint(*client.value(), std::nullopt);
  if (!status.ok()) return status;
  // Every view from one snapshot: nothing newer than the stream (source_rows.h).
  std::string horizon =
      "{\"delete\":{\"_index\":\"" + std::string(kCheckpointIndex) + "\",\"_id\":";
  AppendJsonString(horizon, checkpoint_id_ + "/reread");
  horizon += "}}\n";
  status = SendBulk(*client.value(), horizon);
  if (!status.ok()) return status;
  source_.SetHorizon(Lsn{});
  horizon_loaded_ = true;
  rebuilt_ = true;
  for (auto& view : views_) {
    status = RecreateIndex(*client.value(), *view);
    if (!status.ok()) return status;
  }
  return Status::Ok();
}

Status OpenSearchSink::UndoRebuild() {
  std::lock_guard lock(mutex_);
  if (!rebuilt_) return Status::Ok();
  auto client = Client();
  if (!client.ok()) return client.error();
  for (auto& view : views_) {
    Status status = client.value()->DeleteIndex(view->config.index, /*if_exists=*/true);
    if (!status.ok()) return status;
    view->uuid.reset();
    view->uuid_known = false;
  }
  return Status::Ok();
}

Status OpenSearchSink::ApplySnapshotRows(const std::shared_ptr<const RelationSchema>& schema,
                                         std::span<const TupleData> rows,
                                         const TypeRegistry& types) {
  // Snapshot rows carry version 1: any change from the stream (commit LSN) is newer,
  // and the rebuild started from an empty index.
  std::string ndjson;
  for (auto& view : views_) {
    if (view->table != schema->QualifiedName()) continue;
    std::shared_ptr<const ViewShape> shape;
    {
      std::lock_guard lock(mutex_);
      if (!view->failed.empty()) continue;  // stopped on its own; the others are rebuilt
      auto made = view->shapes.For(schema);
      if (!made.ok()) return made.error();
      shape = made.value();
    }
    for (const TupleData& row : rows) {
      auto id = shape->DocumentId(row);
      if (!id.ok()) {
        std::lock_guard lock(mutex_);
        if (FailView(*view, id.error())) break;  // this view stops, not the store
        return id.error();
      }
      AppendAction(ndjson, "index", view->config.index, id.value(), Lsn{1});
      Status status = shape->AppendValue(ndjson, row, types, nullptr);
      if (!status.ok()) return status;
      ndjson += '\n';
    }
  }
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  return SendBulk(*client.value(), ndjson);
}

Status OpenSearchSink::EndRebuild(Lsn snapshot_lsn) {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  // Every view is live as of the snapshot (recorded before the checkpoint).
  std::string ndjson = RegistryAction();
  for (auto& view : views_) {
    view->backfilling = false;
    ndjson += StateAction(
        *view, ViewState{false, std::nullopt,
                         view->schema ? ColumnsOf(*view->schema) : std::vector<std::string>{},
                         view->schema ? view->schema->id.value : 0});
  }
  Status status = SendBulk(*client.value(), ndjson);
  if (!status.ok()) return status;
  return WriteCheckpoint(*client.value(), snapshot_lsn);
}

// The writes of one Apply, as _bulk actions (bulk_buffer.h), sent at the end or before a
// view's index is recreated; then the views' states, then the checkpoint.
class OpenSearchSink::Writer : public RowStore {
 public:
  Writer(OpenSearchSink& sink, OpenSearchClient& client) : sink_(sink), client_(client) {}

  // As this Apply wrote it, else as indexed (a realtime GET): any document this Apply
  // did not write has no action queued, so it is read as it is, without sending the
  // queue first.
  Result<std::optional<std::string>> Read(RowView& view, const std::string& key) override {
    const std::string& index = view.config.index;
    if (auto at = written_.find(WrittenKey(index, key)); at != written_.end()) return at->second;
    if (truncated_.contains(index)) return std::optional<std::string>();
    auto got = client_.Get(index, key);
    if (!got.ok()) return got.error();
    if (!got.value()) return std::optional<std::string>();
    return std::optional<std::string>(got.value()->source.dump());
  }
  // Versioned by the change's commit LSN (a backfill row: its chunk's watermark, newer
  // than every change before it, older than every change after it).
  Status Put(RowView& view, std::string key, std::string value, Lsn lsn) override {
    const std::string& index = view.config.index;
    std::string action;
    action.reserve(value.size() + 128);
    AppendAction(action, "index", index, key, lsn);
    action += value;
    action += '\n';
    bulk_.Add(index, key, std::move(action));
    written_[WrittenKey(index, key)] = std::move(value);
    return Status::Ok();
  }
  Status Delete(RowView& view, std::string key, Lsn lsn) override {
    const std::string& index = view.config.index;
    std::string action;
    AppendAction(action, "delete", index, key, lsn);
    bulk_.Add(index, key, std::move(action));
    written_[WrittenKey(index, key)] = std::nullopt;
    return Status::Ok();
  }
  Status Truncate(RowView& view) override {
    bulk_.Truncate(view.config.index);
    // Queued: every document not written after it is gone.
    Forget(view.config.index);
    truncated_.insert(view.config.index);
    return Status::Ok();
  }
  // Sent once every item of the data's _bulk succeeded (a _bulk is not all or nothing),
  // before the checkpoint.
  Status RecordState(RowView& row_view, const ViewControl& control) override {
    View& view = static_cast<View&>(row_view);  // every RowView here is a View
    if (control.clear) {
      Status status = Flush();
      if (status.ok()) status = sink_.RecreateIndex(client_, view);
      if (!status.ok()) return status;
      Forget(view.config.index);
    }
    states_[view.config.name] = sink_.StateAction(
        view, ViewState{control.backfilling, control.after, control.columns, control.table_oid});
    return Status::Ok();
  }
  // Recorded before the data read (a _bulk is not atomic).
  Status RaiseHorizon(Lsn horizon) override {
    horizon_ = horizon;
    return Status::Ok();
  }
  Status Finish(std::optional<Lsn> checkpoint) override {
    Status status = Flush();
    if (!status.ok()) return status;
    if (!states_.empty()) {
      std::string ndjson;
      for (const auto& [view, action] : states_) ndjson += action;
      status = sink_.SendBulk(client_, ndjson);
      if (!status.ok()) return status;
    }
    if (checkpoint) return sink_.WriteCheckpoint(client_, *checkpoint);
    return Status::Ok();
  }

 private:
  static std::string WrittenKey(const std::string& index, std::string_view id) {
    std::string key = index;
    key += '\0';
    key += id;
    return key;
  }
  // Forgets what this Apply wrote into `index` (emptied).
  void Forget(const std::string& index) {
    std::erase_if(written_, [&](const auto& entry) {
      return entry.first.size() > index.size() && entry.first[index.size()] == '\0' &&
             entry.first.compare(0, index.size(), index) == 0;
    });
  }
  Status Flush() {
    if (horizon_) {
      std::string horizon =
          "{\"index\":{\"_index\":\"" + std::string(kCheckpointIndex) + "\",\"_id\":";
      AppendJsonString(horizon, sink_.checkpoint_id_ + "/reread");
      horizon += "}}\n{\"lsn\":\"" + horizon_->ToString() + "\"}\n";
      horizon_.reset();
      Status status = sink_.SendBulk(client_, horizon);
      if (!status.ok()) return status;
    }
    for (BulkBuffer::Step& step : bulk_.Take()) {
      // Every request of the step answered before its truncate, and before what follows.
      Status status = sink_.SendChunks(client_, step.chunks);
      if (status.ok() && step.truncate) status = client_.DeleteAllDocuments(*step.truncate);
      if (!status.ok()) return status;
    }
    return Status::Ok();
  }

  OpenSearchSink& sink_;
  OpenSearchClient& client_;
  BulkBuffer bulk_{kBulkBytes};
  std::map<std::string, std::string> states_;  // view -> its last state's action
  // What this Apply wrote, per index and _id: the document's JSON, or nullopt when
  // deleted. An update that leaves a TOASTed value out takes it from here when the
  // document was written in this Apply.
  std::unordered_map<std::string, std::optional<std::string>> written_;
  std::set<std::string> truncated_;  // indexes a truncate queued in this Apply empties
  std::optional<Lsn> horizon_;       // raised by a read, not recorded yet
};

Status OpenSearchSink::Apply(const BatchGroup& group, Lsn checkpoint) {
  std::lock_guard lock(mutex_);
  auto connected = Client();
  if (!connected.ok()) return connected.error();
  OpenSearchClient& client = *connected.value();
  if (!horizon_loaded_) {
    auto document = client.Get(kCheckpointIndex, checkpoint_id_ + "/reread");
    if (!document.ok()) return document.error();
    source_.SetHorizon(document.value()
                           ? Lsn::Parse(document.value()->source.value("lsn", "")).value_or(Lsn{})
                           : Lsn{});
    horizon_loaded_ = true;
  }
  for (auto it = group.rbegin(); it != group.rend(); ++it) {
    if (!(*it)->types) continue;
    if ((*it)->types != merged_) {
      // A view recreated below (a rebuild on demand) is mapped with every type known.
      auto combined = std::make_shared<TypeRegistry>(*types_);
      combined->Merge(*(*it)->types);
      types_ = std::move(combined);
      merged_ = (*it)->types;
    }
    break;
  }
  size_t changes = 0;
  for (const auto& batch : group) changes += batch->changes.size();
  Status paced = PaceRefresh(client, changes);
  if (!paced.ok()) return paced;
  Writer writer(*this, client);
  return ApplyRows(group, checkpoint, name_, row_views_, EntryKey::kDocumentId, source_, writer);
}

Result<std::vector<ViewInspector::Entry>> OpenSearchSink::ReadView(const std::string& view_name) {
  std::lock_guard lock(mutex_);
  View* view = FindView(views_, view_name);
  if (view == nullptr) return Error::Permanent("no OpenSearch view named " + view_name);
  auto client = Client();
  if (!client.ok()) return client.error();
  Status status = client.value()->Refresh(view->config.index);
  if (!status.ok()) return status.error();
  return client.value()->ScanAll(view->config.index);
}

Result<std::optional<ViewInspector::Entry>> OpenSearchSink::Expected(
    const std::string& view_name, const std::shared_ptr<const RelationSchema>& schema,
    const TupleData& row, const TypeRegistry& types) {
  return ExpectedRowEntry(mutex_, views_, view_name, schema, row, types, EntryKey::kDocumentId);
}

}  // namespace pgderive
