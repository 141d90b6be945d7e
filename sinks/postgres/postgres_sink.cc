#include "sinks/postgres/postgres_sink.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "base/names.h"
#include "base/number.h"
#include "base/table_name.h"
#include "migrations/migrations.h"
#include "sinks/common/source_rows.h"
#include "sinks/common/view_list.h"
#include "sinks/postgres/query_plan.h"
#include "sinks/postgres/query_rewrite.h"

namespace pgderive {

Result<std::unique_ptr<PostgresSink>> PostgresSink::Make(const Config& config,
                                                         const StoreConfig& store) {
  std::unique_ptr<PostgresSink> sink(
      new PostgresSink(store.name, store.dsn, config.pipeline, config.source.dsn));
  for (const ViewConfig& view : config.views) {
    if (view.store != store.name) continue;
    auto v = std::make_unique<View>();
    v->config = view;
    v->target = QuoteTable(view.table);
    v->index = sink->views_.size();
    sink->views_.push_back(std::move(v));
  }
  return sink;
}

std::vector<std::string> PostgresSink::views() const { return ViewNames(views_); }

std::string PostgresSink::KeyList(const View& view, const std::string& prefix) const {
  return QuotedList(view.config.key_columns, prefix);
}

// What each view's query reads and whether it can be maintained (query_plan.h), then
// the mirrors of the tables it reads (mirror.h).
Status PostgresSink::Resolve(SqlSession& source, bool checked) {
  // Again before a rebuild (a source table was replaced): the mirrors take the tables as
  // they are now.
  mirrors_.clear();
  for (auto& view : views_) {
    const std::string where = "view " + view->config.name + ": ";
    auto in_view = [&](const Error& e) { return Error(e.kind(), where + e.message()); };
    const std::string& query = view->config.query;
    if (auto why = UnsupportedConstruct(query)) {
      return Error::Permanent(where + "the query uses " + *why +
                              ", which pgderive cannot maintain incrementally");
    }
    auto changing = ChangingFunctions(source, query);
    if (!changing.ok()) return in_view(changing.error());
    if (changing.value()) {
      return Error::Permanent(where + "the query calls " + *changing.value() +
                              ", whose result changes without a change of the source; a "
                              "view must be a function of the rows alone");
    }
    auto plan = ExplainQuery(source, query);
    if (!plan.ok()) return in_view(plan.error());
    if (plan.value().relations.empty()) {
      return Error::Permanent(where + "the query reads no table");
    }
    auto tables = SourceTablesOf(source, query, plan.value().relations);
    if (!tables.ok()) return in_view(tables.error());
    // (Unchanged on a second call: the monitor's thread reads it meanwhile.)
    if (view->tables != tables.value()) view->tables = std::move(tables).value();
    // PostgreSQL (before 18) does not publish generated columns: a query that reads one
    // could not be maintained from the stream.
    Status generated = CheckGeneratedColumns(source, plan.value());
    if (!generated.ok()) return in_view(generated.error());
    // The output columns and the key's types.
    auto columns = OutputColumns(source, query);
    if (!columns.ok()) return columns.error();
    for (const std::string& key : view->config.key_columns) {
      if (std::find(columns.value().begin(), columns.value().end(), key) == columns.value().end()) {
        return Error::Permanent(where + "key column " + key + " is not a column of the query " +
                                ValidNames(key, columns.value(), "its columns"));
      }
    }
    for (const std::string& table : view->tables) {
      if (mirrors_.contains(table)) continue;
      auto mirror = ReadMirror(source, table, pipeline_, std::to_string(mirrors_.size()), where);
      if (!mirror.ok()) return mirror.error();
      mirrors_[table] = std::move(mirror).value();
    }
    view->key_source.clear();
    if (view->tables.size() == 1) {
      const Mirror& m = mirrors_.at(view->tables.front());
      std::vector<std::string> source_key;
      for (size_t k : m.key) source_key.push_back(m.columns[k]);
      auto key_source = KeyPassThroughOf(source, query, view->config.key_columns,
                                         view->tables.front(), source_key);
      if (!key_source.ok()) return in_view(key_source.error());
      view->key_source = std::move(key_source).value();
    }
    // A key passed through from the table's key is unique already; any other is checked
    // (once: not again when validate's checks have just made it).
    if (view->key_source.empty() && !checked) {
      auto repeats = KeyRepeats(source, query, view->config.key_columns);
      if (!repeats.ok()) return in_view(repeats.error());
      if (repeats.value()) {
        return Error::Permanent(where + "key (" + KeyList(*view) +
                                ") is not unique in the query's result");
      }
    }
  }
  // Index the columns the queries join, filter or group on, beyond the key: the
  // affected-key queries look rows up by them.
  for (auto& [table, mirror] : mirrors_) {
    for (const auto& view : views_) {
      for (const std::string& column : LookupColumns(view->config.query, mirror.columns)) {
        if (mirror.key.empty() || column != mirror.columns[mirror.key.front()]) {
          mirror.indexed.insert(column);
        }
      }
    }
  }
  return Status::Ok();
}

Status PostgresSink::Check(const std::shared_ptr<const RelationSchema>&) { return Status::Ok(); }

// The sink's own session on the target database. A broken one is replaced, never
// reconnected in place: its temporary tables went with it.
Result<SqlSession*> PostgresSink::Connection() {
  if (!session_ || !session_->is_open()) {
    session_.reset();
    temp_ready_ = false;
    auto connected = SqlSession::Connect(dsn_, "pgderive-sink");
    if (!connected.ok()) return connected.error();
    session_.emplace(std::move(connected).value());
  }
  return &*session_;
}

Status PostgresSink::Connect() {
  std::lock_guard lock(mutex_);
  session_.reset();
  horizon_loaded_ = false;
  auto c = Connection();
  if (!c.ok()) return c.error();
  if (table_oids_) return Status::Ok();  // a reconnect: CheckStore judges what changed
  auto oids = ReadTableOids(*c.value());
  if (!oids.ok()) return oids.error();
  table_oids_ = std::move(oids).value();
  return Status::Ok();
}

Result<std::map<std::string, uint32_t>> PostgresSink::ReadTableOids(SqlRunner& c) {
  std::vector<std::string> names;
  for (const auto& view : views_) names.push_back(view->target);
  for (const auto& [table, mirror] : mirrors_) names.push_back(mirror.name);
  std::string sql = "select ";
  SqlParams params;
  for (size_t i = 0; i < names.size(); ++i) {
    sql += (i == 0 ? "" : ", ") + std::string("coalesce(to_regclass($") + std::to_string(i + 1) +
           ")::oid, 0)::text";
    params.push_back(names[i]);
  }
  std::map<std::string, uint32_t> out;
  if (names.empty()) return out;
  auto rows = c.Query(sql, params);
  if (!rows.ok()) return rows.error();
  for (size_t i = 0; i < names.size(); ++i) {
    auto oid = ParseServerNumber<uint32_t>(rows.value().rows[0][i]);
    if (!oid.ok()) return oid.error();
    out[names[i]] = oid.value();
  }
  return out;
}

Result<std::vector<StoreChange>> PostgresSink::CheckStore() {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  // Between batches: a new version built, a retained one dropped when due.
  if (filling_) {
    Status steps = VersionSteps(*connected.value());
    if (!steps.ok()) return steps.error();
  }
  auto now = ReadTableOids(*connected.value());
  if (!now.ok()) return now.error();
  std::vector<StoreChange> changes;
  if (!table_oids_) {
    table_oids_ = std::move(now).value();
    return changes;
  }
  for (const auto& [name, oid] : now.value()) {
    auto was = table_oids_->find(name);
    if (was == table_oids_->end() || was->second == oid) continue;
    if (!reported_tables_.insert(name).second) continue;
    std::string view;  // empty for a mirror: every view reads the mirrors
    for (const auto& v : views_) {
      if (v->target == name) view = v->config.name;
    }
    changes.push_back(
        {view, std::string(view.empty() ? "mirror table " : "target table ") + name +
                   (oid == 0 ? " (OID " + std::to_string(was->second) + ") was dropped"
                             : " was replaced (OID " + std::to_string(was->second) + ", now " +
                                   std::to_string(oid) + ")")});
  }
  return changes;
}

// pgderive's own metadata in the target database: migrations/, applied once each.
Status PostgresSink::EnsureMetadata(SqlSession& c) { return ApplyMigrations(c); }

Status PostgresSink::Migrate() {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  SqlSession& c = *connected.value();
  Status status = EnsureMetadata(c);
  // A target table made by an older pgderive has a primary key on the view's key, which
  // refuses a NULL group: it becomes the unique index a new one gets. (A DO block takes
  // no parameters: its values are quoted into it.)
  for (const auto& view : views_) {
    if (!status.ok()) break;
    std::string drop_not_null;
    for (const std::string& k : view->config.key_columns) {
      drop_not_null += ", alter column " + QuoteIdent(k) + " drop not null";
    }
    status = c.Execute(
        "do $pgd$ declare pk text; begin select conname into pk from pg_constraint where "
        "conrelid = to_regclass(" +
        c.QuoteLiteral(view->target) +
        ") and contype = 'p'; if pk is not null and exists (select from pgderive.views where "
        "pipeline = " +
        c.QuoteLiteral(pipeline_) + " and store = " + c.QuoteLiteral(name_) +
        " and view = " + c.QuoteLiteral(view->config.name) + ") then execute " +
        c.QuoteLiteral("alter table " + view->target + " drop constraint ") +
        " || quote_ident(pk) || " + c.QuoteLiteral(drop_not_null) + "; execute " +
        c.QuoteLiteral(KeyIndex(c, *view)) + "; end if; end $pgd$");
  }
  return status;
}

// The target's key: unique, NULL groups included (a NULL is a group like any other;
// NULLS NOT DISTINCT from PostgreSQL 15 on, and before it pgderive's delete-then-insert
// by IS NOT DISTINCT FROM keeps one row per key anyway).
std::string PostgresSink::KeyIndexOn(SqlRunner& c, const View& view,
                                     const std::string& table) const {
  return "create unique index on " + table + " (" + KeyList(view) + ")" +
         (c.server_version() >= 150000 ? " nulls not distinct" : "");
}

std::string PostgresSink::ShadowTableName(const std::string& table, uint64_t generation) {
  std::string name = "pgd_g" + std::to_string(generation) + "_" + table;
  if (name.size() > 63) name.resize(63);
  return name;
}

// What a view's table is built from; a different one means the table must be rebuilt.
std::string PostgresSink::Definition(const View& view) const {
  std::string sources;
  for (const std::string& table : view.tables) {
    auto it = mirrors_.find(table);
    sources += (sources.empty() ? "" : ", ") + table + " " +
               std::to_string(it == mirrors_.end() ? 0 : it->second.oid);
  }
  return "table " + view.config.table + "\nkey " + KeyList(view) + "\nquery " + view.config.query +
         "\nsources " + sources;
}

PostgresSink::Record PostgresSink::ParseRecord(const std::string& whole) {
  std::string text = whole;
  std::string versions;
  if (const size_t v = text.rfind("\nversions {");
      v != std::string::npos && v > text.rfind("\ngeneration ")) {
    versions = text.substr(v + 10);
    text.resize(v);
  }
  Record record{text, 0, false, versions};
  const size_t at = text.rfind("\ngeneration ");
  if (at == std::string::npos) return record;
  record.definition = text.substr(0, at);
  // "N", then the words " made_schema", " oid O", " removed", each when it applies.
  std::istringstream tail(text.substr(at + 12));
  tail >> record.generation;
  for (std::string word; tail >> word;) {
    if (word == "made_schema") record.made_schema = true;
    if (word == "removed") record.removed = true;
    if (word == "oid") tail >> record.table_oid;
  }
  return record;
}

std::string PostgresSink::RecordText(const std::string& definition, uint64_t generation,
                                     bool made_schema, uint32_t table_oid, bool removed,
                                     const std::string& versions) {
  return definition + "\ngeneration " + std::to_string(generation) +
         (made_schema ? " made_schema" : "") +
         (table_oid != 0 ? " oid " + std::to_string(table_oid) : "") + (removed ? " removed" : "") +
         (versions.empty() ? "" : "\nversions " + versions);
}

std::optional<PostgresSink::DefinitionParts> PostgresSink::ParseDefinition(
    const std::string& text) {
  // "table T\nkey K\nquery Q\nsources S" (Definition); Q may hold newlines.
  if (!text.starts_with("table ")) return std::nullopt;
  const size_t key_at = text.find("\nkey ");
  const size_t query_at = text.find("\nquery ");
  const size_t sources_at = text.rfind("\nsources ");
  if (key_at == std::string::npos || query_at == std::string::npos ||
      sources_at == std::string::npos || !(key_at < query_at && query_at < sources_at)) {
    return std::nullopt;
  }
  DefinitionParts parts;
  parts.table = text.substr(6, key_at - 6);
  parts.query = text.substr(query_at + 7, sources_at - query_at - 7);
  // The key: quoted identifiers ("a", "b""c") separated by ", ".
  const std::string key = text.substr(key_at + 5, query_at - key_at - 5);
  for (size_t i = 0; i < key.size();) {
    if (key[i] != '"') return std::nullopt;
    std::string name;
    size_t j = i + 1;
    for (; j < key.size(); ++j) {
      if (key[j] != '"') {
        name += key[j];
      } else if (j + 1 < key.size() && key[j + 1] == '"') {
        name += '"';
        ++j;
      } else {
        break;
      }
    }
    if (j >= key.size()) return std::nullopt;
    parts.key.push_back(name);
    i = j + 1;
    if (i < key.size()) {
      if (key.compare(i, 2, ", ") != 0) return std::nullopt;
      i += 2;
    }
  }
  // The sources: "schema.table OID" separated by ", ".
  const std::string sources = text.substr(sources_at + 9);
  for (size_t i = 0; i < sources.size();) {
    size_t end = sources.find(", ", i);
    if (end == std::string::npos) end = sources.size();
    const std::string one = sources.substr(i, end - i);
    const size_t space = one.rfind(' ');
    if (space == std::string::npos || space == 0) return std::nullopt;
    parts.tables.push_back(one.substr(0, space));
    i = end + (end < sources.size() ? 2 : 0);
  }
  if (parts.key.empty() || parts.tables.empty()) return std::nullopt;
  return parts;
}

Status PostgresSink::CheckReplaceable(SqlRunner& c, const View& view, const std::string& live,
                                      const Record& record, bool in_place) {
  if (record.table_oid != 0 && live != std::to_string(record.table_oid)) {
    return Error::Permanent(
        "view " + view.config.name + ": table " + view.config.table + " (OID " + live +
        ") is not the table pgderive made for the view (OID " + std::to_string(record.table_oid) +
        "): it was replaced by someone else, and pgderive does not drop a table it did not make. "
        "Rename or drop it, then start again");
  }
  if (in_place) return Status::Ok();  // recomputed in place: nothing is dropped
  // What a DROP TABLE would take with it (or fail on), but the table's own parts (its
  // indexes, constraints, row type, TOAST) and SQL views (recomputed in place instead).
  auto dependents = c.Query(
      "select pg_describe_object(d.classid, d.objid, d.objsubid) from pg_depend d where "
      "d.refclassid = 'pg_class'::regclass and d.refobjid = $1::oid and d.deptype in ('n', 'a') "
      "and d.classid <> 'pg_rewrite'::regclass and not (d.classid = 'pg_class'::regclass and "
      "exists (select from pg_index i where i.indexrelid = d.objid and i.indrelid = $1::oid)) "
      "and not (d.classid = 'pg_constraint'::regclass and exists (select from pg_constraint k "
      "where k.oid = d.objid and k.conrelid = $1::oid)) order by 1",
      {live});
  if (!dependents.ok()) return dependents.error();
  if (dependents.value().rows.empty()) return Status::Ok();
  std::string names;
  for (const auto& row : dependents.value().rows) {
    names += (names.empty() ? "" : "; ") + row[0].value_or("?");
  }
  return Error::Permanent("view " + view.config.name + ": the rebuild would drop table " +
                          view.config.table + ", and " + names +
                          " depend(s) on it: pgderive never drops them with it. Remove them "
                          "(they may be made again on the new table once it is swapped in)");
}

bool PostgresSink::SameDefinition(const std::string& text, const View& view) const {
  const Record record = ParseRecord(text);
  if (record.removed) return false;  // out of the configuration for a while: not current
  const std::string& recorded = record.definition;
  const std::string definition = Definition(view);
  return recorded == definition || recorded == definition.substr(0, definition.rfind("\nsources "));
}

Result<std::optional<std::string>> PostgresSink::RecordedDefinition(SqlRunner& c,
                                                                    const View& view) {
  auto row = c.Query(
      "select definition from pgderive.views where pipeline = $1 and store = $2 and view = $3",
      {pipeline_, name_, view.config.name});
  if (!row.ok()) return row.error();
  if (row.value().rows.empty()) return std::optional<std::string>();
  return std::optional<std::string>(row.value().rows[0][0].value_or(""));
}

// The views whose recorded definition differs from the configuration's (one never
// recorded differs too).
Result<std::vector<const PostgresSink::View*>> PostgresSink::ChangedViews(SqlRunner& c) {
  std::vector<const View*> changed;
  auto present = c.Query("select to_regclass('pgderive.views') is not null");
  if (!present.ok()) return present.error();
  const bool registry = present.value().rows[0][0].value_or("f") == "t";
  for (const auto& view : views_) {
    view->pending = false;
    // Built from its mirrors, with its definition, once they are filled.
    if (filling_ && Reads(*view, *filling_)) continue;
    if (!registry) {
      changed.push_back(view.get());
      continue;
    }
    auto recorded = RecordedDefinition(c, *view);
    if (!recorded.ok()) return recorded.error();
    if (recorded.value() && SameDefinition(*recorded.value(), *view)) continue;
    // A version of the file's definition is built already (ready, or rolled back from).
    const Versions& v = view->versions;
    const std::string file = Definition(*view);
    if (recorded.value() && !ParseRecord(*recorded.value()).removed && v.building &&
        v.definitions.contains(*v.building) && v.definitions.at(*v.building) == file) {
      continue;
    }
    if (recorded.value()) {
      auto versionable = Versionable(c, *view, ParseRecord(*recorded.value()));
      if (!versionable.ok()) return versionable.error();
      if (versionable.value()) {
        view->pending = true;  // VersionSteps builds it next to the serving table
        continue;
      }
    }
    changed.push_back(view.get());
  }
  return changed;
}

Result<std::vector<std::string>> PostgresSink::MarkRemovedViews() {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  SqlSession& c = *connected.value();
  std::vector<std::string> marked;
  auto present = c.Query("select to_regclass('pgderive.views') is not null");
  if (!present.ok()) return present.error();
  if (present.value().rows[0][0].value_or("f") != "t") return marked;
  auto recorded = c.Query(
      "select view, definition from pgderive.views where pipeline = $1 and store = $2 order by 1",
      {pipeline_, name_});
  if (!recorded.ok()) return recorded.error();
  for (const auto& row : recorded.value().rows) {
    const std::string view = row[0].value_or("");
    const std::string text = row[1].value_or("");
    const Record record = ParseRecord(text);
    // (A mirror's fill state is no view of the configuration.)
    if (record.removed || IsTableFill(view) || FindView(views_, view) != nullptr) continue;
    Status status = c.Execute(
        "update pgderive.views set definition = $4, updated_at = now() where pipeline = $1 and "
        "store = $2 and view = $3",
        {pipeline_, name_, view,
         RecordText(record.definition, record.generation, record.made_schema, record.table_oid,
                    /*removed=*/true, record.versions)});
    if (!status.ok()) return status.error();
    marked.push_back(view);
  }
  return marked;
}

Result<std::optional<Lsn>> PostgresSink::ReadCheckpoint() {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  SqlSession& c = *connected.value();
  // A missing mirror or target table means lost data: no checkpoint.
  missing_reason_.clear();
  Status loaded = LoadFilling(c);
  if (!loaded.ok()) return loaded.error();
  std::string regs = "select to_regclass('pgderive.checkpoints') is not null";
  std::vector<std::string> names{"pgderive.checkpoints"};
  for (const auto& [table, mirror] : mirrors_) names.push_back(mirror.name);
  // A view whose mirrors are being filled has no table yet on a first fill.
  for (const auto& view : views_) {
    if (!Reads(*view, *filling_)) names.push_back(view->target);
  }
  for (size_t i = 1; i < names.size(); ++i) {
    regs += ", to_regclass($" + std::to_string(i) + ") is not null";
  }
  SqlParams bound(names.begin() + 1, names.end());
  auto present = c.Query(regs, bound);
  if (!present.ok()) return present.error();
  for (size_t i = 0; i < names.size(); ++i) {
    if (present.value().rows[0][i].value_or("f") == "t") continue;
    missing_reason_ = (i == 0                 ? "table "
                       : i <= mirrors_.size() ? "mirror table "
                                              : "target table ") +
                      names[i] + " is missing";
    return std::optional<Lsn>();
  }
  // A view whose definition changed holds what the old one returned: a new version is
  // built next to it, or, where it cannot be, the store is rebuilt.
  Status versions = LoadVersions(c);
  if (!versions.ok()) return versions.error();
  auto changed = ChangedViews(c);
  SyncVersionViews();
  if (!changed.ok()) return changed.error();
  if (!changed.value().empty()) {
    const View& view = *changed.value().front();
    auto recorded = RecordedDefinition(c, view);
    if (!recorded.ok()) return recorded.error();
    missing_reason_ =
        recorded.value() && ParseRecord(*recorded.value()).removed
            ? "view " + view.config.name + " is back in the configuration after it was removed"
            : "the definition of view " + view.config.name + " changed";
    return std::optional<Lsn>();
  }
  auto row = ReadCheckpointRow(c, name_);
  if (!row.ok()) return row.error();
  if (!row.value()) {
    missing_reason_ = "pgderive.checkpoints has no row for store " + name_;
    return std::optional<Lsn>();
  }
  return std::optional<Lsn>(Lsn::Parse(*row.value()));
}

std::vector<std::pair<std::string, std::string>> PostgresSink::table_fills() const {
  std::vector<std::pair<std::string, std::string>> out;
  std::set<std::string> seen;
  for (const auto& view : views_) {
    for (const std::string& table : view->tables) {
      if (seen.insert(table).second) out.emplace_back(TableFillName(table), table);
    }
  }
  return out;
}

bool PostgresSink::Reads(const View& view, const std::set<std::string>& filling) {
  return std::any_of(view.tables.begin(), view.tables.end(),
                     [&](const std::string& t) { return filling.contains(t); });
}

Mirror* PostgresSink::MirrorOfFill(const std::string& fill) {
  for (auto& [table, m] : mirrors_) {
    if (TableFillName(table) == fill) return &m;
  }
  return nullptr;
}

Result<std::map<std::string, ViewState>> PostgresSink::ReadTableFills(SqlRunner& c) {
  std::map<std::string, ViewState> out;
  auto present = c.Query("select to_regclass('pgderive.views') is not null");
  if (!present.ok()) return present.error();
  if (present.value().rows[0][0].value_or("f") != "t") return out;
  auto rows = c.Query(
      "select view, definition from pgderive.views where pipeline = $1 and store = $2 and "
      "starts_with(view, 'mirror ')",
      {pipeline_, name_});
  if (!rows.ok()) return rows.error();
  for (const auto& row : rows.value().rows) {
    if (auto state = ViewState::FromJson(row[1].value_or(""))) out[row[0].value_or("")] = *state;
  }
  return out;
}

Status PostgresSink::LoadFilling(SqlRunner& c) {
  auto fills = ReadTableFills(c);
  if (!fills.ok()) return fills.error();
  std::set<std::string> filling;
  first_fills_.clear();
  for (const auto& [table, m] : mirrors_) {
    auto it = fills.value().find(TableFillName(table));
    if (it != fills.value().end() && it->second.backfilling) {
      filling.insert(table);
      if (it->second.first_fill) first_fills_.insert(table);
    }
  }
  filling_ = std::move(filling);
  return Status::Ok();
}

Result<std::optional<std::map<std::string, ViewState>>> PostgresSink::ReadViewStates() {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  auto fills = ReadTableFills(*connected.value());
  if (!fills.ok()) return fills.error();
  if (fills.value().empty()) return std::optional<std::map<std::string, ViewState>>();
  std::map<std::string, ViewState> states = fills.value();
  for (const auto& view : views_) {
    ViewState state;
    for (const std::string& table : view->tables) {
      auto it = fills.value().find(TableFillName(table));
      if (it != fills.value().end() && it->second.backfilling) state.backfilling = true;
    }
    states[view->config.name] = state;
  }
  return std::optional<std::map<std::string, ViewState>>(std::move(states));
}

Status PostgresSink::WriteViewState(const std::string& view, const ViewState& state, bool clear) {
  std::lock_guard lock(mutex_);
  Mirror* m = MirrorOfFill(view);
  if (m == nullptr) return Status::Ok();
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  SqlSession& session = *connected.value();
  Status status = EnsureMetadata(session);
  if (!status.ok()) return status;
  auto begun = session.Begin();
  if (!begun.ok()) return begun.error();
  SqlSession::Transaction& c = begun.value();
  if (clear) {
    // Made again empty (the table as it is now); this session's temporary tables follow.
    temp_ready_ = false;
    status = c.Execute(DropTempTablesSql(*m) + CreateMirrorSql(*m));
  }
  if (status.ok()) {
    status = c.Execute(
        "insert into pgderive.views (pipeline, store, view, definition) values ($1, $2, $3, $4) "
        "on conflict (pipeline, store, view) do update set definition = excluded.definition, "
        "updated_at = now()",
        {pipeline_, name_, view, state.ToJson()});
  }
  if (status.ok()) status = c.Commit();
  if (!status.ok()) {
    temp_ready_ = false;
    filling_.reset();
    return status;
  }
  if (!filling_) {
    status = LoadFilling(session);
    if (!status.ok()) return status;
  } else {
    if (state.backfilling) {
      filling_->insert(m->table);
    } else {
      filling_->erase(m->table);
    }
  }
  if (state.backfilling && state.first_fill) {
    first_fills_.insert(m->table);
  } else {
    first_fills_.erase(m->table);
  }
  if (clear) {
    // The mirror is another table now: CheckStore takes the tables as they are anew.
    table_oids_.reset();
    reported_tables_.clear();
  }
  return Status::Ok();
}

Result<std::optional<std::string>> PostgresSink::ReadCheckpointRow(SqlRunner& c,
                                                                   const std::string& row) {
  auto found =
      c.Query("select lsn::text from pgderive.checkpoints where pipeline = $1 and store = $2",
              {pipeline_, row});
  if (!found.ok()) return found.error();
  if (found.value().rows.empty()) return std::optional<std::string>();
  return std::optional<std::string>(found.value().rows[0][0].value_or(""));
}

Status PostgresSink::WriteCheckpointRow(SqlRunner& c, const std::string& row, Lsn lsn) {
  return c.Execute(
      "insert into pgderive.checkpoints (pipeline, store, lsn) values ($1, $2, $3) on conflict "
      "(pipeline, store) do update set lsn = excluded.lsn, updated_at = now()",
      {pipeline_, row, lsn.ToString()});
}

Result<std::string> PostgresSink::MirrorQuery(const View& view,
                                              const std::optional<std::string>& restrict) {
  QueryRewrite rewrite;
  for (const std::string& table : view.tables) {
    const Mirror& m = mirrors_.at(table);
    if (restrict && * restrict == table) {
      const std::string using_list = m.KeyList();
      // One key column: an index scan for the changed keys, not a hash join that reads
      // the whole mirror once per batch.
      rewrite.replacements[table] = m.key.size() == 1
                                        ? "(select m.* from " + m.name + " m where m." +
                                              using_list + " = any(array(select " + using_list +
                                              " from " + m.KeysTable() + ")))"
                                        : "(select m.* from " + m.name + " m join " +
                                              m.KeysTable() + " using (" + using_list + "))";
    } else {
      rewrite.replacements[table] = m.name;
    }
  }
  rewrite.inner_join_to = restrict;
  return RewriteQuery(view.config.query, rewrite);
}

Status PostgresSink::EnsureTempTables(SqlRunner& c) {
  if (temp_ready_) return Status::Ok();
  std::string sql;
  for (const auto& [table, m] : mirrors_) sql += CreateTempTablesSql(m);
  // (A view whose mirrors fill may have no table yet; a version view's key may differ
  // from what the same number had before.)
  for (const View* view : Maintained(filling_ ? *filling_ : std::set<std::string>{})) {
    sql += "drop table if exists pg_temp." + AffectedTable(*view) + "; create temp table " +
           AffectedTable(*view) + " on commit delete rows as select " + KeyList(*view) + " from " +
           WriteTarget(*view) + " with no data; ";
  }
  Status status = c.Execute(sql);
  if (status.ok()) temp_ready_ = true;
  return status;
}

Status PostgresSink::BeginRebuild(Lsn) {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  SqlSession& c = *connected.value();
  Status status = EnsureMetadata(c);
  if (!status.ok()) return status;
  std::string sql;          // run in one transaction below, with the checkpoints' removal
  horizon_loaded_ = false;  // none after the rebuild
  // This session's temporary tables take the mirrors' and targets' shapes anew (a
  // source table replaced by one with other columns).
  for (const auto& [table, m] : mirrors_) sql += DropTempTablesSql(m);
  for (const auto& view : views_) {
    sql += "drop table if exists pg_temp." + AffectedTable(*view) + "; ";
  }
  temp_ready_ = false;
  // The views' tables stay as they are, serving, until EndRebuild swaps in the new
  // ones (BuildShadow); a table is created only there.
  for (const auto& [table, m] : mirrors_) sql += CreateMirrorSql(m);
  // What this creates, removed again by UndoRebuild should the first start fail.
  std::vector<std::string> created_tables, created_schemas;
  for (const auto& [table, m] : mirrors_) created_tables.push_back(m.name);
  temp_ready_ = false;
  auto begun = c.Begin();
  if (!begun.ok()) return begun.error();
  SqlSession::Transaction& tx = begun.value();
  status = tx.Execute("delete from pgderive.checkpoints where pipeline = $1 and store in ($2, $3)",
                      {pipeline_, name_, HorizonRow()});
  // The mirrors' states: each is recorded backfilling from the start next.
  if (status.ok()) {
    status = tx.Execute(
        "delete from pgderive.views where pipeline = $1 and store = $2 and starts_with(view, "
        "'mirror ')",
        {pipeline_, name_});
  }
  if (status.ok()) status = tx.Execute(sql);
  if (status.ok()) status = tx.Commit();
  filling_.reset();
  if (status.ok()) {
    filling_.emplace();
    for (const auto& [table, m] : mirrors_) filling_->insert(table);
    // The mirrors are new tables: CheckStore takes the tables as they are anew.
    table_oids_.reset();
    reported_tables_.clear();
    created_tables_ = std::move(created_tables);
    created_schemas_ = std::move(created_schemas);
  }
  return status;
}

Status PostgresSink::UndoRebuild() {
  std::lock_guard lock(mutex_);
  if (created_tables_.empty() && created_schemas_.empty()) return Status::Ok();
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  SqlSession& c = *connected.value();
  std::string sql;
  for (const std::string& table : created_tables_) sql += "drop table if exists " + table + "; ";
  Status status = Status::Ok();
  if (!sql.empty()) {
    auto begun = c.Begin();
    if (!begun.ok()) return begun.error();
    status = begun.value().Execute(sql);
    if (status.ok()) status = begun.value().Commit();
  }
  // Only a schema this process created, and only while nothing else is in it.
  for (const std::string& schema : created_schemas_) {
    if (!status.ok()) break;
    IgnoreError(c.Execute("drop schema if exists " + QuoteIdent(schema) + " restrict"),
                "someone else's objects are in it since");
  }
  if (status.ok()) {
    created_tables_.clear();
    created_schemas_.clear();
  }
  return status;
}

Result<std::vector<std::string>> PostgresSink::Teardown(bool views) {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  auto begun = connected.value()->Begin();
  if (!begun.ok()) return begun.error();
  SqlSession::Transaction& c = begun.value();  // rolled back on every early return
  std::vector<std::string> removed;
  auto fail = [&](const Error& e) {
    temp_ready_ = false;
    return Result<std::vector<std::string>>(e);
  };
  // Not while migrations are applied (migrations.cc takes the same lock).
  auto present = c.Query(
      "select pg_advisory_xact_lock(hashtext('pgderive.migrations'))::text, "
      "to_regclass('pgderive.checkpoints') is not null, to_regclass('pgderive.views') is not "
      "null");
  if (!present.ok()) return fail(present.error());
  const bool checkpoints = present.value().rows[0][1].value_or("f") == "t";
  const bool registry = present.value().rows[0][2].value_or("f") == "t";
  if (views && registry) {
    // Only a table pgderive.views records as this view's (its definition names it), and
    // the shadow tables of a rebuild that never finished; then a schema pgderive created
    // for them, once nothing else is in it.
    auto recorded = c.Query(
        "select view, definition from pgderive.views where pipeline = $1 "
        "and store = $2",
        {pipeline_, name_});
    if (!recorded.ok()) return fail(recorded.error());
    std::map<std::string, Record> records;
    for (const auto& row : recorded.value().rows) {
      records[row[0].value_or("")] = ParseRecord(row[1].value_or(""));
    }
    std::set<std::string> schemas;
    // Every record's table, the views removed from the configuration's too: their
    // records go below, so their tables would be left as tables no pipeline made.
    for (const auto& [view_name, record] : records) {
      if (!record.definition.starts_with("table ")) continue;
      const size_t end = record.definition.find('\n');
      const std::string target =
          record.definition.substr(6, end == std::string::npos ? std::string::npos : end - 6);
      if (target.empty()) continue;
      auto [schema, name] = TableName::Parse(target);
      if (record.made_schema) schemas.insert(schema);
      auto tables = c.Query(
          "select quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relname from pg_class "
          "c join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and c.relkind = "
          "'r' and (c.relname = $2 or c.relname = left(substring(c.relname from '^pgd_g[0-9]+_') "
          "|| $2, 63)) order by c.relname = $2 desc, 2",
          {schema, name});
      if (!tables.ok()) return fail(tables.error());
      for (const auto& table : tables.value().rows) {
        Status status = c.Execute("drop table " + table[0].value_or(""));
        if (!status.ok()) return fail(status.error());
        removed.push_back("table " + schema + "." + table[1].value_or("") +
                          (table[1].value_or("") == name ? "" : " (unfinished rebuild)") +
                          " (view " + view_name + ")");
      }
    }
    for (const std::string& schema : schemas) {
      auto empty = c.Query(
          "select not exists (select from pg_depend d join pg_namespace n on n.oid = d.refobjid "
          "where d.refclassid = 'pg_namespace'::regclass and n.nspname = $1) and exists (select "
          "from pg_namespace where nspname = $1)",
          {schema});
      if (!empty.ok()) return fail(empty.error());
      if (empty.value().rows[0][0].value_or("f") != "t") continue;
      Status status = c.Execute("drop schema " + QuoteIdent(schema));
      if (!status.ok()) return fail(status.error());
      removed.push_back("schema " + schema + " (made by pgderive for its views, now empty)");
    }
  }
  if (checkpoints) {
    auto rows = c.Query(
        "delete from pgderive.checkpoints where pipeline = $1 and store in ($2, $3) returning "
        "store",
        {pipeline_, name_, HorizonRow()});
    if (!rows.ok()) return fail(rows.error());
    for (const auto& row : rows.value().rows) {
      removed.push_back("row (" + pipeline_ + ", " + row[0].value_or("") +
                        ") of pgderive.checkpoints");
    }
  }
  if (registry) {
    auto rows =
        c.Query("delete from pgderive.views where pipeline = $1 and store = $2 returning view",
                {pipeline_, name_});
    if (!rows.ok()) return fail(rows.error());
    for (const auto& row : rows.value().rows) {
      removed.push_back("row (" + pipeline_ + ", " + name_ + ", " + row[0].value_or("") +
                        ") of pgderive.views");
    }
  }
  // The pipeline's mirrors, "pgderive"."<pipeline>__<schema>__<table>" (mirror.h), but
  // those that may be another pipeline's whose name starts with this one's ("shop_" has
  // "shop___public__t", "shop__eu" has "shop__eu__public__t"): when in doubt, kept.
  std::string others = "select null::text where false";
  if (checkpoints) others += " union select pipeline from pgderive.checkpoints";
  if (registry) others += " union select pipeline from pgderive.views";
  auto mirrors = c.Query(
      "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace where "
      "n.nspname = 'pgderive' and c.relkind in ('r', 'p') and starts_with(c.relname, $1 || "
      "'__') and not exists (select from (" +
          others +
          ") o(pipeline) where o.pipeline <> $1 and starts_with(o.pipeline, $1) and "
          "starts_with(c.relname, o.pipeline || '__')) order by 1",
      {pipeline_});
  if (!mirrors.ok()) return fail(mirrors.error());
  for (const auto& row : mirrors.value().rows) {
    const std::string table = "pgderive." + QuoteIdent(row[0].value_or(""));
    Status status = c.Execute("drop table " + table);
    if (!status.ok()) return fail(status.error());
    removed.push_back("table pgderive." + row[0].value_or("") + " (mirror)");
  }
  // pgderive's schema, once it holds only its metadata tables, empty of any pipeline.
  auto left = c.Query(
      "select exists (select from pg_namespace where nspname = 'pgderive') and not exists "
      "(select from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname "
      "= 'pgderive' and c.relkind not in ('i', 'I', 't') and c.relname not in ('checkpoints', "
      "'views', 'migrations')) and not exists (select from pg_proc p join pg_namespace n on "
      "n.oid = p.pronamespace where n.nspname = 'pgderive')");
  if (!left.ok()) return fail(left.error());
  bool drop_schema = left.value().rows[0][0].value_or("f") == "t";
  if (drop_schema && (checkpoints || registry)) {
    std::string rows = "select (";
    rows += checkpoints ? "(select count(*) from pgderive.checkpoints)" : "0";
    rows += " + ";
    rows += registry ? "(select count(*) from pgderive.views)" : "0";
    rows += ")::text";
    auto counted = c.Query(rows);
    if (!counted.ok()) return fail(counted.error());
    drop_schema = counted.value().rows[0][0].value_or("") == "0";
  }
  if (drop_schema) {
    Status status = c.Execute("drop schema pgderive cascade");
    if (!status.ok()) return fail(status.error());
    removed.push_back("schema pgderive (no pipeline left in this database)");
  }
  Status status = c.Commit();
  if (!status.ok()) return fail(status.error());
  // This session's temporary tables read the mirrors and targets: made again if needed.
  temp_ready_ = false;
  return removed;
}

Status PostgresSink::ApplySnapshotRows(const std::shared_ptr<const RelationSchema>& schema,
                                       std::span<const TupleData> rows, const TypeRegistry&) {
  std::lock_guard lock(mutex_);
  auto it = mirrors_.find(schema->QualifiedName());
  if (it == mirrors_.end()) return Status::Ok();
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  return CopySnapshotRows(*connected.value(), it->second, *schema, rows);
}

Status PostgresSink::RecomputeAll(SqlRunner& c, const View& view, const std::string& target) {
  auto query = MirrorQuery(view, std::nullopt);
  if (!query.ok()) return query.error();
  return c.Execute("delete from " + target + "; insert into " + target + " select * from (" +
                   query.value() + ") q");
}

// A rebuild never removes what readers see: the new content goes into a shadow table in
// the view's schema, named after the next generation (ShadowTableName), which SwapIn
// puts in the live table's place in the same transaction. The live table keeps serving
// meanwhile (its readers take no lock of the fill). The shadow gets the live table's
// grants and, when the columns are the same, its indexes (their names too, at the
// swap); a table of other columns gets the key's unique index only. A live table that
// other SQL views depend on cannot be dropped: it is recomputed in place instead (in
// one transaction too, so readers see the old rows until it commits), and a change of
// its columns is refused.
namespace {

uint64_t RowCount(const PgRows& rows) {
  auto n = ParseServerNumber<uint64_t>(rows.rows[0][0]);
  return n.ok() ? n.value() : 0;
}

}  // namespace

Result<PostgresSink::Shadow> PostgresSink::BuildShadow(SqlRunner& c, const View& view) {
  auto [schema, name] = TableName::Parse(view.config.table);
  Shadow shadow;
  auto info = c.Query(
      "select (select definition from pgderive.views where pipeline = $1 and store = $2 and "
      "view = $3), to_regclass($4)::oid::text, exists (select from pg_namespace where nspname = "
      "$5)",
      {pipeline_, name_, view.config.name, view.target, schema});
  if (!info.ok()) return info.error();
  const auto& row = info.value().rows[0];
  const Record record = ParseRecord(row[0].value_or(""));
  const std::optional<std::string> live = row[1];
  if (live) {
    Status replaceable = CheckReplaceable(c, view, *live, record, /*in_place=*/true);
    if (!replaceable.ok()) return replaceable.error();
  }
  // After the record's generation and every kept version's (a retained table keeps its
  // name until it is dropped).
  shadow.generation = record.generation + 1;
  if (!record.versions.empty()) {
    const auto json = nlohmann::json::parse(record.versions, nullptr, false);
    const Versions kept = json.is_object() ? VersionsFromJson(json) : Versions{};
    for (const std::optional<int>& n : {kept.serving, kept.building, kept.previous}) {
      if (n && static_cast<uint64_t>(*n) >= shadow.generation) {
        shadow.generation = static_cast<uint64_t>(*n) + 1;
      }
    }
  }
  // Made for the view now, or when its table was first made (kept while it serves).
  shadow.made_schema = row[2].value_or("t") == "f" || (live && record.made_schema);
  shadow.name = ShadowTableName(name, shadow.generation);
  const std::string table = QuoteIdent(schema) + "." + QuoteIdent(shadow.name);
  auto query = MirrorQuery(view, std::nullopt);
  if (!query.ok()) return query.error();
  Status status = c.Execute("create schema if not exists " + QuoteIdent(schema) +
                            "; drop table if exists " + table + "; create table " + table +
                            " as select * from (" + query.value() + ") q with no data");
  if (!status.ok()) return status.error();
  bool same_columns = false, dependents = false;
  if (live) {
    auto columns = [](const std::string& relation) {
      return "select string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' order "
             "by attnum) from pg_attribute where attrelid = " +
             relation + " and attnum > 0 and not attisdropped";
    };
    auto compared = c.Query(
        "select (" + columns("$1::oid") + ") is not distinct from (" + columns("$2::regclass") +
            "), exists (select from pg_depend d join pg_rewrite r on d.classid = "
            "'pg_rewrite'::regclass and d.objid = r.oid where d.refclassid = 'pg_class'::regclass "
            "and d.refobjid = $1::oid and r.ev_class <> $1::oid)",
        {*live, table});
    if (!compared.ok()) return compared.error();
    same_columns = compared.value().rows[0][0].value_or("f") == "t";
    dependents = compared.value().rows[0][1].value_or("f") == "t";
  }
  if (live && !dependents) {
    // Swapped in: the live table is dropped.
    Status replaceable = CheckReplaceable(c, view, *live, record, /*in_place=*/false);
    if (!replaceable.ok()) {
      IgnoreError(c.Execute("drop table " + table), "rolled back with the transaction anyway");
      return replaceable.error();
    }
  }
  if (dependents) {
    if (!same_columns) {
      return Error::Permanent("view " + view.config.name +
                              ": its definition changed the columns of table " + view.config.table +
                              ", which other SQL views depend on: drop them (pgderive replaces "
                              "the table), then create them again");
    }
    status = c.Execute("drop table " + table);
    if (status.ok()) status = RecomputeAll(c, view, view.target);
    if (!status.ok()) return status.error();
    auto counted = c.Query("select count(*)::text from " + view.target);
    if (!counted.ok()) return counted.error();
    shadow.rows = RowCount(counted.value());
    shadow.table.clear();
    shadow.oid = static_cast<uint32_t>(std::stoul(*live));
    return shadow;
  }
  shadow.table = table;
  auto made = c.Query("select $1::regclass::oid::text", {table});
  if (!made.ok()) return made.error();
  shadow.oid = static_cast<uint32_t>(std::stoul(made.value().rows[0][0].value_or("0")));
  status = c.Execute("insert into " + table + " select * from (" + query.value() + ") q");
  if (!status.ok()) return status.error();
  auto counted = c.Query("select count(*)::text from " + table);
  if (!counted.ok()) return counted.error();
  shadow.rows = RowCount(counted.value());
  // Whether a copied unique index is the current key's: its plain columns are the key's.
  std::vector<std::string> key_sorted = view.config.key_columns;
  std::sort(key_sorted.begin(), key_sorted.end());
  std::string key_set;
  for (const std::string& k : key_sorted) key_set += (key_set.empty() ? "" : ",") + k;
  bool key_index = false;
  if (same_columns) {
    // The live table's indexes (not those of constraints), under temporary names. A
    // unique index on other columns than the current key (the old key's, when only the
    // key changed) is not copied: the rebuilt rows need not be unique on them.
    auto indexes = c.Query(
        "select c.relname, i.indisunique, pg_get_indexdef(i.indexrelid), case when "
        "i.indexprs is null and i.indpred is null then (select string_agg(a.attname, ',' "
        "order by a.attname) from pg_attribute a where a.attrelid = i.indrelid and a.attnum "
        "= any(i.indkey)) end from pg_index i join pg_class c on c.oid = i.indexrelid where "
        "i.indrelid = $1::oid and not exists (select from pg_constraint k where k.conindid = "
        "i.indexrelid) order by c.relname",
        {*live});
    if (!indexes.ok()) return indexes.error();
    size_t n = 0;
    for (const auto& index : indexes.value().rows) {
      const bool unique = index[1].value_or("f") == "t";
      if (unique) {
        if (index[3].value_or("") != key_set) continue;
        key_index = true;
      }
      const std::string definition = index[2].value_or("");
      const size_t using_at = definition.find(" USING ");
      if (using_at == std::string::npos) continue;
      std::string temporary = "pgd_g" + std::to_string(shadow.generation) + "_" +
                              std::to_string(n++) + "_" + index[0].value_or("");
      if (temporary.size() > 63) temporary.resize(63);
      status = c.Execute(std::string("create ") + (unique ? "unique " : "") + "index " +
                         QuoteIdent(temporary) + " on " + table + definition.substr(using_at));
      if (!status.ok()) return status.error();
      shadow.index_names.emplace_back(QuoteIdent(schema) + "." + QuoteIdent(temporary),
                                      index[0].value_or(""));
    }
  }
  if (!key_index) {
    // The key's unique index, named at the swap as PostgreSQL names one by default.
    std::string final_name = name;
    for (const std::string& k : view.config.key_columns) final_name += "_" + k;
    final_name += "_idx";
    if (final_name.size() > 63) final_name.resize(63);
    // (pgd_g<n>_<k>_<name>, as the copied ones: a version switch takes the prefix off.)
    std::string temporary = "pgd_g" + std::to_string(shadow.generation) + "_" +
                            std::to_string(shadow.index_names.size()) + "_" + final_name;
    if (temporary.size() > 63) temporary.resize(63);
    std::string create = KeyIndexOn(c, view, table);
    create.insert(create.find(" on "), " " + QuoteIdent(temporary));
    status = c.Execute(create);
    if (!status.ok()) return status.error();
    shadow.index_names.emplace_back(QuoteIdent(schema) + "." + QuoteIdent(temporary), final_name);
  }
  if (live) {
    // The grants on the live table (its owner's own are the owner's anyway).
    auto grants = c.Query(
        "select a.privilege_type, case when a.grantee = 0 then 'public' else "
        "quote_ident(pg_get_userbyid(a.grantee)) end, a.is_grantable from pg_class k, "
        "aclexplode(k.relacl) a where k.oid = $1::oid and a.grantee <> k.relowner",
        {*live});
    if (!grants.ok()) return grants.error();
    for (const auto& grant : grants.value().rows) {
      status = c.Execute("grant " + grant[0].value_or("") + " on " + table + " to " +
                         grant[1].value_or("") +
                         (grant[2].value_or("f") == "t" ? " with grant option" : ""));
      if (!status.ok()) return status.error();
    }
  }
  status = c.Execute("analyze " + table);
  if (!status.ok()) return status.error();
  return shadow;
}

Status PostgresSink::SwapIn(SqlRunner& c, const View& view, const Shadow& shadow) {
  Status status = Status::Ok();
  if (!shadow.table.empty()) {
    status = LockLive(c, view.target);
    if (!status.ok()) return status;
    auto [schema, name] = TableName::Parse(view.config.table);
    std::string sql = "drop table if exists " + view.target + "; alter table " + shadow.table +
                      " rename to " + QuoteIdent(name) + "; ";
    for (const auto& [now, was] : shadow.index_names) {
      sql += "alter index " + now + " rename to " + QuoteIdent(was) + "; ";
    }
    status = c.Execute(sql);
  }
  // A rebuild replaces every version: the file's definition serves, built now; the
  // tables of a version being built or retained go.
  const int n = static_cast<int>(shadow.generation);
  for (const std::optional<int>& other : {view.versions.building, view.versions.previous}) {
    if (status.ok() && other && *other != n) {
      status = c.Execute("drop table if exists " + GenerationTable(view, *other));
    }
  }
  Versions versions;
  versions.serving = n;
  versions.definitions[n] = Definition(view);
  if (status.ok()) {
    status = c.Execute(
        "insert into pgderive.views (pipeline, store, view, definition) values ($1, $2, $3, $4) "
        "on conflict (pipeline, store, view) do update set definition = excluded.definition, "
        "updated_at = now()",
        {pipeline_, name_, view.config.name,
         RecordText(Definition(view), shadow.generation, shadow.made_schema, shadow.oid, false,
                    VersionsToJson(versions).dump())});
  }
  return status;
}

Status PostgresSink::EndRebuild(Lsn snapshot_lsn) {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  SqlSession& session = *connected.value();
  std::string analyze;
  for (const auto& [table, m] : mirrors_) analyze += "analyze " + m.name + "; ";
  Status status = analyze.empty() ? Status::Ok() : session.Execute(analyze);
  if (!status.ok()) return status;
  // The views, their checkpoint and their definitions in one transaction, rolled back
  // when `c` goes away uncommitted. Every shadow is filled first, then all are swapped
  // in: the live tables are locked only from their swap to the commit.
  auto begun = session.Begin();
  if (!begun.ok()) return begun.error();
  SqlSession::Transaction& c = begun.value();
  std::vector<Shadow> shadows;
  for (const auto& view : views_) {
    auto shadow = BuildShadow(c, *view);
    if (!shadow.ok()) {
      // A table pgderive will not drop says so itself; else which view's query failed on
      // the snapshot's rows (at line N of the file).
      if (shadow.error().message().starts_with("view " + view->config.name + ": ")) {
        return shadow.error();
      }
      return Error(shadow.error().kind(),
                   "view " + view->config.name + " (table " + view->config.table + ", line " +
                       std::to_string(view->config.line) +
                       "): its query failed on the snapshot's rows: " + shadow.error().message());
    }
    shadows.push_back(std::move(shadow).value());
  }
  for (size_t i = 0; i < views_.size() && status.ok(); ++i) {
    status = SwapIn(c, *views_[i], shadows[i]);
  }
  if (status.ok()) status = WriteCheckpointRow(c, name_, snapshot_lsn);
  if (status.ok()) status = c.Commit();
  if (!status.ok()) return status;
  for (size_t i = 0; i < views_.size(); ++i) {
    rebuilt_rows_.emplace_back(views_[i]->config.name, shadows[i].rows);
  }
  // The tables as built: CheckStore compares against these.
  auto oids = ReadTableOids(session);
  if (!oids.ok()) return oids.error();
  table_oids_ = std::move(oids).value();
  reported_tables_.clear();
  return status;
}

Status PostgresSink::CollectAffected(SqlRunner& c, const View& view,
                                     const std::set<std::string>& changed, bool before) {
  if (!view.key_source.empty()) {
    // The view key is the table's key: the changed keys are the affected ones (a key
    // no longer, or not, in the view is deleted and found missing by the recompute).
    if (!before || !changed.contains(view.tables.front())) return Status::Ok();
    return c.Execute("insert into " + AffectedTable(view) + " (" + KeyList(view) +
                     ") select distinct " + QuotedList(view.key_source) + " from " +
                     mirrors_.at(view.tables.front()).KeysTable());
  }
  for (const std::string& table : view.tables) {
    if (!changed.contains(table)) continue;
    auto query = MirrorQuery(view, table);
    if (!query.ok()) return query.error();
    Status status = c.Execute("insert into " + AffectedTable(view) + " select distinct " +
                              KeyList(view) + " from (" + query.value() + ") q");
    if (!status.ok()) return status;
  }
  return Status::Ok();
}

Status PostgresSink::Recompute(SqlRunner& c, const View& view, const std::string& target) {
  const std::string affected = AffectedTable(view);
  auto query = MirrorQuery(view, std::nullopt);
  if (!query.ok()) return query.error();
  const std::string& first = view.config.key_columns.front();
  // Equality joins (hashable) for keys without NULL; IS NOT DISTINCT FROM only for the
  // few affected keys that have one.
  std::string equal, same, any_null;
  for (const std::string& k : view.config.key_columns) {
    const std::string qk = QuoteIdent(k);
    equal += (equal.empty() ? "" : " and ") + ("x." + qk + " = a." + qk);
    same += (same.empty() ? "" : " and ") + ("x." + qk + " is not distinct from a." + qk);
    any_null += (any_null.empty() ? "" : " or ") + ("a." + qk + " is null");
  }
  auto values = c.Query("select array_agg(distinct " + QuoteIdent(first) + ")::text, bool_or(" +
                        any_null + ") from " + affected + " a");
  if (!values.ok()) return values.error();
  if (!values.value().rows[0][0]) return Status::Ok();  // nothing affected
  const bool nulls = values.value().rows[0][1].value_or("t") == "t";
  // A first filter the planner pushes into the query (into an aggregate's WHERE, onto
  // an index): the first key column against the affected values, bound as $1 (an
  // untyped parameter takes the column's array type; the unnamed statement is planned
  // with its value).
  const std::string prefilter = nulls ? "true" : "x." + QuoteIdent(first) + " = any($1)";
  const SqlParams params = nulls ? SqlParams{} : SqlParams{values.value().rows[0][0]};
  // One key column without NULLs: the affected values as an array, through the
  // primary key (the planner would read the whole table once the array has a few
  // thousand values, which costs a scan of the view per batch); otherwise a join with
  // the affected keys.
  Status status = Status::Ok();
  if (view.config.key_columns.size() == 1 && !nulls) {
    status = c.Execute("set local enable_seqscan = off");
    if (status.ok()) {
      status = c.Execute("delete from " + target + " x where " + prefilter, params);
    }
    if (status.ok()) status = c.Execute("reset enable_seqscan");
  } else {
    status = c.Execute("delete from " + target + " x using (select distinct " + KeyList(view) +
                       " from " + affected + ") a where " + equal);
  }
  if (status.ok()) {
    status = c.Execute("insert into " + target + " select x.* from (" + query.value() +
                           ") x where " + prefilter + " and exists (select from " + affected +
                           " a where " + equal + ")",
                       params);
  }
  if (status.ok() && nulls) {
    status = c.Execute("delete from " + target + " x using (select distinct " + KeyList(view) +
                       " from " + affected + " a where " + any_null + ") a where " + same +
                       "; insert into " + target + " select x.* from (" + query.value() +
                       ") x where exists (select from " + affected + " a where (" + any_null +
                       ") and " + same + ")");
  }
  return status;
}

Status PostgresSink::Apply(const BatchGroup& group, Lsn checkpoint) {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  SqlSession& session = *connected.value();
  // Which mirrors are being filled: their views' temporary tables wait for their tables.
  Status status = filling_ ? Status::Ok() : LoadFilling(session);
  if (status.ok()) status = EnsureTempTables(session);
  if (!status.ok()) return status;
  // The batch and its checkpoint: one transaction, rolled back when `c` goes away
  // uncommitted (every error below).
  auto begun = session.Begin();
  if (!begun.ok()) return begun.error();
  SqlSession::Transaction& c = begun.value();
  shadows_.clear();
  // The mirrors being filled as this batch goes (kept once it commits).
  std::set<std::string> filling = *filling_;
  if (!horizon_loaded_) {
    // The horizon (source_rows.h), as the store recorded it.
    auto horizon = ReadCheckpointRow(c, HorizonRow());
    if (!horizon.ok()) return horizon.error();
    source_.SetHorizon(horizon.value() ? Lsn::Parse(*horizon.value()).value_or(Lsn{}) : Lsn{});
    horizon_loaded_ = true;
  }

  // One batch's changes to the mirrors (mirror.h), written at each flush: before a
  // rebuild or truncate inside the group, and at its end.
  MirrorBatch changes;
  auto flush = [&]() -> Status {
    if (changes.empty()) return Status::Ok();
    Status s = changes.Complete(c, mirrors_, source_);
    if (!s.ok()) return s;
    // Recorded with the data it protects, in this transaction.
    if (source_.TakeRaised()) {
      s = WriteCheckpointRow(c, HorizonRow(), source_.horizon());
      if (!s.ok()) return s;
    }
    const std::set<std::string> changed = changes.tables();
    s = changes.CopyTouchedKeys(c, mirrors_);
    if (!s.ok()) return s;
    // A view whose mirrors are being filled is built once they are, not maintained.
    const std::vector<const View*> maintained = Maintained(filling);
    for (const View* view : maintained) {
      s = CollectAffected(c, *view, changed, /*before=*/true);
      if (!s.ok()) return s;
    }
    s = changes.Write(c, mirrors_);
    if (!s.ok()) return s;
    for (const View* view : maintained) {
      s = CollectAffected(c, *view, changed, /*before=*/false);
      if (s.ok()) s = Recompute(c, *view, WriteTarget(*view));
      if (!s.ok()) return s;
    }
    std::string clear = "truncate";
    for (const auto& [table, m] : mirrors_) {
      clear += " " + m.KeysTable() + ", " + m.DeletesTable() + ", " + m.UpsertsTable() + ",";
    }
    for (const View* view : maintained) clear += " " + AffectedTable(*view) + ",";
    clear.pop_back();
    changes.Clear();
    return c.Execute(clear);
  };

  for (const auto& batch : group) {
    for (const OwnedChange& change : batch->changes) {
      // Already applied: the checkpoint row was committed with everything before it.
      if (change.commit_lsn < checkpoint) continue;
      if (change.op == ChangeOp::kBackfillRow) {
        // A row of a mirror's fill, as of its chunk's high watermark (rows changed in
        // the chunk's window come as their changes): into the mirror like an insert.
        if (!change.control || change.control->store != name_ || change.control->views.empty() ||
            !IsTableFill(change.control->views.front())) {
          continue;  // for views filled row by row
        }
        const RelationSchema& schema = change.relation();
        auto it = mirrors_.find(schema.QualifiedName());
        if (it == mirrors_.end()) continue;
        status = AddMissingColumns(c, it->second, schema);
        if (!status.ok()) break;
        changes.Add(it->second, schema, change, source_.horizon());
        continue;
      }
      if (change.op == ChangeOp::kViewState && change.control->store == name_ &&
          !change.control->views.empty() && IsTableFill(change.control->views.front())) {
        // A mirror's fill went on (the chunk's rows before this) or ended: its state,
        // in this transaction. Once the last mirror a view reads is filled, the view is
        // built from the mirrors into a shadow table, swapped in at the batch's end.
        status = flush();
        const ViewControl& control = *change.control;
        for (const std::string& fill : control.views) {
          Mirror* m = MirrorOfFill(fill);
          if (!status.ok() || m == nullptr) continue;
          if (control.clear && control.backfilling) {
            // Filled again from the source (`pgderive backfill` of a view that reads it):
            // emptied here, in the stream's order, and the views reading it not
            // maintained until it is filled (their tables keep what they hold), then
            // built from it as above.
            status = c.Execute("truncate " + m->name);
            if (!status.ok()) continue;
            filling.insert(m->table);
          }
          ViewState state;
          state.backfilling = control.backfilling;
          state.after = control.after;
          state.columns = control.columns;
          state.table_oid = control.table_oid;
          // Its first fill (the store had nothing to serve) stays recorded as one, so
          // that a resume after a crash keeps the pipeline not ready until it ends.
          state.first_fill = control.backfilling && first_fills_.contains(m->table);
          status = c.Execute(
              "insert into pgderive.views (pipeline, store, view, definition) values ($1, $2, "
              "$3, $4) on conflict (pipeline, store, view) do update set definition = "
              "excluded.definition, updated_at = now()",
              {pipeline_, name_, fill, state.ToJson()});
          if (!status.ok() || control.backfilling || !filling.contains(m->table)) continue;
          filling.erase(m->table);
          status = c.Execute("analyze " + m->name);
          for (const auto& view : views_) {
            if (!status.ok()) break;
            if (Reads(*view, filling) || shadows_.contains(view->index) ||
                std::find(view->tables.begin(), view->tables.end(), m->table) ==
                    view->tables.end()) {
              continue;
            }
            auto shadow = BuildShadow(c, *view);
            if (!shadow.ok()) {
              status = Error(
                  shadow.error().kind(),
                  "view " + view->config.name + " (table " + view->config.table + ", line " +
                      std::to_string(view->config.line) +
                      "): its query failed on the filled mirrors: " + shadow.error().message());
              break;
            }
            shadows_[view->index] = std::move(shadow).value();
            // The rest of the batch maintains it: its affected keys' temporary table.
            status = c.Execute("create temp table if not exists " + AffectedTable(*view) +
                               " on commit delete rows as select " + KeyList(*view) + " from " +
                               WriteTarget(*view) + " with no data");
          }
        }
        if (!status.ok()) break;
        continue;
      }
      if (change.op == ChangeOp::kViewState) {
        // A rebuild on demand: the view is recomputed from its mirrors, which are
        // complete up to this point, into a shadow table (BuildShadow) that the rest of
        // the batch keeps current and that is swapped in at its end, in this batch's
        // transaction.
        for (const auto& view : views_) {
          // (A view whose mirrors are being filled is built once they are.)
          if (!status.ok() || !change.control->clear ||
              !change.control->Names(name_, view->config.name) || Reads(*view, filling)) {
            continue;
          }
          status = flush();
          if (!status.ok()) break;
          if (auto was = shadows_.find(view->index); was != shadows_.end()) {
            // Twice in one batch: the first shadow is refilled.
            status = RecomputeAll(c, *view, WriteTarget(*view));
            continue;
          }
          auto shadow = BuildShadow(c, *view);
          if (!shadow.ok()) {
            status = shadow.error();
            break;
          }
          shadows_[view->index] = std::move(shadow).value();
          // (A view whose new version was not built yet had no affected-key table.)
          status = c.Execute("create temp table if not exists " + AffectedTable(*view) +
                             " on commit delete rows as select " + KeyList(*view) + " from " +
                             WriteTarget(*view) + " with no data");
        }
        if (!status.ok()) break;
        continue;
      }
      if (change.op == ChangeOp::kTruncate) {
        status = flush();
        for (const auto& relation : change.relations) {
          auto it = mirrors_.find(relation->QualifiedName());
          if (!status.ok() || it == mirrors_.end()) continue;
          status = c.Execute("truncate " + it->second.name);
          for (const View* view : Maintained(filling)) {
            if (status.ok() && std::find(view->tables.begin(), view->tables.end(), it->first) !=
                                   view->tables.end()) {
              status = RecomputeAll(c, *view, WriteTarget(*view));
            }
          }
        }
        if (!status.ok()) break;
        continue;
      }
      const RelationSchema& schema = change.relation();
      auto it = mirrors_.find(schema.QualifiedName());
      if (it == mirrors_.end()) continue;
      status = AddMissingColumns(c, it->second, schema);
      if (!status.ok()) break;
      changes.Add(it->second, schema, change, source_.horizon());
    }
    if (!status.ok()) break;
  }
  if (status.ok()) status = flush();
  // The rebuilds swap in last: the live tables are locked only from here to the commit.
  for (auto& [index, shadow] : shadows_) {
    if (!status.ok()) break;
    status = SwapIn(c, *views_[index], shadow);
  }
  if (status.ok()) {
    if (auto next = CheckpointOf(group)) status = WriteCheckpointRow(c, name_, *next);
  }
  if (status.ok()) status = c.Commit();
  std::map<size_t, Shadow> swapped = std::exchange(shadows_, {});
  if (!status.ok()) {
    temp_ready_ = false;      // a failed DDL inside may have been rolled back
    horizon_loaded_ = false;  // and a horizon it raised
    filling_.reset();         // and the mirrors' states it wrote
    return status;
  }
  filling_ = std::move(filling);
  if (!swapped.empty()) {
    // The swapped views' versions as recorded now.
    status = LoadVersions(session);
    if (!status.ok()) return status;
    SyncVersionViews();
    for (const auto& [index, shadow] : swapped) {
      rebuilt_rows_.emplace_back(views_[index]->config.name, shadow.rows);
    }
    // The tables as swapped in: CheckStore compares against these.
    auto oids = ReadTableOids(session);
    if (!oids.ok()) return oids.error();
    if (!table_oids_) table_oids_ = oids.value();
    for (const auto& [index, shadow] : swapped) {
      const std::string& target = views_[index]->target;
      if (auto it = oids.value().find(target); it != oids.value().end()) {
        (*table_oids_)[target] = it->second;
      }
    }
  }
  return status;
}

// Every row of `relation` (the target table, or the query in parentheses) as a verify
// entry: the key as a JSON array (`k`), the row as a JSON object (`e`). A number is given
// as the string of its digits: parsed as a JSON number it would be a double, and two
// numerics that differ past the 15th digit would compare equal. With `digest`, a third
// column `d`, the row's own JSON text (cheaper than `e`; the same on both sides when the
// rows are, and a difference in form only makes its bucket read, where `e` decides).
std::string PostgresSink::EntriesSelect(const View& view, const std::string& relation, bool digest,
                                        const std::vector<std::string>& floats) const {
  // A float column's number stays a JSON number (compared within a tolerance: its last
  // digits depend on the order rows were summed, view_compare.h).
  std::string kept = "'";
  for (char ch : SqlTextArray(floats)) kept += ch == '\'' ? std::string("''") : std::string(1, ch);
  kept += "'::text[]";
  return "select json_build_array(" + KeyList(view, "r.") +
         ")::text k, (select json_object_agg(e.key, case when json_typeof(e.value) = "
         "'number' and e.key <> all(" +
         kept +
         ") then to_json(e.value #>> '{}') else e.value end) from "
         "json_each(row_to_json(r.*)) e)::text e" +
         (digest ? ", row_to_json(r.*)::text d" : "") + " from " + relation + " r";
}

Result<std::vector<ViewInspector::Entry>> PostgresSink::ReadEntries(SqlRunner& c, const View& view,
                                                                    const std::string& relation) {
  auto rows = c.Query(EntriesSelect(view, relation));
  if (!rows.ok()) return rows.error();
  std::vector<Entry> out;
  for (auto& row : rows.value().rows) out.emplace_back(row[0].value_or(""), row[1].value_or(""));
  return out;
}

Result<std::string> PostgresSink::VerifiedTable(SqlRunner& c, const View& view) {
  // The file's definition: the serving table, or the ready version's while another
  // definition serves (a manual promote pending, a rollback).
  auto recorded = RecordedDefinition(c, view);
  if (!recorded.ok()) return recorded.error();
  std::string table = view.target;
  if (recorded.value()) {
    const Record record = ParseRecord(*recorded.value());
    const auto json =
        nlohmann::json::parse(record.versions.empty() ? "null" : record.versions, nullptr, false);
    const Versions v = json.is_object() ? VersionsFromJson(json) : Versions{};
    // (Compared without the sources' OIDs: verify resolves no mirrors.)
    auto cut = [](const std::string& d) { return d.substr(0, d.rfind("\nsources ")); };
    const std::string file = cut(Definition(view));
    if (cut(record.definition) != file && v.building && v.definitions.contains(*v.building) &&
        cut(v.definitions.at(*v.building)) == file) {
      table = GenerationTable(view, *v.building);
    }
  }
  return table;
}

Result<std::optional<std::string>> PostgresSink::EntriesSql(const std::string& view_name,
                                                            EntriesOf of) {
  std::lock_guard lock(mutex_);
  for (const auto& view : views_) {
    if (view->config.name != view_name) continue;
    auto connected = Connection();
    if (!connected.ok()) return connected.error();
    auto table = VerifiedTable(*connected.value(), *view);
    if (!table.ok()) return table.error();
    // The view's float columns, as its table has them (none while it has no table).
    auto typed = connected.value()->Query(
        "select attname::text from pg_attribute where attrelid = to_regclass($1) and attnum > 0 "
        "and not attisdropped and atttypid in ('float4'::regtype, 'float8'::regtype) order by "
        "attnum",
        {table.value()});
    if (!typed.ok()) return typed.error();
    std::vector<std::string> floats;
    for (const auto& row : typed.value().rows) floats.push_back(row[0].value_or(""));
    if (of == EntriesOf::kSource) {
      return std::optional<std::string>(
          EntriesSelect(*view, "(" + view->config.query + ")", true, floats));
    }
    if (of == EntriesOf::kMirrors) {
      // Not maintained now: a mirror it reads fills, its file's definition has no table.
      if (view->unbuilt || view->pending || !filling_ || Reads(*view, *filling_)) {
        return std::optional<std::string>();
      }
      for (const std::string& table : view->tables) {
        if (!mirrors_.contains(table)) return std::optional<std::string>();
      }
      auto query = MirrorQuery(*view, std::nullopt);
      if (!query.ok()) return query.error();
      return std::optional<std::string>(
          EntriesSelect(*view, "(" + query.value() + ")", true, floats));
    }
    return std::optional<std::string>(EntriesSelect(*view, table.value(), true, floats));
  }
  return Error::Permanent("no postgres view named " + view_name);
}

Status PostgresSink::RepairEntries(const std::string& view_name,
                                   const std::vector<std::string>& keys) {
  std::lock_guard lock(mutex_);
  const View* view = nullptr;
  for (const auto& v : views_) {
    if (v->config.name == view_name) view = v.get();
  }
  if (view == nullptr) return Error::Permanent("no postgres view named " + view_name);
  if (view->unbuilt || view->pending || !filling_ || Reads(*view, *filling_)) {
    return Error::Transient("view " + view_name +
                            " is not maintained now (a mirror it reads is "
                            "being filled, or its new version is not built yet)");
  }
  // Each key a JSON array of the key columns' values (EntriesSql's `k`).
  for (const std::string& key : keys) {
    const auto values = nlohmann::json::parse(key, nullptr, /*allow_exceptions=*/false);
    if (!values.is_array() || values.size() != view->config.key_columns.size()) {
      return Error::Permanent("view " + view_name + ": " + key + " is not a key of it");
    }
  }
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  SqlSession& session = *connected.value();
  Status status = EnsureTempTables(session);
  if (!status.ok()) return status;
  auto begun = session.Begin();
  if (!begun.ok()) return begun.error();
  SqlSession::Transaction& c = begun.value();
  // As a batch does (Apply): the affected keys recomputed from the mirrors.
  // The values taken from the keys' JSON text in SQL (`json`, not parsed into doubles in
  // between: a numeric key of 30 digits stays itself).
  std::string fields;
  for (size_t i = 0; i < view->config.key_columns.size(); ++i) {
    fields += (i ? ", " : "") + c.QuoteLiteral(view->config.key_columns[i]) + ", t.k::json -> " +
              std::to_string(i);
  }
  status =
      c.Execute("insert into " + AffectedTable(*view) + " select r.* from unnest($1::text[]) " +
                    "t(k), json_populate_record(null::pg_temp." + AffectedTable(*view) +
                    ", json_build_object(" + fields + ")) r",
                {SqlTextArray(keys)});
  if (status.ok()) status = Recompute(c, *view, WriteTarget(*view));
  if (status.ok()) status = c.Commit();
  return status;
}

Result<std::vector<ViewInspector::Entry>> PostgresSink::ReadView(const std::string& view_name) {
  std::lock_guard lock(mutex_);
  for (const auto& view : views_) {
    if (view->config.name != view_name) continue;
    auto connected = Connection();
    if (!connected.ok()) return connected.error();
    auto table = VerifiedTable(*connected.value(), *view);
    if (!table.ok()) return table.error();
    return ReadEntries(*connected.value(), *view, table.value());
  }
  return Error::Permanent("no postgres view named " + view_name);
}

Result<std::optional<ViewInspector::Entry>> PostgresSink::Expected(
    const std::string&, const std::shared_ptr<const RelationSchema>&, const TupleData&,
    const TypeRegistry&) {
  return std::optional<Entry>();
}

// --- Versions side by side (view_versions.h). A view's generation `serving` is its table
// (`table:`); the generation of a new version, and a retained one, are tables
// pgd_g<n>_<table> in the same schema. A new version is built from the mirrors in one
// transaction (BuildShadow), so it is ready once it commits; the stream then maintains
// both - the file's definition into its table (WriteTarget), each other kept definition
// through a version view of its own (SyncVersionViews). A switch (promote, rollback)
// renames the two tables and their indexes and records the versions in one transaction:
// readers see the old table or the new one, whole. A crash before its commit leaves the
// old state, recorded as it was.
namespace {

// The generation a new version gets (BuildShadow): after every kept one.
int NextGeneration(const Versions& v) {
  int n = 0;
  for (const std::optional<int>& g : {v.serving, v.building, v.previous}) {
    if (g) n = std::max(n, *g);
  }
  return n + 1;
}

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string PostgresSink::GenerationTable(const View& view, int n) const {
  auto [schema, name] = TableName::Parse(view.config.table);
  return QuoteIdent(schema) + "." + QuoteIdent(ShadowTableName(name, static_cast<uint64_t>(n)));
}

std::string PostgresSink::VersionWhere(const View& view, const Versions& versions, int n) const {
  if (versions.serving == n) return "table " + view.config.table;
  auto [schema, name] = TableName::Parse(view.config.table);
  return "table " + schema + "." + ShadowTableName(name, static_cast<uint64_t>(n));
}

Status PostgresSink::LoadVersions(SqlRunner& c) {
  auto present = c.Query("select to_regclass('pgderive.views') is not null");
  if (!present.ok()) return present.error();
  const bool registry = present.value().rows[0][0].value_or("f") == "t";
  for (auto& view : views_) {
    view->versions = Versions{};
    if (!registry) continue;
    auto recorded = RecordedDefinition(c, *view);
    if (!recorded.ok()) return recorded.error();
    if (!recorded.value()) continue;
    const Record record = ParseRecord(*recorded.value());
    if (record.removed) continue;
    if (!record.versions.empty()) {
      const auto json = nlohmann::json::parse(record.versions, nullptr, false);
      if (json.is_object()) view->versions = VersionsFromJson(json);
    }
    Versions& v = view->versions;
    if (!v.serving) {
      // Recorded before versions: the generation that serves, with its definition.
      v.serving = static_cast<int>(record.generation);
      v.definitions[*v.serving] = record.definition;
    }
    // A definition recorded before the sources were is the file's when it matches.
    if (SameDefinition(*recorded.value(), *view)) v.definitions[*v.serving] = Definition(*view);
  }
  return Status::Ok();
}

Result<bool> PostgresSink::Versionable(SqlRunner& c, const View& view, const Record& record) {
  if (record.removed || !record.definition.starts_with("table " + view.config.table + "\n")) {
    return false;  // a view back from removal, or another table name: rebuilt
  }
  // The serving definition must be maintainable meanwhile: every table it reads mirrored
  // and filled.
  auto parts = ParseDefinition(view.versions.serving &&
                                       view.versions.definitions.contains(*view.versions.serving)
                                   ? view.versions.definitions.at(*view.versions.serving)
                                   : record.definition);
  // A changed key is rebuilt: the old key need not be unique in the rows any more, so
  // the old version could not be maintained.
  if (!parts || parts->key != view.config.key_columns) return false;
  for (const std::string& table : parts->tables) {
    if (!mirrors_.contains(table) || (filling_ && filling_->contains(table))) return false;
  }
  auto live = c.Query("select to_regclass($1)::oid::text", {view.target});
  if (!live.ok()) return live.error();
  if (!live.value().rows[0][0]) return false;
  // Renamed away, the table keeps what depends on it: only a table nothing depends on
  // (not even a SQL view) is switched by renames.
  if (!CheckReplaceable(c, view, *live.value().rows[0][0], record, /*in_place=*/false).ok()) {
    return false;
  }
  auto views = c.Query(
      "select exists (select from pg_depend d join pg_rewrite r on d.classid = "
      "'pg_rewrite'::regclass and d.objid = r.oid where d.refclassid = 'pg_class'::regclass "
      "and d.refobjid = $1::oid and r.ev_class <> $1::oid)",
      {*live.value().rows[0][0]});
  if (!views.ok()) return views.error();
  return views.value().rows[0][0].value_or("t") == "f";
}

void PostgresSink::SyncVersionViews() {
  std::vector<std::unique_ptr<View>> kept;
  std::vector<VersionInfo> shown;
  for (auto& view : views_) {
    const Versions& v = view->versions;
    const std::string file = Definition(*view);
    view->write_to.clear();
    view->unbuilt = false;
    if (v.serving && v.definitions.contains(*v.serving) && v.definitions.at(*v.serving) != file) {
      if (v.building && v.definitions.contains(*v.building) &&
          v.definitions.at(*v.building) == file) {
        view->write_to = GenerationTable(*view, *v.building);
      } else {
        view->unbuilt = true;
      }
    }
    if (!view->unbuilt) view->pending = false;
    for (const auto& [n, definition] : OtherDefinitions(v, file)) {
      auto parts = ParseDefinition(definition);
      bool mirrored = parts.has_value();
      for (const std::string& table : parts ? parts->tables : std::vector<std::string>{}) {
        mirrored = mirrored && mirrors_.contains(table);
      }
      if (!mirrored) {
        notices_.push_back(
            SinkNotice::Warning("view " + view->config.name + ": version " + std::to_string(n) +
                                " cannot be maintained (a table its query reads is no longer "
                                "mirrored); it is no longer kept current"));
        continue;
      }
      const std::string target = v.serving == n ? view->target : GenerationTable(*view, n);
      std::unique_ptr<View> made;
      for (auto& old : version_views_) {
        if (old && old->target == target && old->config.query == parts->query &&
            old->config.key_columns == parts->key && old->tables == parts->tables) {
          made = std::move(old);
        }
      }
      if (!made) {
        made = std::make_unique<View>();
        made->config = view->config;
        made->config.name = view->config.name + "@" + std::to_string(n);
        made->config.query = parts->query;
        made->config.key_columns = parts->key;
        made->tables = parts->tables;
        made->target = target;
        made->index = views_.size() + next_index_++;
      }
      kept.push_back(std::move(made));
    }
    std::vector<VersionInfo> infos =
        Describe(v, view->config.name, false, [&](int n) { return VersionWhere(*view, v, n); });
    if (view->pending) {
      const int n = NextGeneration(v);
      infos.push_back({view->config.name, n, VersionWhere(*view, v, n), "building", 0});
    }
    for (VersionInfo& info : infos) shown.push_back(std::move(info));
  }
  version_views_ = std::move(kept);
  temp_ready_ = false;  // the affected-key tables follow the views maintained
  std::lock_guard lock(shown_mutex_);
  shown_ = std::move(shown);
}

std::vector<const PostgresSink::View*> PostgresSink::Maintained(
    const std::set<std::string>& filling) const {
  std::vector<const View*> out;
  for (const auto& view : views_) {
    if ((!view->unbuilt || shadows_.contains(view->index)) && !Reads(*view, filling)) {
      out.push_back(view.get());
    }
  }
  for (const auto& view : version_views_) {
    if (!Reads(*view, filling)) out.push_back(view.get());
  }
  return out;
}

std::vector<VersionInfo> PostgresSink::ViewVersions() {
  std::lock_guard lock(shown_mutex_);
  return shown_;
}

Status PostgresSink::LockLive(SqlRunner& c, const std::string& target) {
  // The live table's lock, taken with a short lock_timeout and retried: a long reader
  // holding it then does not queue every other reader behind the waiting DDL. After
  // the retries it waits as long as it must.
  // (In one statement: a failed statement would end the client's transaction.)
  const std::string lock = c.QuoteLiteral("lock table " + target + " in access exclusive mode");
  return c.Execute(
      "set local lock_timeout = '50ms'; do $$ begin if to_regclass(" + c.QuoteLiteral(target) +
      ") is null then return; end if; for attempt in 1..40 loop begin execute " + lock +
      "; return; exception when lock_not_available then perform pg_sleep(0.025); "
      "end; end loop; perform set_config('lock_timeout', '0', true); execute " +
      lock + "; end $$; set local lock_timeout = default");
}

Status PostgresSink::SwitchTables(SqlRunner& c, const View& view, int from, int to) {
  // `from` serves (the view's table): renamed to its generation name, its indexes to
  // pgd_g<from>_<k>_<name>; `to` takes the view's table name, its indexes their names
  // without that prefix (BuildShadow named them so).
  Status status = LockLive(c, view.target);
  if (!status.ok()) return status;
  auto [schema, name] = TableName::Parse(view.config.table);
  const std::string away = ShadowTableName(name, static_cast<uint64_t>(from));
  const std::string to_table = GenerationTable(view, to);
  auto indexes = [&](const std::string& table, const std::string& body) {
    return "do $pgd$ declare r record; k int := 0; begin for r in select i.indexrelid::regclass::"
           "text as q, c.relname from pg_index i join pg_class c on c.oid = i.indexrelid where "
           "i.indrelid = " +
           c.QuoteLiteral(table) + "::regclass order by c.relname loop " + body +
           " k := k + 1; end loop; end $pgd$; ";
  };
  const std::string prefix = "pgd_g" + std::to_string(from) + "_";
  return c.Execute(
      "alter table " + view.target + " rename to " + QuoteIdent(away) + "; " +
      indexes(QuoteIdent(schema) + "." + QuoteIdent(away),
              "execute format('alter index %s rename to %I', r.q, left(" + c.QuoteLiteral(prefix) +
                  " || k || '_' || r.relname, 63));") +
      "alter table " + to_table + " rename to " + QuoteIdent(name) + "; " +
      indexes(view.target,
              "if r.relname ~ '^pgd_g[0-9]+_[0-9]+_' then execute format('alter index %s "
              "rename to %I', r.q, regexp_replace(r.relname, '^pgd_g[0-9]+_[0-9]+_', '')); end "
              "if;"));
}

Status PostgresSink::WriteVersions(SqlRunner& c, const View& view, const Versions& versions) {
  auto info = c.Query(
      "select (select definition from pgderive.views where pipeline = $1 and store = $2 and "
      "view = $3), to_regclass($4)::oid::text",
      {pipeline_, name_, view.config.name, view.target});
  if (!info.ok()) return info.error();
  const Record record = ParseRecord(info.value().rows[0][0].value_or(""));
  const int serving = versions.serving.value_or(static_cast<int>(record.generation));
  auto definition = versions.definitions.find(serving);
  const uint32_t oid = static_cast<uint32_t>(std::stoul(info.value().rows[0][1].value_or("0")));
  return c.Execute(
      "insert into pgderive.views (pipeline, store, view, definition) values ($1, $2, $3, $4) "
      "on conflict (pipeline, store, view) do update set definition = excluded.definition, "
      "updated_at = now()",
      {pipeline_, name_, view.config.name,
       RecordText(definition == versions.definitions.end() ? record.definition : definition->second,
                  static_cast<uint64_t>(serving), record.made_schema, oid, false,
                  VersionsToJson(versions).dump())});
}

Status PostgresSink::AfterSwitch(SqlSession& session, View& view, Versions versions) {
  view.versions = std::move(versions);
  view.pending = false;
  SyncVersionViews();
  auto oids = ReadTableOids(session);
  if (!oids.ok()) return oids.error();
  if (!table_oids_) {
    table_oids_ = oids.value();
  } else if (auto it = oids.value().find(view.target); it != oids.value().end()) {
    (*table_oids_)[view.target] = it->second;
  }
  return Status::Ok();
}

bool PostgresSink::AbandonedBuilding(const View& view) const {
  const Versions& v = view.versions;
  if (!v.building || !v.serving) return false;
  const auto building = v.definitions.find(*v.building);
  const auto serving = v.definitions.find(*v.serving);
  const std::string file = Definition(view);
  return building != v.definitions.end() && building->second != file &&
         serving != v.definitions.end() && serving->second == file;
}

Status PostgresSink::VersionSteps(SqlSession& session) {
  const int64_t now = NowSeconds();
  for (auto& view : views_) {
    const bool due = PreviousDue(view->versions, now);
    const bool abandoned = !view->pending && AbandonedBuilding(*view);
    if (!view->pending && !due && !abandoned) continue;
    if (!filling_ || Reads(*view, *filling_)) continue;
    auto begun = session.Begin();
    if (!begun.ok()) return begun.error();
    SqlSession::Transaction& c = begun.value();
    Versions next = view->versions;
    std::vector<int> retired;
    std::string said;
    Status status = Status::Ok();
    if (abandoned) {
      // The file went back to the serving version's definition: the version built (or
      // rolled back from) for another one is no longer kept current, so it is dropped
      // rather than left to be promoted stale.
      const int n = *next.building;
      said = "view " + view->config.name + ": version " + std::to_string(n) + " (" +
             VersionWhere(*view, next, n) +
             ") was dropped: its definition is no longer the file's, and version " +
             std::to_string(next.serving.value_or(0)) + ", of the file's definition, serves";
      retired.push_back(n);
      next.building.reset();
      next.held = false;
    } else if (due) {
      const int n = *next.previous;
      retired.push_back(n);
      next.previous.reset();
      next.drop_at = 0;
      said = "view " + view->config.name + ": the previous version (" +
             VersionWhere(*view, next, n) + ") was dropped (retain_previous passed)";
    } else {
      // A new version of the file's definition: what a version given up (a building one
      // of another definition, a retained one of the file's) held goes first.
      const std::string file = Definition(*view);
      if (next.building && next.definitions[*next.building] != file) {
        retired.push_back(*next.building);
        next.building.reset();
      }
      if (next.previous && next.definitions[*next.previous] == file) {
        retired.push_back(*next.previous);
        next.previous.reset();
        next.drop_at = 0;
      }
      for (int n : retired) {
        if (status.ok()) status = c.Execute("drop table if exists " + GenerationTable(*view, n));
        if (n != next.serving) next.definitions.erase(n);
      }
      retired.clear();
      // (Its generation follows the record's and every kept one's.)
      if (status.ok()) status = WriteVersions(c, *view, next);
      Result<Shadow> shadow = status.ok() ? BuildShadow(c, *view) : Result<Shadow>(status.error());
      if (!shadow.ok()) {
        notices_.push_back(SinkNotice::Warning(
            "view " + view->config.name + ": its new version could not be built (" +
            shadow.error().message() + "); version " + std::to_string(next.serving.value_or(0)) +
            " keeps serving"));
        view->pending = false;  // tried again at the next reconnect
        continue;
      }
      const int n = static_cast<int>(shadow.value().generation);
      next.building = n;
      next.definitions[n] = file;
      next.held = false;
      rebuilt_rows_.emplace_back(view->config.name, shadow.value().rows);
      said = "view " + view->config.name + ": version " + std::to_string(n) + " (" +
             std::to_string(shadow.value().rows) + " rows, " + VersionWhere(*view, next, n) +
             ") is built next to version " + std::to_string(next.serving.value_or(0)) +
             ", which keeps serving";
      if (SwitchesOnReady(next, view->config.promote_manual)) {
        const int from = next.serving.value_or(0);
        status = SwitchTables(c, *view, from, n);
        next = AfterPromote(next, now, view->config.retain_previous.count(), retired);
        said += "; promoted: version " + std::to_string(n) + " serves";
        if (next.previous) {
          said += ", version " + std::to_string(*next.previous) + " is retained until " +
                  UnixTimeText(next.drop_at) + ", maintained, for `pgderive rollback -c FILE " +
                  "--view " + view->config.name + "`";
        }
      } else {
        said +=
            "; `pgderive promote -c FILE --view " + view->config.name + "` switches readers to it";
      }
    }
    for (int n : retired) {
      if (!status.ok()) break;
      status = c.Execute("drop table if exists " +
                         (n == next.serving ? view->target : GenerationTable(*view, n)));
      if (n != next.serving && n != next.building) next.definitions.erase(n);
    }
    if (status.ok()) status = WriteVersions(c, *view, next);
    if (status.ok()) status = c.Commit();
    if (!status.ok()) {
      temp_ready_ = false;
      return status;
    }
    notices_.push_back(said);
    status = AfterSwitch(session, *view, std::move(next));
    if (!status.ok()) return status;
  }
  return Status::Ok();
}

Result<std::string> PostgresSink::SwitchVersion(const std::string& view_name, VersionSwitch what,
                                                double percent) {
  std::lock_guard lock(mutex_);
  View* view = nullptr;
  for (auto& v : views_) {
    if (v->config.name == view_name) view = v.get();
  }
  if (view == nullptr) return Error::Permanent("store " + name_ + " has no view " + view_name);
  const Versions versions = view->versions;
  if (what == VersionSwitch::kPromote && AbandonedBuilding(*view)) {
    return Error::Permanent("view " + view_name + " has no new version to promote: version " +
                            std::to_string(*versions.building) +
                            " is of a definition no longer in the file (it is being dropped); "
                            "version " +
                            std::to_string(versions.serving.value_or(0)) +
                            ", of the file's definition, serves");
  }
  if (what == VersionSwitch::kPromote && view->pending) {
    // Not built yet: refused as a version still building is.
    Versions building = versions;
    building.building = NextGeneration(versions);
    return Error::Permanent(*PromoteRefusal(building, view_name, true, percent));
  }
  std::optional<std::string> refusal = what == VersionSwitch::kPromote
                                           ? PromoteRefusal(versions, view_name, false, percent)
                                           : RollbackRefusal(versions, view_name);
  if (refusal) return Error::Permanent(*refusal);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  SqlSession& session = *connected.value();
  auto begun = session.Begin();
  if (!begun.ok()) return begun.error();
  SqlSession::Transaction& c = begun.value();
  const int from = *versions.serving;
  std::vector<int> retired;
  Versions next;
  std::string said;
  Status status = Status::Ok();
  if (what == VersionSwitch::kPromote) {
    const int to = *versions.building;
    status = SwitchTables(c, *view, from, to);
    next = AfterPromote(versions, NowSeconds(), view->config.retain_previous.count(), retired);
    said = "view " + view_name + ": version " + std::to_string(to) + " (table " +
           view->config.table + ") serves";
    if (next.previous) {
      said += " - version " + std::to_string(*next.previous) + " (" +
              VersionWhere(*view, next, *next.previous) + ") is retained until " +
              UnixTimeText(next.drop_at) + ", maintained, for `pgderive rollback -c FILE --view " +
              view_name + "`";
    }
    for (int n : retired) {
      if (status.ok()) status = c.Execute("drop table if exists " + GenerationTable(*view, n));
    }
  } else {
    const int to = *versions.previous;
    status = SwitchTables(c, *view, from, to);
    next = AfterRollback(versions);
    said = "view " + view_name + ": rolled back - version " + std::to_string(to) + " (table " +
           view->config.table + ") serves again; version " + std::to_string(from) + " (" +
           VersionWhere(*view, next, from) +
           ") stays ready and maintained (`pgderive promote -c FILE " + "--view " + view_name +
           "` switches to it again)";
  }
  if (status.ok()) status = WriteVersions(c, *view, next);
  if (status.ok()) status = c.Commit();
  if (!status.ok()) {
    temp_ready_ = false;
    return status.error();
  }
  // (VersionWhere above named the tables as they are after the switch.)
  notices_.push_back(said);
  status = AfterSwitch(session, *view, std::move(next));
  if (!status.ok()) return status.error();
  return said;
}

}  // namespace pgderive
