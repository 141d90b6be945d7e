#include "snapshot/key_range.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "base/number.h"
#include "base/table_name.h"

namespace pgderive {

Result<KeyColumnList> KeyColumns(SqlSession& sql, const std::string& table) {
  // The key the chunks follow: the replica identity's index when it names one (its
  // columns are what a delete carries), else the primary key.
  const std::string regclass = "$1::regclass";
  auto key = sql.Query(
      "select a.attname, format_type(a.atttypid, a.atttypmod) from (select indkey::int2[] k "
      "from pg_index where indrelid = " +
          regclass +
          " and (indisprimary or indisreplident) order by indisreplident desc, indisprimary desc "
          "limit 1) i, unnest(i.k) with ordinality u(attnum, n) join pg_attribute a on a.attrelid "
          "= " +
          regclass + " and a.attnum = u.attnum order by u.n",
      {TableName::Parse(table).Quoted()});
  if (!key.ok()) return key.error();
  std::vector<std::pair<std::string, std::string>> key_columns;
  for (const auto& row : key.value().rows) {
    key_columns.emplace_back(row[0].value_or(""), row[1].value_or(""));
  }
  if (key_columns.empty()) {
    return Error::Permanent("table " + table +
                            " has neither a primary key nor a replica identity index to read it "
                            "by in chunks; rebuild the store instead");
  }
  return key_columns;
}

std::string TableAndPartitions(const std::string& regclass) {
  return "(select " + regclass + "::oid union select relid::oid from pg_partition_tree(" +
         regclass + "))";
}

Result<TableEstimate> EstimateTable(SqlSession& sql, const std::string& table) {
  const std::string quoted = TableName::Parse(table).Quoted();
  const SqlParams param = {quoted};
  auto sized = sql.Query(
      "select sum(greatest(c.reltuples, 0))::bigint, (sum(pg_table_size(c.oid)) / "
      "nullif(sum(greatest(c.reltuples, 0)), 0))::bigint, bool_or(c.oid = $1::regclass and "
      "c.relkind = 'p'), sum(pg_relation_size(c.oid)) from pg_class c where c.oid in " +
          TableAndPartitions("$1::regclass"),
      param);
  if (!sized.ok()) return sized.error();
  const auto& figures = sized.value().rows.at(0);
  const Result<uint64_t> rows = ParseServerNumber<uint64_t>(figures.at(0));
  const Result<uint64_t> width = ParseServerNumber<uint64_t>(figures.at(1));
  const Result<uint64_t> heap = ParseServerNumber<uint64_t>(figures.at(3));
  if (!rows.ok()) return rows.error();
  if (!width.ok()) return width.error();
  if (!heap.ok()) return heap.error();
  TableEstimate estimate{rows.value(), width.value(), figures.at(2).value_or("f") == "t"};
  if (estimate.rows > 0 || heap.value() == 0) return estimate;
  // Never analyzed (or analyzed when empty): from the first rows' mean size.
  auto sampled =
      sql.Query("select coalesce(avg(pg_column_size(t.*)), 0)::bigint from (select * from " +
                quoted + " limit 1000) t");
  if (!sampled.ok()) return sampled.error();
  const Result<uint64_t> mean = ParseServerNumber<uint64_t>(sampled.value().rows.at(0).at(0));
  if (!mean.ok()) return mean.error();
  if (mean.value() > 0) {
    estimate.rows = heap.value() / (mean.value() + 4);
    estimate.row_bytes = mean.value();
  }
  return estimate;
}

Result<ChunkRows> ReadRows(SqlSession& sql, const std::string& table,
                           const std::shared_ptr<const RelationSchema>& schema,
                           const KeyColumnList& key, const std::optional<std::string>& after,
                           size_t limit, bool partitioned,
                           const std::optional<std::string>& through) {
  // The rows after the key `after` (and not after `through`), in key order.
  std::string columns, order, where;
  SqlParams values;
  for (const ColumnSchema& c : schema->columns) {
    columns += (columns.empty() ? "" : ", ") + sql.QuoteIdentifier(c.name);
  }
  for (const auto& [name, type] : key) {
    order += (order.empty() ? "" : ", ") + sql.QuoteIdentifier(name);
  }
  // `position` as a row of placeholders cast to the key's types ($n from values' end).
  auto bound = [&](const std::string& position) -> Result<std::string> {
    auto parsed = nlohmann::json::parse(position, nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_array() || parsed.size() != key.size() ||
        !std::all_of(parsed.begin(), parsed.end(), [](const auto& v) { return v.is_string(); })) {
      return Error::Corrupt("reading " + table + " by its key: the position " + position +
                            " does not match the key (" + order + ")");
    }
    std::string placeholders;
    for (size_t i = 0; i < key.size(); ++i) {
      values.push_back(parsed[i].get<std::string>());
      placeholders += (i ? ", $" : "$") + std::to_string(values.size()) + "::" + key[i].second;
    }
    return "(" + placeholders + ")";
  };
  if (after) {
    auto row = bound(*after);
    if (!row.ok()) return row.error();
    where = " where (" + order + ") > " + row.value();
  }
  if (through) {
    auto row = bound(*through);
    if (!row.ok()) return row.error();
    where += (where.empty() ? " where (" : " and (") + order + ") <= " + row.value();
  }
  auto rows = sql.Query("select " + columns + " from " + (partitioned ? "" : "only ") +
                            TableName::Parse(table).Quoted() + where + " order by " + order +
                            " limit " + std::to_string(limit),
                        values);
  if (!rows.ok()) return rows.error();
  return std::move(rows.value().rows);
}

std::string RowPosition(const RelationSchema& schema, const KeyColumnList& key,
                        const std::vector<std::optional<std::string>>& row) {
  std::vector<std::optional<std::string_view>> values;
  for (const auto& [name, type] : key) {
    for (size_t i = 0; i < schema.columns.size() && i < row.size(); ++i) {
      if (schema.columns[i].name == name) values.push_back(row[i]);
    }
  }
  return KeyJson(values);
}

std::optional<std::vector<std::string>> OrderedRowKey(
    const RelationSchema& schema, const KeyColumnList& key,
    const std::vector<std::vector<std::string>>& readings) {
  std::vector<std::string> names;
  for (const ColumnSchema& column : schema.columns) {
    if (column.key) names.push_back(column.name);
  }
  if (readings.size() != 1 || readings[0].size() != names.size()) return std::nullopt;
  std::vector<std::string> ordered;
  for (const auto& [name, type] : key) {
    auto at = std::find(names.begin(), names.end(), name);
    if (at == names.end()) return std::nullopt;
    ordered.push_back(readings[0][at - names.begin()]);
  }
  return ordered;
}

Result<std::vector<size_t>> AbsentKeys(SqlSession& sql, const std::string& table,
                                       const KeyColumnList& key,
                                       const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> out;
  if (rows.empty()) return out;
  // One statement for the page: each key value cast to its column's type (the index
  // is used), the ordinals of the rows with no match.
  // A value not in its type's own text form ("01", " 1" for an integer) is a key no row
  // makes (a row's key is made from its values' text): absent too.
  std::string unnest, columns, match, canonical;
  SqlParams params;
  for (size_t k = 0; k < key.size(); ++k) {
    std::vector<std::string> values;
    for (const auto& row : rows) values.push_back(row.at(k));
    params.push_back(SqlTextArray(values));
    unnest += (k ? ", $" : "$") + std::to_string(k + 1) + "::text[]";
    const std::string c = "t.c" + std::to_string(k);
    columns += "c" + std::to_string(k) + ", ";
    match +=
        (k ? " and " : "") + sql.QuoteIdentifier(key[k].first) + " = " + c + "::" + key[k].second;
    // (concat: the type's own output; a cast to text would trim a char(n)'s padding.)
    canonical += " or concat(" + c + "::" + key[k].second + ") is distinct from " + c;
  }
  const std::string quoted = TableName::Parse(table).Quoted();
  auto found = sql.Query("select t.i - 1 from unnest(" + unnest + ") with ordinality t(" + columns +
                             "i) where not exists (select from " + quoted + " where " + match +
                             ")" + canonical,
                         params);
  if (found.ok()) {
    for (const auto& row : found.value().rows) {
      auto i = ParseServerNumber<size_t>(row[0]);
      if (!i.ok()) return i.status().error();
      out.push_back(i.value());
    }
    return out;
  }
  if (found.error().kind() != ErrorKind::kPermanent) return found.error();
  // A value its column's type does not take (a key no row can make): row by row, such
  // a row is absent.
  for (size_t r = 0; r < rows.size(); ++r) {
    std::string where, same;
    SqlParams one;
    for (size_t k = 0; k < key.size(); ++k) {
      const std::string p = "$" + std::to_string(k + 1) + "::text";
      where +=
          (k ? " and " : "") + sql.QuoteIdentifier(key[k].first) + " = " + p + "::" + key[k].second;
      same += " and concat(" + p + "::" + key[k].second + ") = " + p;
      one.push_back(rows[r].at(k));
    }
    auto exists =
        sql.Query("select exists (select from " + quoted + " where " + where + ")" + same, one);
    if (!exists.ok()) {
      if (exists.error().kind() != ErrorKind::kPermanent) return exists.error();
      out.push_back(r);
      continue;
    }
    if (exists.value().rows.at(0).at(0).value_or("t") != "t") out.push_back(r);
  }
  return out;
}

}  // namespace pgderive
