#include "sinks/common/view_shape.h"

#include <algorithm>

#include "base/names.h"
#include "cdc/row_json.h"

namespace pgderive {

Result<std::shared_ptr<const ViewShape>> ViewShape::Make(
    const ViewConfig& view, std::shared_ptr<const RelationSchema> schema) {
  const std::optional<KeyTemplate>& key = view.key;
  auto shape = std::make_shared<ViewShape>();
  auto find = [&](const std::string& name) -> std::optional<size_t> {
    for (size_t i = 0; i < schema->columns.size(); ++i) {
      if (schema->columns[i].name == name) return i;
    }
    return std::nullopt;
  };
  auto column_names = [&] {
    std::vector<std::string> names;
    for (const ColumnSchema& c : schema->columns) names.push_back(c.name);
    return names;
  };
  const std::string where = "view " + view.name + ": ";
  if (view.columns) {
    for (const std::string& name : *view.columns) {
      auto index = find(name);
      if (!index) {
        return Error::Permanent(where + "column " + name + " is not in table " +
                                schema->QualifiedName() + " " +
                                ValidNames(name, column_names(), "its columns"));
      }
      shape->columns_.push_back(*index);
    }
  } else {
    for (size_t i = 0; i < schema->columns.size(); ++i) shape->columns_.push_back(i);
  }
  for (size_t i = 0; i < schema->columns.size(); ++i) {
    if (schema->columns[i].key) shape->identity_.push_back(i);
  }
  if (key) {
    for (const KeyTemplate::Part& part : key->parts()) {
      if (part.column.empty()) {
        shape->key_parts_.emplace_back(part.literal, std::nullopt);
        continue;
      }
      auto index = find(part.column);
      if (!index) {
        return Error::Permanent(where + "key column " + part.column + " is not in table " +
                                schema->QualifiedName() + " " +
                                ValidNames(part.column, column_names(), "its columns"));
      }
      // Also under REPLICA IDENTITY FULL, whose deletes carry every column: a column
      // outside the row key can be NULL or shared by two rows, and deleting one of them
      // would remove the other's entry.
      if (!schema->columns[*index].key) {
        return Error::Permanent(where + "key column " + part.column + " is not part of the " +
                                "row key of " + schema->QualifiedName() +
                                " (its primary key, or its replica identity index): two rows "
                                "could share the key, or a delete not name it");
      }
      shape->key_parts_.emplace_back("", index);
    }
    // And every row key column: a template naming part of the key (a key widened while
    // streaming, a table replaced by one keyed otherwise) would give two rows one key,
    // the later overwriting the earlier. validate refuses it at the file's line first.
    for (size_t i : shape->identity_) {
      const bool named =
          std::any_of(shape->key_parts_.begin(), shape->key_parts_.end(),
                      [&](const auto& part) { return part.second == std::optional<size_t>(i); });
      if (!named) {
        return Error::Permanent(where + "the key template does not name the row key column " +
                                schema->columns[i].name + " of " + schema->QualifiedName() +
                                ": two rows could share one key");
      }
    }
  }
  shape->schema_ = std::move(schema);
  return std::shared_ptr<const ViewShape>(std::move(shape));
}

Status ViewShape::AppendValue(std::string& out, const TupleData& tuple, const TypeRegistry& types,
                              std::vector<std::string>* unchanged) const {
  if (tuple.columns.size() != schema_->columns.size()) {
    return Error::Corrupt("a tuple of " + std::to_string(tuple.columns.size()) + " columns for " +
                          schema_->QualifiedName());
  }
  out += '{';
  bool first = true;
  for (size_t i : columns_) {
    const TupleValue& value = tuple.columns[i];
    const ColumnSchema& column = schema_->columns[i];
    if (value.kind == TupleValueKind::kUnchanged) {
      if (unchanged != nullptr) unchanged->push_back(column.name);
      continue;
    }
    if (!first) out += ',';
    first = false;
    out += column.json_key;
    if (value.kind == TupleValueKind::kNull) {
      out += "null";
      continue;
    }
    Status status = AppendJsonValue(out, value.data, column.type_oid, types);
    if (!status.ok()) {
      return Error(status.error().kind(),
                   schema_->QualifiedName() + "." + column.name + ": " + status.error().message());
    }
  }
  out += '}';
  return Status::Ok();
}

Error ViewShape::KeyError(size_t column, const TupleValue& value) const {
  const std::string name =
      "key column " + schema_->columns[column].name + " of " + schema_->QualifiedName();
  if (value.kind == TupleValueKind::kUnchanged) {
    // Its value is in the old key PostgreSQL logs with the update (copied in by
    // CopyChange); one that does not log it leaves no way to tell which row changed.
    return Error::Permanent(name +
                            " arrived as an unchanged TOASTed value without the old key "
                            "(PostgreSQL before 15, 14.3, 13.7, 12.11 and 11.16 does not log "
                            "it): upgrade PostgreSQL, then `pgderive backfill` the view");
  }
  return Error::Permanent(name + " is null");
}

Result<std::string> ViewShape::Key(const TupleData& tuple) const {
  std::string key;
  for (const auto& [literal, column] : key_parts_) {
    if (!column) {
      key += literal;
      continue;
    }
    const TupleValue& value = tuple.columns.at(*column);
    if (value.kind != TupleValueKind::kText) return KeyError(*column, value);
    key += value.data;
  }
  return key;
}

Result<std::string> ViewShape::DocumentId(const TupleData& tuple) const {
  if (identity_.empty()) {
    return Error::Permanent("table " + schema_->QualifiedName() + " has no key columns");
  }
  std::string id;
  if (identity_.size() > 1) id += '[';
  for (size_t n = 0; n < identity_.size(); ++n) {
    const TupleValue& value = tuple.columns.at(identity_[n]);
    if (value.kind != TupleValueKind::kText) return KeyError(identity_[n], value);
    if (identity_.size() == 1) {
      id = value.data;
      break;
    }
    if (n) id += ',';
    AppendJsonString(id, value.data);
  }
  if (identity_.size() > 1) id += ']';
  // OpenSearch refuses a longer _id, and with it the whole _bulk: only this view stops.
  constexpr size_t kMaxDocumentId = 512;
  if (id.size() > kMaxDocumentId) {
    size_t cut = 64;  // not inside a UTF-8 character
    while (cut > 0 && (static_cast<unsigned char>(id[cut]) & 0xC0) == 0x80) --cut;
    return Error::Permanent("table " + schema_->QualifiedName() + ": a row's key is " +
                            std::to_string(id.size()) + " bytes as a document _id (key " +
                            id.substr(0, cut) + "...); OpenSearch takes at most 512");
  }
  return id;
}

Result<std::pair<std::string, std::string>> ViewShape::EntryFor(const TupleData& row,
                                                                const TypeRegistry& types,
                                                                EntryKey kind) const {
  auto key = kind == EntryKey::kTemplate ? Key(row) : DocumentId(row);
  if (!key.ok()) return key.error();
  std::string value;
  Status status = AppendValue(value, row, types, nullptr);
  if (!status.ok()) return status.error();
  return std::pair<std::string, std::string>(std::move(key).value(), std::move(value));
}

Result<RowWrite> ViewShape::WriteFor(const OwnedChange& change, const TypeRegistry& types,
                                     EntryKey kind) const {
  auto key_of = [&](const TupleData& tuple) {
    return kind == EntryKey::kTemplate ? Key(tuple) : DocumentId(tuple);
  };
  RowWrite write;
  if (change.op == ChangeOp::kDelete) {
    auto key = key_of(change.old_tuple);
    if (!key.ok()) return key.error();
    write.remove = std::move(key).value();
    return write;
  }
  auto key = key_of(change.new_tuple);
  if (!key.ok()) return key.error();
  if (change.old_kind != '\0') {
    auto old = key_of(change.old_tuple);
    if (!old.ok()) return old.error();
    if (old.value() != key.value()) write.remove = std::move(old).value();
  }
  write.put = std::move(key).value();
  Status status = AppendValue(write.value, change.new_tuple, types, &write.unchanged);
  if (!status.ok()) return status.error();
  return write;
}

Result<std::shared_ptr<const ViewShape>> ViewShapes::For(
    const std::shared_ptr<const RelationSchema>& schema) {
  if (schema == last_schema_ && last_shape_) return last_shape_;
  auto shape = ViewShape::Make(view_, schema);
  if (!shape.ok()) return shape.error();
  last_schema_ = schema;
  last_shape_ = shape.value();
  return shape;
}

}  // namespace pgderive
