#pragma once

// The comparison of a view's entries as a store holds them with the entries its source
// rows make (`pgderive verify`, the background verifier). Pure: no store, no SQL.
// Entries are (key, JSON object of the view's columns); two values are the same when
// they are the same JSON (the members' order aside), so a store that writes its
// members in another order never differs.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sinks/common/view_inspector.h"
#include "snapshot/watermark_window.h"

namespace pgderive {

using ViewEntries = std::map<std::string, std::string>;  // key -> JSON object

struct EntryDifference {
  enum class Kind { kMissing, kExtra, kDifferent };
  struct Column {
    std::string name;
    std::optional<std::string> store;   // its JSON in the store; nullopt: not there
    std::optional<std::string> source;  // its JSON the source makes; nullopt: not a column
  };
  Kind kind = Kind::kMissing;
  std::string key;
  // kDifferent: each column that differs, in name order; empty when the store's value is
  // not a JSON object (`held` then holds its first 200 bytes).
  std::vector<Column> columns = {};
  std::optional<std::string> held = {};
};

// The differences between `expected` (from the source) and `actual` (the store), in key
// order: a key only expected is missing, one only in the store extra, one whose values
// are not the same JSON different.
std::vector<EntryDifference> CompareEntries(const ViewEntries& expected, const ViewEntries& actual);

// The lines `verify` prints for a difference of `view`, e.g.
//   view V: missing K
//   view V: extra K (no such row in the source)
//   view V: different K column c: store has 1, source has 2
std::vector<std::string> DescribeDifference(const std::string& view,
                                            const EntryDifference& difference);

// One word for the log and the counters: "missing", "extra", or "different (a, b)".
std::string SummarizeDifference(const EntryDifference& difference);

// The entries `rows` (read from `schema`'s table, each value as text, as a chunk reads
// them) make in `view`, by key. A row the view does not take makes none; two rows that
// make one key are an error naming it, or with `duplicates` the key is added there (the
// first row's entry kept).
Result<ViewEntries> EntriesOfRows(ViewInspector& inspector, const std::string& view,
                                  const std::shared_ptr<const RelationSchema>& schema,
                                  const ChunkRows& rows, const TypeRegistry& types,
                                  std::vector<std::string>* duplicates = nullptr);

// The check of a verify chunk (WatermarkWindow::BeginVerify): `held` is what the store
// held under the keys of every row read (ReadEntries, before "checked"); `comparable`
// the rows no change touched in the window. Their entries against what the store held:
// missing and different only (an entry under a key no row read makes is found by the
// walk of the store's keys, not here).
Result<std::vector<EntryDifference>> CheckChunk(ViewInspector& inspector, const std::string& view,
                                                const std::shared_ptr<const RelationSchema>& schema,
                                                const ChunkRows& comparable,
                                                const ViewEntries& held, const TypeRegistry& types);

}  // namespace pgderive
