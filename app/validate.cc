#include "app/validate.h"

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "app/sink_factory.h"
#include "base/names.h"
#include "base/number.h"
#include "base/redact.h"
#include "base/table_name.h"
#include "cdc/pg_connection.h"
#include "cdc/publication.h"
#include "cdc/sql_session.h"
#include "config/config.h"
#include "sinks/common/view_shape.h"
#include "sinks/opensearch/opensearch_client.h"
#include "sinks/redis/redis_client.h"
#include "sinks/redis/redis_sink.h"
#include "spool/segment_log.h"

namespace pgderive {
namespace {

// Seconds a connection attempt may take: a firewalled host must not hang validate.
constexpr const char* kConnectTimeoutSeconds = "10";

std::string Plural(size_t n, const std::string& one, const std::string& many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

std::vector<std::string> ColumnNames(const RelationSchema& schema) {
  std::vector<std::string> names;
  for (const ColumnSchema& c : schema.columns) names.push_back(c.name);
  return names;
}

// The messages of an Error that lists several problems ("header:\n  one\n  two"), one
// per entry; the message itself when it lists none.
std::vector<std::string> SplitListed(const std::string& message) {
  std::vector<std::string> out;
  size_t at = message.find("\n  ");
  if (at == std::string::npos) return {message};
  while (at != std::string::npos) {
    const size_t next = message.find("\n  ", at + 3);
    out.push_back(message.substr(at + 3, next == std::string::npos ? next : next - at - 3));
    at = next;
  }
  return out;
}

// Everything `validate --connect` checks, in order, each failure a problem. Nothing
// here creates, alters or writes anything: SQL is SELECT, SHOW, EXPLAIN and
// IDENTIFY_SYSTEM on a session whose transactions are read-only; the stores get
// INFO / GET / and a connection.
class ConnectedChecks {
 public:
  ConnectedChecks(const Config& config, std::FILE* out) : config_(config), out_(out) {}

  std::vector<ConfigProblem> Run() {
    // libpq waits for a connection without limit unless told; an unreachable host must
    // not hang the checks. A DSN's own connect_timeout still wins.
    setenv("PGCONNECT_TIMEOUT", kConnectTimeoutSeconds, /*overwrite=*/0);
    CheckSpool();
    CheckSource();
    CheckStores();
    return Sorted();
  }
  // The checks of one store alone (the source's are not made).
  std::vector<ConfigProblem> RunStore(const std::string& name) {
    setenv("PGCONNECT_TIMEOUT", kConnectTimeoutSeconds, /*overwrite=*/0);
    auto it = config_.stores.find(name);
    if (it != config_.stores.end()) CheckStore(it->second);
    return Sorted();
  }

  size_t tables_checked() const { return tables_checked_; }
  // The source's slot exists (read by CheckSource).
  bool slot_exists() const { return slot_exists_; }

 private:
  std::vector<ConfigProblem> Sorted() {
    std::stable_sort(problems_.begin(), problems_.end(),
                     [](const ConfigProblem& a, const ConfigProblem& b) {
                       return std::pair(a.line, a.column) < std::pair(b.line, b.column);
                     });
    return std::move(problems_);
  }
  // Where problems about each part of the file point.
  // `key` is "source" (the section) or "source.NAME" (that value, where it is written).
  void AtSource(const std::string& key, const std::string& message) {
    const std::string name = key.starts_with("source.") ? key.substr(7) : "";
    const ConfigMark mark = name.empty() ? ConfigMark{config_.source.line, config_.source.column}
                                         : config_.source.MarkOf(name);
    Add(mark.line, mark.column, key, message);
  }
  // A store's connection (its url, or its dsn) is what a problem with it is about.
  // `unreachable`: the store did not answer (ConfigProblem::unreachable).
  void AtStore(const StoreConfig& store, const std::string& message, bool unreachable = false) {
    const std::string key = store.type == StoreType::kPostgres ? "dsn" : "url";
    const ConfigMark mark = store.MarkOf(key);
    Add(mark.line, mark.column, "stores." + store.name + "." + key, message);
    problems_.back().unreachable = unreachable;
  }
  // `key` is ".NAME" (the view's value of NAME, where it is written) or "" (the view).
  void AtView(size_t index, const std::string& key, const std::string& message) {
    const ViewConfig& view = config_.views[index];
    const ConfigMark mark =
        key.empty() ? ConfigMark{view.line, view.column} : view.MarkOf(key.substr(1));
    At(index, mark, key, message);
  }
  // `key` as ".columns[1]", at `mark`.
  void At(size_t index, ConfigMark mark, const std::string& key, const std::string& message) {
    Add(mark.line, mark.column, "views[" + std::to_string(index) + "]" + key, message);
  }
  // A postgres view's query or key, as its sink's Resolve found it: a key column at its
  // own line in `key:`, a PostgreSQL error at the query's line it names ("LINE 2:"),
  // anything else at the query.
  void AtResolved(size_t index, const std::string& message) {
    const ViewConfig& view = config_.views[index];
    for (size_t k = 0; k < view.key_columns.size() && k < view.key_column_marks.size(); ++k) {
      if (message.find("key column " + view.key_columns[k] + " ") != std::string::npos) {
        At(index, view.key_column_marks[k], ".key[" + std::to_string(k) + "]", message);
        return;
      }
    }
    if (message.find(": key (") != std::string::npos) {
      AtView(index, ".key", message);
      return;
    }
    // PostgreSQL's "LINE n: <text>" counts the statement's lines; what precedes the
    // query in it (EXPLAIN ...) adds none.
    const size_t at = message.find("\nLINE ");
    if (at != std::string::npos) {
      auto line = ParseNumber<int>(message.substr(at + 6, message.find(':', at + 6) - at - 6));
      if (line.ok()) {
        At(index, view.QueryLineMark(line.value()), ".query", message);
        return;
      }
    }
    AtView(index, ".query", message);
  }
  void Add(int line, int column, std::string key, const std::string& message) {
    problems_.push_back(ConfigProblem{line, column, std::move(key), RedactSecrets(message)});
  }
  void Info(const std::string& line) {
    if (out_ != nullptr) std::fprintf(out_, "%s\n", RedactSecrets(line).c_str());
  }

  // -------------------------------------------------------------- the change log
  // Its directory must be one this process can create and write: found here, before
  // the slot and the stores are touched, not when the log is opened.
  void CheckSpool() {
    if (!config_.spool.enabled) return;
    ConfigMark mark = config_.MarkOf("spool.dir");
    if (mark.line == 0) mark = config_.MarkOf("spool");
    // A directory with other files in it, or another pipeline's log: never emptied.
    if (Status owned = CheckLogOwner(config_.spool.dir, ChangeLogOwner(config_)); !owned.ok()) {
      Add(mark.line, mark.column, "spool.dir", owned.error().message());
      return;
    }
    Status status = CheckLogDirectory(config_.spool.dir);
    if (status.ok()) return;
    Add(mark.line, mark.column, "spool.dir",
        "the change log cannot be created in " + config_.spool.dir + ": " +
            status.error().message() +
            "; set spool.dir to a directory this process can write (on a persistent volume), "
            "or `spool: off`");
  }

  // -------------------------------------------------------------- the source

  void CheckSource() {
    auto connected = SqlSession::Connect(config_.source.dsn, "pgderive-validate");
    if (!connected.ok()) {
      AtSource("source.dsn", "cannot connect to the source: " + connected.error().message());
      return;
    }
    SqlSession& sql = connected.value();
    // Belt and braces: whatever a check below runs, this session cannot write.
    if (Status s = sql.Execute("set default_transaction_read_only = on"); !s.ok()) {
      AtSource("source", "cannot make the session read-only: " + s.error().message());
      return;
    }
    auto settings = sql.Query(
        "select current_setting('server_version'), current_setting('wal_level'), "
        "current_setting('max_replication_slots')::int, (select count(*) from "
        "pg_replication_slots), r.rolname, r.rolsuper, r.rolreplication, "
        "has_database_privilege(current_database(), 'CREATE'), current_database() "
        "from pg_roles r where r.rolname = current_user");
    if (!settings.ok() || settings.value().rows.size() != 1) {
      AtSource("source", "cannot read the server's settings: " +
                             (settings.ok() ? std::string("no row for the current role")
                                            : settings.error().message()));
      return;
    }
    const auto& row = settings.value().rows[0];
    const std::string version = row[0].value_or("?");
    const std::string wal_level = row[1].value_or("");
    auto max_slots_text = ParseServerNumber<int64_t>(row[2]);
    auto used_slots_text = ParseServerNumber<int64_t>(row[3]);
    if (!max_slots_text.ok() || !used_slots_text.ok()) {
      AtSource("source",
               "cannot read the server's settings: " +
                   (max_slots_text.ok() ? used_slots_text.status() : max_slots_text.status())
                       .error()
                       .message());
      return;
    }
    const int64_t max_slots = max_slots_text.value();
    const int64_t used_slots = used_slots_text.value();
    role_ = row[4].value_or("");
    superuser_ = row[5].value_or("f") == "t";
    const bool replication = row[6].value_or("f") == "t";
    const bool create_in_database = row[7].value_or("f") == "t";
    const std::string database = row[8].value_or("");

    std::string summary = "source: PostgreSQL " + version + ", database " + database +
                          ", wal_level " + wal_level + ", role " + role_ +
                          (superuser_    ? " (superuser)"
                           : replication ? " (REPLICATION)"
                                         : "");
    if (wal_level != "logical") {
      AtSource("source", "the source has wal_level = " + wal_level +
                             "; logical replication needs wal_level = logical (ALTER SYSTEM SET "
                             "wal_level = logical, then restart PostgreSQL)");
    }

    // The slot: pgderive's own, or room for it.
    auto slot = sql.Query(
        "select plugin, database = current_database(), active from pg_replication_slots "
        "where slot_name = " +
        sql.QuoteLiteral(config_.source.slot));
    if (!slot.ok()) {
      AtSource("source.slot", "cannot read pg_replication_slots: " + slot.error().message());
    } else if (!slot.value().rows.empty()) {
      const auto& s = slot.value().rows[0];
      if (s[0].value_or("") != "pgoutput" || s[1].value_or("") != "t") {
        AtSource("source.slot", "slot " + config_.source.slot +
                                    " exists but is not a pgoutput slot of database " + database +
                                    "; choose another source.slot or drop it");
      } else {
        summary += ", slot " + config_.source.slot + " exists";
        slot_exists_ = true;
        if (s[2].value_or("f") == "t") summary += " (in use)";
      }
    } else if (max_slots - used_slots < 1) {
      AtSource("source.slot", "no free replication slot for " + config_.source.slot + ": " +
                                  std::to_string(used_slots) +
                                  " of max_replication_slots = " + std::to_string(max_slots) +
                                  " are in use (raise max_replication_slots or drop an unused "
                                  "slot)");
    } else {
      summary += ", slot " + config_.source.slot + " to be created (" +
                 std::to_string(max_slots - used_slots) + " of " + std::to_string(max_slots) +
                 " free)";
    }

    // The replication connection.
    if (!superuser_ && !replication) {
      AtSource("source", "role " + role_ +
                             " has neither the REPLICATION attribute nor SUPERUSER, so it cannot "
                             "stream changes; fix: ALTER ROLE " +
                             sql.QuoteIdentifier(role_) + " REPLICATION");
    } else {
      auto repl = PgConnection::Connect(config_.source.dsn, PgConnection::Mode::kReplication,
                                        "pgderive-validate");
      if (!repl.ok()) {
        AtSource("source.dsn", "cannot open a replication connection: " + repl.error().message());
      } else if (auto identity = repl.value().IdentifySystem(); !identity.ok()) {
        AtSource("source.dsn", "IDENTIFY_SYSTEM failed: " + identity.error().message());
      }
    }

    // The publication: what `run` will have to create or add.
    auto publication = sql.Query(
        "select puballtables, pubinsert and pubupdate and pubdelete and pubtruncate from "
        "pg_publication where pubname = " +
        sql.QuoteLiteral(config_.source.publication));
    if (!publication.ok()) {
      AtSource("source.publication",
               "cannot read pg_publication: " + publication.error().message());
    } else if (publication.value().rows.empty()) {
      publication_missing_ = true;
      if (!superuser_ && !create_in_database) {
        cannot_create_publication_ = true;  // the tables' owner must: said once, here
        AtSource("source.publication",
                 "publication " + config_.source.publication + " does not exist and role " + role_ +
                     " may not create it (it needs CREATE on database " + database +
                     "); create it as the tables' owner: CREATE PUBLICATION " +
                     sql.QuoteIdentifier(config_.source.publication) + " FOR TABLE ...");
      }
    } else {
      const auto& p = publication.value().rows[0];
      all_tables_ = p[0].value_or("f") == "t";
      if (p[1].value_or("f") != "t") {
        AtSource("source.publication",
                 "publication " + config_.source.publication +
                     " does not publish every operation; fix: ALTER PUBLICATION " +
                     sql.QuoteIdentifier(config_.source.publication) +
                     " SET (publish = 'insert, update, delete, truncate')");
      }
      auto published = PublicationMembers(sql, config_.source.publication);
      if (published.ok()) published_ = std::move(published).value();
    }
    Info(summary);
    CheckTables(sql);
  }

  // -------------------------------------------------------------- tables and columns

  void CheckTables(SqlSession& sql) {
    // Which views read each table, in first-use order; a postgres view's tables come
    // from its query (PostgresSink::Resolve plans it with EXPLAIN, and checks that it can
    // be maintained and that its key is unique).
    std::vector<std::string> tables;
    std::map<std::string, std::vector<size_t>> readers;
    auto read_by = [&](const std::string& table, size_t view) {
      if (!readers.contains(table)) tables.push_back(table);
      readers[table].push_back(view);
    };
    for (size_t i = 0; i < config_.views.size(); ++i) {
      const ViewConfig& view = config_.views[i];
      auto made = MakeSinks(config_, view.name);
      if (!made.ok() || made.value().size() != 1) {
        AtView(i, "",
               "view " + view.name + ": " +
                   (made.ok() ? std::string("no store to check it with") : made.error().message()));
        continue;
      }
      std::unique_ptr<Sink> sink = std::move(made.value().front());
      if (config_.stores.at(view.store).type == StoreType::kPostgres) {
        Status resolved = sink->Resolve(sql);
        if (!resolved.ok()) {
          AtResolved(i, resolved.error().message());
          continue;
        }
      }
      for (const std::string& table : sink->tables()) read_by(table, i);
      sinks_[i] = std::move(sink);
    }

    for (const std::string& table : tables) {
      const std::vector<size_t>& views = readers[table];
      std::string names;
      for (size_t v : views) names += (names.empty() ? "" : ", ") + config_.views[v].name;
      const std::string read_by_text =
          " (read by view" + std::string(views.size() > 1 ? "s " : " ") + names + ")";
      auto where = [&](size_t v) {
        return config_.stores.at(config_.views[v].store).type == StoreType::kPostgres ? ".query"
                                                                                      : ".from";
      };
      auto [schema_name, name] = TableName::Parse(table);
      auto found = sql.Query(
          "select has_table_privilege(c.oid, 'SELECT'), pg_has_role(c.relowner, 'USAGE'), "
          "c.relkind, c.relpersistence from pg_class c join pg_namespace n on n.oid = "
          "c.relnamespace where c.relkind in ('r', 'p', 'v', 'm', 'f') and n.nspname = " +
          sql.QuoteLiteral(schema_name) + " and c.relname = " + sql.QuoteLiteral(name));
      if (!found.ok()) {
        AtView(views.front(), where(views.front()),
               "cannot look up table " + table + ": " + found.error().message());
        continue;
      }
      if (found.value().rows.empty()) {
        AtView(views.front(), where(views.front()),
               "table " + table + " does not exist in the source database" + read_by_text +
                   TableMeant(sql, table));
        continue;
      }
      ++tables_checked_;
      // A partition of another table read: its changes are published as that root's.
      auto ancestors =
          sql.Query("select n.nspname || '.' || c.relname from pg_partition_ancestors(" +
                    sql.QuoteRegclass(table) +
                    ") a join pg_class c on c.oid = a.relid join pg_namespace n on n.oid = "
                    "c.relnamespace where a.relid <> " +
                    sql.QuoteRegclass(table));
      if (ancestors.ok()) {
        for (const auto& row : ancestors.value().rows) {
          const std::string ancestor = row[0].value_or("");
          if (!readers.contains(ancestor)) continue;
          AtView(views.front(), where(views.front()),
                 "table " + table + " is a partition of " + ancestor +
                     ", which a view also reads: PostgreSQL publishes the partition's changes "
                     "as " +
                     ancestor + "'s, so a view of the partition alone would miss them; read " +
                     ancestor + " (with a postgres view's WHERE for the partition's rows)" +
                     read_by_text);
        }
      }
      // Publishable (not a view, nor unlogged, ...), and a replica identity: updates and
      // deletes must name their row.
      Status captured = CheckSourceTables(sql, {table});
      if (!captured.ok()) {
        for (const std::string& line : SplitListed(captured.error().message())) {
          AtView(views.front(), where(views.front()), line + read_by_text);
        }
      }
      const auto& kind = found.value().rows[0];
      if (WhyNotPublishable(kind[2].value_or("r")[0], kind[3].value_or("p")[0], table, "")) {
        continue;  // said above; nothing else about it matters
      }
      if (found.value().rows[0][0].value_or("f") != "t") {
        AtView(views.front(), where(views.front()),
               "role " + role_ + " may not SELECT from table " + table +
                   ", which the snapshot reads" + read_by_text + "; fix: GRANT SELECT ON " +
                   TableName::Parse(table).Quoted() + " TO " + sql.QuoteIdentifier(role_));
      }
      const bool in_publication = all_tables_ || published_.contains(table);
      if (!in_publication && !superuser_ && !cannot_create_publication_ &&
          found.value().rows[0][1].value_or("f") != "t") {
        AtView(views.front(), where(views.front()),
               "role " + role_ + " does not own table " + table + ", so it cannot " +
                   (publication_missing_ ? "create publication " : "add it to publication ") +
                   config_.source.publication + " with it" + read_by_text +
                   "; let the owner run: " +
                   (publication_missing_ ? "CREATE PUBLICATION " : "ALTER PUBLICATION ") +
                   sql.QuoteIdentifier(config_.source.publication) +
                   (publication_missing_ ? " FOR TABLE " : " ADD TABLE ") +
                   TableName::Parse(table).Quoted());
      }
      // Columns: the views' lists and key templates against the table's shape.
      auto schema = DescribeTable(sql, table);
      if (!schema.ok()) {
        AtView(views.front(), where(views.front()), schema.error().message());
        continue;
      }
      // A view keys rows by the primary key (or the replica identity index) whatever the
      // replica identity; FULL without either leaves no key (two equal rows could not be
      // told apart).
      if (schema.value()->replica_identity == 'f' &&
          std::none_of(schema.value()->columns.begin(), schema.value()->columns.end(),
                       [](const ColumnSchema& c) { return c.key; })) {
        AtView(views.front(), where(views.front()),
               "table " + table +
                   " has REPLICA IDENTITY FULL but no primary key: a view keys its rows by "
                   "the primary key (or the replica identity index), FULL only adds the old "
                   "row; fix: add a primary key, or ALTER TABLE " +
                   TableName::Parse(table).Quoted() +
                   " REPLICA IDENTITY USING INDEX <a unique index of NOT NULL columns>" +
                   read_by_text);
        continue;
      }
      auto generated = GeneratedColumns(sql, table);
      if (!generated.ok()) {
        AtView(views.front(), where(views.front()), generated.error().message());
        continue;
      }
      for (size_t v : views) {
        auto sink = sinks_.find(v);
        if (sink == sinks_.end()) continue;
        // Every column named, each reported (the sink's own check stops at the first);
        // then whatever else the sink checks.
        if (!CheckColumns(v, *schema.value(), generated.value())) continue;
        Status fits = sink->second->Check(schema.value());
        if (!fits.ok()) AtView(v, where(v), fits.error().message());
      }
    }
  }

  // "; did you mean public.orders?" when a table the role sees is close to `table`
  // (the tables are not listed: a database may hold thousands).
  static std::string TableMeant(SqlSession& sql, const std::string& table) {
    auto tables = sql.Query(
        "select n.nspname || '.' || c.relname from pg_class c join pg_namespace n on n.oid = "
        "c.relnamespace where c.relkind in ('r', 'p', 'v', 'm', 'f') and n.nspname not in "
        "('pg_catalog', 'information_schema', 'pgderive') and n.nspname not like 'pg\\_%'");
    if (!tables.ok()) return "";
    std::vector<std::string> names;
    for (const auto& row : tables.value().rows) names.push_back(row[0].value_or(""));
    auto closest = ClosestName(table, names);
    return closest ? "; did you mean " + *closest + "?" : "";
  }

  // The columns a row view lists and its key template's placeholders exist; a key
  // column is in the replica identity. False when something is reported.
  // A generated column (`generated`: name, expression) is refused with the reason; a
  // view without `columns` is told which it leaves out.
  bool CheckColumns(size_t index, const RelationSchema& schema,
                    const std::vector<std::pair<std::string, std::string>>& generated) {
    const ViewConfig& view = config_.views[index];
    if (config_.stores.at(view.store).type == StoreType::kPostgres) return true;
    auto column = [&](const std::string& name) -> const ColumnSchema* {
      for (const ColumnSchema& c : schema.columns) {
        if (c.name == name) return &c;
      }
      return nullptr;
    };
    auto generation = [&](const std::string& name) -> const std::string* {
      for (const auto& [column_name, expression] : generated) {
        if (column_name == name) return &expression;
      }
      return nullptr;
    };
    const std::string where = "view " + view.name + ": ";
    bool ok = true;
    const std::vector<std::string> listed = view.columns.value_or(std::vector<std::string>{});
    for (size_t i = 0; i < listed.size(); ++i) {
      const std::string& name = listed[i];
      // The column's own entry in the list.
      auto at_item = [&](const std::string& message) {
        At(index, i < view.column_marks.size() ? view.column_marks[i] : view.MarkOf("columns"),
           ".columns[" + std::to_string(i) + "]", message);
      };
      if (const std::string* expression = generation(name)) {
        at_item(where + GeneratedColumnProblem(schema.QualifiedName(), name, *expression) +
                "; leave it out of columns (a reader computes " + *expression +
                " from the columns it is made of), or use a postgres view whose query "
                "computes it");
        ok = false;
      } else if (column(name) == nullptr) {
        at_item(where + "column " + name + " is not in table " + schema.QualifiedName() + " " +
                ValidNames(name, ColumnNames(schema), "its columns"));
        ok = false;
      }
    }
    if (!view.columns && !generated.empty()) {
      std::string names;
      for (const auto& [name, expression] : generated) names += (names.empty() ? "" : ", ") + name;
      Info("view " + view.name + ": leaves out the generated column(s) " + names + " of " +
           schema.QualifiedName() + " (PostgreSQL before 18 does not publish them)");
    }
    if (view.key) {
      for (const std::string& name : view.key->columns()) {
        const ColumnSchema* c = column(name);
        // The {column} where it is written in the template.
        auto at_placeholder = [&](const std::string& message) {
          auto mark = view.placeholder_marks.find(name);
          At(index, mark == view.placeholder_marks.end() ? view.MarkOf("key") : mark->second,
             ".key", message);
        };
        if (const std::string* expression = generation(name)) {
          at_placeholder(where + GeneratedColumnProblem(schema.QualifiedName(), name, *expression) +
                         "; a key column must be one PostgreSQL publishes");
          ok = false;
        } else if (c == nullptr) {
          at_placeholder(where + "key column " + name + " is not in table " +
                         schema.QualifiedName() + " " +
                         ValidNames(name, ColumnNames(schema), "its columns"));
          ok = false;
        } else if (!c->key) {  // also under FULL: the key must be unique and never NULL
          at_placeholder(where + "key column " + name + " is not part of the row key of " +
                         schema.QualifiedName() +
                         " (its primary key, or its replica identity index): two rows could share "
                         "the key, or a delete not name it; to key by a unique NOT NULL column, "
                         "ALTER TABLE " +
                         schema.QualifiedName() +
                         " REPLICA IDENTITY USING INDEX <its unique index>");
          ok = false;
        }
      }
      // Every row key column, too (once its own columns are right): a template naming part of a
      // composite key gives two rows one key, and the later would overwrite the earlier.
      if (ok) {  // its own columns are right: does it name the whole key?
        const std::vector<std::string>& named = view.key->columns();
        std::string missing;
        for (const ColumnSchema& c : schema.columns) {
          if (c.key && std::find(named.begin(), named.end(), c.name) == named.end()) {
            missing += (missing.empty() ? "{" : "}, {") + c.name;
          }
        }
        if (!missing.empty()) {
          AtView(index, ".key",
                 where + "the key template names only part of the row key of " +
                     schema.QualifiedName() + ": two rows that differ only in " + missing +
                     "} would share one key; add " + missing + "} to the template");
          ok = false;
        }
      }
    }
    return ok;
  }

  // -------------------------------------------------------------- the stores

  void CheckStores() {
    for (const auto& [name, store] : config_.stores) {
      const bool used = std::any_of(config_.views.begin(), config_.views.end(),
                                    [&](const ViewConfig& v) { return v.store == name; });
      if (!used) {
        Info("store " + name + ": no view uses it (not checked)");
        continue;
      }
      CheckStore(store);
    }
  }

  void CheckStore(const StoreConfig& store) {
    switch (store.type) {
      case StoreType::kRedis:
        CheckRedis(store);
        break;
      case StoreType::kOpenSearch:
        CheckOpenSearch(store);
        break;
      case StoreType::kPostgres:
        CheckPostgresStore(store);
        break;
    }
  }

  void CheckRedis(const StoreConfig& store) {
    auto client = RedisClient::Connect(store.ConnectUrl(), std::chrono::seconds(5));
    if (!client.ok()) {
      AtStore(store, "store " + store.name + " (redis): " + client.error().message(),
              client.error().kind() == ErrorKind::kTransient);
      return;
    }
    auto info = client.value().Command({"INFO", "server"});
    if (!info.ok() || info.value().type != RedisReply::Type::kString) {
      AtStore(store,
              "store " + store.name + " (redis): INFO server failed: " +
                  (info.ok() ? info.value().str : info.error().message()),
              !info.ok() && info.error().kind() == ErrorKind::kTransient);
      return;
    }
    std::string version = "?";
    std::istringstream lines(info.value().str);
    for (std::string line; std::getline(lines, line);) {
      if (line.starts_with("redis_version:")) {
        version = line.substr(14);
        while (!version.empty() && (version.back() == '\r' || version.back() == ' ')) {
          version.pop_back();
        }
      }
    }
    Info("store " + store.name + " (redis): Redis " + version);
    // Keys under a view's pattern that the pipeline did not write are someone else's:
    // `run` would overwrite them, and a rebuild's sweep delete them.
    auto foreign = FindForeignKeys(client.value(), config_, store);
    if (!foreign.ok()) {
      AtStore(store, "store " + store.name + " (redis): " + foreign.error().message());
      return;
    }
    for (const ForeignKeys& keys : foreign.value()) {
      size_t index = 0;
      while (config_.views[index].name != keys.view) ++index;
      std::string example = keys.example.substr(0, 200);
      AtView(index, ".key",
             "view " + keys.view + ": store " + store.name + " (" + store.url +
                 ") already holds keys matching " + keys.pattern + " that pipeline " +
                 config_.pipeline + " did not write or no longer records (e.g. " + example +
                 "); refused, nothing was written: point the view's key at a prefix nothing "
                 "else uses, or remove those keys (pgderive writes and deletes only the keys of "
                 "views whose state it recorded in pgderive:" +
                 config_.pipeline + ":views)");
    }
  }

  void CheckOpenSearch(const StoreConfig& store) {
    HttpClient::Options options;
    options.url = store.ConnectUrl();
    options.ca_file = store.ca_file;
    options.timeout = std::chrono::seconds(10);
    auto client = OpenSearchClient::Create(options);
    if (!client.ok()) {
      AtStore(store, "store " + store.name + " (opensearch): " + client.error().message());
      return;
    }
    auto version = client.value().ServerVersion();
    if (!version.ok()) {
      AtStore(store, "store " + store.name + " (opensearch): " + version.error().message(),
              version.error().kind() == ErrorKind::kTransient);
      return;
    }
    Info("store " + store.name + " (opensearch): OpenSearch " + version.value());
    // An index or alias of a view's name that the pipeline did not make is refused (as
    // `run` refuses it): the sink's connect reads what the store records, writing nothing.
    for (size_t i = 0; i < config_.views.size(); ++i) {
      if (config_.views[i].store != store.name) continue;
      auto it = sinks_.find(i);
      if (it == sinks_.end()) continue;
      Status connected = it->second->Connect();
      if (!connected.ok() && connected.error().kind() != ErrorKind::kTransient) {
        AtView(i, ".index", connected.error().message());
      }
    }
  }

  // `run` creates the schema `pgderive` (checkpoints, mirrors of the source tables) and
  // the target tables that are missing: the role must be allowed to.
  void CheckPostgresStore(const StoreConfig& store) {
    const std::string what = "store " + store.name + " (postgres): ";
    auto connected = SqlSession::Connect(store.dsn, "pgderive-validate");
    if (!connected.ok()) {
      AtStore(store, what + connected.error().message(), !PgConnection::ServerAnswers(store.dsn));
      return;
    }
    SqlSession& c = connected.value();
    if (Status s = c.Execute("set default_transaction_read_only = on"); !s.ok()) {
      AtStore(store, what + "cannot make the session read-only: " + s.error().message());
      return;
    }
    auto info = c.Query(
        "select current_setting('server_version'), current_user, current_database(), "
        "has_database_privilege(current_database(), 'CREATE')");
    if (!info.ok()) {
      AtStore(store, what + info.error().message());
      return;
    }
    const auto& row = info.value().rows[0];
    const std::string role = row[1].value_or("");
    const std::string database = row[2].value_or("");
    const bool create_schema = row[3].value_or("f") == "t";
    // Schemas that will get tables: pgderive's own, and each missing target table's.
    std::set<std::string> schemas = {"pgderive"};
    for (size_t i = 0; i < config_.views.size(); ++i) {
      const ViewConfig& view = config_.views[i];
      if (view.store != store.name) continue;
      auto exists =
          c.Query("select to_regclass(" + c.QuoteLiteral(TableName::Parse(view.table).Quoted()) +
                  ") is not null");
      if (!exists.ok()) {
        AtView(i, ".table", what + "view " + view.name + ": " + exists.error().message());
        continue;
      }
      if (exists.value().rows[0][0].value_or("f") != "t") {
        schemas.insert(TableName::Parse(view.table).schema);
        continue;
      }
      // An existing table must be this pipeline's: pgderive.views records it as this
      // view's (its definition names the table). Someone else's is never taken over.
      auto recorded = c.Query(
          "select case when to_regclass('pgderive.views') is null then false else exists "
          "(select from pgderive.views where pipeline = " +
          c.QuoteLiteral(config_.pipeline) + " and store = " + c.QuoteLiteral(store.name) +
          " and view = " + c.QuoteLiteral(view.name) + " and starts_with(definition, " +
          c.QuoteLiteral("table " + view.table + "\n") + ")) end");
      if (!recorded.ok()) {
        AtView(i, ".table", what + "view " + view.name + ": " + recorded.error().message());
        continue;
      }
      if (recorded.value().rows[0][0].value_or("f") != "t") {
        AtView(i, ".table",
               what + "view " + view.name + ": table " + view.table +
                   " already exists and was not made by pipeline " + config_.pipeline +
                   " (pgderive.views does not record it as this view's); pgderive does not "
                   "take over a table it did not make: point the view's table at a new name, "
                   "or drop the table if it is yours to drop");
      }
    }
    for (const std::string& schema : schemas) {
      auto allowed = c.Query("select case when exists (select from pg_namespace where nspname = " +
                             c.QuoteLiteral(schema) + ") then has_schema_privilege(" +
                             c.QuoteLiteral(schema) + ", 'CREATE') else null end");
      if (!allowed.ok()) {
        AtStore(store, what + allowed.error().message());
        continue;
      }
      const auto& value = allowed.value().rows[0][0];
      if (!value && !create_schema) {
        AtStore(store, what + "role " + role + " may not create schema " + schema +
                           " in database " + database + "; fix: GRANT CREATE ON DATABASE " +
                           c.QuoteIdentifier(database) + " TO " + c.QuoteIdentifier(role));
      } else if (value && *value != "t") {
        AtStore(store, what + "role " + role + " may not create tables in schema " + schema +
                           "; fix: GRANT CREATE ON SCHEMA " + c.QuoteIdentifier(schema) + " TO " +
                           c.QuoteIdentifier(role));
      }
    }
    Info(what + "PostgreSQL " + row[0].value_or("?") + ", database " + database + ", role " + role);
  }

  const Config& config_;
  std::FILE* out_;
  std::vector<ConfigProblem> problems_;
  std::map<size_t, std::unique_ptr<Sink>> sinks_;  // by view index, for Check
  std::string role_;
  bool superuser_ = false;
  bool publication_missing_ = false;
  bool cannot_create_publication_ = false;
  bool all_tables_ = false;
  std::set<std::string> published_;
  size_t tables_checked_ = 0;
  bool slot_exists_ = false;
};

}  // namespace

std::vector<ConfigProblem> CheckConnected(const Config& config, std::FILE* info,
                                          bool* slot_exists) {
  ConnectedChecks checks(config, info);
  std::vector<ConfigProblem> problems = checks.Run();
  if (slot_exists != nullptr) *slot_exists = checks.slot_exists();
  return problems;
}

std::vector<ConfigProblem> CheckConnectedStore(const Config& config, const std::string& store) {
  return ConnectedChecks(config, nullptr).RunStore(store);
}

int RunValidate(const ValidateOptions& options) {
  const std::string& path = options.config_path;
  ConfigResult loaded = LoadConfigFile(path);
  if (!loaded.config) {
    std::fputs(loaded.Describe(path).c_str(), options.out);
    std::fprintf(options.out, "%s: %s\n", path.c_str(),
                 Plural(loaded.problems.size(), "problem", "problems").c_str());
    return 2;
  }
  const Config& config = *loaded.config;
  std::string summary = "pipeline " + config.pipeline + ", " +
                        Plural(config.stores.size(), "store", "stores") + ", " +
                        Plural(config.views.size(), "view", "views");
  if (!options.connect) {
    std::fprintf(options.out, "%s: OK: %s (file only; --connect also checks the servers)\n",
                 path.c_str(), summary.c_str());
    return 0;
  }
  ConnectedChecks checks(config, options.out);
  ConfigResult connected;
  connected.problems = checks.Run();
  if (!connected.problems.empty()) {
    std::fputs(connected.Describe(path).c_str(), options.out);
    std::fprintf(options.out, "%s: %s; nothing was created or changed\n", path.c_str(),
                 Plural(connected.problems.size(), "problem", "problems").c_str());
    return 2;
  }
  std::fprintf(options.out, "%s: OK: %s, %s checked on the source; nothing was created\n",
               path.c_str(), summary.c_str(),
               Plural(checks.tables_checked(), "table", "tables").c_str());
  return 0;
}

}  // namespace pgderive
