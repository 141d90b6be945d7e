#pragma once

// How one view sees its table's rows: which columns its value holds, how its key is
// made. Shared by every sink and by `verify`, so a store and its check render a row the
// same way (SPEC.md §3).

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cdc/change_batch.h"
#include "cdc/change_stream.h"
#include "cdc/value_json.h"
#include "config/config.h"
#include "config/key_template.h"

namespace pgderive {

// What one I/U/D change means for a view that keeps one entry per row (a Redis key, an
// OpenSearch document): the entry to remove (a delete, or the old key when an update
// changed it) and the entry to write, with its JSON object. Unchanged TOASTed columns
// are left out of `value` and named in `unchanged`; their values are in the entry
// `previous()` names.
struct RowWrite {
  std::optional<std::string> remove;
  std::optional<std::string> put;
  std::string value;
  std::vector<std::string> unchanged;
  const std::string& previous() const { return remove ? *remove : *put; }
};

enum class EntryKey { kTemplate, kDocumentId };

// A view resolved against one schema of its table (a new Relation message makes a new
// one). Immutable.
class ViewShape {
 public:
  // Fails (permanent) when a listed column, or a column the key uses, is not in the
  // table, or the key uses a column outside the row key (not unique, maybe NULL, and a
  // delete would not carry it), also under REPLICA IDENTITY FULL.
  static Result<std::shared_ptr<const ViewShape>> Make(
      const ViewConfig& view, std::shared_ptr<const RelationSchema> schema);

  const RelationSchema& schema() const { return *schema_; }
  // {"col": value, ...} of the view's columns. Unchanged TOASTed columns of the view
  // are left out and their names appended to `unchanged`.
  Status AppendValue(std::string& out, const TupleData& tuple, const TypeRegistry& types,
                     std::vector<std::string>* unchanged) const;
  // The key from the template (Redis); error when a key column is null or unchanged.
  Result<std::string> Key(const TupleData& tuple) const;
  // The document id (OpenSearch): the row key's text (the primary key, or the replica
  // identity index; never every column under FULL), or for a composite key the JSON
  // array of its columns' texts.
  Result<std::string> DocumentId(const TupleData& tuple) const;
  const std::vector<size_t>& columns() const { return columns_; }
  // One whole row as the view holds it: (key or document id, JSON object).
  Result<std::pair<std::string, std::string>> EntryFor(const TupleData& row,
                                                       const TypeRegistry& types,
                                                       EntryKey kind) const;
  Result<RowWrite> WriteFor(const OwnedChange& change, const TypeRegistry& types,
                            EntryKey kind) const;

 private:
  Error KeyError(size_t column, const TupleValue& value) const;

  std::shared_ptr<const RelationSchema> schema_;
  std::vector<size_t> columns_;  // indexes into schema_->columns, in the view's order
  std::vector<std::pair<std::string, std::optional<size_t>>> key_parts_;  // literal or column
  std::vector<size_t> identity_;  // the row key's columns (RowKeyColumns)
};

// Caches a view's shape per schema (schemas are shared and immutable, so the pointer
// identifies one).
class ViewShapes {
 public:
  explicit ViewShapes(ViewConfig view) : view_(std::move(view)) {}
  Result<std::shared_ptr<const ViewShape>> For(const std::shared_ptr<const RelationSchema>& schema);
  const ViewConfig& view() const { return view_; }

 private:
  ViewConfig view_;
  std::shared_ptr<const RelationSchema> last_schema_;
  std::shared_ptr<const ViewShape> last_shape_;
};

}  // namespace pgderive
