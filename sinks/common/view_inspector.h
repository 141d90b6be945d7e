#pragma once

// What `verify` reads from a store, apart from the write path (sink.h): the entries a
// view holds, and the entries the source says it must hold. Each store implements it
// next to its Sink; nothing here writes.

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cdc/change_batch.h"

namespace pgderive {

class SqlRunner;  // statements on the source (cdc/sql_session.h)

class ViewInspector {
 public:
  virtual ~ViewInspector() = default;

  // One entry of a view: (key, JSON object of its columns).
  using Entry = std::pair<std::string, std::string>;

  // The store's view names.
  virtual std::vector<std::string> views() const = 0;
  // Every entry the store holds for `view`.
  virtual Result<std::vector<Entry>> ReadView(const std::string& view) = 0;
  // The entries the store holds for `view` under `keys` (a key it does not hold is left
  // out), read as of now: what the stream applied before the call is in them. The
  // verification of a chunk reads them. By default filtered from ReadView; a store that
  // can read entries by key overrides it.
  virtual Result<std::vector<Entry>> ReadEntries(const std::string& view,
                                                 const std::vector<std::string>& keys);
  // A page of the keys the store holds for `view`, about `count` of them, from `cursor`
  // (empty: the first page); the page's `cursor` is empty after the last. Each key once
  // or more (a key written meanwhile may be missed: Redis SCAN's guarantee); a store
  // that cannot page its keys returns nullopt. The background verifier walks them to
  // find entries whose row does not exist.
  struct KeyPage {
    std::vector<std::string> keys;
    std::string cursor;
  };
  virtual Result<std::optional<KeyPage>> ScanKeys(const std::string& view,
                                                  const std::string& cursor, size_t count) {
    (void)view;
    (void)cursor;
    (void)count;
    return std::optional<KeyPage>();
  }
  // The row keys `key` can be made from in `view` of `schema`'s table: each a value (as
  // text) per row key column of `schema` (RelationSchema's `key` columns, in column
  // order). None: no row can make it (another view's key, text the template does not
  // make). Several: a template whose values may hold its literals (KeyTemplate::Splits).
  virtual Result<std::vector<std::vector<std::string>>> RowKeys(const std::string& view,
                                                                const RelationSchema& schema,
                                                                const std::string& key) {
    (void)view;
    (void)schema;
    (void)key;
    return std::vector<std::vector<std::string>>();
  }
  // The entry a source row must produce in `view`; nullopt when the view does not read
  // the row's table.
  virtual Result<std::optional<Entry>> Expected(const std::string& view,
                                                const std::shared_ptr<const RelationSchema>& schema,
                                                const TupleData& row,
                                                const TypeRegistry& types) = 0;
  // The digest path (sinks/common/view_audit.h): for a view whose entries both sides can
  // compute in SQL (a postgres view), a SELECT of three text columns, `k` (the key as a
  // JSON array), `e` (the entry as a JSON object, as ReadView gives it) and `d` (what the
  // bucket digests are made of: the same text on both sides for the same entry), of the
  // entries of `of`: the view's query run on the source, the view's table in the store
  // (the one the stream writes for the file's definition), or the query run over the
  // store's mirrors of the source tables. nullopt: the view is made row by row (use
  // Expected), or is not maintained now (a mirror it reads is being filled, its new
  // version is not built yet). The store's and the mirrors' are read on a session of
  // the store's own database.
  enum class EntriesOf { kSource, kStore, kMirrors };
  virtual Result<std::optional<std::string>> EntriesSql(const std::string& view, EntriesOf of) {
    (void)view;
    (void)of;
    return std::optional<std::string>();
  }
  // The store's own database, for the statements of EntriesSql; empty for a store that
  // is not one.
  virtual std::string store_dsn() const { return {}; }
  // Writes the entries of `keys` (each a key as EntriesSql's `k`) of `view` again from
  // the mirrors, in one transaction ordered with the stream's batches. For a view with
  // mirrors only (else a permanent error).
  virtual Status RepairEntries(const std::string& view, const std::vector<std::string>& keys) {
    (void)keys;
    return Error::Permanent("view " + view + " cannot be repaired from mirrors");
  }
};

}  // namespace pgderive
