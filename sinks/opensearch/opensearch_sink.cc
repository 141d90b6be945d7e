#include "sinks/opensearch/opensearch_sink.h"

#include <atomic>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "cdc/publication.h"
#include "cdc/sql_session.h"
#include "cdc/type_catalog.h"
#include "config/config_change.h"
#include "config/view_record.h"
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
// How long an index switched away from is kept: a request a reader sent it just before
// the alias moved is answered.
constexpr auto kRetain = std::chrono::seconds(10);

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

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
    sink->views_.push_back(
        std::make_unique<View>(RowView{view, view.from, ViewShapes(view), {}, false}));
    sink->views_.back()->record = ViewRecord(view);
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
  Status loaded = LoadGenerations(*client.value(), /*refuse=*/true);
  if (!loaded.ok()) return loaded;
  // The indexes as they are now: CheckStore compares against these.
  for (auto& view : views_) {
    if (view->uuid_known || !view->serving) continue;  // a reconnect, or nothing served yet
    auto uuid = client.value()->IndexUuid(Concrete(*view, *view->serving));
    if (!uuid.ok()) return uuid.error();
    if (!uuid.value()) continue;  // made by the rebuild or the view's first backfill
    view->uuid = uuid.value();
    view->uuid_known = true;
  }
  SyncVersionViews();
  return Status::Ok();
}

Result<std::vector<StoreChange>> OpenSearchSink::CheckStore() {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  std::vector<StoreChange> changes;
  for (auto& view : views_) {
    if (!view->serving) continue;  // nothing served yet
    const std::string index = Concrete(*view, *view->serving);
    auto uuid = client.value()->IndexUuid(index);
    if (!uuid.ok()) return uuid.error();
    if (uuid.value() && *view->serving != 0) {
      // The alias: put back when deleted; pointed elsewhere by someone else, said once.
      auto aliased = client.value()->AliasIndexes(view->config.index);
      if (!aliased.ok()) return aliased.error();
      if (aliased.value().empty()) {
        auto taken = client.value()->IndexExists(view->config.index);
        if (!taken.ok()) return taken.error();
        if (!taken.value()) {
          Status status = client.value()->UpdateAliases(nlohmann::json::array(
              {{{"add", {{"index", index}, {"alias", view->config.index}}}}}));
          if (!status.ok()) return status.error();
          notices_.push_back(SinkNotice::Warning("view " + view->config.name + ": alias " +
                                                 view->config.index +
                                                 " was deleted: put back onto index " + index));
        }
      } else if (aliased.value() != std::vector<std::string>{index}) {
        if (!view->alias_moved) {
          std::string names;
          for (const std::string& n : aliased.value()) names += (names.empty() ? "" : ", ") + n;
          notices_.push_back(SinkNotice::Warning(
              "view " + view->config.name + ": alias " + view->config.index + " points to " +
              names + ", not to pgderive's index " + index +
              " (moved or rolled over by someone else): readers of the alias "
              "may not see the view; pgderive keeps writing " +
              index + ", and its next rebuild of the view moves the alias back"));
        }
        view->alias_moved = true;
      } else {
        view->alias_moved = false;
      }
    }
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
         "index " + index +
             (uuid.value() ? " was replaced (UUID " + was + ", now " + *uuid.value() +
                                 "; an index made by a write has OpenSearch's dynamic mapping)"
                           : " (UUID " + was + ") was deleted")});
  }
  Status dropped = DropRetired(*client.value());
  SyncVersionViews();
  if (!dropped.ok()) return dropped.error();
  return changes;
}

std::string OpenSearchSink::StateAction(View& view, const ViewState& state) const {
  view.state = state;
  nlohmann::json generations = VersionsToJson(VersionsOf(view));
  generations["last"] = view.last;
  generations["retired"] = view.retired;
  std::string out = "{\"index\":{\"_index\":\"" + std::string(kCheckpointIndex) + "\",\"_id\":";
  AppendJsonString(out, StateId(view));
  out += "}}\n{\"view_state\":";
  AppendJsonString(out, WithDefinition(view, state).ToJson());
  out += ",\"generations\":" + generations.dump() + "}\n";
  return out;
}

bool OpenSearchSink::Own(const View& view, int n) {
  auto it = view.definitions.find(n);
  return it == view.definitions.end() || it->second == view.record;
}

Versions OpenSearchSink::VersionsOf(const View& view) {
  return Versions{view.serving, view.building, view.previous,
                  view.drop_at, view.held,     view.definitions};
}

void OpenSearchSink::SetVersions(View& view, const Versions& versions) {
  view.serving = versions.serving;
  view.building = versions.building;
  view.previous = versions.previous;
  view.drop_at = versions.drop_at;
  view.held = versions.held;
  view.definitions = versions.definitions;
}

std::vector<std::string> OpenSearchSink::Targets(const View& view) {
  if (view.version != 0) return {Concrete(view, view.version)};
  std::vector<std::string> out;
  // The generations of another definition are written by their version views.
  if (view.serving && Own(view, *view.serving)) out.push_back(Concrete(view, *view.serving));
  if (view.building && view.building != view.serving) out.push_back(Concrete(view, *view.building));
  if (view.previous && Own(view, *view.previous)) out.push_back(Concrete(view, *view.previous));
  if (out.empty()) out.push_back(view.config.index);  // not started: as before generations
  return out;
}

std::string OpenSearchSink::FillTarget(const View& view) {
  if (view.version != 0) return Concrete(view, view.version);
  if (view.building) return Concrete(view, *view.building);
  return view.serving ? Concrete(view, *view.serving) : view.config.index;
}

std::string OpenSearchSink::ReadTarget(const View& view) {
  if (view.version != 0) return Concrete(view, view.version);
  // The complete index of the view's own definition: the serving one, else the one
  // built for it (a version not promoted yet).
  if (view.serving && (Own(view, *view.serving) || !view.building)) {
    return Concrete(view, *view.serving);
  }
  return view.building ? Concrete(view, *view.building) : view.config.index;
}

void OpenSearchSink::SyncVersionViews() {
  std::vector<std::unique_ptr<View>> kept;
  for (const auto& view : views_) {
    for (const auto& [n, record] : OtherDefinitions(VersionsOf(*view), view->record)) {
      const std::string name = view->config.name + "@" + std::to_string(n);
      std::unique_ptr<View> made;
      for (auto& v : version_views_) {
        if (v && v->config.name == name && v->record == record) made = std::move(v);
      }
      if (!made) {
        std::optional<ViewConfig> config = ViewFromRecord(record);
        if (!config) continue;  // unreadable: the view's own definition writes it instead
        config->name = name;
        made =
            std::make_unique<View>(RowView{*config, config->from, ViewShapes(*config), {}, false});
        made->record = record;
        made->version = n;
        made->loaded = true;
      }
      kept.push_back(std::move(made));
    }
  }
  version_views_ = std::move(kept);
  row_views_.clear();
  for (const auto& view : views_) row_views_.push_back(view.get());
  for (const auto& view : version_views_) row_views_.push_back(view.get());
  std::vector<VersionInfo> shown;
  for (const auto& view : views_) {
    if (!view->loaded) continue;
    for (VersionInfo& info : Describe(VersionsOf(*view), view->config.name, view->backfilling,
                                      [&](int n) { return Concrete(*view, n); })) {
      shown.push_back(std::move(info));
    }
  }
  std::lock_guard lock(shown_mutex_);
  shown_ = std::move(shown);
}

Status OpenSearchSink::LoadGenerations(OpenSearchClient& client, bool refuse) {
  std::optional<bool> legacy_store;  // no views' states recorded, but a checkpoint
  for (auto& view : views_) {
    if (view->loaded) continue;
    const std::string& name = view->config.index;
    auto document = client.Get(kCheckpointIndex, StateId(*view));
    if (!document.ok()) return document.error();
    auto aliased = client.AliasIndexes(name);
    if (!aliased.ok()) return aliased.error();
    bool concrete = false;
    if (aliased.value().empty()) {
      auto exists = client.IndexExists(name);
      if (!exists.ok()) return exists.error();
      concrete = exists.value();
    }
    const nlohmann::json* generations = nullptr;
    if (document.value()) {
      auto at = document.value()->source.find("generations");
      if (at != document.value()->source.end() && at->is_object()) generations = &*at;
      view->state = ViewState::FromJson(document.value()->source.value("view_state", ""));
    }
    auto refused = [&](const std::string& what) -> Status {
      if (!refuse) return Status::Ok();
      return Error::Permanent(
          "view " + view->config.name + ": " + what + " in store " + name_ +
          " was not made by pipeline " + checkpoint_id_.substr(0, checkpoint_id_.rfind('.')) +
          " (" + kCheckpointIndex +
          " has no record of it): pgderive does not write into or replace an index it did "
          "not make; give the view another index: name, or remove " +
          name + " yourself");
    };
    if (generations != nullptr) {
      SetVersions(*view, VersionsFromJson(*generations));
      const auto last = generations->find("last");
      view->last = last != generations->end() && last->is_number_integer() ? last->get<int>() : 0;
      view->retired.clear();
      if (auto it = generations->find("retired"); it != generations->end() && it->is_array()) {
        for (const auto& n : *it) {
          if (n.is_number_integer()) view->retired.push_back(n.get<int>());
        }
      }
      if (concrete && view->serving != 0) {
        Status status = refused("index " + name + " (where pgderive's alias was)");
        if (!status.ok()) return status;
      }
      view->migrate = concrete && view->serving == 0 && !view->building;
      // A switch or rollback made, its record not (a crash in between): the alias says.
      std::optional<int> aliased_to;
      for (const std::optional<int>& n : {view->serving, view->building, view->previous}) {
        if (n && aliased.value() == std::vector<std::string>{Concrete(*view, *n)}) aliased_to = n;
      }
      std::vector<int> retired;
      SetVersions(*view, Recover(VersionsOf(*view), aliased_to, NowSeconds(),
                                 view->config.retain_previous.count(), retired));
      for (int n : retired) {
        if (n != 0) view->retired.push_back(n);
      }
      // The serving data's definition, recorded from now on: the file's, when the state
      // says it was filled with it (nothing being built).
      if (view->serving && !view->building && !view->definitions.contains(*view->serving) &&
          view->state &&
          (view->state->definition.empty() ||
           view->state->definition == ViewDefinitionFingerprint(view->config))) {
        view->definitions[*view->serving] = view->record;
      }
    } else if (!aliased.value().empty()) {
      std::string names;
      for (const std::string& n : aliased.value()) names += (names.empty() ? "" : ", ") + n;
      Status status = refused("alias " + name + " (of index " + names + ")");
      if (!status.ok()) return status;
    } else if (concrete) {
      bool ours = document.value().has_value();
      if (!ours) {
        if (!legacy_store) {
          auto registry = client.Get(kCheckpointIndex, checkpoint_id_ + "/views");
          if (!registry.ok()) return registry.error();
          auto checkpoint = client.Get(kCheckpointIndex, checkpoint_id_);
          if (!checkpoint.ok()) return checkpoint.error();
          legacy_store = !registry.value() && checkpoint.value();
        }
        ours = *legacy_store;
      }
      if (!ours) {
        Status status = refused("index " + name);
        if (!status.ok()) return status;
      } else {
        // Made by a pgderive before aliases: it serves until `run` migrates it.
        view->serving = 0;
        view->migrate = document.value().has_value();
      }
    }
    view->loaded = true;
  }
  return Status::Ok();
}

Status OpenSearchSink::Migrate() {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  for (auto& view : views_) {
    if (!view->migrate) continue;
    if (!view->building) {
      notices_.push_back("view " + view->config.name + ": index " + view->config.index +
                         " was made by a pgderive without aliases: migrating it once - filling " +
                         Concrete(*view, view->last + 1) + " while " + view->config.index +
                         " keeps serving and streaming, then one _aliases call deletes " +
                         view->config.index + " and makes it an alias of the new index");
    }
    ViewState state = view->state.value_or(ViewState{});
    state.backfilling = true;
    state.after.reset();
    Status status = StartGeneration(*client.value(), *view, state);
    if (!status.ok()) return status;
    std::string ndjson = StateAction(*view, state);
    status = SendBulk(*client.value(), ndjson);
    if (!status.ok()) return status;
    view->backfilling = true;
    view->migrate = false;
  }
  Status status = DropRetired(*client.value());
  SyncVersionViews();
  return status;
}

Status OpenSearchSink::StartGeneration(OpenSearchClient& client, View& view,
                                       const ViewState& state) {
  // A served index that is gone (a store that lost it) has nothing left to keep serving.
  if (view.serving) {
    auto exists = client.IndexExists(Concrete(view, *view.serving));
    if (!exists.ok()) return exists.error();
    if (!exists.value()) view.serving.reset();
  }
  if (view.building) {
    // Ours by record: emptied (made again) for the fill that starts over, with the
    // file's definition (a version ready or held is replaced by the newest one). The
    // fill from the start is recorded first: a crash after the delete must not resume
    // the old fill's position into the emptied index.
    view.definitions[*view.building] = view.record;
    view.held = false;
    std::string ndjson = StateAction(view, state);
    Status status = SendBulk(client, ndjson);
    if (status.ok())
      status = client.DeleteIndex(Concrete(view, *view.building), /*if_exists=*/true);
    if (!status.ok()) return status;
  } else {
    int n = view.last + 1;
    for (;; ++n) {  // a name someone else took is skipped, never reused
      auto taken = client.IndexExists(Concrete(view, n));
      if (!taken.ok()) return taken.error();
      if (!taken.value()) break;
    }
    view.building = n;
    view.last = n;
    view.definitions[n] = view.record;
    view.held = false;
    // Recorded before it is made: a crash in between leaves a record, not an index
    // nobody knows of.
    std::string ndjson = StateAction(view, state);
    Status status = SendBulk(client, ndjson);
    if (!status.ok()) return status;
  }
  nlohmann::json body = nlohmann::json::object();
  if (view.schema) {
    auto shape = view.shapes.For(view.schema);
    if (!shape.ok()) return shape.error();
    body = Mapping(*view.schema, shape.value()->columns(), *types_);
  }
  const std::string index = Concrete(view, *view.building);
  Status status = client.CreateIndex(index, body, /*if_missing=*/false);
  if (!status.ok()) return status;
  if (!view.serving) return SwitchGeneration(client, view);  // nothing served: at once
  return Status::Ok();
}

Status OpenSearchSink::MoveAlias(OpenSearchClient& client, View& view, int to) {
  const std::string index = Concrete(view, to);
  const std::string& alias = view.config.index;
  auto aliased = client.AliasIndexes(alias);
  if (!aliased.ok()) return aliased.error();
  nlohmann::json actions = nlohmann::json::array();
  for (const std::string& from : aliased.value()) {
    if (from != index) actions.push_back({{"remove", {{"index", from}, {"alias", alias}}}});
  }
  if (view.serving == 0 && aliased.value().empty()) {
    // The index of the alias's own name (a pgderive before aliases): deleted in the same
    // call, so that readers of the name never find nothing.
    auto exists = client.IndexExists(alias);
    if (!exists.ok()) return exists.error();
    if (exists.value()) actions.push_back({{"remove_index", {{"index", alias}}}});
  }
  actions.push_back({{"add", {{"index", index}, {"alias", alias}}}});
  // Searchable whole before readers are sent to it (a fill refreshes every 30 s).
  Status status = client.Refresh(index);
  if (status.ok()) status = client.UpdateAliases(actions);
  if (!status.ok()) return status;
  view.alias_moved = false;
  view.switched_at = std::chrono::steady_clock::now();
  auto uuid = client.IndexUuid(index);
  if (!uuid.ok()) return uuid.error();
  view.uuid = uuid.value();
  view.uuid_known = true;
  view.change_reported = false;
  return Status::Ok();
}

Status OpenSearchSink::SwitchGeneration(OpenSearchClient& client, View& view) {
  if (!view.building) return Status::Ok();
  const std::string index = Concrete(view, *view.building);
  Status status = MoveAlias(client, view, *view.building);
  if (!status.ok()) return status;
  const std::string was = view.serving ? Concrete(view, *view.serving) : std::string();
  std::vector<int> retired;
  SetVersions(view, AfterPromote(VersionsOf(view), NowSeconds(),
                                 view.config.retain_previous.count(), retired));
  for (int n : retired) {
    if (n != 0) view.retired.push_back(n);
  }
  std::string said =
      "view " + view.config.name + ": alias " + view.config.index + " now on index " + index;
  if (!was.empty()) {
    if (view.previous) {
      said += " (was " + was +
              ", the previous version: retained for `pgderive rollback -c FILE --view " +
              view.config.name + "` until " + UnixTimeText(view.drop_at) +
              ", maintained meanwhile)";
    } else {
      said +=
          " (was " + was + (view.retired.empty() ? ", deleted with it" : ", deleted in 10 s") + ")";
    }
  }
  notices_.push_back(said);
  return Status::Ok();
}

Status OpenSearchSink::DropRetired(OpenSearchClient& client, bool now) {
  for (auto& view : views_) {
    bool changed = false;
    if (!view->retired.empty() &&
        (now || std::chrono::steady_clock::now() - view->switched_at >= kRetain)) {
      for (int n : view->retired) {
        if (n == view->serving || n == view->building || n == view->previous) continue;
        Status status = client.DeleteIndex(Concrete(*view, n), /*if_exists=*/true);
        if (!status.ok()) return status;
        view->definitions.erase(n);
      }
      view->retired.clear();
      changed = true;
    }
    // The retained version, its time up: deleted, then its record (a crash in between
    // deletes it again).
    if (view->previous && (now || PreviousDue(VersionsOf(*view), NowSeconds()))) {
      const int n = *view->previous;
      Status status = client.DeleteIndex(Concrete(*view, n), /*if_exists=*/true);
      if (!status.ok()) return status;
      notices_.push_back("view " + view->config.name + ": the previous version (index " +
                         Concrete(*view, n) + ") was dropped (retain_previous passed)");
      view->previous.reset();
      view->drop_at = 0;
      view->definitions.erase(n);
      changed = true;
    }
    if (changed && view->state) {
      std::string ndjson = StateAction(*view, *view->state);
      Status status = SendBulk(client, ndjson);
      if (!status.ok()) return status;
    }
  }
  return Status::Ok();
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
    view->first_fill = state->first_fill;
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

Result<std::vector<std::string>> OpenSearchSink::MarkRemovedViews() {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  std::vector<std::string> marked;
  auto exists = client.value()->IndexExists(kCheckpointIndex);
  if (!exists.ok()) return exists.error();
  if (!exists.value()) return marked;
  // A search sees what was refreshed: a state written a moment ago (by the
  // configuration before a reload) is found too.
  Status status = client.value()->Refresh(kCheckpointIndex);
  if (!status.ok()) return status.error();
  auto documents = client.value()->ScanAll(kCheckpointIndex);
  if (!documents.ok()) return documents.error();
  const std::string prefix = checkpoint_id_ + "/view/";
  std::string ndjson;
  for (const auto& [id, unused] : documents.value()) {
    if (!id.starts_with(prefix)) continue;
    const std::string name = id.substr(prefix.size());
    if (FindView(views_, name) != nullptr) continue;
    auto document = client.value()->Get(kCheckpointIndex, id);  // the latest, not the searched
    if (!document.ok()) return document.error();
    if (!document.value()) continue;
    nlohmann::json source = document.value()->source;
    auto state = ViewState::FromJson(source.value("view_state", ""));
    if (!state || state->removed) continue;
    state->removed = true;
    source["view_state"] = state->ToJson();
    ndjson += "{\"index\":{\"_index\":\"" + std::string(kCheckpointIndex) + "\",\"_id\":";
    AppendJsonString(ndjson, id);
    ndjson += "}}\n" + source.dump() + "\n";
    marked.push_back(name);
  }
  status = SendBulk(*client.value(), ndjson);
  if (!status.ok()) return status.error();
  return marked;
}

Status OpenSearchSink::WriteViewState(const std::string& view_name, const ViewState& state,
                                      bool clear) {
  std::lock_guard lock(mutex_);
  View* view = FindView(views_, view_name);
  if (view == nullptr) return Error::Permanent("no OpenSearch view named " + view_name);
  auto client = Client();
  if (!client.ok()) return client.error();
  // `clear` or not, a fill from the start is a rebuild into a new generation: what
  // readers see stays until it is complete.
  (void)clear;
  view->first_fill = state.first_fill;
  Status status = Status::Ok();
  if (state.backfilling && !state.after) {
    if (!view->fresh) status = StartGeneration(*client.value(), *view, state);
  } else if (!state.backfilling && view->building &&
             SwitchesOnReady(VersionsOf(*view), view->config.promote_manual)) {
    status = SwitchGeneration(*client.value(), *view);
  }
  view->fresh = false;
  if (!status.ok()) return status;
  std::string ndjson = StateAction(*view, state) + RegistryAction();
  status = SendBulk(*client.value(), ndjson);
  if (!status.ok()) return status;
  view->backfilling = state.backfilling;
  status = DropRetired(*client.value());
  SyncVersionViews();
  return status;
}

Result<std::vector<std::string>> OpenSearchSink::Teardown(bool views) {
  std::lock_guard lock(mutex_);
  auto client = Client();
  if (!client.ok()) return client.error();
  // What the pipeline made, read before its record goes.
  Status loaded = LoadGenerations(*client.value(), /*refuse=*/false);
  if (!loaded.ok()) return loaded.error();
  std::vector<std::string> removed;
  std::vector<std::string> ids{checkpoint_id_, checkpoint_id_ + "/views",
                               checkpoint_id_ + "/reread"};
  for (const auto& view : views_) {
    ids.push_back(StateId(*view));
    std::set<int> made(view->retired.begin(), view->retired.end());
    if (view->serving) made.insert(*view->serving);
    if (view->building) made.insert(*view->building);
    if (view->previous) made.insert(*view->previous);
    for (int n : made) {
      const std::string index = Concrete(*view, n);
      ids.push_back(RelaxedId(index));
      if (!views) continue;
      if (n == 0) {  // the index of the view's own name: only while it is no alias
        auto aliased = client.value()->AliasIndexes(index);
        if (!aliased.ok()) return aliased.error();
        if (!aliased.value().empty()) continue;
      }
      auto exists = client.value()->IndexExists(index);
      if (!exists.ok()) return exists.error();
      if (!exists.value()) continue;
      Status status = client.value()->DeleteIndex(index, /*if_exists=*/true);
      if (!status.ok()) return status.error();
      removed.push_back("index " + index + " (view " + view->config.name +
                        (n == 0 ? ")" : ", with its alias " + view->config.index + ")"));
    }
    if (views) {
      view->serving.reset();
      view->building.reset();
      view->previous.reset();
      view->definitions.clear();
      view->retired.clear();
    }
  }
  for (const std::string& id : ids) {
    auto deleted = client.value()->DeleteDocument(kCheckpointIndex, id);
    if (!deleted.ok()) return deleted.error();
    if (deleted.value()) removed.push_back("document " + std::string(kCheckpointIndex) + "/" + id);
  }
  horizon_loaded_ = false;
  // The checkpoints' index stays: other pipelines share it, and deleting it when it
  // looks empty could lose the first document of one that starts at that moment.
  return removed;
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
    auto exists = client.value()->IndexExists(ReadTarget(*view));
    if (!exists.ok()) return exists.error();
    if (!exists.value()) {  // the index is gone: data lost
      missing_reason_ =
          "index " + ReadTarget(*view) + " of view " + view->config.name + " is missing";
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
  for (const auto& view : views_) {
    for (const std::string& index : Targets(*view)) indexes.insert(index);
  }
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
  // Each view into a new generation; what is served stays until EndRebuild.
  for (auto& view : views_) {
    const bool served = view->serving.has_value();
    status = StartGeneration(
        *client.value(), *view,
        ViewState{true, std::nullopt,
                  view->schema ? ColumnsOf(*view->schema) : std::vector<std::string>{},
                  view->schema ? view->schema->id.value : 0});
    if (!status.ok()) return status;
    view->fresh = !served && !view->building;
    rebuilt_.push_back(Concrete(*view, view->building ? *view->building : *view->serving));
  }
  return Status::Ok();
}

Status OpenSearchSink::UndoRebuild() {
  std::lock_guard lock(mutex_);
  if (rebuilt_.empty()) return Status::Ok();
  auto client = Client();
  if (!client.ok()) return client.error();
  for (const std::string& index : rebuilt_) {
    Status status = client.value()->DeleteIndex(index, /*if_exists=*/true);
    if (!status.ok()) return status;
  }
  rebuilt_.clear();
  for (auto& view : views_) {
    view->uuid.reset();
    view->uuid_known = false;
    view->loaded = false;  // read again from the store
    view->serving.reset();
    view->building.reset();
  }
  return LoadGenerations(*client.value(), /*refuse=*/false);
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
      AppendAction(ndjson, "index", FillTarget(*view), id.value(), Lsn{1});
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
  for (auto& view : views_) {
    view->fresh = false;  // filled by the snapshot
    Status status = SwitchGeneration(*client.value(), *view);
    if (!status.ok()) return status;
  }
  rebuilt_.clear();
  std::string ndjson = RegistryAction();
  for (auto& view : views_) {
    view->backfilling = false;
    ndjson += StateAction(
        *view, ViewState{false, std::nullopt,
                         view->schema ? ColumnsOf(*view->schema) : std::vector<std::string>{},
                         view->schema ? view->schema->id.value : 0});
  }
  Status status = SendBulk(*client.value(), ndjson);
  if (status.ok()) status = WriteCheckpoint(*client.value(), snapshot_lsn);
  if (!status.ok()) return status;
  return DropRetired(*client.value());
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
    const std::string index = ReadTarget(static_cast<View&>(view));
    if (auto at = written_.find(WrittenKey(index, key)); at != written_.end()) return at->second;
    if (truncated_.contains(index)) return std::optional<std::string>();
    auto got = client_.Get(index, key);
    if (!got.ok()) return got.error();
    if (!got.value()) return std::optional<std::string>();
    return std::optional<std::string>(got.value()->source.dump());
  }
  // Versioned by the change's commit LSN (a backfill row: its chunk's watermark, newer
  // than every change before it, older than every change after it).
  // Into every index the stream writes (the served one and the one being built).
  Status Put(RowView& view, std::string key, std::string value, Lsn lsn) override {
    for (const std::string& index : Targets(static_cast<View&>(view)))
      PutInto(index, key, value, lsn);
    written_[WrittenKey(ReadTarget(static_cast<View&>(view)), key)] = std::move(value);
    return Status::Ok();
  }
  // Into the index being built alone: the served one is complete already.
  Status PutBackfill(RowView& view, std::string key, std::string value, Lsn lsn) override {
    const View& v = static_cast<View&>(view);
    const std::string index = FillTarget(v);
    PutInto(index, key, value, lsn);
    if (index == ReadTarget(v)) written_[WrittenKey(index, key)] = std::move(value);
    return Status::Ok();
  }
  Status Delete(RowView& view, std::string key, Lsn lsn) override {
    for (const std::string& index : Targets(static_cast<View&>(view))) {
      std::string action;
      AppendAction(action, "delete", index, key, lsn);
      bulk_.Add(index, key, std::move(action));
    }
    written_[WrittenKey(ReadTarget(static_cast<View&>(view)), key)] = std::nullopt;
    return Status::Ok();
  }
  Status Truncate(RowView& view) override {
    for (const std::string& index : Targets(static_cast<View&>(view))) {
      bulk_.Truncate(index);
      // Queued: every document not written after it is gone.
      Forget(index);
      truncated_.insert(index);
    }
    return Status::Ok();
  }
  // Sent once every item of the data's _bulk succeeded (a _bulk is not all or nothing),
  // before the checkpoint.
  Status RecordState(RowView& row_view, const ViewControl& control) override {
    View& view = static_cast<View&>(row_view);  // every RowView here is a View
    const ViewState state{control.backfilling, control.after, control.columns, control.table_oid};
    // A fill from the start (`clear` or not: a rebuild, a reshape) goes into a new
    // generation; the state back to live moves the alias onto it. Both after every
    // write queued before them.
    const bool starts = control.backfilling && !control.after;
    const bool ready = !control.backfilling && view.building;
    if (ready && !starts && !SwitchesOnReady(VersionsOf(view), view.config.promote_manual)) {
      // Complete and caught up; it waits for `pgderive promote` (or was rolled back from).
      sink_.notices_.push_back(
          "view " + view.config.name + ": version " + std::to_string(*view.building) + " (index " +
          Concrete(view, *view.building) + ") is ready; `pgderive promote -c FILE --view " +
          view.config.name + "` switches readers to it");
    } else if (starts || ready) {
      Status status = Flush();
      if (status.ok()) {
        status = starts ? sink_.StartGeneration(client_, view, state)
                        : sink_.SwitchGeneration(client_, view);
      }
      if (!status.ok()) return status;
      for (int n : {view.serving.value_or(-1), view.building.value_or(-1)}) {
        if (n >= 0) {
          Forget(Concrete(view, n));
          truncated_.erase(Concrete(view, n));
        }
      }
    }
    states_[view.config.name] = sink_.StateAction(view, state);
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
    if (checkpoint) status = sink_.WriteCheckpoint(client_, *checkpoint);
    if (!status.ok()) return status;
    // The generations switched away from, once the switch is recorded.
    return sink_.DropRetired(client_);
  }

 private:
  static std::string WrittenKey(const std::string& index, std::string_view id) {
    std::string key = index;
    key += '\0';
    key += id;
    return key;
  }
  void PutInto(const std::string& index, const std::string& key, const std::string& value,
               Lsn lsn) {
    std::string action;
    action.reserve(value.size() + 128);
    AppendAction(action, "index", index, key, lsn);
    action += value;
    action += '\n';
    bulk_.Add(index, key, std::move(action));
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
  Status status =
      ApplyRows(group, checkpoint, name_, row_views_, EntryKey::kDocumentId, source_, writer);
  SyncVersionViews();  // after ApplyRows, which walks row_views_
  return status;
}

// What readers of the alias get, unless a version of the file's definition waits to be
// promoted: then that one (the file is what verify checks against).
std::string OpenSearchSink::VerifyIndex(const View& view) const {
  return view.serving && !Own(view, *view.serving) && view.building ? ReadTarget(view)
                                                                    : view.config.index;
}

Result<std::vector<ViewInspector::Entry>> OpenSearchSink::ReadView(const std::string& view_name) {
  std::lock_guard lock(mutex_);
  View* view = FindView(views_, view_name);
  if (view == nullptr) return Error::Permanent("no OpenSearch view named " + view_name);
  auto client = Client();
  if (!client.ok()) return client.error();
  const std::string index = VerifyIndex(*view);
  Status status = client.value()->Refresh(index);
  if (!status.ok()) return status.error();
  return client.value()->ScanAll(index);
}

Result<std::vector<ViewInspector::Entry>> OpenSearchSink::ReadEntries(
    const std::string& view_name, const std::vector<std::string>& keys) {
  std::lock_guard lock(mutex_);
  View* view = FindView(views_, view_name);
  if (view == nullptr) return Error::Permanent("no OpenSearch view named " + view_name);
  auto client = Client();
  if (!client.ok()) return client.error();
  const std::string index = VerifyIndex(*view);
  // _mget is real time: it reads what was indexed, searchable or not (no refresh).
  return client.value()->MultiGet(index, keys);
}

Result<std::optional<ViewInspector::KeyPage>> OpenSearchSink::ScanKeys(const std::string& view_name,
                                                                       const std::string& cursor,
                                                                       size_t count) {
  std::lock_guard lock(mutex_);
  View* view = FindView(views_, view_name);
  if (view == nullptr) return Error::Permanent("no OpenSearch view named " + view_name);
  auto client = Client();
  if (!client.ok()) return client.error();
  auto page = client.value()->ScrollIds(VerifyIndex(*view), cursor, count);
  if (!page.ok()) return page.error();
  return std::optional<KeyPage>(KeyPage{std::move(page.value().ids), page.value().scroll});
}

Result<std::vector<std::vector<std::string>>> OpenSearchSink::RowKeys(const std::string&,
                                                                      const RelationSchema& schema,
                                                                      const std::string& key) {
  // The _id a row makes (ViewShape::DocumentId): its one key value, or a JSON array of
  // the key values as strings.
  size_t columns = 0;
  for (const ColumnSchema& column : schema.columns) columns += column.key ? 1 : 0;
  std::vector<std::vector<std::string>> out;
  if (columns == 1) {
    out.push_back({key});
  } else if (columns > 1) {
    const nlohmann::json values = nlohmann::json::parse(key, nullptr, false);
    if (!values.is_array() || values.size() != columns) return out;
    std::vector<std::string> row;
    for (const auto& value : values) {
      if (!value.is_string()) return out;
      row.push_back(value.get<std::string>());
    }
    out.push_back(std::move(row));
  }
  return out;
}

Result<std::optional<ViewInspector::Entry>> OpenSearchSink::Expected(
    const std::string& view_name, const std::shared_ptr<const RelationSchema>& schema,
    const TupleData& row, const TypeRegistry& types) {
  return ExpectedRowEntry(mutex_, views_, view_name, schema, row, types, EntryKey::kDocumentId);
}

std::vector<VersionInfo> OpenSearchSink::ViewVersions() {
  std::lock_guard lock(shown_mutex_);
  return shown_;
}

Result<std::string> OpenSearchSink::SwitchVersion(const std::string& view_name, VersionSwitch what,
                                                  double percent) {
  std::lock_guard lock(mutex_);
  View* view = FindView(views_, view_name);
  if (view == nullptr) return Error::Permanent("store " + name_ + " has no view " + view_name);
  const Versions versions = VersionsOf(*view);
  std::optional<std::string> refusal =
      what == VersionSwitch::kPromote
          ? PromoteRefusal(versions, view_name, view->backfilling, percent)
          : RollbackRefusal(versions, view_name);
  if (refusal) return Error::Permanent(*refusal);
  auto client = Client();
  if (!client.ok()) return client.error();
  std::string said;
  if (what == VersionSwitch::kPromote) {
    Status status = SwitchGeneration(*client.value(), *view);
    if (!status.ok()) return status.error();
    said = "view " + view_name + ": version " + std::to_string(*view->serving) + " (index " +
           Concrete(*view, *view->serving) + ") serves";
    if (view->previous) {
      said += "; version " + std::to_string(*view->previous) + " is retained until " +
              UnixTimeText(view->drop_at) + " (`pgderive rollback -c FILE --view " + view_name +
              "` switches back)";
    }
  } else {
    const int to = *view->previous;
    Status status = MoveAlias(*client.value(), *view, to);
    if (!status.ok()) return status.error();
    SetVersions(*view, AfterRollback(versions));
    said = "view " + view_name + ": rolled back - version " + std::to_string(to) + " (index " +
           Concrete(*view, to) + ") serves again; version " + std::to_string(*view->building) +
           " stays ready and maintained (`pgderive promote -c FILE --view " + view_name +
           "` switches to it again)";
    notices_.push_back(said);
  }
  ViewState state = view->state.value_or(ViewState{});
  std::string ndjson = StateAction(*view, state);
  Status status = SendBulk(*client.value(), ndjson);
  SyncVersionViews();
  if (!status.ok()) return status.error();
  return said;
}

}  // namespace pgderive
