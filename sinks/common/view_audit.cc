#include "sinks/common/view_audit.h"

#include <algorithm>
#include <chrono>
#include <future>
#include <map>
#include <set>

#include "base/number.h"
#include "base/table_name.h"
#include "cdc/publication.h"
#include "snapshot/key_range.h"

namespace pgderive {
namespace {

// Compares what `read` gives (expected, held) up to `rounds` times, `catch_up` before
// each read again, and adds to `audit` the differences whose key differed every time.
// Returns the first read's expected entry count and the keys of the differences added.
using Read = std::function<Result<std::pair<ViewEntries, ViewEntries>>()>;
struct Compared {
  size_t expected = 0;
  std::vector<std::string> keys;
};
Result<Compared> CompareRounds(const std::string& view, const Read& read,
                               const AuditOptions& options, ViewAudit& audit) {
  auto first = read();
  if (!first.ok()) return first.error();
  const size_t expected = first.value().first.size();
  std::vector<EntryDifference> differences =
      CompareEntries(first.value().first, first.value().second);
  for (int round = 2; round <= options.rounds && !differences.empty(); ++round) {
    std::set<std::string> before;
    for (const EntryDifference& d : differences) before.insert(d.key);
    if (options.catch_up) {
      Status caught = options.catch_up();
      if (!caught.ok()) return caught.error();
    }
    auto again = read();
    if (!again.ok()) return again.error();
    differences = CompareEntries(again.value().first, again.value().second);
    std::erase_if(differences, [&](const EntryDifference& d) { return !before.contains(d.key); });
  }
  Compared out{.expected = expected, .keys = {}};
  for (const EntryDifference& d : differences) {
    out.keys.push_back(d.key);
    ++audit.differences;
    if (audit.found.size() < options.listed) audit.found.push_back(d);
    for (std::string& line : DescribeDifference(view, d)) {
      if (audit.lines.size() < options.listed) {
        audit.lines.push_back(std::move(line));
      } else {
        ++audit.unlisted;
      }
    }
  }
  return out;
}

void Note(ViewAudit& audit, const AuditOptions& options, std::string line) {
  ++audit.differences;
  if (audit.lines.size() < options.listed) {
    audit.lines.push_back(std::move(line));
  } else {
    ++audit.unlisted;
  }
}

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The bucket of an entry: its key's md5, first 32 bits, modulo the bucket count (the
// same text on both sides gives the same bucket in any PostgreSQL).
std::string BucketOf(size_t buckets) {
  return "mod(('x' || substr(md5(s.k), 1, 8))::bit(32)::bigint, " + std::to_string(buckets) +
         ")::int";
}

struct Bucket {
  uint64_t entries = 0;
  std::string digest;
  bool operator==(const Bucket&) const = default;
};

Result<std::map<uint32_t, Bucket>> Digests(SqlRunner& sql, const std::string& entries,
                                           size_t buckets) {
  auto rows = sql.Query(
      "select b, count(*), md5(string_agg(k || ' ' || coalesce(d, 'null'), "
      "E'\\n' order by k collate \"C\")) from (select s.k, s.d, " +
      BucketOf(buckets) + " b from (" + entries + ") s) t group by b");
  if (!rows.ok()) return rows.error();
  std::map<uint32_t, Bucket> out;
  for (const auto& row : rows.value().rows) {
    auto b = ParseServerNumber<uint32_t>(row.at(0));
    auto n = ParseServerNumber<uint64_t>(row.at(1));
    if (!b.ok()) return b.status().error();
    if (!n.ok()) return n.status().error();
    out[b.value()] = {n.value(), row.at(2).value_or("")};
  }
  return out;
}

Result<ViewEntries> BucketEntries(SqlRunner& sql, const std::string& entries, size_t buckets,
                                  const std::vector<uint32_t>& which) {
  std::string list;
  for (uint32_t b : which) list += (list.empty() ? "" : ",") + std::to_string(b);
  auto rows = sql.Query("select s.k, s.e from (" + entries + ") s where " + BucketOf(buckets) +
                        " = any('{" + list + "}'::int[])");
  if (!rows.ok()) return rows.error();
  ViewEntries out;
  for (auto& row : rows.value().rows) {
    out.emplace(row.at(0).value_or(""), row.at(1).value_or("null"));
  }
  return out;
}

}  // namespace

Result<ViewAudit> AuditDigestView(SqlRunner& source, const std::string& source_sql,
                                  SqlRunner& store, const std::string& store_sql,
                                  const std::string& view, const AuditOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  ViewAudit audit;
  audit.digest = true;
  // As many buckets as the store's entries make of bucket_entries (at least one).
  auto counted = store.Query("select count(*) from (" + store_sql + ") s");
  if (!counted.ok()) return counted.error();
  auto held = ParseServerNumber<uint64_t>(counted.value().rows.at(0).at(0));
  if (!held.ok()) return held.status().error();
  const size_t per = std::max<size_t>(options.bucket_entries, 1);
  size_t buckets = std::clamp<size_t>((held.value() + per - 1) / per, 1, size_t{1} << 20);
  // Two sessions (the source and the store): both sides at once.
  auto digests = [&](size_t count)
      -> Result<std::pair<std::map<uint32_t, Bucket>, std::map<uint32_t, Bucket>>> {
    auto of_source = [&] { return Digests(source, source_sql, count); };
    std::future<Result<std::map<uint32_t, Bucket>>> later;
    if (&source != &store) later = std::async(std::launch::async, of_source);
    auto have = Digests(store, store_sql, count);
    auto want = later.valid() ? later.get() : of_source();
    if (!want.ok()) return want.error();
    if (!have.ok()) return have.error();
    return std::pair{std::move(want).value(), std::move(have).value()};
  };
  auto both = digests(buckets);
  if (!both.ok()) return both.error();
  // Sized by the store's entries: a store far behind its source (a table emptied) would
  // put the whole source in a few buckets, and a bucket is read whole. Sized again by
  // the larger side then.
  uint64_t largest = 0, source_total = 0;
  for (const auto& [b, bucket] : both.value().first) {
    largest = std::max(largest, bucket.entries);
    source_total += bucket.entries;
  }
  for (const auto& [b, bucket] : both.value().second) largest = std::max(largest, bucket.entries);
  if (largest > 4 * per && buckets < (size_t{1} << 20)) {
    buckets = std::clamp<size_t>((std::max(source_total, held.value()) + per - 1) / per, 1,
                                 size_t{1} << 20);
    both = digests(buckets);
    if (!both.ok()) return both.error();
  }
  const std::map<uint32_t, Bucket>& want_map = both.value().first;
  const std::map<uint32_t, Bucket>& have_map = both.value().second;
  audit.buckets = buckets;
  for (const auto& [b, bucket] : want_map) audit.entries += bucket.entries;
  // The buckets whose count or digest differ, in batches of about fetch_entries.
  std::vector<std::vector<uint32_t>> batches(1);
  size_t in_batch = 0;
  for (size_t b = 0; b < buckets; ++b) {
    const auto w = want_map.find(static_cast<uint32_t>(b));
    const auto h = have_map.find(static_cast<uint32_t>(b));
    const Bucket none;
    const Bucket& wb = w == want_map.end() ? none : w->second;
    const Bucket& hb = h == have_map.end() ? none : h->second;
    if (wb == hb) continue;
    ++audit.buckets_read;
    const size_t size = std::max(wb.entries, hb.entries);
    if (in_batch > 0 && in_batch + size > options.fetch_entries) {
      batches.emplace_back();
      in_batch = 0;
    }
    batches.back().push_back(static_cast<uint32_t>(b));
    in_batch += size;
  }
  for (const std::vector<uint32_t>& batch : batches) {
    if (batch.empty()) continue;
    auto read = [&]() -> Result<std::pair<ViewEntries, ViewEntries>> {
      auto expected = BucketEntries(source, source_sql, buckets, batch);
      if (!expected.ok()) return expected.error();
      auto stored = BucketEntries(store, store_sql, buckets, batch);
      if (!stored.ok()) return stored.error();
      return std::pair{std::move(expected).value(), std::move(stored).value()};
    };
    auto compared = CompareRounds(view, read, options, audit);
    if (!compared.ok()) return compared.error();
  }
  audit.seconds = Since(start);
  return audit;
}

Result<ViewAudit> AuditRowView(SqlSession& source, TypeLearner& types, ViewInspector& inspector,
                               const std::string& view, const std::string& table,
                               const AuditOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  ViewAudit audit;
  auto key = KeyColumns(source, table);
  if (!key.ok()) return key.error();
  auto kind = source.Query("select relkind::text from pg_class where oid = $1::regclass",
                           {TableName::Parse(table).Quoted()});
  if (!kind.ok()) return kind.error();
  const bool partitioned =
      !kind.value().rows.empty() && kind.value().rows[0][0].value_or("") == "p";
  auto described = DescribeTable(source, table);
  if (!described.ok()) return described.error();
  const std::shared_ptr<const RelationSchema> schema = std::move(described).value();
  Status learned = types.Learn(schema->columns);
  if (!learned.ok()) return learned.error();
  const std::shared_ptr<const TypeRegistry> registry = types.types();
  const size_t limit = std::max<size_t>(options.chunk_rows, 1);

  // The entries `rows` make; two rows that make one key are noted once each.
  std::set<std::string> noted_duplicates;
  auto expected_of = [&](const ChunkRows& rows, bool note) -> Result<ViewEntries> {
    std::vector<std::string> duplicates;
    auto out = EntriesOfRows(inspector, view, schema, rows, *registry, &duplicates);
    for (const std::string& key : duplicates) {
      if (note && noted_duplicates.insert(key).second) {
        Note(audit, options, "view " + view + ": two source rows make the key " + key);
      }
    }
    return out;
  };
  auto held_of = [&](const ViewEntries& expected) -> Result<ViewEntries> {
    std::vector<std::string> keys;
    keys.reserve(expected.size());
    for (const auto& [k, v] : expected) keys.push_back(k);
    auto entries = inspector.ReadEntries(view, keys);
    if (!entries.ok()) return entries.error();
    ViewEntries held;
    for (auto& [k, v] : entries.value()) held.emplace(std::move(k), std::move(v));
    return held;
  };

  // The source's side: chunk after chunk, each read again (its range) while it differs.
  std::optional<std::string> after;
  while (true) {
    auto rows = ReadRows(source, table, schema, key.value(), after, limit, partitioned);
    if (!rows.ok()) return rows.error();
    if (rows.value().empty()) break;
    const std::string last = RowPosition(*schema, key.value(), rows.value().back());
    bool first = true;
    auto read = [&]() -> Result<std::pair<ViewEntries, ViewEntries>> {
      ChunkRows range;
      if (first) {
        range = std::move(rows).value();
      } else {
        // The same range of keys as it is now (rows inserted into it meanwhile too).
        auto again = ReadRows(source, table, schema, key.value(), after, limit * 4 + 1000,
                              partitioned, last);
        if (!again.ok()) return again.error();
        range = std::move(again).value();
      }
      auto expected = expected_of(range, first);
      first = false;
      if (!expected.ok()) return expected.error();
      auto held = held_of(expected.value());
      if (!held.ok()) return held.error();
      return std::pair{std::move(expected).value(), std::move(held).value()};
    };
    const bool whole = rows.value().size() == limit;
    auto compared = CompareRounds(view, read, options, audit);
    if (!compared.ok()) return compared.error();
    audit.entries += compared.value().expected;
    if (!whole) break;
    after = last;
  }

  // The store's side: its keys, page by page; a key whose row does not exist is extra.
  std::set<std::string> reported;  // a key SCAN gives twice is one difference
  std::string cursor;
  do {
    auto page = inspector.ScanKeys(view, cursor, limit);
    if (!page.ok()) return page.error();
    if (!page.value()) break;  // the store cannot page its keys
    cursor = page.value()->cursor;
    audit.store_keys += page.value()->keys.size();
    std::vector<std::string> store_keys;
    std::vector<std::vector<std::string>> row_keys;
    for (const std::string& store_key : page.value()->keys) {
      auto readings = inspector.RowKeys(view, *schema, store_key);
      if (!readings.ok()) return readings.error();
      auto ordered = OrderedRowKey(*schema, key.value(), readings.value());
      if (!ordered) continue;
      store_keys.push_back(store_key);
      row_keys.push_back(std::move(*ordered));
    }
    // Extra: no row in the source, and the store holds the key (read again while it
    // differs, as a chunk is).
    auto read = [&]() -> Result<std::pair<ViewEntries, ViewEntries>> {
      auto absent = AbsentKeys(source, table, key.value(), row_keys);
      if (!absent.ok()) return absent.error();
      std::vector<std::string> suspects;
      for (size_t i : absent.value()) suspects.push_back(store_keys[i]);
      ViewEntries held;
      if (!suspects.empty()) {
        auto entries = inspector.ReadEntries(view, suspects);
        if (!entries.ok()) return entries.error();
        for (auto& [k, v] : entries.value()) {
          if (!reported.contains(k)) held.emplace(std::move(k), std::move(v));
        }
      }
      return std::pair{ViewEntries{}, std::move(held)};
    };
    auto compared = CompareRounds(view, read, options, audit);
    if (!compared.ok()) return compared.error();
    reported.insert(compared.value().keys.begin(), compared.value().keys.end());
  } while (!cursor.empty());
  audit.seconds = Since(start);
  return audit;
}

}  // namespace pgderive
