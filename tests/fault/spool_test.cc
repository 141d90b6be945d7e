// The change log between capture and the stores (spool on), on a private stack
// (PostgreSQL and Redis; a postgres store on the same server is the store that goes on):
//   - Redis stopped under steady writes: the slot's confirmed position keeps moving
//     (the WAL it retains stays small), the postgres view stays current, Redis catches
//     up from the log once back, verify finds nothing;
//   - the log's bound reached with Redis down: its view is failed with the reason, the
//     other goes on; Redis back: refilled in the process, live, verify finds nothing;
//   - the log deleted while pgderive is stopped: the store behind the slot is refilled;
//   - a damaged record: detected, the stores it cannot serve refilled - in the middle of
//     the log at a restart, or under a running writer with 60,000 rows (each store
//     refilled once); the last record (cut as a torn tail) past which the slot was
//     confirmed: the store that needed it refilled;
//   - kill -9 of `run` at random moments under a writer: every key and row equals the
//     source afterwards;
//   - a fast shutdown of PostgreSQL with a store down is done within 5 s, and pgderive
//     streams again once it is back;
//   - (SpoolSearchTest, a stack with OpenSearch) the bound reached with OpenSearch down:
//     its view failed with the reason, the slot, Redis and the postgres store go on;
//     OpenSearch back: refilled, every document equals its row, verify finds nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "sinks/redis/redis_client.h"
#include "tests/support/own_stack.h"
#include "tests/support/pipeline_test.h"

namespace pgderive {
namespace {

using nlohmann::json;
using testing::OwnStack;

constexpr auto kDeadline = std::chrono::seconds(180);

class SpoolTest : public testing::PipelineTest {
 protected:
  static void SetUpTestSuite() {
    own_stack_ = new OwnStack({"--services", "pg,redis", "--redis-aof"});
  }
  static void TearDownTestSuite() {
    delete own_stack_;
    own_stack_ = nullptr;
  }
  void SetUp() override {
    // A test that failed with Redis stopped leaves it so.
    if (!RedisClient::Connect(own_stack_->Env("PGDERIVE_REDIS_URL")).ok()) {
      ASSERT_EQ(own_stack_->Run("start", {"redis"}), 0);
    }
    PgConnection sql = own_stack_->ConnectPg();
    UseEndpoints({own_stack_->Env("PGDERIVE_PG_DSN"), own_stack_->Env("PGDERIVE_REDIS_URL"),
                  own_stack_->Env("PGDERIVE_OPENSEARCH_URL")},
                 own_stack_->dir(), "spool");
    deadline_ = kDeadline;
    IgnoreError(sql.Execute("select pg_drop_replication_slot('pgderive_spool')"), "fresh start");
    ASSERT_TRUE(sql.Execute("drop table if exists spool_items, spool_copy").ok());
    ASSERT_TRUE(sql.Execute("create table spool_items (id int primary key, v text)").ok());
    ASSERT_TRUE(sql.Execute("insert into spool_items select g, md5(g::text) from "
                            "generate_series(1, 2000) g")
                    .ok());
    auto redis = RedisClient::Connect(own_stack_->Env("PGDERIVE_REDIS_URL"));
    ASSERT_TRUE(redis.ok());
    ASSERT_TRUE(redis.value().Command({"FLUSHALL"}).ok());
    std::filesystem::remove_all(Path("log"));
  }
  // `heartbeat`: seconds (0: none, so that the log's last transaction is the last write).
  std::string Config(const std::string& spool, int heartbeat = 1) {
    std::ostringstream config;
    config << "pipeline: spool\nsource:\n  dsn: " << own_stack_->Env("PGDERIVE_PG_DSN")
           << "\n  heartbeat_interval: " << heartbeat << "\nstores:\n  cache:\n    type: redis\n"
           << "    url: " << own_stack_->Env("PGDERIVE_REDIS_URL") << "\n  copy:\n"
           << "    type: postgres\n    dsn: " << own_stack_->Env("PGDERIVE_PG_DSN")
           << "\nviews:\n  - name: items_cache\n    store: cache\n"
              "    from: spool_items\n    key: \"item:{id}\"\n"
              "  - name: items_copy\n    store: copy\n    table: spool_copy\n    key: [id]\n"
              "    query: select id, v from public.spool_items\n"
           << "spool:\n  dir: " << Path("log") << "\n"
           << spool << "http:\n  listen: 127.0.0.1:" << port_ << "\n";
    return WriteFile("spool.yml", config.str());
  }
  std::string State(const std::string& view) {
    const json status = ViewStatus(view);
    return status.is_object() ? status.value("state", "") : "";
  }
  // WAL the slot retains now (bytes), -1 when unknown.
  double Retained() {
    auto rows = sql_->Query(
        "select pg_current_wal_lsn() - confirmed_flush_lsn from pg_replication_slots "
        "where slot_name = 'pgderive_spool'");
    if (!rows.ok() || rows.value().rows.empty() || !rows.value().rows[0][0]) return -1;
    return std::stod(*rows.value().rows[0][0]);
  }
  // One statement of the write load: 500 rows updated with ~1 kB each.
  void Write(int round) {
    const int from = (round * 500) % 2000 + 1;
    ASSERT_TRUE(sql_->Execute("update spool_items set v = repeat(md5(random()::text), 32) "
                              "where id between " +
                              std::to_string(from) + " and " + std::to_string(from + 499))
                    .ok());
  }
  // The postgres view equals the table (it goes on while Redis is down).
  bool CopyCurrent() {
    auto rows = sql_->Query(
        "select count(*) from (select id, v from spool_items except select id, v from "
        "spool_copy) d");
    return rows.ok() && rows.value().rows[0][0] == std::optional<std::string>("0");
  }
  void Verify(const std::string& config) {
    auto [code, out] = testing::RunVerify(config, 120);
    EXPECT_EQ(code, 0) << out;
  }
  // The Redis view against the table, key by key: "" when equal, else what differs.
  std::string RedisDiff() {
    auto redis = RedisClient::Connect(own_stack_->Env("PGDERIVE_REDIS_URL"));
    if (!redis.ok()) return "redis: " + redis.error().message();
    auto rows = sql_->Query("select id, v from spool_items order by id");
    if (!rows.ok()) return "source: " + rows.error().message();
    size_t keys = 0;
    std::string cursor = "0";
    do {
      auto page = redis.value().Command({"SCAN", cursor, "MATCH", "item:*", "COUNT", "10000"});
      if (!page.ok() || page.value().elements.size() != 2) return "SCAN failed";
      cursor = page.value().elements[0].str;
      keys += page.value().elements[1].elements.size();
    } while (cursor != "0");
    std::ostringstream diff;
    if (keys != rows.value().rows.size()) {
      diff << keys << " keys for " << rows.value().rows.size() << " rows; ";
    }
    size_t wrong = 0;
    const auto& all = rows.value().rows;
    for (size_t i = 0; i < all.size(); i += 1000) {
      RedisCommand mget{"MGET"};
      for (size_t j = i; j < std::min(all.size(), i + 1000); ++j) {
        mget.push_back("item:" + all[j][0].value_or(""));
      }
      auto values = redis.value().Command(mget);
      if (!values.ok()) return "MGET failed";
      for (size_t j = i; j < std::min(all.size(), i + 1000); ++j) {
        const RedisReply& value = values.value().elements[j - i];
        const json doc = value.type == RedisReply::Type::kString
                             ? json::parse(value.str, nullptr, false)
                             : json();
        if (!doc.is_object() || doc.value("v", "") != all[j][1].value_or("")) {
          if (wrong++ < 3) {
            diff << "item:" << all[j][0].value_or("") << " is " << value.str.substr(0, 60)
                 << "...; ";
          }
        }
      }
    }
    if (wrong > 0) diff << wrong << " keys differ from their rows";
    return diff.str();
  }
  // The postgres view's rows that differ from the table's, both ways.
  long CopyDiff() {
    auto rows = sql_->Query(
        "select (select count(*) from (select id, v from spool_items except select id, v "
        "from spool_copy) a) + (select count(*) from (select id, v from spool_copy except "
        "select id, v from spool_items) b)");
    return rows.ok() ? std::stol(rows.value().rows[0][0].value_or("-1")) : -1;
  }
  long SourceRows() {
    auto rows = sql_->Query("select count(*) from spool_items");
    return rows.ok() ? std::stol(rows.value().rows[0][0].value_or("-1")) : -1;
  }
  // Until the slot is confirmed past everything written so far.
  bool SlotPassedTheWrites() {
    auto now = sql_->Query("select pg_current_wal_lsn()::text");
    if (!now.ok()) return false;
    const std::string at = now.value().rows[0][0].value_or("0/0");
    return WaitFor([&] {
      auto rows =
          sql_->Query("select confirmed_flush_lsn >= '" + at +
                      "'::pg_lsn from pg_replication_slots where slot_name = 'pgderive_spool'");
      return rows.ok() && !rows.value().rows.empty() &&
             rows.value().rows[0][0] == std::optional<std::string>("t");
    });
  }
  // A store's entry of /status.
  json StoreStatus(const std::string& store) {
    const json status = Status();
    if (!status.is_object() || !status.contains("stores")) return json();
    for (const json& entry : status["stores"]) {
      if (entry.value("name", "") == store) return entry;
    }
    return json();
  }
  // Writes on its own connection until stopped: updates, inserts and deletes of
  // spool_items (ids from 1,000,000 up are its own), paced so the machine keeps up.
  class Writer {
   public:
    // `rows`: the ids the updates pick from (1..rows).
    Writer(PgConnection sql, unsigned seed, int rows)
        : sql_(std::move(sql)), rows_(rows), thread_([this, seed] { Loop(seed); }) {}
    ~Writer() { Stop(); }
    void Stop() {
      stop_ = true;
      if (thread_.joinable()) thread_.join();
    }
    uint64_t done() const { return done_.load(); }
    std::string error() const { return error_; }

   private:
    void Loop(unsigned seed) {
      std::mt19937 rng(seed);
      int next = 1000000;
      std::vector<int> mine;
      while (!stop_) {
        std::string statement;
        const unsigned pick = rng() % 10;
        if (pick < 6) {
          const int from = static_cast<int>(rng() % static_cast<unsigned>(rows_)) + 1;
          statement = "update spool_items set v = md5(random()::text) where id between " +
                      std::to_string(from) + " and " + std::to_string(from + 20);
        } else if (pick < 8 || mine.empty()) {
          mine.push_back(next);
          statement = "insert into spool_items values (" + std::to_string(next++) +
                      ", md5(random()::text))";
        } else {
          const size_t at = rng() % mine.size();
          statement = "delete from spool_items where id = " + std::to_string(mine[at]);
          mine.erase(mine.begin() + static_cast<long>(at));
        }
        pgderive::Status status = sql_.Execute(statement);
        if (!status.ok()) {
          error_ = status.error().message();
          return;
        }
        done_.fetch_add(1);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));  // pacing, not sync
      }
    }
    PgConnection sql_;
    const int rows_;
    std::atomic<bool> stop_{false};
    std::atomic<uint64_t> done_{0};
    std::string error_;
    std::thread thread_;
  };

  static OwnStack* own_stack_;
};
OwnStack* SpoolTest::own_stack_ = nullptr;

TEST_F(SpoolTest, RedisStoppedTheSlotMovesOnAndRedisCatchesUpFromTheLog) {
  const std::string config = Config("");
  ASSERT_TRUE(sql_->Execute("alter system set max_slot_wal_keep_size = '64MB'").ok());
  ASSERT_TRUE(sql_->Execute("select pg_reload_conf()").ok());
  StartRun(config);
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << RunLog();

  ASSERT_EQ(own_stack_->Run("stop", {"redis"}), 0);
  // Ten times the WAL the slot may retain: about 640 MB would take too long here; the
  // slot's own bound is what matters: it must never retain more than a few MB.
  double most = 0;
  int rounds = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < until) {
    Write(rounds++);
    if (HasFatalFailure()) return;
    // The capture confirms within a turn; sampled after it had a moment.
    if (rounds % 5 == 0) {
      ASSERT_TRUE(WaitFor([&] { return Retained() < 8e6; }, std::chrono::seconds(10)))
          << "retained " << Retained() << "\n"
          << RunLog();
      most = std::max(most, Retained());
    }
  }
  auto wal =
      sql_->Query("select wal_status from pg_replication_slots where slot_name = 'pgderive_spool'");
  ASSERT_TRUE(wal.ok());
  EXPECT_NE(wal.value().rows[0][0], std::optional<std::string>("lost"));
  std::cerr << "rounds " << rounds << ", most WAL retained when sampled " << most << " bytes\n";
  // The postgres view kept up meanwhile.
  EXPECT_TRUE(WaitFor([&] { return CopyCurrent(); }, std::chrono::seconds(60))) << RunLog();
  EXPECT_EQ(State("items_cache"), "stalled") << Http("/status").second;
  const json spool = Status()["spool"];
  EXPECT_GT(spool.value("bytes", 0), 0) << spool.dump();

  ASSERT_EQ(own_stack_->Run("start", {"redis"}), 0);
  ASSERT_TRUE(WaitFor([&] { return State("items_cache") == "live"; }))
      << Http("/status").second << RunLog();
  Verify(config);
  EXPECT_EQ(Count("run.err", "fell behind the change log"), 0) << RunLog();
  StopRun(std::chrono::seconds(60));
  ASSERT_TRUE(sql_->Execute("alter system reset max_slot_wal_keep_size").ok());
  ASSERT_TRUE(sql_->Execute("select pg_reload_conf()").ok());
}

// The default spool.when_full (detach): the stalled store is detached at once; the other
// one, only behind the writer for a moment, is not.
TEST_F(SpoolTest, TheBoundReachedFailsTheStalledStoreUntilItIsRefilledOnceBack) {
  const std::string config = Config("  max_bytes: 4MB\n  segment_bytes: 256kB\n");
  StartRun(config);
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << RunLog();
  ASSERT_EQ(own_stack_->Run("stop", {"redis"}), 0);
  int round = 0;
  ASSERT_TRUE(WaitFor([&] {
    Write(round++);
    return State("items_cache") == "failed";
  })) << Http("/status").second
      << RunLog();
  const json view = ViewStatus("items_cache");
  EXPECT_NE(view.value("reason", "").find("fell behind the change log"), std::string::npos)
      << view.dump();
  const auto [ready, why] = Http("/readyz");
  EXPECT_EQ(ready, 503);
  EXPECT_NE(why.find("fell behind the change log"), std::string::npos) << why;
  EXPECT_NE(Http("/metrics").second.find("pgderive_spool_evictions_total{store=\"cache\"} 1"),
            std::string::npos);
  EXPECT_GE(Count("run.err", "store cache fell behind the change log: its checkpoint"), 1);
  // The postgres store only lags behind the writer: never evicted.
  EXPECT_EQ(Count("run.err", "store copy fell behind"), 0) << RunLog();
  // The log is kept under its bound, and the other store goes on.
  for (int i = 0; i < 10; ++i) Write(round++);
  EXPECT_TRUE(WaitFor([&] { return CopyCurrent(); }, std::chrono::seconds(60))) << RunLog();
  EXPECT_TRUE(WaitFor([&] { return Status()["spool"].value("bytes", 1 << 30) < (4 << 20); },
                      std::chrono::seconds(30)))
      << Status()["spool"].dump();

  // Back, the store answers: its views are refilled by the backfill while the stream goes
  // on, then live with exact data.
  ASSERT_EQ(own_stack_->Run("start", {"redis"}), 0);  // returns once Redis answers
  Write(round++);
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << RunLog();
  EXPECT_EQ(Http("/readyz").first, 200);
  Verify(config);
  StopRun(std::chrono::seconds(60));
  // Every key equals the source's row (verify's comparison, and the count).
  auto redis = RedisClient::Connect(own_stack_->Env("PGDERIVE_REDIS_URL"));
  ASSERT_TRUE(redis.ok());
  auto keys = redis.value().Command({"EVAL", "return #redis.call('KEYS', 'item:*')", "0"});
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys.value().integer, 2000);
}

TEST_F(SpoolTest, AHealthySlowStoreAtTheBoundPausesTheCaptureAndIsNeverEvicted) {
  const std::string config =
      Config("  max_bytes: 4MB\n  segment_bytes: 256kB\n  when_full: pause\n");
  StartRun(config);
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << RunLog();
  PgConnection locker = own_stack_->ConnectPg();
  ASSERT_TRUE(locker.Execute("begin; lock table spool_copy in access exclusive mode").ok());
  int round = 0;
  ASSERT_TRUE(WaitFor([&] {
    Write(round++);
    return Status()["spool"].contains("capture_paused");
  })) << Http("/status").second
      << RunLog();
  // The locked store is the one the capture waits for (Redis may hold the segment for a
  // moment too: its writes are durable a second later, at the AOF's fsync).
  EXPECT_TRUE(WaitFor([&] {
    return Status()["spool"].value("capture_paused", "").find("copy (checkpoint") !=
           std::string::npos;
  })) << Status()["spool"].dump()
      << RunLog();
  EXPECT_NE(Http("/metrics").second.find("pgderive_spool_capture_paused 1"), std::string::npos);
  // Paused, the log stays near its bound while the writer goes on; the slot holds the WAL.
  const double retained_then = Retained();
  for (int i = 0; i < 10; ++i) Write(round++);
  EXPECT_GT(Retained(), retained_then);
  // A turn's worth past the bound at most.
  EXPECT_LT(Status()["spool"].value("bytes", 1 << 30), 6 << 20) << Status()["spool"].dump();
  EXPECT_NE(State("items_copy"), "failed") << Http("/status").second;
  EXPECT_NE(State("items_cache"), "failed") << Http("/status").second;

  ASSERT_TRUE(locker.Execute("rollback").ok());
  ASSERT_TRUE(WaitFor([&] {
    return CopyCurrent() && !Status()["spool"].contains("capture_paused");
  })) << Status()["spool"].dump()
      << RunLog();
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << RunLog();
  EXPECT_GE(Count("run.err", "change log: capture paused: spool.max_bytes"), 1) << RunLog();
  EXPECT_GE(Count("run.err", "change log: capture resumed"), 1) << RunLog();
  EXPECT_EQ(Count("run.err", "fell behind the change log"), 0) << RunLog();
  Verify(config);
  StopRun(std::chrono::seconds(60));
}

// spool.when_full: detach (the default): a store that answers but cannot keep up (here a
// postgres view table locked by a reader) is detached at the bound like a stalled one:
// its views failed with the reason, the slot and the other store move on, and once it
// keeps up again its views are refilled, exact.
TEST_F(SpoolTest, TheBoundReachedDetachesASlowStoreAndTheSlotMovesOn) {
  const std::string config = Config("  max_bytes: 4MB\n  segment_bytes: 256kB\n");
  StartRun(config);
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << RunLog();
  PgConnection locker = own_stack_->ConnectPg();
  ASSERT_TRUE(locker.Execute("begin; lock table spool_copy in access exclusive mode").ok());
  int round = 0;
  // Writes until the locked store holds the log at its bound (the capture pauses), then
  // none: the grace passes without piling up WAL the capture must read afterwards.
  ASSERT_TRUE(WaitFor([&] {
    Write(round++);
    return Status()["spool"].contains("capture_paused") || State("items_copy") == "failed";
  })) << Http("/status").second
      << RunLog();
  ASSERT_TRUE(WaitFor([&] { return State("items_copy") == "failed"; }))
      << Http("/status").second << RunLog();
  const json view = ViewStatus("items_copy");
  EXPECT_NE(view.value("reason", "").find("fell behind the change log"), std::string::npos)
      << view.dump();
  EXPECT_GE(Count("run.err", "reached while the store was slower than the writer for 10 s"), 1)
      << RunLog();
  EXPECT_EQ(Http("/readyz").first, 503);
  // It held the segment for the grace first (the capture paused), then went. (At this
  // small bound the capture still pauses for a moment now and then while Redis's
  // checkpoint waits for its fsync, once a second.)
  EXPECT_GE(Count("run.err", "change log: capture paused: spool.max_bytes"), 1) << RunLog();
  // The slot moves on, the log stays under its bound and Redis stays current.
  for (int i = 0; i < 10; ++i) Write(round++);
  EXPECT_TRUE(SlotPassedTheWrites()) << RunLog();
  EXPECT_LT(Retained(), 8e6);
  EXPECT_TRUE(WaitFor([&] { return Status()["spool"].value("bytes", 1 << 30) < (4 << 20); },
                      std::chrono::seconds(30)))
      << Status()["spool"].dump();
  EXPECT_TRUE(WaitFor([&] { return RedisDiff().empty(); }, std::chrono::seconds(60)))
      << RedisDiff();

  ASSERT_TRUE(locker.Execute("rollback").ok());
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live" && CopyDiff() == 0;
  })) << Http("/status").second
      << RunLog();
  EXPECT_EQ(Http("/readyz").first, 200);
  EXPECT_EQ(RedisDiff(), "");
  Verify(config);
  StopRun(std::chrono::seconds(60));
}

TEST_F(SpoolTest, TheLogDeletedWhileStoppedRefillsTheStoreBehindTheSlot) {
  const std::string config = Config("");
  StartRun(config);
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << RunLog();
  ASSERT_EQ(own_stack_->Run("stop", {"redis"}), 0);
  for (int i = 0; i < 10; ++i) Write(i);
  ASSERT_TRUE(WaitFor([&] { return CopyCurrent(); })) << RunLog();
  StopRun(std::chrono::seconds(60));
  // The slot passed what Redis has: only the log held it.
  std::filesystem::remove_all(Path("log"));
  ASSERT_EQ(own_stack_->Run("start", {"redis"}), 0);
  StartRun(config, "run2.err");
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << Read("run2.err");
  EXPECT_GE(Count("run2.err", "behind the slot"), 1) << Read("run2.err");
  Verify(config);
  StopRun(std::chrono::seconds(60));
}

// A restart while a store is down (a crash or a deploy during its outage) waits for it,
// saying so, instead of refusing to start; a first start with it down is still refused.
TEST_F(SpoolTest, ARestartWhileAStoreIsDownWaitsForItAndThenCatchesUp) {
  const std::string config = Config("");
  ASSERT_EQ(own_stack_->Run("stop", {"redis"}), 0);
  {
    // No slot yet: the start-up checks refuse, naming the store, and create nothing.
    auto [code, out] = Command({testing::PgderiveBinary(), "run", "-c", config});
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find("stores.cache.url"), std::string::npos) << out;
    auto slot =
        sql_->Query("select count(*) from pg_replication_slots where slot_name = 'pgderive_spool'");
    ASSERT_TRUE(slot.ok());
    EXPECT_EQ(slot.value().rows[0][0], std::optional<std::string>("0"));
  }
  ASSERT_EQ(own_stack_->Run("start", {"redis"}), 0);
  StartRun(config);
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << RunLog();
  StopRun(std::chrono::seconds(60));

  ASSERT_EQ(own_stack_->Run("stop", {"redis"}), 0);
  for (int i = 0; i < 4; ++i) Write(i);
  StartRun(config, "run2.err");
  ASSERT_TRUE(WaitLog("run2.err", "store cache does not answer")) << Read("run2.err");
  // Waiting, not refused: /readyz names the store and the process goes on.
  ASSERT_TRUE(WaitFor([&] {
    auto [code, body] = Http("/readyz");
    return code == 503 && body.find("store cache does not answer") != std::string::npos;
  })) << Http("/readyz").second
      << Read("run2.err");
  ASSERT_TRUE(WaitLog("run2.err", "retrying in", 2)) << Read("run2.err");
  for (int i = 4; i < 8; ++i) Write(i);

  ASSERT_EQ(own_stack_->Run("start", {"redis"}), 0);
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live" && RedisDiff().empty() &&
           CopyDiff() == 0;
  })) << RedisDiff()
      << Http("/status").second << Read("run2.err");
  EXPECT_EQ(Count("run2.err", "store cache answers: its start-up checks passed"), 1)
      << Read("run2.err");
  EXPECT_EQ(Http("/readyz").first, 200) << Http("/readyz").second;
  Verify(config);
  StopRun(std::chrono::seconds(60));
}

TEST_F(SpoolTest, ADamagedLogIsDetectedAndTheStoresItCannotServeAreRefilled) {
  const std::string config = Config("  segment_bytes: 256kB\n");
  StartRun(config);
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << RunLog();
  ASSERT_EQ(own_stack_->Run("stop", {"redis"}), 0);
  for (int i = 0; i < 10; ++i) Write(i);
  ASSERT_TRUE(WaitFor([&] { return CopyCurrent(); })) << RunLog();
  StopRun(std::chrono::seconds(60));
  // One byte changed in the middle of a middle segment: a record Redis still needs.
  std::vector<std::filesystem::path> segments;
  for (const auto& entry : std::filesystem::directory_iterator(Path("log"))) {
    if (entry.path().extension() == ".seg") segments.push_back(entry.path());
  }
  ASSERT_GE(segments.size(), 3u);
  std::sort(segments.begin(), segments.end());
  {
    std::fstream file(segments[segments.size() / 2],
                      std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(0, std::ios::end);
    const auto middle = file.tellg() / 2;
    file.seekg(middle);
    char byte = 0;
    file.read(&byte, 1);
    byte = static_cast<char>(byte ^ 0x5a);
    file.seekp(middle);
    file.write(&byte, 1);
  }
  ASSERT_EQ(own_stack_->Run("start", {"redis"}), 0);
  StartRun(config, "run2.err");
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << Read("run2.err");
  EXPECT_GE(Count("run2.err", "the change log cannot be read") +
                Count("run2.err", "the change log is damaged") +
                Count("run2.err", "is behind the change log"),
            1)
      << Read("run2.err");
  Verify(config);
  StopRun(std::chrono::seconds(60));
}

// The last record of a stopped run's log damaged (a synced record that rotted): the next
// start cuts it as it would a torn write, but the slot had been confirmed past it, so the
// store that still needed it (Redis, stopped meanwhile) is refilled - never served
// without the cut transaction.
TEST_F(SpoolTest, ADamagedLastRecordTheSlotPassedRefillsTheStoreThatNeededIt) {
  const std::string config = Config("", /*heartbeat=*/0);
  StartRun(config);
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << RunLog();
  ASSERT_EQ(own_stack_->Run("stop", {"redis"}), 0);
  for (int i = 0; i < 10; ++i) Write(i);
  ASSERT_TRUE(WaitFor([&] { return CopyCurrent(); })) << RunLog();
  ASSERT_TRUE(SlotPassedTheWrites()) << RunLog();
  StopRun(std::chrono::seconds(60));
  // The last write's Commit record: the log's last record.
  std::vector<std::filesystem::path> segments;
  for (const auto& entry : std::filesystem::directory_iterator(Path("log"))) {
    if (entry.path().extension() == ".seg") segments.push_back(entry.path());
  }
  ASSERT_FALSE(segments.empty());
  std::sort(segments.begin(), segments.end());
  {
    std::fstream file(segments.back(), std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(-2, std::ios::end);
    const auto at = file.tellg();
    char byte = 0;
    file.read(&byte, 1);
    byte = static_cast<char>(byte ^ 0x5a);
    file.seekp(at);
    file.write(&byte, 1);
  }
  ASSERT_EQ(own_stack_->Run("start", {"redis"}), 0);
  StartRun(config, "run2.err");
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << Read("run2.err");
  EXPECT_GE(Count("run2.err", "cutting a torn tail back to the last whole transaction"), 1)
      << Read("run2.err");
  EXPECT_GE(Count("run2.err", "was cut back to"), 1) << Read("run2.err");
  // Named with the positions: its checkpoint, the slot's, where the log was cut.
  EXPECT_GE(Count("run2.err", "store cache has checkpoint"), 1) << Read("run2.err");
  EXPECT_GE(Count("run2.err", "and the change log's tail cut back from"), 1) << Read("run2.err");
  Verify(config);
  EXPECT_EQ(RedisDiff(), "");
  EXPECT_EQ(CopyDiff(), 0);
  StopRun(std::chrono::seconds(60));
}

// The log damaged where a store that rejoins it must read, under a running writer, with
// 60,000 rows: the stores behind the damage are refilled, once each, while the writer goes
// on, and afterwards every key and row equals the source.
TEST_F(SpoolTest, ADamagedLogUnderAWriterRefillsEachStoreOnceAndEveryKeyMatches) {
  ASSERT_TRUE(sql_->Execute("insert into spool_items select g, md5(g::text) from "
                            "generate_series(2001, 60000) g")
                  .ok());
  const std::string config = Config("  segment_bytes: 1MB\n");
  StartRun(config);
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << RunLog();
  // Redis down until the dispatcher detaches it (its queue full): from then on it can
  // only read the log.
  ASSERT_EQ(own_stack_->Run("stop", {"redis"}), 0);
  int round = 0;
  ASSERT_TRUE(WaitFor([&] {
    Write(round++);
    return StoreStatus("cache").value("detached", false);
  })) << Http("/status").second
      << RunLog();
  std::set<std::string> before;
  for (const auto& entry : std::filesystem::directory_iterator(Path("log"))) {
    before.insert(entry.path().filename().string());
  }
  for (int i = 0; i < 20; ++i) Write(round++);
  ASSERT_TRUE(WaitFor([&] { return CopyCurrent(); })) << RunLog();
  // A segment written after the detach (not the one being written): Redis needs it.
  std::vector<std::filesystem::path> after;
  for (const auto& entry : std::filesystem::directory_iterator(Path("log"))) {
    if (entry.path().extension() == ".seg" && !before.contains(entry.path().filename().string())) {
      after.push_back(entry.path());
    }
  }
  std::sort(after.begin(), after.end());
  ASSERT_GE(after.size(), 3u);
  {
    std::fstream file(after[after.size() / 2], std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(0, std::ios::end);
    const auto middle = file.tellg() / 2;
    file.seekg(middle);
    char byte = 0;
    file.read(&byte, 1);
    byte = static_cast<char>(byte ^ 0x5a);
    file.seekp(middle);
    file.write(&byte, 1);
  }
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Writer writer(own_stack_->ConnectPg(), seed, 60000);
  ASSERT_EQ(own_stack_->Run("start", {"redis"}), 0);
  ASSERT_TRUE(WaitFor([&] { return Count("run.err", "the change log cannot be read") >= 1; }))
      << Http("/status").second << RunLog();
  // The refill runs while the writer goes on.
  const uint64_t at = writer.done();
  ASSERT_TRUE(WaitFor([&] { return writer.done() >= at + 1000 || !writer.error().empty(); }))
      << writer.error();
  writer.Stop();
  EXPECT_EQ(writer.error(), "");
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live" && CopyCurrent();
  })) << Http("/status").second
      << RunLog();
  Verify(config);
  // (The writer's inserts and deletes can leave exactly 60,000 rows: the count proves
  // nothing; every key and row compared below does.)
  const long rows = SourceRows();
  EXPECT_GT(rows, 0);
  EXPECT_EQ(RedisDiff(), "");
  EXPECT_EQ(CopyDiff(), 0);
  std::cerr << "source rows " << rows << ", writer statements " << writer.done() << "\n";
  // One refill per eviction.
  EXPECT_EQ(Count("run.err", "store cache goes on from"), 1) << RunLog();
  EXPECT_LE(Count("run.err", "store copy rebuilt at"), 1) << RunLog();
  StopRun(std::chrono::seconds(60));
}

// kill -9 of `run` at random moments under a writer, the log on with small segments (the
// kills fall during appends, rollovers and truncations): after each restart nothing is
// lost or resurrected - every view verifies and each store equals the source.
TEST_F(SpoolTest, KillNineAtRandomMomentsUnderAWriterLosesNothing) {
  const std::string config = Config("  segment_bytes: 64kB\n");
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  Writer writer(own_stack_->ConnectPg(), seed, 2000);
  constexpr int kKills = 8;
  for (int i = 0; i < kKills; ++i) {
    StartRun(config, "run" + std::to_string(i) + ".err");
    // The kill moment is the point of the test, not a synchronisation.
    std::this_thread::sleep_for(std::chrono::milliseconds(500 + rng() % 4000));
    run_->Signal(SIGKILL);
    ASSERT_TRUE(run_->Wait(std::chrono::seconds(10)).has_value());
    run_.reset();
  }
  const std::string last = "run" + std::to_string(kKills) + ".err";
  StartRun(config, last);
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  const uint64_t at = writer.done();
  ASSERT_TRUE(WaitFor([&] { return writer.done() >= at + 300 || !writer.error().empty(); }))
      << writer.error();
  writer.Stop();
  EXPECT_EQ(writer.error(), "");
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live" && CopyDiff() == 0 &&
           RedisDiff().empty();
  })) << Http("/status").second
      << RedisDiff() << " copy differs by " << CopyDiff() << "\n"
      << Read(last);
  Verify(config);
  EXPECT_EQ(RedisDiff(), "");
  EXPECT_EQ(CopyDiff(), 0);
  std::cerr << "source rows " << SourceRows() << ", writer statements " << writer.done() << "\n";
  StopRun(std::chrono::seconds(60));
}

TEST_F(SpoolTest, AFastShutdownOfTheSourceWithAStoreDownIsDoneWithinFiveSeconds) {
  const std::string config = Config("");
  StartRun(config);
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitFor([&] {
    return State("items_cache") == "live" && State("items_copy") == "live";
  })) << Http("/status").second
      << RunLog();
  ASSERT_EQ(own_stack_->Run("stop", {"redis"}), 0);
  for (int i = 0; i < 5; ++i) Write(i);
  const auto began = std::chrono::steady_clock::now();
  ASSERT_EQ(own_stack_->Run("stop", {"pg"}), 0);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  std::cerr << "fast shutdown with Redis down: " << seconds << " s\n";
  EXPECT_LT(seconds, 5.0) << RunLog();
  ASSERT_EQ(own_stack_->Run("start", {"pg"}), 0);
  sql_ = std::make_unique<PgConnection>(own_stack_->ConnectPg());
  ASSERT_EQ(own_stack_->Run("start", {"redis"}), 0);
  for (int i = 5; i < 8; ++i) Write(i);
  ASSERT_TRUE(WaitFor([&] {
    return Status().value("stream_connected", false) && State("items_cache") == "live" &&
           CopyCurrent();
  })) << Http("/status").second
      << RunLog();
  Verify(config);
  StopRun(std::chrono::seconds(60));
}

// The same log's bound with OpenSearch the store that is down, on a stack of its own
// (PostgreSQL, Redis and OpenSearch): Redis and the postgres store are the ones that go
// on.
class SpoolSearchTest : public SpoolTest {
 protected:
  static void SetUpTestSuite() {
    own_stack_ = new OwnStack({"--services", "pg,redis,opensearch", "--redis-aof"});
  }
  void SetUp() override {
    // A test that failed with OpenSearch stopped leaves it so.
    if (HttpRequest(own_stack_->Env("PGDERIVE_OPENSEARCH_URL"), "GET", "/").first != 200) {
      ASSERT_EQ(own_stack_->Run("start", {"opensearch"}), 0);
    }
    SpoolTest::SetUp();
    if (HasFatalFailure()) return;
    // The view's alias and its generations, and the checkpoints, of an earlier test.
    for (const char* index : {"spool_items*", "pgderive-*"}) {
      HttpRequest(endpoints_.opensearch_url, "DELETE", std::string("/") + index);
    }
  }
  std::string SearchConfig(const std::string& spool) {
    std::ostringstream config;
    config << "pipeline: spool\nsource:\n  dsn: " << own_stack_->Env("PGDERIVE_PG_DSN")
           << "\n  heartbeat_interval: 1\nstores:\n  cache:\n    type: redis\n"
           << "    url: " << own_stack_->Env("PGDERIVE_REDIS_URL") << "\n  copy:\n"
           << "    type: postgres\n    dsn: " << own_stack_->Env("PGDERIVE_PG_DSN")
           << "\n  search:\n    type: opensearch\n    url: "
           << own_stack_->Env("PGDERIVE_OPENSEARCH_URL")
           << "\nviews:\n  - name: items_cache\n    store: cache\n"
              "    from: spool_items\n    key: \"item:{id}\"\n"
              "  - name: items_copy\n    store: copy\n    table: spool_copy\n    key: [id]\n"
              "    query: select id, v from public.spool_items\n"
              "  - name: items_search\n    store: search\n    from: spool_items\n"
              "    index: spool_items\n"
           << "spool:\n  dir: " << Path("log") << "\n"
           << spool << "http:\n  listen: 127.0.0.1:" << port_ << "\n";
    return WriteFile("spool.yml", config.str());
  }
  // The OpenSearch view against the table, document by document (after a refresh): ""
  // when equal, else what differs.
  std::string SearchDiff() {
    const std::string& url = endpoints_.opensearch_url;
    if (HttpRequest(url, "POST", "/spool_items/_refresh").first != 200) return "refresh failed";
    auto [code, body] = HttpRequest(url, "POST", "/spool_items/_search",
                                    R"({"size": 10000, "query": {"match_all": {}}})");
    if (code != 200) return "search: " + std::to_string(code) + " " + body.substr(0, 200);
    const json found = json::parse(body, nullptr, false);
    if (!found.is_object()) return "search: not JSON";
    std::map<std::string, std::string> docs;
    for (const json& hit : found["hits"]["hits"]) {
      docs[hit.value("_id", "")] = hit["_source"].value("v", "<no v>");
    }
    auto rows = sql_->Query("select id, v from spool_items order by id");
    if (!rows.ok()) return "source: " + rows.error().message();
    std::ostringstream diff;
    if (docs.size() != rows.value().rows.size()) {
      diff << docs.size() << " documents for " << rows.value().rows.size() << " rows; ";
    }
    size_t wrong = 0;
    for (const auto& row : rows.value().rows) {
      auto it = docs.find(row[0].value_or(""));
      if (it == docs.end() || it->second != row[1].value_or("")) {
        if (wrong++ < 3) {
          diff << "document " << row[0].value_or("") << " is "
               << (it == docs.end() ? "missing" : it->second.substr(0, 40) + "...") << "; ";
        }
      }
    }
    if (wrong > 0) diff << wrong << " documents differ from their rows";
    return diff.str();
  }
};

TEST_F(SpoolSearchTest, TheBoundReachedWithOpenSearchDownFailsItsViewsUntilRefilledOnceBack) {
  // The default spool.when_full (detach): only the stalled store is detached; Redis, a
  // moment behind it in the same segment (its fsync once a second), is not.
  const std::string config = SearchConfig("  max_bytes: 4MB\n  segment_bytes: 256kB\n");
  StartRun(config);
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  const auto all_live = [&] {
    return State("items_cache") == "live" && State("items_copy") == "live" &&
           State("items_search") == "live";
  };
  ASSERT_TRUE(WaitFor(all_live)) << Http("/status").second << RunLog();
  ASSERT_EQ(SearchDiff(), "");

  ASSERT_EQ(own_stack_->Run("stop", {"opensearch"}), 0);
  int round = 0;
  ASSERT_TRUE(WaitFor([&] {
    Write(round++);
    return State("items_search") == "failed";
  })) << Http("/status").second
      << RunLog();
  const json view = ViewStatus("items_search");
  EXPECT_NE(view.value("reason", "").find("fell behind the change log"), std::string::npos)
      << view.dump();
  const auto [ready, why] = Http("/readyz");
  EXPECT_EQ(ready, 503);
  EXPECT_NE(why.find("fell behind the change log"), std::string::npos) << why;
  EXPECT_NE(Http("/metrics").second.find("pgderive_spool_evictions_total{store=\"search\"} 1"),
            std::string::npos);
  EXPECT_GE(Count("run.err", "store search fell behind the change log: its checkpoint"), 1);
  EXPECT_EQ(Count("run.err", "store cache fell behind"), 0) << RunLog();
  EXPECT_EQ(Count("run.err", "store copy fell behind"), 0) << RunLog();

  // The slot and the other stores go on, the log under its bound.
  for (int i = 0; i < 10; ++i) Write(round++);
  EXPECT_TRUE(SlotPassedTheWrites()) << RunLog();
  EXPECT_TRUE(
      WaitFor([&] { return CopyCurrent() && RedisDiff().empty(); }, std::chrono::seconds(60)))
      << RedisDiff() << RunLog();
  EXPECT_EQ(State("items_cache"), "live");
  EXPECT_EQ(State("items_copy"), "live");
  EXPECT_TRUE(WaitFor([&] { return Status()["spool"].value("bytes", 1 << 30) < (4 << 20); },
                      std::chrono::seconds(30)))
      << Status()["spool"].dump();

  // Back: its views are refilled by the backfill while the stream goes on, then live
  // with exact data.
  ASSERT_EQ(own_stack_->Run("start", {"opensearch"}), 0);
  Write(round++);
  ASSERT_TRUE(WaitFor(all_live)) << Http("/status").second << RunLog();
  EXPECT_EQ(Http("/readyz").first, 200);
  Verify(config);
  StopRun(std::chrono::seconds(60));
  EXPECT_EQ(SearchDiff(), "");
  EXPECT_EQ(RedisDiff(), "");
  EXPECT_EQ(CopyDiff(), 0);
  EXPECT_EQ(SourceRows(), 2000);
}

}  // namespace
}  // namespace pgderive
