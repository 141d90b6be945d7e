#include "sinks/common/source_rows.h"

namespace pgderive {

Result<SqlSession*> SourceRows::Connection() {
  if (!sql_ || !sql_->is_open()) {
    sql_.reset();
    auto connected = SqlSession::Connect(dsn_, "pgderive-reread");
    if (!connected.ok()) return connected.error();
    sql_.emplace(std::move(connected).value());
  }
  return &*sql_;
}

Result<std::optional<SourceRows::Row>> SourceRows::Read(
    const std::string& table, const std::vector<std::string>& columns,
    const std::map<std::string, std::string>& known) {
  std::lock_guard lock(mutex_);
  auto connected = Connection();
  if (!connected.ok()) return connected.error();
  SqlSession& c = *connected.value();
  // The key is read from the catalog for every row (rows are read again rarely), never
  // remembered: a table dropped and made again under its name may have another key.
  Table t;
  {
    // The key the backfill reads by: the replica identity's index, else the primary key.
    const std::string regclass = c.QuoteRegclass(table);
    auto key = c.Query(
        "select a.attname, format_type(a.atttypid, a.atttypmod), (select relkind = 'p' from "
        "pg_class where oid = " +
        regclass + ") from (select indkey::int2[] k from pg_index where indrelid = " + regclass +
        " and (indisprimary or indisreplident) order by indisreplident desc, indisprimary desc "
        "limit 1) i, unnest(i.k) with ordinality u(attnum, n) join pg_attribute a on "
        "a.attrelid = " +
        regclass + " and a.attnum = u.attnum order by u.n");
    if (!key.ok()) return key.error();
    for (const auto& row : key.value().rows) {
      t.key.emplace_back(row[0].value_or(""), row[1].value_or("text"));
      t.partitioned = row[2].value_or("f") == "t";
    }
    if (t.key.empty()) {
      return Error::Permanent("table " + table +
                              " has neither a primary key nor a replica identity index to read a "
                              "row of it again by");
    }
  }
  std::string select, where;
  for (const std::string& column : columns) {
    select += (select.empty() ? "" : ", ") + c.QuoteIdentifier(column);
  }
  for (const auto& [column, type] : t.key) {
    auto value = known.find(column);
    if (value == known.end()) {
      return Error::Permanent("key column " + column + " of " + table +
                              " is not known (unchanged TOAST without the old key, which "
                              "PostgreSQL before 14.3, 13.7, 12.11 and 11.16 does not log)");
    }
    where += (where.empty() ? "" : " and ") + c.QuoteIdentifier(column) + " = " +
             c.QuoteLiteral(value->second) + "::" + type;
  }
  // The insert position is taken after the statement's snapshot: every commit the read
  // sees ends before it.
  auto rows = c.Query(
      "select pg_current_wal_insert_lsn()::text, r.* from (select 1) o left "
      "join (select true, " +
      select + " from " + (t.partitioned ? "" : "only ") + TableName::Parse(table).Quoted() +
      " where " + where + ") r on true");
  if (!rows.ok()) return rows.error();
  if (rows.value().rows.size() != 1) {
    return Error::Permanent("table " + table + ": more than one row has the key " + where);
  }
  Row& row = rows.value().rows.front();
  const auto position = Lsn::Parse(row[0].value_or(""));
  if (!position) return Error::Corrupt("pg_current_wal_insert_lsn() gave no LSN");
  if (horizon_ < *position) {
    horizon_ = *position;
    raised_ = true;
  }
  if (!row[1]) return std::optional<Row>();
  row.erase(row.begin(), row.begin() + 2);
  return std::optional<Row>(std::move(row));
}

Lsn SourceRows::horizon() {
  std::lock_guard lock(mutex_);
  return horizon_;
}

void SourceRows::SetHorizon(Lsn horizon) {
  std::lock_guard lock(mutex_);
  horizon_ = horizon;
  raised_ = false;
}

bool SourceRows::TakeRaised() {
  std::lock_guard lock(mutex_);
  return std::exchange(raised_, false);
}

Result<std::optional<TupleData>> SourceRows::ReadChangedRow(const OwnedChange& change,
                                                            Row& storage) {
  const RelationSchema& schema = change.relation();
  std::vector<std::string> columns;
  std::map<std::string, std::string> known;
  for (size_t i = 0; i < schema.columns.size() && i < change.new_tuple.columns.size(); ++i) {
    columns.push_back(schema.columns[i].name);
    const TupleValue& v = change.new_tuple.columns[i];
    if (v.kind == TupleValueKind::kText) known.emplace(schema.columns[i].name, v.data);
  }
  auto row = Read(schema.QualifiedName(), columns, known);
  if (!row.ok()) return row.error();
  if (!row.value()) return std::optional<TupleData>();
  storage = std::move(*row.value());
  TupleData out = change.new_tuple;
  for (size_t i = 0; i < out.columns.size() && i < storage.size(); ++i) {
    if (out.columns[i].kind != TupleValueKind::kUnchanged) continue;
    out.columns[i] = storage[i] ? TupleValue{TupleValueKind::kText, *storage[i]} : TupleValue{};
  }
  return std::optional<TupleData>(std::move(out));
}

void SourceRows::Note(SourceRead read) {
  std::lock_guard lock(mutex_);
  reads_.push_back(std::move(read));
}

std::vector<SourceRead> SourceRows::Take() {
  std::lock_guard lock(mutex_);
  return std::exchange(reads_, {});
}

Result<std::optional<std::string>> ValueFromSource(SourceRows& source, const ViewShape& shape,
                                                   const OwnedChange& change,
                                                   const TypeRegistry& types,
                                                   const std::string& view, const RowWrite& write,
                                                   bool missing) {
  std::string columns;
  for (const std::string& c : write.unchanged) columns += (columns.empty() ? "" : ",") + c;
  const std::string key = write.put.value_or(write.previous());
  SourceRows::Row storage;
  auto row = source.ReadChangedRow(change, storage);
  if (!row.ok()) {
    return Error(row.error().kind(),
                 "view " + view + ", key " + key + " at " + change.commit_lsn.ToString() +
                     ": the store lacks the " + "previous value of unchanged column(s) " + columns +
                     " and reading the row again failed: " + row.error().message());
  }
  source.Note(SourceRead{view, change.relation().QualifiedName(), key, change.commit_lsn, columns,
                         row.value().has_value(), missing});
  if (!row.value()) return std::optional<std::string>();
  std::string value;
  Status status = shape.AppendValue(value, *row.value(), types, nullptr);
  if (!status.ok()) return status.error();
  return std::optional<std::string>(std::move(value));
}

}  // namespace pgderive
