#include "sinks/postgres/query_plan.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "base/table_name.h"
#include "cdc/publication.h"
#include "sinks/postgres/query_rewrite.h"

namespace pgderive {
namespace {

// Every scan of a table in a plan: (alias, schema.table as the plan names it).
void CollectScans(const nlohmann::json& node, std::vector<PlanScan>& out) {
  if (node.is_object()) {
    if (node.contains("Relation Name") && node.contains("Schema")) {
      out.push_back(PlanScan{
          node.value("Alias", node.value("Relation Name", "")),
          node["Schema"].get<std::string>() + "." + node["Relation Name"].get<std::string>()});
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

// The one-row, one-column text of an EXPLAIN (FORMAT JSON).
std::string PlanText(const PgRows& rows) {
  return rows.rows.empty() || rows.rows[0].empty() ? "[]" : rows.rows[0][0].value_or("[]");
}

}  // namespace

// ---- Pure core ------------------------------------------------------------------------

QueryPlan ParsePlan(std::string_view explain_json) {
  const nlohmann::json explained = nlohmann::json::parse(explain_json, nullptr, false);
  QueryPlan plan;
  CollectScans(explained, plan.scans);
  for (const PlanScan& scan : plan.scans) {
    if (std::find(plan.relations.begin(), plan.relations.end(), scan.table) ==
        plan.relations.end()) {
      plan.relations.push_back(scan.table);
    }
  }
  CollectExpressions(explained, plan.expressions);
  return plan;
}

bool MentionsReference(const std::string& text, const std::string& ref) {
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

std::optional<size_t> FirstColumnRead(const QueryPlan& plan, const PlanScan& scan,
                                      const std::vector<std::string>& columns) {
  for (size_t c = 0; c < columns.size(); ++c) {
    const std::string& column = columns[c];
    std::vector<std::string> refs = {
        scan.alias + "." + column, QuoteIdent(scan.alias) + "." + column,
        scan.alias + "." + QuoteIdent(column), QuoteIdent(scan.alias) + "." + QuoteIdent(column)};
    if (plan.scans.size() == 1) {
      refs.push_back(column);
      refs.push_back(QuoteIdent(column));
    }
    for (const std::string& e : plan.expressions) {
      if (std::any_of(refs.begin(), refs.end(),
                      [&](const std::string& r) { return MentionsReference(e, r); })) {
        return c;
      }
    }
  }
  return std::nullopt;
}

std::set<std::string> QueryNames(std::string_view query) {
  std::set<std::string> named;
  if (auto tokens = LexSql(query); tokens.ok()) {
    for (const SqlToken& t : tokens.value()) {
      if (t.kind == SqlToken::Kind::kWord || t.kind == SqlToken::Kind::kQuotedName) {
        named.insert(t.text);
      }
    }
  }
  return named;
}

size_t NearestNamed(const std::set<std::string>& named,
                    const std::vector<std::string>& ancestor_names) {
  for (size_t i = 0; i < ancestor_names.size(); ++i) {
    if (named.contains(ancestor_names[i])) return i;
  }
  return ancestor_names.empty() ? 0 : ancestor_names.size() - 1;
}

std::vector<std::string> KeyPassThrough(std::string_view explain_json, const std::string& table,
                                        const std::vector<std::string>& source_key,
                                        size_t view_key_columns) {
  const nlohmann::json explained = nlohmann::json::parse(explain_json, nullptr, false);
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

std::set<std::string> LookupColumns(std::string_view query,
                                    const std::vector<std::string>& columns) {
  std::set<std::string> out;
  auto tokens = LexSql(query);
  if (!tokens.ok()) return out;
  bool lookup_clause = false;
  for (const SqlToken& t : tokens.value()) {
    if (t.kind == SqlToken::Kind::kWord) {
      if (t.text == "on" || t.text == "where" || t.text == "group" || t.text == "having") {
        lookup_clause = true;
      } else if (t.text == "select" || t.text == "from" || t.text == "join" || t.text == "order") {
        lookup_clause = false;
      }
    }
    if (!lookup_clause) continue;
    for (const std::string& column : columns) {
      if (t.text == column) out.insert(column);
    }
  }
  return out;
}

// ---- Reading the source ---------------------------------------------------------------

// Judged per function the query actually calls, by OID: the query is made a temporary
// view inside a transaction that is rolled back, and the query tree PostgreSQL stored
// for it names every function, aggregate and operator (judged by the function behind
// it) it resolved. Where that cannot be done (no TEMP privilege, a standby), every
// function of a name the query calls must be immutable.
Result<std::optional<std::string>> ChangingFunctions(SqlSession& source, const std::string& query) {
  auto changing = [](Result<PgRows> rows) -> Result<std::optional<std::string>> {
    if (!rows.ok()) return rows.error();
    if (rows.value().rows.empty()) return std::optional<std::string>();
    return rows.value().rows[0][0];
  };
  // Nothing made in the transaction is kept: it rolls back when `tx` goes away.
  if (auto tx = source.Begin(); tx.ok() && tx.value().Execute("set transaction read write").ok()) {
    SqlRunner& in = tx.value();
    Result<std::optional<std::string>> found = Error::Transient("not judged");
    if (in.Execute("create temp view pgderive_query_functions as select * from (" + query + "\n) q")
            .ok()) {
      // The view's stored query tree names every function, aggregate and window
      // function it calls (funcid, aggfnoid, winfnoid) and every operator (opno, the
      // operators of a row comparison, of DISTINCT and GROUP BY) by OID.
      found = changing(in.Query(
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
    if (found.ok()) return found;
  }
  const auto functions = CalledFunctions(query);
  if (functions.empty()) return std::optional<std::string>();
  std::string list;
  for (const std::string& f : functions) list += (list.empty() ? "" : ",") + f;
  return changing(source.Query(
      "select string_agg(distinct proname, ', ') from pg_proc where provolatile <> 'i' and "
      "proname = any(string_to_array($1, ','))",
      {list}));
}

std::string WithoutStatementPrefix(std::string message, std::string_view prefix) {
  const std::string quote = "\nLINE 1: ";
  const size_t at = message.find(quote + std::string(prefix));
  if (at == std::string::npos || prefix.empty()) return message;
  message.erase(at + quote.size(), prefix.size());
  // The caret line under it: as many columns further left (when it points past the
  // prefix, as it does for an error in the query).
  const size_t caret_line = message.find('\n', at + quote.size());
  if (caret_line != std::string::npos) {
    const size_t first = caret_line + 1;
    const size_t spaces = message.find_first_not_of(' ', first);
    if (spaces != std::string::npos && spaces - first >= quote.size() - 1 + prefix.size() &&
        message[spaces] == '^') {
      message.erase(first, prefix.size());
    }
  }
  return message;
}

Result<QueryPlan> ExplainQuery(SqlRunner& source, const std::string& query) {
  static constexpr std::string_view kExplain = "explain (verbose, format json) ";
  auto plan = source.Query(std::string(kExplain) + query);
  if (!plan.ok()) {
    return Error(plan.error().kind(), WithoutStatementPrefix(plan.error().message(), kExplain));
  }
  return ParsePlan(PlanText(plan.value()));
}

Result<std::vector<std::string>> SourceTablesOf(SqlRunner& source, const std::string& query,
                                                const std::vector<std::string>& scanned) {
  const std::set<std::string> named = QueryNames(query);
  std::vector<std::string> out;
  for (const std::string& table : scanned) {
    auto ancestors = source.Query(
        "select n.nspname || '.' || c.relname, c.relname, c.relkind, c.relpersistence from "
        "pg_partition_ancestors($1::regclass) with ordinality a(relid, level) join pg_class c "
        "on c.oid = a.relid join pg_namespace n on n.oid = c.relnamespace order by a.level",
        {TableName::Parse(table).Quoted()});
    if (!ancestors.ok()) return ancestors.error();
    std::string chosen = table;
    char relkind = 'r', persistence = 'p';
    const auto& rows = ancestors.value().rows;
    if (!rows.empty()) {
      std::vector<std::string> names;
      for (const auto& row : rows) names.push_back(row[1].value_or(""));
      const auto& row = rows[NearestNamed(named, names)];
      chosen = row[0].value_or(table);
      relkind = row[2].value_or("r")[0];
      persistence = row[3].value_or("p")[0];
    } else {
      auto kind =
          source.Query("select relkind, relpersistence from pg_class where oid = $1::regclass",
                       {TableName::Parse(table).Quoted()});
      if (!kind.ok()) return kind.error();
      if (!kind.value().rows.empty()) {
        relkind = kind.value().rows[0][0].value_or("r")[0];
        persistence = kind.value().rows[0][1].value_or("p")[0];
      }
    }
    if (auto why =
            WhyNotPublishable(relkind, persistence, chosen, TableName::Parse(chosen).Quoted())) {
      return Error::Permanent(*why);
    }
    if (std::find(out.begin(), out.end(), chosen) == out.end()) out.push_back(chosen);
  }
  return out;
}

Status CheckGeneratedColumns(SqlRunner& source, const QueryPlan& plan) {
  for (const PlanScan& scan : plan.scans) {
    auto generated = GeneratedColumns(source, scan.table);
    if (!generated.ok()) return generated.error();
    std::vector<std::string> columns;
    for (const auto& [column, expression] : generated.value()) columns.push_back(column);
    if (auto read = FirstColumnRead(plan, scan, columns)) {
      const auto& [column, expression] = generated.value()[*read];
      return Error::Permanent(GeneratedColumnProblem(scan.table, column, expression) + "; write " +
                              expression + " in the query in place of the column");
    }
  }
  return Status::Ok();
}

Result<std::vector<std::string>> OutputColumns(SqlRunner& source, const std::string& query) {
  auto shape = source.Query("select * from (" + query + ") q limit 0");
  if (!shape.ok()) return shape.error();
  return std::move(shape).value().columns;
}

Result<std::vector<std::string>> KeyPassThroughOf(SqlRunner& source, const std::string& query,
                                                  const std::vector<std::string>& key_columns,
                                                  const std::string& table,
                                                  const std::vector<std::string>& source_key) {
  auto keys = source.Query("explain (verbose, format json) select " + QuotedList(key_columns) +
                           " from (" + query + ") q");
  if (!keys.ok()) return keys.error();
  return KeyPassThrough(PlanText(keys.value()), table, source_key, key_columns.size());
}

Result<bool> KeyRepeats(SqlRunner& source, const std::string& query,
                        const std::vector<std::string>& key_columns) {
  const std::string keys = QuotedList(key_columns);
  auto duplicate = source.Query("select " + keys + " from (" + query + ") q group by " + keys +
                                " having count(*) > 1 limit 1");
  if (!duplicate.ok()) return duplicate.error();
  return !duplicate.value().rows.empty();
}

}  // namespace pgderive
