#include "cdc/change_batch.h"

#include <cstring>
#include <type_traits>
#include <variant>

namespace pgderive {
namespace {

size_t Bytes(const TupleData& tuple) {
  size_t n = 0;
  for (const TupleValue& v : tuple.columns) n += v.data.size();
  return n;
}

// Copies the values' bytes to `at` and points the copy's views there.
char* CopyTuple(const TupleData& from, TupleData& to, char* at) {
  to.columns = from.columns;
  for (TupleValue& v : to.columns) {
    if (v.data.empty()) continue;
    std::memcpy(at, v.data.data(), v.data.size());
    v.data = std::string_view(at, v.data.size());
    at += v.data.size();
  }
  return at;
}

}  // namespace

size_t FillUnchangedFromOld(const RelationSchema& schema, char old_kind, const TupleData& old_tuple,
                            TupleData& new_tuple) {
  size_t left = 0;
  for (size_t i = 0; i < new_tuple.columns.size(); ++i) {
    TupleValue& value = new_tuple.columns[i];
    if (value.kind != TupleValueKind::kUnchanged) continue;
    const bool carried = (old_kind == 'O' || (old_kind == 'K' && i < schema.columns.size() &&
                                              schema.columns[i].key)) &&
                         i < old_tuple.columns.size() &&
                         (old_tuple.columns[i].kind == TupleValueKind::kText ||
                          old_tuple.columns[i].kind == TupleValueKind::kBinary);
    if (carried) {
      value = old_tuple.columns[i];
    } else {
      ++left;
    }
  }
  return left;
}

bool KeyChanged(const RelationSchema& schema, const TupleData& old_tuple,
                const TupleData& new_tuple) {
  for (size_t i = 0; i < schema.columns.size(); ++i) {
    if (!schema.columns[i].key || i >= old_tuple.columns.size() || i >= new_tuple.columns.size()) {
      continue;
    }
    const TupleValue& o = old_tuple.columns[i];
    const TupleValue& n = new_tuple.columns[i];
    if (n.kind == TupleValueKind::kUnchanged) continue;
    if (o.kind != n.kind || o.data != n.data) return true;
  }
  return false;
}

std::optional<Lsn> CheckpointOf(const BatchGroup& group) {
  for (auto it = group.rbegin(); it != group.rend(); ++it) {
    if (auto checkpoint = (*it)->checkpoint()) return checkpoint;
  }
  return std::nullopt;
}

const TypeRegistry& TypesOf(const BatchGroup& group) {
  static const TypeRegistry kBuiltIn;
  for (auto it = group.rbegin(); it != group.rend(); ++it) {
    if ((*it)->types) return *(*it)->types;
  }
  return kBuiltIn;
}

OwnedChange ViewStateChange(Lsn commit_lsn, uint32_t index,
                            std::shared_ptr<const ViewControl> control) {
  OwnedChange out;
  out.commit_lsn = commit_lsn;
  out.index = index;
  out.op = ChangeOp::kViewState;
  out.control = std::move(control);
  return out;
}

OwnedChange BackfillRow(Lsn commit_lsn, uint32_t index,
                        std::shared_ptr<const RelationSchema> relation, const TupleData& row,
                        std::shared_ptr<const ViewControl> control) {
  OwnedChange out;
  out.commit_lsn = commit_lsn;
  out.index = index;
  out.op = ChangeOp::kBackfillRow;
  out.relations.push_back(std::move(relation));
  out.bytes = Bytes(row);
  if (out.bytes > 0) out.storage = std::make_unique<char[]>(out.bytes);
  CopyTuple(row, out.new_tuple, out.storage.get());
  out.control = std::move(control);
  return out;
}

std::optional<OwnedChange> CopyChange(const Change& change) {
  OwnedChange out;
  out.commit_lsn = change.commit_lsn;
  out.index = change.index;
  out.relations.assign(change.relations.begin(), change.relations.end());
  const TupleData* new_tuple = nullptr;
  const TupleData* old_tuple = nullptr;
  const bool known = std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, InsertMessage>) {
          out.op = ChangeOp::kInsert;
          new_tuple = &m.new_tuple;
        } else if constexpr (std::is_same_v<T, UpdateMessage>) {
          out.op = ChangeOp::kUpdate;
          new_tuple = &m.new_tuple;
          if (m.old_kind != '\0') old_tuple = &m.old_tuple;
          out.old_kind = m.old_kind;
        } else if constexpr (std::is_same_v<T, DeleteMessage>) {
          out.op = ChangeOp::kDelete;
          old_tuple = &m.old_tuple;
          out.old_kind = m.old_kind;
        } else if constexpr (std::is_same_v<T, TruncateMessage>) {
          out.op = ChangeOp::kTruncate;
        } else {
          return false;
        }
        return true;
      },
      *change.message);
  if (!known) return std::nullopt;
  const size_t bytes = (new_tuple ? Bytes(*new_tuple) : 0) + (old_tuple ? Bytes(*old_tuple) : 0);
  out.bytes = bytes;
  if (bytes > 0) out.storage = std::make_unique<char[]>(bytes);
  char* at = out.storage.get();
  if (new_tuple) at = CopyTuple(*new_tuple, out.new_tuple, at);
  if (old_tuple) CopyTuple(*old_tuple, out.old_tuple, at);
  if (out.op == ChangeOp::kUpdate && old_tuple && !out.relations.empty()) {
    FillUnchangedFromOld(out.relation(), out.old_kind, out.old_tuple, out.new_tuple);
  }
  return out;
}

}  // namespace pgderive
