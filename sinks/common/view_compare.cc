#include "sinks/common/view_compare.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>

namespace pgderive {
namespace {

using nlohmann::json;

// Whether two column values are the same. A JSON number with a fraction or an exponent
// is a floating-point value (a float column: exact values, numerics, are strings or
// integers), and two of them are the same within a relative 1e-9: a float aggregate's
// last digits depend on the order its rows were added (a parallel plan, a mirror filled
// in another order), which is not a difference.
bool SameValue(const json& a, const json& b) {
  if (a == b) return true;
  if (!a.is_number() || !b.is_number() || (!a.is_number_float() && !b.is_number_float())) {
    return false;
  }
  const double x = a.get<double>(), y = b.get<double>();
  if (std::isnan(x) || std::isnan(y)) return std::isnan(x) && std::isnan(y);
  if (std::isinf(x) || std::isinf(y)) return x == y;
  return std::fabs(x - y) <= 1e-9 * std::max(std::fabs(x), std::fabs(y));
}

}  // namespace

std::vector<EntryDifference> CompareEntries(const ViewEntries& expected,
                                            const ViewEntries& actual) {
  using Kind = EntryDifference::Kind;
  std::vector<EntryDifference> out;
  auto want_it = expected.begin();
  auto have_it = actual.begin();
  while (want_it != expected.end() || have_it != actual.end()) {
    if (have_it == actual.end() || (want_it != expected.end() && want_it->first < have_it->first)) {
      out.push_back({.kind = Kind::kMissing, .key = want_it->first});
      ++want_it;
      continue;
    }
    if (want_it == expected.end() || have_it->first < want_it->first) {
      out.push_back({.kind = Kind::kExtra, .key = have_it->first});
      ++have_it;
      continue;
    }
    const std::string& key = want_it->first;
    const std::string& value = want_it->second;
    const std::string& stored = have_it->second;
    ++want_it;
    ++have_it;
    if (value == stored) continue;
    const json want = json::parse(value, nullptr, false);
    const json have = json::parse(stored, nullptr, false);
    if (!have.is_object()) {
      out.push_back({.kind = Kind::kDifferent, .key = key, .held = stored.substr(0, 200)});
      continue;
    }
    if (want == have) continue;
    EntryDifference difference{.kind = Kind::kDifferent, .key = key};
    std::map<std::string, EntryDifference::Column> columns;
    if (want.is_object()) {
      for (const auto& [column, wanted] : want.items()) {
        if (!have.contains(column)) {
          columns[column] = {column, std::nullopt, wanted.dump()};
        } else if (!SameValue(have[column], wanted)) {
          columns[column] = {column, have[column].dump(), wanted.dump()};
        }
      }
    }
    for (const auto& [column, had] : have.items()) {
      if (!want.is_object() || !want.contains(column)) {
        columns[column] = {column, had.dump(), std::nullopt};
      }
    }
    if (columns.empty() && want.is_object()) continue;  // the same within float tolerance
    for (auto& [name, column] : columns) difference.columns.push_back(std::move(column));
    out.push_back(std::move(difference));
  }
  return out;
}

std::vector<std::string> DescribeDifference(const std::string& view,
                                            const EntryDifference& difference) {
  using Kind = EntryDifference::Kind;
  const std::string head = "view " + view + ": ";
  switch (difference.kind) {
    case Kind::kMissing:
      return {head + "missing " + difference.key};
    case Kind::kExtra:
      return {head + "extra " + difference.key + " (no such row in the source)"};
    case Kind::kDifferent:
      break;
  }
  if (difference.held) {
    return {head + "different " + difference.key + ": the store holds " + *difference.held +
            ", not a JSON object"};
  }
  std::vector<std::string> lines;
  for (const EntryDifference::Column& column : difference.columns) {
    const std::string prefix = head + "different " + difference.key + " column " + column.name;
    if (!column.store) {
      lines.push_back(prefix + ": missing in the store, source has " + *column.source);
    } else if (!column.source) {
      lines.push_back(prefix + ": in the store (" + *column.store + ") but not in the view");
    } else {
      lines.push_back(prefix + ": store has " + *column.store + ", source has " + *column.source);
    }
  }
  return lines;
}

std::string SummarizeDifference(const EntryDifference& difference) {
  using Kind = EntryDifference::Kind;
  switch (difference.kind) {
    case Kind::kMissing:
      return "missing";
    case Kind::kExtra:
      return "extra";
    case Kind::kDifferent:
      break;
  }
  if (difference.held) return "different (not a JSON object)";
  std::string names;
  for (const EntryDifference::Column& column : difference.columns) {
    names += (names.empty() ? "" : ", ") + column.name;
  }
  return "different (" + names + ")";
}

Result<ViewEntries> EntriesOfRows(ViewInspector& inspector, const std::string& view,
                                  const std::shared_ptr<const RelationSchema>& schema,
                                  const ChunkRows& rows, const TypeRegistry& types,
                                  std::vector<std::string>* duplicates) {
  ViewEntries out;
  TupleData tuple;
  for (const auto& row : rows) {
    tuple.columns.assign(row.size(), TupleValue{});
    for (size_t i = 0; i < row.size(); ++i) {
      if (row[i]) tuple.columns[i] = TupleValue{TupleValueKind::kText, *row[i]};
    }
    auto entry = inspector.Expected(view, schema, tuple, types);
    if (!entry.ok()) return entry.error();
    if (!entry.value()) continue;
    if (!out.emplace(entry.value()->first, std::move(entry.value()->second)).second) {
      if (duplicates != nullptr) {
        duplicates->push_back(entry.value()->first);
        continue;
      }
      return Error::Permanent("view " + view + ": two source rows make the key " +
                              entry.value()->first);
    }
  }
  return out;
}

Result<std::vector<EntryDifference>> CheckChunk(ViewInspector& inspector, const std::string& view,
                                                const std::shared_ptr<const RelationSchema>& schema,
                                                const ChunkRows& comparable,
                                                const ViewEntries& held,
                                                const TypeRegistry& types) {
  auto expected = EntriesOfRows(inspector, view, schema, comparable, types);
  if (!expected.ok()) return expected.error();
  ViewEntries actual;
  for (const auto& [key, value] : expected.value()) {
    auto it = held.find(key);
    if (it != held.end()) actual.emplace(key, it->second);
  }
  return CompareEntries(expected.value(), actual);
}

}  // namespace pgderive
