#include "cdc/row_json.h"

namespace pgderive {

void RenderSchemaJson(RelationSchema& schema) {
  for (ColumnSchema& column : schema.columns) {
    column.json_key.clear();
    AppendJsonString(column.json_key, column.name);
    column.json_key += ':';
  }
  schema.json_name.clear();
  AppendJsonString(schema.json_name, schema.QualifiedName());
}

Status AppendRowJson(std::string& out, const RelationSchema& schema, const TupleData& tuple,
                     const TypeRegistry& types, std::vector<std::string>* unchanged,
                     RowColumns which) {
  if (tuple.columns.size() != schema.columns.size()) {
    return Error::Corrupt("a tuple of " + std::to_string(tuple.columns.size()) + " columns for " +
                          schema.QualifiedName() + ", which has " +
                          std::to_string(schema.columns.size()));
  }
  out += '{';
  bool first = true;
  for (size_t i = 0; i < tuple.columns.size(); ++i) {
    const TupleValue& value = tuple.columns[i];
    const ColumnSchema& column = schema.columns[i];
    if (which == RowColumns::kKeyOnly && !column.key) continue;
    if (value.kind == TupleValueKind::kUnchanged) {
      if (unchanged != nullptr) unchanged->push_back(column.name);
      continue;
    }
    if (!first) out += ',';
    first = false;
    if (!column.json_key.empty()) {
      out += column.json_key;
    } else {
      AppendJsonString(out, column.name);
      out += ':';
    }
    if (value.kind == TupleValueKind::kNull) {
      out += "null";
    } else if (value.kind == TupleValueKind::kBinary) {
      return Error::Corrupt("binary tuple data for " + schema.QualifiedName() + "." + column.name +
                            ": pgderive asks for text format");
    } else {
      Status status = AppendJsonValue(out, value.data, column.type_oid, types);
      if (!status.ok()) {
        return Error(status.error().kind(),
                     schema.QualifiedName() + "." + column.name + ": " + status.error().message());
      }
    }
  }
  out += '}';
  return Status::Ok();
}

}  // namespace pgderive
