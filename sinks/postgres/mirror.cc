#include "sinks/postgres/mirror.h"

#include <algorithm>

#include "base/table_name.h"
#include "cdc/copy_text.h"
#include "cdc/publication.h"
#include "sinks/postgres/query_rewrite.h"

namespace pgderive {
namespace {

using Values = std::vector<std::optional<std::string>>;

// The key columns' values of a row (by mirror column).
Values KeyValues(const Mirror& m, const Values& values) {
  Values out;
  for (size_t k : m.key) out.push_back(values[k]);
  return out;
}

// Key values as COPY text: the batch's row key.
std::string KeyJoin(const Values& keys) {
  std::string out;
  for (size_t n = 0; n < keys.size(); ++n) {
    if (n) out += '\t';
    AppendCopyValue(out, keys[n] ? std::optional<std::string_view>(*keys[n]) : std::nullopt);
  }
  return out;
}

std::string KeyText(const Mirror& m, const Values& values) { return KeyJoin(KeyValues(m, values)); }

// Tuple -> values by mirror column (nullopt: NULL); `present` false for unchanged.
Values ValuesOf(const Mirror& m, const RelationSchema& schema, const TupleData& tuple,
                std::vector<bool>& present) {
  Values values(m.columns.size());
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
}

bool IsKey(const Mirror& m, size_t column) {
  return std::find(m.key.begin(), m.key.end(), column) != m.key.end();
}

}  // namespace

std::string Mirror::KeyList() const {
  std::string keys;
  for (size_t k : key) keys += (keys.empty() ? "" : ", ") + QuoteIdent(columns[k]);
  return keys;
}

Result<Mirror> ReadMirror(SqlRunner& source, const std::string& table, const std::string& pipeline,
                          std::string temp, const std::string& context) {
  auto described = DescribeTable(source, table);
  if (!described.ok()) return described.error();
  Mirror mirror;
  mirror.table = table;
  auto [schema, name] = TableName::Parse(table);
  const std::string mirror_name = pipeline + "__" + schema + "__" + name;
  if (mirror_name.size() > 63) {
    return Error::Permanent(context + "the mirror table name " + mirror_name +
                            " is longer than 63 bytes; use a shorter pipeline name");
  }
  mirror.name = "pgderive." + QuoteIdent(mirror_name);
  mirror.temp = std::move(temp);
  auto formats = source.Query(
      "select attname, format_type(atttypid, atttypmod) from pg_attribute where attrelid = $1 "
      "and attnum > 0 and not attisdropped and attgenerated = '' order by attnum",
      {std::to_string(described.value()->id.value)});
  if (!formats.ok()) return formats.error();
  for (size_t i = 0; i < formats.value().rows.size(); ++i) {
    mirror.columns.push_back(formats.value().rows[i][0].value_or(""));
    mirror.types.push_back(formats.value().rows[i][1].value_or("text"));
    if (i < described.value()->columns.size() && described.value()->columns[i].key) {
      mirror.key.push_back(i);
    }
  }
  if (mirror.key.empty()) {
    return Error::Permanent(context + "table " + table +
                            " has no primary key (nor REPLICA IDENTITY USING INDEX) to key "
                            "its mirror by; REPLICA IDENTITY FULL alone is not a key");
  }
  mirror.oid = described.value()->id.value;
  return mirror;
}

std::string CreateMirrorSql(const Mirror& m) {
  std::string sql = "drop table if exists " + m.name + " cascade; create table " + m.name + " (";
  for (size_t i = 0; i < m.columns.size(); ++i) {
    sql += (i ? ", " : "") + QuoteIdent(m.columns[i]) + " " + m.types[i];
  }
  sql += ", primary key (" + m.KeyList() + ")); ";
  for (const std::string& column : m.indexed) {
    sql += "create index on " + m.name + " (" + QuoteIdent(column) + "); ";
  }
  return sql;
}

std::string CreateTempTablesSql(const Mirror& m) {
  const std::string keys = m.KeyList();
  return "create temp table if not exists " + m.KeysTable() + " on commit delete rows as select " +
         keys + " from " + m.name + " with no data; " + "create temp table if not exists " +
         m.DeletesTable() + " on commit delete rows as select " + keys + " from " + m.name +
         " with no data; " + "create temp table if not exists " + m.UpsertsTable() +
         " on commit delete rows as select * from " + m.name + " with no data; ";
}

std::string DropTempTablesSql(const Mirror& m) {
  return "drop table if exists pg_temp." + m.KeysTable() + ", pg_temp." + m.DeletesTable() +
         ", pg_temp." + m.UpsertsTable() + "; ";
}

Status CopySnapshotRows(SqlSession& c, const Mirror& m, const RelationSchema& schema,
                        std::span<const TupleData> rows) {
  std::vector<std::optional<size_t>> from(m.columns.size());
  for (size_t i = 0; i < m.columns.size(); ++i) {
    for (size_t j = 0; j < schema.columns.size(); ++j) {
      if (schema.columns[j].name == m.columns[i]) from[i] = j;
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
  return c.CopyIn(m.name, data);
}

Status AddMissingColumns(SqlRunner& c, Mirror& m, const RelationSchema& schema) {
  for (const ColumnSchema& column : schema.columns) {
    if (std::find(m.columns.begin(), m.columns.end(), column.name) != m.columns.end()) continue;
    auto type = c.Query("select format_type($1, $2)",
                        {std::to_string(column.type_oid), std::to_string(column.typmod)});
    if (!type.ok()) return type.error();
    const std::string format = type.value().rows[0][0].value_or("text");
    Status status =
        c.Execute("alter table " + m.name + " add column if not exists " + QuoteIdent(column.name) +
                  " " + format + "; alter table " + m.UpsertsTable() +
                  " add column if not exists " + QuoteIdent(column.name) + " " + format);
    if (!status.ok()) return status;
    m.columns.push_back(column.name);
    m.types.push_back(format);
  }
  return Status::Ok();
}

bool MirrorBatch::Final::whole() const {
  return std::all_of(present.begin(), present.end(), [](bool p) { return p; });
}

void MirrorBatch::Add(const Mirror& m, const RelationSchema& schema, const OwnedChange& change,
                      Lsn horizon) {
  auto& rows = finals_[m.table];
  std::vector<bool> present;
  // A key change: the row's state at its old key, which the columns it leaves
  // unchanged come from.
  std::optional<Final> origin;
  Values origin_key;
  if (change.op == ChangeOp::kDelete ||
      (change.op == ChangeOp::kUpdate && change.old_kind != '\0')) {
    auto old_values = ValuesOf(m, schema, change.old_tuple, present);
    const std::string old_key = KeyText(m, old_values);
    touched_[m.table].insert(old_key);
    if (change.op == ChangeOp::kDelete) {
      rows[old_key] = Final{true, {}, {}, {}, false, change.commit_lsn};
      return;
    }
    auto new_values = ValuesOf(m, schema, change.new_tuple, present);
    if (KeyText(m, new_values) != old_key) {
      auto at = rows.find(old_key);
      origin = at != rows.end() ? at->second : Final{};
      origin_key = KeyValues(m, old_values);
      rows[old_key] = Final{true, {}, {}, {}, false, change.commit_lsn};
    }
  }
  auto values = ValuesOf(m, schema, change.new_tuple, present);
  const std::string key = KeyText(m, values);
  touched_[m.table].insert(key);
  Final& row = rows[key];
  if (origin) {
    // The row moved here: what it left out is where it was (earlier in the batch, or in
    // the mirror before it).
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
    // An update of a row deleted earlier in the batch has no mirror row to keep its
    // unchanged columns from.
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
  if (!row.whole() && !row.reread && change.commit_lsn < horizon) {
    row.reread = true;
    row.before_horizon = true;
  }
}

std::set<std::string> MirrorBatch::tables() const {
  std::set<std::string> out;
  for (const auto& [table, rows] : finals_) out.insert(table);
  return out;
}

Status MirrorBatch::Complete(SqlRunner& c, const std::map<std::string, Mirror>& mirrors,
                             SourceRows& source) {
  for (auto& [table, rows] : finals_) {
    Status s = Complete(c, mirrors.at(table), rows, source);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

// Rows that leave columns unchanged (TOAST) and moved to another key, or whose mirror
// row is missing, are made whole before anything is written: from the mirror rows they
// came from, else from the source (sinks/common/source_rows.h).
Status MirrorBatch::Complete(SqlRunner& c, const Mirror& m, std::map<std::string, Final>& rows,
                             SourceRows& source) {
  std::string own, moved;  // (key literals) lists
  auto literals = [&](const Values& keys) {
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
    list += (list.empty() ? "" : ", ") + literals(row.from ? *row.from : KeyValues(m, row.values));
  }
  const std::string key_list = m.KeyList();
  std::set<std::string> held;  // own rows the mirror holds
  if (!own.empty()) {
    auto found = c.Query("select " + key_list + " from " + m.name + " where (" + key_list +
                         ") in (" + own + ")");
    if (!found.ok()) return found.error();
    for (const auto& r : found.value().rows) held.insert(KeyJoin(r));
  }
  std::map<std::string, Values> origins;  // moved rows' origins
  if (!moved.empty()) {
    auto found = c.Query("select " + QuotedList(m.columns) + " from " + m.name + " where (" +
                         key_list + ") in (" + moved + ")");
    if (!found.ok()) return found.error();
    for (auto& r : found.value().rows) origins.emplace(KeyText(m, r), std::move(r));
  }
  for (auto it = rows.begin(); it != rows.end();) {
    Final& row = it->second;
    if (row.deleted || row.whole()) {
      ++it;
      continue;
    }
    if (!row.reread && row.from) {
      auto origin = origins.find(KeyJoin(*row.from));
      if (origin != origins.end()) {
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
    auto read = source.Read(m.table, m.columns, known);
    if (!read.ok()) {
      return Error(read.error().kind(),
                   "table " + m.table + ", key " + it->first + " at " + row.lsn.ToString() +
                       ": the mirror lacks the previous value of unchanged column(s) " + columns +
                       " and reading the row again failed: " + read.error().message());
    }
    source.Note(SourceRead{"", m.table, it->first, row.lsn, columns, read.value().has_value(),
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
}

Status MirrorBatch::CopyTouchedKeys(SqlSession::Transaction& tx,
                                    const std::map<std::string, Mirror>& mirrors) {
  for (const auto& [table, rows] : finals_) {
    std::string keys;
    for (const std::string& k : touched_[table]) keys += k + "\n";
    Status s = tx.CopyIn(mirrors.at(table).KeysTable(), keys);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

Status MirrorBatch::Write(SqlSession::Transaction& tx,
                          const std::map<std::string, Mirror>& mirrors) {
  for (const auto& [table, rows] : finals_) {
    const Mirror& m = mirrors.at(table);
    std::string deletes, upserts;
    std::string partial_sql;
    for (const auto& [key, row] : rows) {
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
        const std::string literal = row.values[i] ? tx.QuoteLiteral(*row.values[i]) : "null";
        if (IsKey(m, i)) {
          where += (where.empty() ? "" : " and ") + QuoteIdent(m.columns[i]) + " = " + literal;
        } else if (row.present[i]) {
          set += (set.empty() ? "" : ", ") + QuoteIdent(m.columns[i]) + " = " + literal;
        }
      }
      if (!set.empty())
        partial_sql += "update " + m.name + " set " + set + " where " + where + "; ";
    }
    std::string join, update_set;
    for (size_t k : m.key) {
      join += (join.empty() ? "" : " and ") + std::string("m.") + QuoteIdent(m.columns[k]) +
              " = d." + QuoteIdent(m.columns[k]);
    }
    for (size_t i = 0; i < m.columns.size(); ++i) {
      if (IsKey(m, i)) continue;
      update_set += (update_set.empty() ? "" : ", ") + QuoteIdent(m.columns[i]) + " = excluded." +
                    QuoteIdent(m.columns[i]);
    }
    Status s = Status::Ok();
    if (!deletes.empty()) {
      s = tx.CopyIn(m.DeletesTable(), deletes);
      if (s.ok() && m.key.size() == 1) {
        const std::string k = QuoteIdent(m.columns[m.key[0]]);
        s = tx.Execute("delete from " + m.name + " m where m." + k + " = any(array(select " + k +
                       " from " + m.DeletesTable() + "))");
      } else if (s.ok()) {
        s = tx.Execute("delete from " + m.name + " m using " + m.DeletesTable() + " d where " +
                       join);
      }
    }
    if (s.ok() && !upserts.empty()) {
      s = tx.CopyIn(m.UpsertsTable(), upserts);
      if (s.ok()) {
        s = tx.Execute("insert into " + m.name + " select * from " + m.UpsertsTable() +
                       " on conflict (" + m.KeyList() + ") do " +
                       (update_set.empty() ? "nothing" : "update set " + update_set));
      }
    }
    if (s.ok() && !partial_sql.empty()) s = tx.Execute(partial_sql);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

void MirrorBatch::Clear() {
  finals_.clear();
  touched_.clear();
}

}  // namespace pgderive
