// A view's container in its store vanishing under a running pipeline: an OpenSearch
// index deleted while `run` streams (the next write would recreate it with OpenSearch's
// dynamic mapping). The view must leave `live` at once, say why in /status, and come
// back `live` with exactly the source's rows in an index with pgderive's own mapping.
// (A postgres target table dropped while streaming: corpus case h1.)
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "sinks/opensearch/opensearch_client.h"
#include "tests/support/pg.h"
#include "tests/support/pipeline_test.h"
#include "tests/support/stack_env.h"

namespace pgderive {
namespace {

using nlohmann::json;
using testing::MustExecute;
using testing::UniqueName;

constexpr auto kDeadline = std::chrono::seconds(90);

class StoreChangeTest : public testing::PipelineTest {
 protected:
  void SetUp() override {
    UseSharedStack("stc");
    if (HasFatalFailure()) return;
    deadline_ = kDeadline;
    table_ = UniqueName("stc_src");
    index_ = UniqueName("stc_docs");
    CleanupSql("drop table if exists " + table_);
    CleanupIndex(index_);
    MustExecute(*sql_, "create table " + table_ + " (id int primary key, name text, n int)");
    // Enough rows that the refill takes a few of /status's one-second updates.
    MustExecute(*sql_, "insert into " + table_ +
                           " select g, md5(g::text), g from generate_series(1, 100000) g");
    std::ostringstream config;
    config << "pipeline: " << pipeline_ << "\nsource:\n  dsn: \"" << endpoints_.pg_dsn
           << "\"\n  heartbeat_interval: 1\nstores:\n  search:\n"
              "    type: opensearch\n    url: \""
           << endpoints_.opensearch_url << "\"\nviews:\n  - name: docs\n    store: search\n"
           << "    from: " << table_ << "\n    index: " << index_
           << "\nhttp:\n  listen: 127.0.0.1:" << port_ << "\n";
    config_ = WriteFile("pgderive.yml", config.str());
  }
  std::optional<OpenSearchClient> Search() {
    auto client = OpenSearchClient::Create({.url = endpoints_.opensearch_url, .ca_file = ""});
    if (!client.ok()) return std::nullopt;
    return std::move(client).value();
  }
  // The view's entry of /status (null when it does not answer).
  json View() { return ViewStatus("docs"); }
  // The index's mapping as OpenSearch reports it.
  json Mapping() {
    const json body = json::parse(
        HttpRequest(endpoints_.opensearch_url, "GET", "/" + index_ + "/_mapping").second, nullptr,
        false);
    // Keyed by the index behind the alias.
    if (!body.is_object() || body.size() != 1) return nullptr;
    return body.begin().value()["mappings"];
  }

  std::string table_, index_, config_;
};

TEST_F(StoreChangeTest, DeletedIndexLeavesLiveAndIsRefilledWithItsMapping) {
  StartRun(config_);
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(testing::WaitFor([&] { return View().value("state", "") == "live"; }, kDeadline))
      << Http("/status").second;
  const json mapping = Mapping();
  ASSERT_FALSE(mapping.is_null());
  ASSERT_EQ(mapping.value("dynamic", ""), "false") << mapping.dump();

  // The index behind the view's alias deleted behind pgderive's back, then written to at
  // once: the first bulk recreates the index with OpenSearch's dynamic mapping before
  // any check can see it gone.
  auto search = Search();
  ASSERT_TRUE(search);
  auto behind = search->AliasIndexes(index_);
  ASSERT_TRUE(behind.ok());
  ASSERT_EQ(behind.value(), std::vector<std::string>{index_ + "-1"});
  ASSERT_TRUE(search->DeleteIndex(index_ + "-1", false).ok());
  MustExecute(*sql_, "insert into " + table_ + " values (100001, 'new', 1)");
  MustExecute(*sql_, "update " + table_ + " set name = 'changed' where id = 7");
  MustExecute(*sql_, "delete from " + table_ + " where id = 8");

  // The view leaves `live`, saying which index, and /readyz... stays honest.
  json seen;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        const json v = View();
        if (v.is_null() || v.value("state", "") == "live") return false;
        seen = v;
        return true;
      },
      kDeadline))
      << Http("/status").second << RunLog();
  EXPECT_EQ(seen.value("state", ""), "backfilling") << seen.dump();
  EXPECT_NE(seen.value("reason", "").find("index " + index_ + "-1"), std::string::npos)
      << seen.dump();
  // The log line names the store, the view, the index and the LSN.
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        const std::string log = RunLog();
        return log.find("index " + index_) != std::string::npos &&
               log.find("not live until refilled") != std::string::npos;
      },
      kDeadline))
      << RunLog();
  const std::string log = RunLog();
  const std::string line = log.substr(log.rfind('\n', log.find("not live until refilled")) + 1);
  EXPECT_NE(line.find("store search"), std::string::npos) << line;
  EXPECT_NE(line.find("docs"), std::string::npos) << line;
  EXPECT_NE(line.find("lsn"), std::string::npos) << line;

  // Back to `live` once refilled: exactly the table's rows, in an index with the mapping
  // pgderive made (not the dynamic one the write made).
  ASSERT_TRUE(testing::WaitFor([&] { return View().value("state", "") == "live"; }, kDeadline))
      << Http("/status").second << RunLog();
  EXPECT_EQ(Http("/readyz").first, 200);
  EXPECT_EQ(Mapping(), mapping);
  auto rows = sql_->Query("select id::text, name, n::text from " + table_);
  ASSERT_TRUE(rows.ok());
  std::map<std::string, json> expected;
  for (const auto& r : rows.value().rows) {
    expected[*r[0]] = {{"id", std::stoi(*r[0])}, {"name", *r[1]}, {"n", std::stoi(*r[2])}};
  }
  // Refilled into a generation of its own, the alias moved onto it.
  behind = search->AliasIndexes(index_);
  ASSERT_TRUE(behind.ok());
  EXPECT_EQ(behind.value(), std::vector<std::string>{index_ + "-2"});
  ASSERT_TRUE(search->Refresh(index_).ok());
  auto documents = search->ScanAll(index_);
  ASSERT_TRUE(documents.ok()) << documents.error().ToString();
  std::map<std::string, json> actual;
  for (const auto& [id, source] : documents.value()) actual[id] = json::parse(source);
  EXPECT_EQ(actual.size(), expected.size());
  EXPECT_TRUE(actual == expected) << "documents differ from the table's rows";
  EXPECT_EQ(actual.count("8"), 0u);
  EXPECT_EQ(actual["7"]["name"], "changed");
  EXPECT_EQ(actual["100001"]["name"], "new");
  auto [code, out] = testing::RunVerify(config_, 60);
  EXPECT_EQ(code, 0) << out;
}

}  // namespace
}  // namespace pgderive
