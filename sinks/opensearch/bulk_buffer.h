#pragma once

// The _bulk actions of one Apply, coalesced per document, with truncates kept in order.
// Pure: no client, no I/O.
//
// Coalescing. At most one action per document between two truncates: a later action on
// the same (index, _id) replaces the earlier one. Sending only the last is what
// applying them in order would leave, since each carries a version at least as high as
// the one it replaces (commit order) and nothing reads the index between them; a replay
// after a crash is judged by the versions as before. It halves the work of the usual
// insert-then-update-or-delete stream, where most of OpenSearch's time goes.
//
// Truncates. A truncate of an index is a barrier: every action added before it is sent
// before it, and no action after it replaces one before it (an insert, then a
// truncate, then the same insert again is three steps, not one). Take() returns the
// steps in order: a batch of ndjson, then the truncate it ends with.

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pgderive {

class BulkBuffer {
 public:
  struct Step {
    std::string ndjson;                   // the surviving actions, in order (may be empty)
    std::optional<std::string> truncate;  // then: delete every document of this index
  };

  void Add(const std::string& index, std::string_view id, std::string text) {
    std::string key = index;
    key += '\0';
    key += id;
    auto [it, inserted] = last_.try_emplace(std::move(key), actions_.size());
    if (!inserted) {
      actions_[it->second].clear();  // superseded
      it->second = actions_.size();
    }
    actions_.push_back(std::move(text));
  }

  // Every document of `index` goes, after what was added before and before what is
  // added after.
  void Truncate(const std::string& index) {
    steps_.push_back(Step{Join(), index});
    actions_.clear();
    last_.clear();
  }

  bool empty() const { return actions_.empty() && steps_.empty(); }

  // The steps in order; the buffer is empty afterwards.
  std::vector<Step> Take() {
    std::vector<Step> out = std::move(steps_);
    steps_.clear();
    if (!actions_.empty()) out.push_back(Step{Join(), std::nullopt});
    actions_.clear();
    last_.clear();
    return out;
  }

 private:
  std::string Join() const {
    size_t size = 0;
    for (const std::string& a : actions_) size += a.size();
    std::string out;
    out.reserve(size);
    for (const std::string& a : actions_) out += a;
    return out;
  }

  std::vector<Step> steps_;  // closed by a truncate
  std::vector<std::string> actions_;
  std::unordered_map<std::string, size_t> last_;
};

}  // namespace pgderive
