// The OpenSearch sink's coalescing: one action per document between truncates, and
// every truncate ordered against the actions around it (issue 11, kind G1).
#include "sinks/opensearch/bulk_buffer.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

using Steps = std::vector<std::pair<std::string, std::string>>;  // (ndjson, truncate or "")

Steps Render(std::vector<BulkBuffer::Step> steps) {
  Steps out;
  for (auto& step : steps) {
    std::string ndjson;
    for (const std::string& chunk : step.chunks) ndjson += chunk;
    out.emplace_back(ndjson, step.truncate.value_or(""));
  }
  return out;
}

TEST(BulkBufferTest, KeepsTheLastActionPerDocumentInOrder) {
  BulkBuffer bulk;
  bulk.Add("i", "1", "ins1;");
  bulk.Add("i", "2", "ins2;");
  bulk.Add("j", "1", "j1;");  // another index: another document
  bulk.Add("i", "1", "upd1;");
  bulk.Add("i", "2", "del2;");
  EXPECT_EQ(Render(bulk.Take()), (Steps{{"j1;upd1;del2;", ""}}));
  EXPECT_TRUE(bulk.empty());
  EXPECT_TRUE(bulk.Take().empty());
}

TEST(BulkBufferTest, ATruncateIsOrderedAgainstTheActionsAroundIt) {
  BulkBuffer bulk;
  // The input: insert 4, then truncate, back to back in one batch.
  bulk.Add("orders", "4", "ins4;");
  bulk.Truncate("orders");
  EXPECT_FALSE(bulk.empty());
  EXPECT_EQ(Render(bulk.Take()), (Steps{{"ins4;", "orders"}}));

  // Insert, truncate, the same document again, another truncate, more: nothing after
  // a truncate replaces an action before it.
  bulk.Add("orders", "1", "upd1;");
  bulk.Add("other", "9", "o9;");
  bulk.Truncate("orders");
  bulk.Add("orders", "1", "ins1;");
  bulk.Add("orders", "6", "ins6;");
  bulk.Add("orders", "6", "upd6;");
  bulk.Truncate("orders");
  bulk.Truncate("other");
  bulk.Add("orders", "7", "ins7;");
  EXPECT_EQ(
      Render(bulk.Take()),
      (Steps{{"upd1;o9;", "orders"}, {"ins1;upd6;", "orders"}, {"", "other"}, {"ins7;", ""}}));
  EXPECT_TRUE(bulk.empty());
}

TEST(BulkBufferTest, CutsEachStepIntoRequestsOfAtMostMaxBytes) {
  BulkBuffer bulk(10);
  bulk.Add("i", "1", "aaaa;");
  bulk.Add("i", "2", "bbbb;");
  bulk.Add("i", "3", "cccc;");
  bulk.Add("i", "2", "BB;");               // supersedes bbbb;, sent where it stands
  bulk.Add("i", "4", "a larger action;");  // larger than max_bytes: alone
  bulk.Add("i", "5", "e;");
  bulk.Truncate("i");
  bulk.Add("i", "6", "f;");
  bulk.Add("i", "6", "g;");
  auto steps = bulk.Take();
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].chunks,
            (std::vector<std::string>{"aaaa;cccc;", "BB;", "a larger action;", "e;"}));
  EXPECT_EQ(steps[0].truncate, "i");
  EXPECT_EQ(steps[1].chunks, (std::vector<std::string>{"g;"}));
  EXPECT_FALSE(steps[1].truncate);

  // A step that is only a truncate has no chunks.
  bulk.Truncate("i");
  steps = bulk.Take();
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_TRUE(steps[0].chunks.empty());
}

}  // namespace
}  // namespace pgderive
