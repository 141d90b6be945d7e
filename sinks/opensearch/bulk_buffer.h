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
//
// Chunks. A step's actions are cut into requests of at most `max_bytes` each (an action
// larger than that goes alone), in order. Each document has at most one action in a
// step, so a step's chunks touch disjoint documents: they may be sent at once, in any
// order, and leave what sending them one after another would.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pgderive {

class BulkBuffer {
 public:
  struct Step {
    // The surviving actions, in order, cut into requests of at most max_bytes (none
    // when the step is only a truncate).
    std::vector<std::string> chunks;
    std::optional<std::string> truncate;  // then: delete every document of this index
  };

  explicit BulkBuffer(size_t max_bytes = SIZE_MAX) : max_bytes_(max_bytes) {}

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
    steps_.push_back(Step{Chunks(), index});
    actions_.clear();
    last_.clear();
  }

  bool empty() const { return actions_.empty() && steps_.empty(); }

  // The steps in order; the buffer is empty afterwards.
  std::vector<Step> Take() {
    std::vector<Step> out = std::move(steps_);
    steps_.clear();
    if (!actions_.empty()) {
      Step last{Chunks(), std::nullopt};
      if (!last.chunks.empty()) out.push_back(std::move(last));
    }
    actions_.clear();
    last_.clear();
    return out;
  }

 private:
  std::vector<std::string> Chunks() const {
    std::vector<std::string> out;
    size_t i = 0;
    while (i < actions_.size()) {
      size_t size = 0, end = i;
      for (; end < actions_.size(); ++end) {
        if (size > 0 && size + actions_[end].size() > max_bytes_) break;
        size += actions_[end].size();
      }
      if (size > 0) {
        std::string chunk;
        chunk.reserve(size);
        for (; i < end; ++i) chunk += actions_[i];
        out.push_back(std::move(chunk));
      }
      i = end;
    }
    return out;
  }

  size_t max_bytes_;
  std::vector<Step> steps_;  // closed by a truncate
  std::vector<std::string> actions_;
  std::unordered_map<std::string, size_t> last_;
};

}  // namespace pgderive
