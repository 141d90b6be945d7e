#include "sinks/postgres/postgres_sink.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <set>

#include "cdc/copy_text.h"
#include "cdc/publication.h"
#include "migrations/migrations.h"
#include "sinks/common/source_rows.h"
#include "sinks/common/view_list.h"
#include "sinks/postgres/query_rewrite.h"

namespace pgderive {
namespace {

std::string QuoteIdent(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string QuoteTable(const std::string& table) {
  auto [schema, name] = SplitTableName(table);
  return QuoteIdent(schema) + "." + QuoteIdent(name);
}

// The table names of an EXPLAIN (VERBOSE, FORMAT JSON) plan.
void CollectRelations(const nlohmann::json& node, std::vector<std::string>& out) {
  if (node.is_object()) {
    if (node.contains("Relation Name") && node.contains("Schema")) {
      const std::string table =
          node["Schema"].get<std::string>() + "." + node["Relation Name"].get<std::string>();
      if (std::find(out.begin(), out.end(), table) == out.end()) out.push_back(table);
    }
    for (const auto& [key, value] : node.items()) CollectRelations(value, out);
  } else if (node.is_array()) {
    for (const auto& value : node) CollectRelations(value, out);
  }
}

// Every scan of a table in a plan: (alias, schema.table as the plan names it).
void CollectScans(const nlohmann::json& node,
                  std::vector<std::pair<std::string, std::string>>& out) {
  if (node.is_object()) {
    if (node.contains("Relation Name") && node.contains("Schema")) {
      out.emplace_back(
          node.value("Alias", node.value("Relation Name", "")),
          node["Schema"].get<std::string>() + "." + node["Relation Name"].get<std::string>());
    }
    for (const auto& [key, value] : node.items()) CollectScans(value, out);
  } else if (node.is_array()) {
    for (const auto& value : node) CollectScans(value, out);
  }
}

// Every expression a plan holds (outputs, filters, conditions, keys).
void CollectExpressions(const nlohmann::json& node, std::vector<std::string>& out) {
  if (node.is_object()) {
    for (const auto& [key, value] : node.items()) {
      if (key == "Relation Name" || key == "Schema" || key == "Alias" || key == "Node Type") {
        continue;
      }
      CollectExpressions(value, out);
    }
  } else if (node.is_array()) {
    for (const auto& value : node) CollectExpressions(value, out);
  } else if (node.is_string()) {
    out.push_back(node.get<std::string>());
  }
}

// Whether `text` holds the column reference `ref` (`alias.column` as EXPLAIN VERBOSE
// writes it) as a whole.
bool Mentions(const std::string& text, const std::string& ref) {
  auto word = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' || c == '"' ||
           static_cast<unsigned char>(c) >= 0x80;
  };
  for (size_t at = text.find(ref); at != std::string::npos; at = text.find(ref, at + 1)) {
    const bool before = at == 0 || (!word(text[at - 1]) && text[at - 1] != '.');
    const size_t end = at + ref.size();
    const bool after = end >= text.size() || !word(text[end]);
    if (before && after) return true;
  }
  return false;
}

// The source tables a query reads, from the tables its plan scans: a partition stands
// for the partitioned table the query names (its changes are published as that root's,
// and partitions come and go), a partition the query names itself stays; a relation
// PostgreSQL cannot publish is refused with the reason.
Result<std::vector<std::string>> SourceTablesOf(PgConnection& source, const std::string& query,
                                                const std::vector<std::string>& scanned) {
  std::set<std::string> named;  // the words and quoted names of the query
  if (auto tokens = LexSql(query); tokens.ok()) {
    for (const SqlToken& t : tokens.value()) {
      if (t.kind == SqlToken::Kind::kWord || t.kind == SqlToken::Kind::kQuotedName) {
        named.insert(t.text);
      }
    }
  }
  std::vector<std::string> out;
  for (const std::string& table : scanned) {
    auto ancestors = source.Query(
        "select n.nspname || '.' || c.relname, c.relname, c.relkind, c.relpersistence from "
        "pg_partition_ancestors(" +
        source.QuoteLiteral(source.QuoteTableName(table)) +
        "::regclass) with ordinality a(relid, level) join pg_class c on c.oid = a.relid join "
        "pg_namespace n on n.oid = c.relnamespace order by a.level");
    if (!ancestors.ok()) return ancestors.error();
    std::string chosen = table;
    char relkind = 'r', persistence = 'p';
    const auto& rows = ancestors.value().rows;
    for (size_t i = 0; i < rows.size(); ++i) {
      // The nearest the query names; the root when it names none (through a view).
      if (named.contains(rows[i][1].value_or("")) || i + 1 == rows.size()) {
        chosen = rows[i][0].value_or(table);
        relkind = rows[i][2].value_or("r")[0];
        persistence = rows[i][3].value_or("p")[0];
        break;
      }
    }
    if (rows.empty()) {
      auto kind = source.Query("select relkind, relpersistence from pg_class where oid = " +
                               source.QuoteLiteral(source.QuoteTableName(table)) + "::regclass");
      if (!kind.ok()) return kind.error();
      if (!kind.value().rows.empty()) {
        relkind = kind.value().rows[0][0].value_or("r")[0];
        persistence = kind.value().rows[0][1].value_or("p")[0];
      }
    }
    if (auto why = WhyNotPublishable(relkind, persistence, chosen, source.QuoteTableName(chosen))) {
      return Error::Permanent(*why);
    }
    if (std::find(out.begin(), out.end(), chosen) == out.end()) out.push_back(chosen);
  }
  return out;
}

// Refuses a plan that reads a generated column of a source table, with the way out.
Status CheckGeneratedColumns(PgConnection& source, const nlohmann::json& explained) {
  std::vector<std::pair<std::string, std::string>> scans;
  CollectScans(explained, scans);
  std::vector<std::string> expressions;
  CollectExpressions(explained, expressions);
  for (const auto& [alias, table] : scans) {
    auto generated = GeneratedColumns(source, table);
    if (!generated.ok()) return generated.error();
    for (const auto& [column, expression] : generated.value()) {
      // EXPLAIN qualifies columns by their scan's alias, except in a plan of one scan.
      std::vector<std::string> refs = {
          alias + "." + column, source.QuoteIdentifier(alias) + "." + column,
          alias + "." + source.QuoteIdentifier(column),
          source.QuoteIdentifier(alias) + "." + source.QuoteIdentifier(column)};
      if (scans.size() == 1) {
        refs.push_back(column);
        refs.push_back(source.QuoteIdentifier(column));
      }
      for (const std::string& e : expressions) {
        if (std::none_of(refs.begin(), refs.end(),
                         [&](const std::string& r) { return Mentions(e, r); })) {
          continue;
        }
        return Error::Permanent(GeneratedColumnProblem(table, column, expression) + "; write " +
                                expression + " in the query in place of the column");
      }
    }
  }
  return Status::Ok();
}

// When a view's key is its one table's key passed through (no aggregate, join, DISTINCT
// or subquery: the plan of `select <view key> from (query)` is a single scan of the
// table whose output is exactly the table's key columns), a changed source row can
// affect only the view row of the same key. Returns, for each view key column, its
// source column; empty when the plan is anything else.
std::vector<std::string> KeyPassThrough(const nlohmann::json& explained, const std::string& table,
                                        const std::vector<std::string>& source_key,
                                        size_t view_key_columns) {
  if (!explained.is_array() || explained.empty() || !explained[0].contains("Plan")) return {};
  const nlohmann::json& plan = explained[0]["Plan"];
  static const std::set<std::string> kScans = {"Seq Scan", "Index Scan", "Index Only Scan",
                                               "Bitmap Heap Scan"};
  if (!kScans.contains(plan.value("Node Type", "")) ||
      plan.value("Schema", "") + "." + plan.value("Relation Name", "") != table) {
    return {};
  }
  if (plan.contains("Plans")) {
    for (const auto& child : plan["Plans"]) {
      if (child.value("Node Type", "") != "Bitmap Index Scan") return {};
    }
  }
  const std::string alias = plan.value("Alias", "") + ".";
  if (!plan.contains("Output") || plan["Output"].size() != view_key_columns ||
      view_key_columns != source_key.size()) {
    return {};
  }
  std::vector<std::string> out;
  for (const auto& expression : plan["Output"]) {
    const std::string text = expression.is_string() ? expression.get<std::string>() : "";
    if (text.rfind(alias, 0) != 0) return {};
    const std::string column = text.substr(alias.size());
    if (std::find(source_key.begin(), source_key.end(), column) == source_key.end() ||
        std::find(out.begin(), out.end(), column) != out.end()) {
      return {};
    }
    out.push_back(column);
  }
  return out;
}

// The functions the query calls whose result can change while its rows do not (not
// IMMUTABLE: now(), random(), a STABLE overload), as "name(argument types)" joined by
// ", "; nullopt when there are none. Judged per function the query actually calls, by
// OID: the query is made a temporary view inside a transaction that is rolled back, and
// the query tree PostgreSQL stored for it names every function, aggregate and operator
// (judged by the function behind it) it resolved. Where that cannot be done (no TEMP
// privilege, a standby), every function of a name the query calls must be immutable.
Result<std::optional<std::string>> ChangingFunctions(PgConnection& source,
                                                     const std::string& query) {
  auto changing = [](Result<PgRows> rows) -> Result<std::optional<std::string>> {
    if (!rows.ok()) return rows.error();
    if (rows.value().rows.empty()) return std::optional<std::string>();
    return rows.value().rows[0][0];
  };
  if (PQtransactionStatus(source.get()) == PQTRANS_IDLE &&
      source.Execute("begin transaction read write").ok()) {
    Result<std::optional<std::string>> found = Error::Transient("not judged");
    if (source
            .Execute("create temp view pgderive_query_functions as select * from (" + query +
                     "\n) q")
            .ok()) {
      // The view's stored query tree names every function, aggregate and window
      // function it calls (funcid, aggfnoid, winfnoid) and every operator (opno, the
      // operators of a row comparison, of DISTINCT and GROUP BY) by OID.
      found = changing(source.Query(
          "with a as (select ev_action::text t from pg_rewrite where ev_class = "
          "'pg_temp.pgderive_query_functions'::regclass), called as (select m[1]::oid p, "
          "m[1]::regprocedure::text f from a, regexp_matches(a.t, "
          "':(?:funcid|aggfnoid|winfnoid|opfuncid) (\\d+)', 'g') m union select o.oprcode, "
          "'operator ' || o.oid::regoperator::text from a, lateral (select regexp_matches(a.t, "
          "':(?:opno|eqop|sortop) (\\d+)', 'g') union all select "
          "array[unnest(string_to_array(x[1], ' '))] from regexp_matches(a.t, ':opnos \\(o "
          "([0-9 ]+)\\)', 'g') x) m(m) join pg_operator o on o.oid = m[1]::oid) select "
          "string_agg(distinct f, ', ') from called join pg_proc p on p.oid = called.p where "
          "p.provolatile <> 'i'"));
    }
    IgnoreError(source.Execute("rollback"), "nothing was made to keep");
    if (found.ok()) return found;
  }
  const auto functions = CalledFunctions(query);
  if (functions.empty()) return std::optional<std::string>();
  std::string list;
  for (const std::string& f : functions) list += (list.empty() ? "" : ",") + f;
  return changing(source.Query(
      "select string_agg(distinct proname, ', ') from pg_proc where provolatile <> 'i' and "
      "proname = any(string_to_array(" +
      source.QuoteLiteral(list) + ", ','))"));
}

// One row's final state in a batch, per mirror key.
struct Final {
  bool deleted = false;
  std::vector<std::optional<std::string>> values;  // by mirror column
  std::vector<bool> present;                       // false: unchanged (TOAST), keep
  // Where the columns not present come from: the mirror row of this key as it was
  // before the batch (unset), or, when the row moved to this key leaving them out, the
  // mirror row of `from` (its key values) as it was before the batch.
  std::optional<std::vector<std::optional<std::string>>> from;
  bool reread = false;          // no mirror row to take them from: read the row from the source
  Lsn lsn;                      // of the last change
  bool before_horizon = false;  // reread: a change before the horizon left them out
  bool whole() const {
    return std::all_of(present.begin(), present.end(), [](bool p) { return p; });
  }
};

}  // namespace

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
  std::string out;
  for (const std::string& k : view.config.key_columns) {
    out += (out.empty() ? "" : ", ") + prefix + QuoteIdent(k);
  }
  return out;
}

Status PostgresSink::Resolve(PgConnection& source, bool checked) {
  // Again before a rebuild (a source table was replaced): the mirrors take the tables as
  // they are now.
  mirrors_.clear();
  for (auto& view : views_) {
    const std::string where = "view " + view->config.name + ": ";
    const std::string& query = view->config.query;
    if (auto why = UnsupportedConstruct(query)) {
      return Error::Permanent(where + "the query uses " + *why +
                              ", which pgderive cannot maintain incrementally");
    }
    auto changing = ChangingFunctions(source, query);
    if (!changing.ok()) return Error(changing.error().kind(), where + changing.error().message());
    if (changing.value()) {
      return Error::Permanent(where + "the query calls " + *changing.value() +
                              ", whose result changes without a change of the source; a "
                              "view must be a function of the rows alone");
    }
    auto plan = source.Query("explain (verbose, format json) " + query);
    if (!plan.ok()) return Error(plan.error().kind(), where + plan.error().message());
    const nlohmann::json explained =
        nlohmann::json::parse(plan.value().rows[0][0].value_or("[]"), nullptr, false);
    std::vector<std::string> scanned;
    CollectRelations(explained, scanned);
    if (scanned.empty()) return Error::Permanent(where + "the query reads no table");
    auto tables = SourceTablesOf(source, query, scanned);
    if (!tables.ok()) return Error(tables.error().kind(), where + tables.error().message());
    // (Unchanged on a second call: the monitor's thread reads it meanwhile.)
    if (view->tables != tables.value()) view->tables = std::move(tables).value();
    // PostgreSQL (before 18) does not publish generated columns: a query that reads one
    // could not be maintained from the stream.
    Status generated = CheckGeneratedColumns(source, explained);
    if (!generated.ok())
      return Error(generated.error().kind(), where + generated.error().message());
    // The output columns and the key's types.
    auto shape = source.Query("select * from (" + query + ") q limit 0");
    if (!shape.ok()) return shape.error();
    for (const std::string& key : view->config.key_columns) {
      if (std::find(shape.value().columns.begin(), shape.value().columns.end(), key) ==
          shape.value().columns.end()) {
        return Error::Permanent(where + "key column " + key + " is not a column of the query");
      }
    }
    for (const std::string& table : view->tables) {
      if (mirrors_.contains(table)) continue;
      auto described = DescribeTable(source, table);
      if (!described.ok()) return described.error();
      Mirror mirror;
      mirror.table = table;
      auto [schema, name] = SplitTableName(table);
      const std::string mirror_name = pipeline_ + "__" + schema + "__" + name;
      if (mirror_name.size() > 63) {
        return Error::Permanent(where + "the mirror table name " + mirror_name +
                                " is longer than 63 bytes; use a shorter pipeline name");
      }
      mirror.name = "pgderive." + QuoteIdent(mirror_name);
      mirror.temp = std::to_string(mirrors_.size());
      auto formats = source.Query(
          "select attname, format_type(atttypid, atttypmod) from pg_attribute where attrelid = " +
          std::to_string(described.value()->id.value) +
          " and attnum > 0 and not attisdropped and attgenerated = '' order by attnum");
      if (!formats.ok()) return formats.error();
      for (size_t i = 0; i < formats.value().rows.size(); ++i) {
        mirror.columns.push_back(formats.value().rows[i][0].value_or(""));
        mirror.types.push_back(formats.value().rows[i][1].value_or("text"));
        if (i < described.value()->columns.size() && described.value()->columns[i].key) {
          mirror.key.push_back(i);
        }
      }
      if (mirror.key.empty()) {
        return Error::Permanent(where + "table " + table +
                                " has no primary key (nor REPLICA IDENTITY USING INDEX) to key "
                                "its mirror by; REPLICA IDENTITY FULL alone is not a key");
      }
      mirror.oid = described.value()->id.value;
      mirrors_[table] = std::move(mirror);
    }
    view->key_source.clear();
    if (view->tables.size() == 1) {
      const Mirror& m = mirrors_.at(view->tables.front());
      std::vector<std::string> source_key;
      for (size_t k : m.key) source_key.push_back(m.columns[k]);
      auto keys = source.Query("explain (verbose, format json) select " + KeyList(*view) +
                               " from (" + query + ") q");
      if (!keys.ok()) return Error(keys.error().kind(), where + keys.error().message());
      view->key_source = KeyPassThrough(
          nlohmann::json::parse(keys.value().rows[0][0].value_or("[]"), nullptr, false),
          view->tables.front(), source_key, view->config.key_columns.size());
    }
    // A key passed through from the table's key is unique already; any other is checked
    // (once: not again when validate's checks have just made it).
    if (view->key_source.empty() && !checked) {
      auto duplicate =
          source.Query("select " + KeyList(*view) + " from (" + query + ") q group by " +
                       KeyList(*view) + " having count(*) > 1 limit 1");
      if (!duplicate.ok())
        return Error(duplicate.error().kind(), where + duplicate.error().message());
      if (!duplicate.value().rows.empty()) {
        return Error::Permanent(where + "key (" + KeyList(*view) +
                                ") is not unique in the query's result");
      }
    }
  }
  // Index the columns the queries join, filter or group on (named in ON, WHERE, GROUP
  // BY or HAVING), beyond the key: the affected-key queries look rows up by them.
  for (auto& [table, mirror] : mirrors_) {
    for (const auto& view : views_) {
      auto tokens = LexSql(view->config.query);
      if (!tokens.ok()) continue;
      bool lookup_clause = false;
      for (const SqlToken& t : tokens.value()) {
        if (t.kind == SqlToken::Kind::kWord) {
          if (t.text == "on" || t.text == "where" || t.text == "group" || t.text == "having") {
            lookup_clause = true;
          } else if (t.text == "select" || t.text == "from" || t.text == "join" ||
                     t.text == "order") {
            lookup_clause = false;
          }
        }
        if (!lookup_clause) continue;
        for (size_t i = 0; i < mirror.columns.size(); ++i) {
          if (t.text == mirror.columns[i] && (mirror.key.empty() || i != mirror.key.front())) {
            mirror.indexed.insert(mirror.columns[i]);
          }
        }
      }
    }
  }
  return Status::Ok();
}

Status PostgresSink::Check(const std::shared_ptr<const RelationSchema>&) { return Status::Ok(); }

Result<PgConnection*> PostgresSink::Connection() {
  if (!connection_ || PQstatus(connection_->get()) != CONNECTION_OK) {
    connection_.reset();
    temp_ready_ = false;
    auto connected = PgConnection::Connect(dsn_, PgConnection::Mode::kSql, "pgderive-sink");
    if (!connected.ok()) return connected.error();
    connection_.emplace(std::move(connected).value());
  }
  return &*connection_;
}

Status PostgresSink::Connect() {
  std::lock_guard lock(mutex_);
  connection_.reset();
  horizon_loaded_ = false;
  auto c = Connection();
  return c.ok() ? Status::Ok() : Status(c.error());
}

// pgderive's own metadata in the target database: migrations/, applied once each.
Status PostgresSink::EnsureMetadata(PgConnection& c) { return ApplyMigrations(c); }

Status PostgresSink::Migrate() {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  PgConnection& c = *connected.value();
  Status status = EnsureMetadata(c);
  // A target table made by an older pgderive has a primary key on the view's key, which
  // refuses a NULL group: it becomes the unique index a new one gets.
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
std::string PostgresSink::KeyIndex(PgConnection& c, const View& view) const {
  return "create unique index on " + view.target + " (" + KeyList(view) + ")" +
         (c.server_version() >= 150000 ? " nulls not distinct" : "");
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

bool PostgresSink::SameDefinition(const std::string& recorded, const View& view) const {
  const std::string definition = Definition(view);
  return recorded == definition || recorded == definition.substr(0, definition.rfind("\nsources "));
}

// The views whose recorded definition differs from the configuration's (one never
// recorded differs too).
Result<std::vector<const PostgresSink::View*>> PostgresSink::ChangedViews(PgConnection& c) {
  std::vector<const View*> changed;
  auto present = c.Query("select to_regclass('pgderive.views') is not null");
  if (!present.ok()) return present.error();
  const bool registry = present.value().rows[0][0].value_or("f") == "t";
  for (const auto& view : views_) {
    if (!registry) {
      changed.push_back(view.get());
      continue;
    }
    auto row = c.Query("select definition from pgderive.views where pipeline = " +
                       c.QuoteLiteral(pipeline_) + " and store = " + c.QuoteLiteral(name_) +
                       " and view = " + c.QuoteLiteral(view->config.name));
    if (!row.ok()) return row.error();
    if (row.value().rows.empty() || !SameDefinition(row.value().rows[0][0].value_or(""), *view)) {
      changed.push_back(view.get());
    }
  }
  return changed;
}

Result<std::optional<Lsn>> PostgresSink::ReadCheckpoint() {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  PgConnection& c = *connected.value();
  // A missing mirror or target table means lost data: no checkpoint.
  std::string regs = "select to_regclass('pgderive.checkpoints') is not null";
  for (const auto& [table, mirror] : mirrors_) {
    regs += " and to_regclass(" + c.QuoteLiteral(mirror.name) + ") is not null";
  }
  for (const auto& view : views_)
    regs += " and to_regclass(" + c.QuoteLiteral(view->target) + ") is not null";
  auto present = c.Query(regs);
  if (!present.ok()) return present.error();
  if (present.value().rows[0][0].value_or("f") != "t") return std::optional<Lsn>();
  // A view whose definition changed holds what the old one returned: rebuild.
  auto changed = ChangedViews(c);
  if (!changed.ok()) return changed.error();
  if (!changed.value().empty()) return std::optional<Lsn>();
  auto row = c.Query("select lsn::text from pgderive.checkpoints where pipeline = " +
                     c.QuoteLiteral(pipeline_) + " and store = " + c.QuoteLiteral(name_));
  if (!row.ok()) return row.error();
  if (row.value().rows.empty()) return std::optional<Lsn>();
  return std::optional<Lsn>(Lsn::Parse(row.value().rows[0][0].value_or("")));
}

Status PostgresSink::WriteCheckpoint(PgConnection& c, Lsn lsn) {
  return c.Execute("insert into pgderive.checkpoints (pipeline, store, lsn) values (" +
                   c.QuoteLiteral(pipeline_) + ", " + c.QuoteLiteral(name_) + ", " +
                   c.QuoteLiteral(lsn.ToString()) +
                   ") on conflict (pipeline, store) do update set lsn = excluded.lsn, "
                   "updated_at = now()");
}

Result<std::string> PostgresSink::MirrorQuery(const View& view,
                                              const std::optional<std::string>& restrict) {
  QueryRewrite rewrite;
  for (const std::string& table : view.tables) {
    const Mirror& m = mirrors_.at(table);
    if (restrict && * restrict == table) {
      std::string using_list;
      for (size_t k : m.key)
        using_list += (using_list.empty() ? "" : ", ") + QuoteIdent(m.columns[k]);
      // One key column: an index scan for the changed keys, not a hash join that reads
      // the whole mirror once per batch.
      rewrite.replacements[table] = m.key.size() == 1
                                        ? "(select m.* from " + m.name + " m where m." +
                                              using_list + " = any(array(select " + using_list +
                                              " from pgd_k_" + m.temp + ")))"
                                        : "(select m.* from " + m.name + " m join pgd_k_" + m.temp +
                                              " using (" + using_list + "))";
    } else {
      rewrite.replacements[table] = m.name;
    }
  }
  rewrite.inner_join_to = restrict;
  return RewriteQuery(view.config.query, rewrite);
}

Status PostgresSink::EnsureTempTables(PgConnection& c) {
  if (temp_ready_) return Status::Ok();
  std::string sql;
  for (const auto& [table, m] : mirrors_) {
    std::string keys;
    for (size_t k : m.key) keys += (keys.empty() ? "" : ", ") + QuoteIdent(m.columns[k]);
    sql += "create temp table if not exists pgd_k_" + m.temp + " on commit delete rows as select " +
           keys + " from " + m.name + " with no data; ";
    sql += "create temp table if not exists pgd_d_" + m.temp + " on commit delete rows as select " +
           keys + " from " + m.name + " with no data; ";
    sql += "create temp table if not exists pgd_u_" + m.temp +
           " on commit delete rows as select * from " + m.name + " with no data; ";
  }
  for (const auto& view : views_) {
    sql += "create temp table if not exists pgd_a_" + std::to_string(view->index) +
           " on commit delete rows as select " + KeyList(*view) + " from " + view->target +
           " with no data; ";
  }
  Status status = c.Execute(sql);
  if (status.ok()) temp_ready_ = true;
  return status;
}

Status PostgresSink::BeginRebuild(Lsn) {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  PgConnection& c = *connected.value();
  Status status = EnsureMetadata(c);
  if (!status.ok()) return status;
  std::string sql =
      "begin; delete from pgderive.checkpoints where pipeline = " + c.QuoteLiteral(pipeline_) +
      " and store in (" + c.QuoteLiteral(name_) + ", " + c.QuoteLiteral(HorizonRow()) + "); ";
  horizon_loaded_ = false;  // none after the rebuild
  // This session's temporary tables take the mirrors' and targets' shapes anew (a
  // source table replaced by one with other columns).
  for (const auto& [table, m] : mirrors_) {
    sql += "drop table if exists pg_temp.pgd_k_" + m.temp + ", pg_temp.pgd_d_" + m.temp +
           ", pg_temp.pgd_u_" + m.temp + "; ";
  }
  for (const auto& view : views_) {
    sql += "drop table if exists pg_temp.pgd_a_" + std::to_string(view->index) + "; ";
  }
  temp_ready_ = false;
  // A table built from another definition is replaced (its columns may differ). A table
  // pgderive never recorded is the user's: it is kept and filled.
  for (const auto& view : views_) {
    auto row = c.Query("select definition from pgderive.views where pipeline = " +
                       c.QuoteLiteral(pipeline_) + " and store = " + c.QuoteLiteral(name_) +
                       " and view = " + c.QuoteLiteral(view->config.name));
    if (!row.ok()) return row.error();
    if (!row.value().rows.empty() && !SameDefinition(row.value().rows[0][0].value_or(""), *view)) {
      sql += "drop table if exists " + view->target + "; ";
    }
  }
  for (const auto& [table, m] : mirrors_) {
    sql += "drop table if exists " + m.name + " cascade; create table " + m.name + " (";
    for (size_t i = 0; i < m.columns.size(); ++i) {
      sql += (i ? ", " : "") + QuoteIdent(m.columns[i]) + " " + m.types[i];
    }
    std::string keys;
    for (size_t k : m.key) keys += (keys.empty() ? "" : ", ") + QuoteIdent(m.columns[k]);
    sql += ", primary key (" + keys + ")); ";
    for (const std::string& column : m.indexed) {
      sql += "create index on " + m.name + " (" + QuoteIdent(column) + "); ";
    }
  }
  // What this creates, removed again by UndoRebuild should the first start fail.
  std::vector<std::string> created_tables, created_schemas;
  for (const auto& [table, m] : mirrors_) created_tables.push_back(m.name);
  for (const auto& view : views_) {
    auto [schema, name] = SplitTableName(view->config.table);
    auto present = c.Query("select to_regclass(" + c.QuoteLiteral(view->target) +
                           ") is not null, exists (select from pg_namespace where nspname = " +
                           c.QuoteLiteral(schema) + ")");
    if (!present.ok()) return present.error();
    if (present.value().rows[0][0].value_or("t") == "f") created_tables.push_back(view->target);
    if (present.value().rows[0][1].value_or("t") == "f" &&
        std::find(created_schemas.begin(), created_schemas.end(), schema) ==
            created_schemas.end()) {
      created_schemas.push_back(schema);
    }
  }
  for (const auto& view : views_) {
    auto [schema, name] = SplitTableName(view->config.table);
    auto query = MirrorQuery(*view, std::nullopt);
    if (!query.ok()) return query.error();
    sql += "create schema if not exists " + QuoteIdent(schema) + "; ";
    sql += "do $pgd$ begin if to_regclass(" + c.QuoteLiteral(view->target) +
           ") is null then execute " +
           c.QuoteLiteral("create table " + view->target + " as select * from (" + query.value() +
                          ") q with no data") +
           "; execute " + c.QuoteLiteral(KeyIndex(c, *view)) + "; end if; end $pgd$; ";
  }
  sql += "commit";
  temp_ready_ = false;
  status = c.Execute(sql);
  if (status.ok()) {
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
  PgConnection& c = *connected.value();
  IgnoreError(c.Execute("rollback"), "a transaction the failure left open, if any");
  std::string sql = "begin; ";
  for (const std::string& table : created_tables_) sql += "drop table if exists " + table + "; ";
  Status status = c.Execute(sql + "commit");
  if (!status.ok()) IgnoreError(c.Execute("rollback"), "the error above is what counts");
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

Status PostgresSink::ApplySnapshotRows(const std::shared_ptr<const RelationSchema>& schema,
                                       std::span<const TupleData> rows, const TypeRegistry&) {
  std::lock_guard lock(mutex_);
  auto it = mirrors_.find(schema->QualifiedName());
  if (it == mirrors_.end()) return Status::Ok();
  const Mirror& m = it->second;
  std::vector<std::optional<size_t>> from(m.columns.size());
  for (size_t i = 0; i < m.columns.size(); ++i) {
    for (size_t j = 0; j < schema->columns.size(); ++j) {
      if (schema->columns[j].name == m.columns[i]) from[i] = j;
    }
  }
  std::string data;
  for (const TupleData& row : rows) {
    for (size_t i = 0; i < m.columns.size(); ++i) {
      if (i) data += '\t';
      std::optional<std::string_view> value;
      if (from[i] && row.columns[*from[i]].kind == TupleValueKind::kText) {
        value = row.columns[*from[i]].data;
      }
      AppendCopyValue(data, value);
    }
    data += '\n';
  }
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  return connected.value()->CopyIn("copy " + m.name + " from stdin", data);
}

Status PostgresSink::RecomputeAll(PgConnection& c, const View& view) {
  auto query = MirrorQuery(view, std::nullopt);
  if (!query.ok()) return query.error();
  return c.Execute("delete from " + view.target + "; insert into " + view.target +
                   " select * from (" + query.value() + ") q");
}

Status PostgresSink::EndRebuild(Lsn snapshot_lsn) {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  PgConnection& c = *connected.value();
  std::string analyze;
  for (const auto& [table, m] : mirrors_) analyze += "analyze " + m.name + "; ";
  Status status = c.Execute(analyze + "begin");
  for (const auto& view : views_) {
    if (!status.ok()) break;
    status = RecomputeAll(c, *view);
    if (!status.ok()) {
      // Which view's query failed on the snapshot's rows (at line N of the file).
      status = Error(status.error().kind(),
                     "view " + view->config.name + " (table " + view->config.table + ", line " +
                         std::to_string(view->config.line) +
                         "): its query failed on the snapshot's rows: " + status.error().message());
    }
  }
  if (status.ok()) status = WriteCheckpoint(c, snapshot_lsn);
  for (const auto& view : views_) {
    if (!status.ok()) break;
    status = c.Execute(
        "insert into pgderive.views (pipeline, store, view, definition) values (" +
        c.QuoteLiteral(pipeline_) + ", " + c.QuoteLiteral(name_) + ", " +
        c.QuoteLiteral(view->config.name) + ", " + c.QuoteLiteral(Definition(*view)) +
        ") on conflict (pipeline, store, view) do update set definition = excluded.definition, "
        "updated_at = now()");
  }
  if (status.ok()) status = c.Execute("commit");
  if (!status.ok()) IgnoreError(c.Execute("rollback"), "the error above is what counts");
  return status;
}

Status PostgresSink::CollectAffected(PgConnection& c, const View& view,
                                     const std::set<std::string>& changed, bool before) {
  if (!view.key_source.empty()) {
    // The view key is the table's key: the changed keys are the affected ones (a key
    // no longer, or not, in the view is deleted and found missing by the recompute).
    if (!before || !changed.contains(view.tables.front())) return Status::Ok();
    std::string source_columns;
    for (const std::string& column : view.key_source) {
      source_columns += (source_columns.empty() ? "" : ", ") + QuoteIdent(column);
    }
    return c.Execute("insert into pgd_a_" + std::to_string(view.index) + " (" + KeyList(view) +
                     ") select distinct " + source_columns + " from pgd_k_" +
                     mirrors_.at(view.tables.front()).temp);
  }
  for (const std::string& table : view.tables) {
    if (!changed.contains(table)) continue;
    auto query = MirrorQuery(view, table);
    if (!query.ok()) return query.error();
    Status status =
        c.Execute("insert into pgd_a_" + std::to_string(view.index) + " select distinct " +
                  KeyList(view) + " from (" + query.value() + ") q");
    if (!status.ok()) return status;
  }
  return Status::Ok();
}

Status PostgresSink::Recompute(PgConnection& c, const View& view) {
  const std::string affected = "pgd_a_" + std::to_string(view.index);
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
  // an index): the first key column against the affected values. An untyped literal
  // takes the column's type.
  const std::string prefilter = nulls ? "true"
                                      : "x." + QuoteIdent(first) + " = any(" +
                                            c.QuoteLiteral(*values.value().rows[0][0]) + ")";
  // One key column without NULLs: the affected values as an array, through the
  // primary key (the planner would read the whole table once the array has a few
  // thousand values, which costs a scan of the view per batch); otherwise a join with
  // the affected keys.
  std::string sql = (view.config.key_columns.size() == 1 && !nulls
                         ? "set local enable_seqscan = off; delete from " + view.target +
                               " x where " + prefilter + "; reset enable_seqscan"
                         : "delete from " + view.target + " x using (select distinct " +
                               KeyList(view) + " from " + affected + ") a where " + equal) +
                    "; insert into " + view.target + " select x.* from (" + query.value() +
                    ") x where " + prefilter + " and exists (select from " + affected +
                    " a where " + equal + ")";
  if (nulls) {
    sql += "; delete from " + view.target + " x using (select distinct " + KeyList(view) +
           " from " + affected + " a where " + any_null + ") a where " + same + "; insert into " +
           view.target + " select x.* from (" + query.value() + ") x where exists (select from " +
           affected + " a where (" + any_null + ") and " + same + ")";
  }
  return c.Execute(sql);
}

Status PostgresSink::AddMissingColumns(PgConnection& c, Mirror& m, const RelationSchema& schema) {
  for (const ColumnSchema& column : schema.columns) {
    if (std::find(m.columns.begin(), m.columns.end(), column.name) != m.columns.end()) continue;
    auto type = c.Query("select format_type(" + std::to_string(column.type_oid) + ", " +
                        std::to_string(column.typmod) + ")");
    if (!type.ok()) return type.error();
    const std::string format = type.value().rows[0][0].value_or("text");
    Status status =
        c.Execute("alter table " + m.name + " add column if not exists " + QuoteIdent(column.name) +
                  " " + format + "; alter table pgd_u_" + m.temp + " add column if not exists " +
                  QuoteIdent(column.name) + " " + format);
    if (!status.ok()) return status;
    m.columns.push_back(column.name);
    m.types.push_back(format);
  }
  return Status::Ok();
}

Status PostgresSink::Apply(const BatchGroup& group, Lsn checkpoint) {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  PgConnection& c = *connected.value();
  Status status = EnsureTempTables(c);
  if (status.ok()) status = c.Execute("begin");
  if (!status.ok()) return status;
  if (!horizon_loaded_) {
    // The horizon (source_rows.h), as the store recorded it.
    auto horizon = c.Query(
        "select lsn::text from pgderive.checkpoints where pipeline = " + c.QuoteLiteral(pipeline_) +
        " and store = " + c.QuoteLiteral(HorizonRow()));
    if (!horizon.ok()) {
      IgnoreError(c.Execute("rollback"), "the error above is what counts");
      return horizon.error();
    }
    source_.SetHorizon(horizon.value().rows.empty()
                           ? Lsn{}
                           : Lsn::Parse(horizon.value().rows[0][0].value_or("")).value_or(Lsn{}));
    horizon_loaded_ = true;
  }

  // Per mirror: the final state of each changed row key (COPY text of the key columns),
  // and every key touched (old and new).
  std::map<std::string, std::map<std::string, Final>> finals;
  std::map<std::string, std::set<std::string>> touched;
  // The key columns' values of a row (by mirror column), and their text.
  auto key_values = [](const Mirror& m, const std::vector<std::optional<std::string>>& values) {
    std::vector<std::optional<std::string>> out;
    for (size_t k : m.key) out.push_back(values[k]);
    return out;
  };
  auto key_join = [](const std::vector<std::optional<std::string>>& keys) {
    std::string out;
    for (size_t n = 0; n < keys.size(); ++n) {
      if (n) out += '\t';
      AppendCopyValue(out, keys[n] ? std::optional<std::string_view>(*keys[n]) : std::nullopt);
    }
    return out;
  };
  auto key_text = [&](const Mirror& m, const std::vector<std::optional<std::string>>& values) {
    return key_join(key_values(m, values));
  };
  // Tuple -> values by mirror column (nullopt: NULL); `present` false for unchanged.
  auto values_of = [&](Mirror& m, const RelationSchema& schema, const TupleData& tuple,
                       std::vector<bool>& present) {
    std::vector<std::optional<std::string>> values(m.columns.size());
    present.assign(m.columns.size(), true);
    for (size_t j = 0; j < schema.columns.size() && j < tuple.columns.size(); ++j) {
      auto at = std::find(m.columns.begin(), m.columns.end(), schema.columns[j].name);
      if (at == m.columns.end()) continue;
      const size_t i = static_cast<size_t>(at - m.columns.begin());
      const TupleValue& v = tuple.columns[j];
      if (v.kind == TupleValueKind::kUnchanged) present[i] = false;
      if (v.kind == TupleValueKind::kText) values[i] = std::string(v.data);
    }
    return values;
  };

  // Rows that leave columns unchanged (TOAST) and moved to another key, or whose mirror
  // row is missing, are made whole before anything is written: from the mirror rows
  // they came from, else from the source (sinks/common/source_rows.h).
  auto complete = [&](Mirror& m, std::map<std::string, Final>& rows) -> Status {
    std::string own, moved;  // (key literals) lists
    auto literals = [&](const std::vector<std::optional<std::string>>& keys) {
      std::string out = "(";
      for (size_t n = 0; n < keys.size(); ++n) {
        out += (n ? ", " : "") + (keys[n] ? c.QuoteLiteral(*keys[n]) : std::string("null")) +
               "::" + m.types[m.key[n]];
      }
      return out + ")";
    };
    for (auto& [key, row] : rows) {
      if (row.deleted || row.reread || row.whole()) continue;
      std::string& list = row.from ? moved : own;
      list +=
          (list.empty() ? "" : ", ") + literals(row.from ? *row.from : key_values(m, row.values));
    }
    std::string key_list;
    for (size_t k : m.key) key_list += (key_list.empty() ? "" : ", ") + QuoteIdent(m.columns[k]);
    std::set<std::string> held;  // own rows the mirror holds
    if (!own.empty()) {
      auto found = c.Query("select " + key_list + " from " + m.name + " where (" + key_list +
                           ") in (" + own + ")");
      if (!found.ok()) return found.error();
      for (const auto& r : found.value().rows) held.insert(key_join(r));
    }
    std::map<std::string, std::vector<std::optional<std::string>>> sources;  // moved rows' origins
    if (!moved.empty()) {
      std::string all;
      for (const std::string& column : m.columns) {
        all += (all.empty() ? "" : ", ") + QuoteIdent(column);
      }
      auto found = c.Query("select " + all + " from " + m.name + " where (" + key_list + ") in (" +
                           moved + ")");
      if (!found.ok()) return found.error();
      for (auto& r : found.value().rows) sources.emplace(key_text(m, r), std::move(r));
    }
    for (auto it = rows.begin(); it != rows.end();) {
      Final& row = it->second;
      if (row.deleted || row.whole()) {
        ++it;
        continue;
      }
      if (!row.reread && row.from) {
        auto origin = sources.find(key_join(*row.from));
        if (origin != sources.end()) {
          for (size_t i = 0; i < row.values.size() && i < origin->second.size(); ++i) {
            if (row.present[i]) continue;
            row.values[i] = origin->second[i];
            row.present[i] = true;
          }
          ++it;
          continue;
        }
      } else if (!row.reread && held.contains(it->first)) {
        ++it;  // updated in place: the mirror keeps its columns
        continue;
      }
      std::string columns;
      std::map<std::string, std::string> known;
      for (size_t i = 0; i < m.columns.size(); ++i) {
        if (!row.present[i]) columns += (columns.empty() ? "" : ",") + m.columns[i];
        if (row.present[i] && row.values[i]) known.emplace(m.columns[i], *row.values[i]);
      }
      auto read = source_.Read(m.table, m.columns, known);
      if (!read.ok()) {
        return Error(read.error().kind(),
                     "table " + m.table + ", key " + it->first + " at " + row.lsn.ToString() +
                         ": the mirror lacks the previous value of unchanged column(s) " + columns +
                         " and reading the row again failed: " + read.error().message());
      }
      source_.Note(SourceRead{"", m.table, it->first, row.lsn, columns, read.value().has_value(),
                              !row.before_horizon});
      if (!read.value()) {
        it = rows.erase(it);  // gone from the source: its delete is ahead in the stream
        continue;
      }
      for (size_t i = 0; i < row.values.size() && i < read.value()->size(); ++i) {
        if (row.present[i]) continue;
        row.values[i] = (*read.value())[i];
        row.present[i] = true;
      }
      ++it;
    }
    return Status::Ok();
  };

  auto flush = [&]() -> Status {
    if (finals.empty()) return Status::Ok();
    for (auto& [table, rows] : finals) {
      Status s = complete(mirrors_.at(table), rows);
      if (!s.ok()) return s;
    }
    // Recorded with the data it protects, in this transaction.
    if (source_.TakeRaised()) {
      Status s = c.Execute(
          "insert into pgderive.checkpoints (pipeline, store, lsn) values (" +
          c.QuoteLiteral(pipeline_) + ", " + c.QuoteLiteral(HorizonRow()) + ", " +
          c.QuoteLiteral(source_.horizon().ToString()) +
          ") on conflict (pipeline, store) do update set lsn = excluded.lsn, updated_at = now()");
      if (!s.ok()) return s;
    }
    std::set<std::string> changed;
    for (auto& [table, rows] : finals) {
      Mirror& m = mirrors_.at(table);
      changed.insert(table);
      std::string keys;
      for (const std::string& k : touched[table]) keys += k + "\n";
      Status s = c.CopyIn("copy pgd_k_" + m.temp + " from stdin", keys);
      if (!s.ok()) return s;
    }
    for (const auto& view : views_) {
      Status s = CollectAffected(c, *view, changed, /*before=*/true);
      if (!s.ok()) return s;
    }
    for (auto& [table, rows] : finals) {
      Mirror& m = mirrors_.at(table);
      std::string deletes, upserts;
      std::string partial_sql;
      for (auto& [key, row] : rows) {
        if (row.deleted) {
          deletes += key + "\n";
          continue;
        }
        if (row.whole()) {
          for (size_t i = 0; i < m.columns.size(); ++i) {
            if (i) upserts += '\t';
            AppendCopyValue(upserts, row.values[i] ? std::optional<std::string_view>(*row.values[i])
                                                   : std::nullopt);
          }
          upserts += '\n';
          continue;
        }
        // Some columns unchanged (TOAST): update only the others.
        std::string set, where;
        for (size_t i = 0; i < m.columns.size(); ++i) {
          const std::string literal = row.values[i] ? c.QuoteLiteral(*row.values[i]) : "null";
          if (std::find(m.key.begin(), m.key.end(), i) != m.key.end()) {
            where += (where.empty() ? "" : " and ") + QuoteIdent(m.columns[i]) + " = " + literal;
          } else if (row.present[i]) {
            set += (set.empty() ? "" : ", ") + QuoteIdent(m.columns[i]) + " = " + literal;
          }
        }
        if (!set.empty())
          partial_sql += "update " + m.name + " set " + set + " where " + where + "; ";
      }
      std::string keys, update_set;
      for (size_t k : m.key) keys += (keys.empty() ? "" : ", ") + QuoteIdent(m.columns[k]);
      std::string join;
      for (size_t k : m.key) {
        join += (join.empty() ? "" : " and ") + std::string("m.") + QuoteIdent(m.columns[k]) +
                " = d." + QuoteIdent(m.columns[k]);
      }
      for (size_t i = 0; i < m.columns.size(); ++i) {
        if (std::find(m.key.begin(), m.key.end(), i) != m.key.end()) continue;
        update_set += (update_set.empty() ? "" : ", ") + QuoteIdent(m.columns[i]) + " = excluded." +
                      QuoteIdent(m.columns[i]);
      }
      Status s = Status::Ok();
      if (!deletes.empty()) {
        s = c.CopyIn("copy pgd_d_" + m.temp + " from stdin", deletes);
        if (s.ok() && m.key.size() == 1) {
          const std::string k = QuoteIdent(m.columns[m.key[0]]);
          s = c.Execute("delete from " + m.name + " m where m." + k + " = any(array(select " + k +
                        " from pgd_d_" + m.temp + "))");
        } else if (s.ok()) {
          s = c.Execute("delete from " + m.name + " m using pgd_d_" + m.temp + " d where " + join);
        }
      }
      if (s.ok() && !upserts.empty()) {
        s = c.CopyIn("copy pgd_u_" + m.temp + " from stdin", upserts);
        if (s.ok()) {
          s = c.Execute("insert into " + m.name + " select * from pgd_u_" + m.temp +
                        " on conflict (" + keys + ") do " +
                        (update_set.empty() ? "nothing" : "update set " + update_set));
        }
      }
      if (s.ok() && !partial_sql.empty()) s = c.Execute(partial_sql);
      if (!s.ok()) return s;
    }
    for (const auto& view : views_) {
      Status s = CollectAffected(c, *view, changed, /*before=*/false);
      if (s.ok()) s = Recompute(c, *view);
      if (!s.ok()) return s;
    }
    std::string clear = "truncate";
    for (const auto& [table, m] : mirrors_) {
      clear += " pgd_k_" + m.temp + ", pgd_d_" + m.temp + ", pgd_u_" + m.temp + ",";
    }
    for (const auto& view : views_) clear += " pgd_a_" + std::to_string(view->index) + ",";
    clear.pop_back();
    finals.clear();
    touched.clear();
    return c.Execute(clear);
  };

  for (const auto& batch : group) {
    for (const OwnedChange& change : batch->changes) {
      // Already applied: the checkpoint row was committed with everything before it.
      if (change.commit_lsn < checkpoint) continue;
      if (change.op == ChangeOp::kBackfillRow) continue;  // for views filled row by row
      if (change.op == ChangeOp::kViewState) {
        // A rebuild on demand: the view is recomputed from its mirrors, which are
        // complete up to this point, in this batch's transaction.
        for (const auto& view : views_) {
          if (!status.ok() || !change.control->clear ||
              !change.control->Names(name_, view->config.name)) {
            continue;
          }
          status = flush();
          if (status.ok()) status = RecomputeAll(c, *view);
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
          for (const auto& view : views_) {
            if (status.ok() && std::find(view->tables.begin(), view->tables.end(), it->first) !=
                                   view->tables.end()) {
              status = RecomputeAll(c, *view);
            }
          }
        }
        if (!status.ok()) break;
        continue;
      }
      const RelationSchema& schema = change.relation();
      auto it = mirrors_.find(schema.QualifiedName());
      if (it == mirrors_.end()) continue;
      Mirror& m = it->second;
      status = AddMissingColumns(c, m, schema);
      if (!status.ok()) break;
      auto& rows = finals[m.table];
      std::vector<bool> present;
      // A key change: the row's state at its old key, which the columns it leaves
      // unchanged come from.
      std::optional<Final> origin;
      std::vector<std::optional<std::string>> origin_key;
      if (change.op == ChangeOp::kDelete ||
          (change.op == ChangeOp::kUpdate && change.old_kind != '\0')) {
        auto old_values = values_of(m, schema, change.old_tuple, present);
        const std::string old_key = key_text(m, old_values);
        touched[m.table].insert(old_key);
        if (change.op == ChangeOp::kDelete) {
          rows[old_key] = Final{true, {}, {}, {}, false, change.commit_lsn};
          continue;
        }
        auto new_values = values_of(m, schema, change.new_tuple, present);
        if (key_text(m, new_values) != old_key) {
          auto at = rows.find(old_key);
          origin = at != rows.end() ? at->second : Final{};
          origin_key = key_values(m, old_values);
          rows[old_key] = Final{true, {}, {}, {}, false, change.commit_lsn};
        }
      }
      auto values = values_of(m, schema, change.new_tuple, present);
      const std::string key = key_text(m, values);
      touched[m.table].insert(key);
      Final& row = rows[key];
      if (origin) {
        // The row moved here: what it left out is where it was (earlier in the batch,
        // or in the mirror before it).
        Final next{false, std::move(values), std::move(present), {}, false, change.commit_lsn};
        if (!next.whole()) {
          if (origin->deleted) {
            next.reread = true;
          } else if (origin->values.empty()) {
            next.from = origin_key;
          } else {
            for (size_t i = 0; i < next.values.size() && i < origin->values.size(); ++i) {
              if (next.present[i] || !origin->present[i]) continue;
              next.values[i] = origin->values[i];
              next.present[i] = true;
            }
            next.from = origin->from ? origin->from : origin_key;
            next.reread = origin->reread;
          }
        }
        row = std::move(next);
      } else if (row.deleted || row.values.empty()) {
        const bool after_delete = row.deleted;
        row = Final{false, std::move(values), std::move(present), {}, false, change.commit_lsn};
        // An update of a row deleted earlier in the batch has no mirror row to keep
        // its unchanged columns from.
        if (after_delete && !row.whole()) row.reread = true;
      } else {
        row.lsn = change.commit_lsn;
        for (size_t i = 0; i < values.size(); ++i) {
          if (present[i]) {
            row.values[i] = std::move(values[i]);
            row.present[i] = true;
          }
        }
      }
      // Before the horizon, what a change leaves out is the source's (source_rows.h).
      if (!row.whole() && !row.reread && change.commit_lsn < source_.horizon()) {
        row.reread = true;
        row.before_horizon = true;
      }
    }
    if (!status.ok()) break;
  }
  if (status.ok()) status = flush();
  if (status.ok()) {
    if (auto next = CheckpointOf(group)) status = WriteCheckpoint(c, *next);
  }
  if (status.ok()) status = c.Execute("commit");
  if (!status.ok()) {
    IgnoreError(c.Execute("rollback"), "the error above is what counts");
    temp_ready_ = false;      // a failed DDL inside may have been rolled back
    horizon_loaded_ = false;  // and a horizon it raised
  }
  return status;
}

Result<std::vector<ViewInspector::Entry>> PostgresSink::ReadView(const std::string& view_name) {
  std::lock_guard lock(mutex_);
  for (const auto& view : views_) {
    if (view->config.name != view_name) continue;
    auto connected = Connection();
    if (!connected.ok()) return connected.error();
    auto rows =
        connected.value()->Query("select json_build_array(" + KeyList(*view, "t.") +
                                 ")::text, row_to_json(t.*)::text from " + view->target + " t");
    if (!rows.ok()) return rows.error();
    std::vector<Entry> out;
    for (auto& row : rows.value().rows) out.emplace_back(row[0].value_or(""), row[1].value_or(""));
    return out;
  }
  return Error::Permanent("no postgres view named " + view_name);
}

Result<std::optional<ViewInspector::Entry>> PostgresSink::Expected(
    const std::string&, const std::shared_ptr<const RelationSchema>&, const TupleData&,
    const TypeRegistry&) {
  return std::optional<Entry>();
}

Result<std::optional<std::vector<ViewInspector::Entry>>> PostgresSink::ExpectedFromSource(
    const std::string& view_name, PgConnection& source) {
  for (const auto& view : views_) {
    if (view->config.name != view_name) continue;
    auto rows = source.Query("select json_build_array(" + KeyList(*view, "q.") +
                             ")::text, row_to_json(q.*)::text from (" + view->config.query + ") q");
    if (!rows.ok()) return rows.error();
    std::vector<Entry> out;
    for (auto& row : rows.value().rows) out.emplace_back(row[0].value_or(""), row[1].value_or(""));
    return std::optional<std::vector<Entry>>(std::move(out));
  }
  return Error::Permanent("no postgres view named " + view_name);
}

}  // namespace pgderive
