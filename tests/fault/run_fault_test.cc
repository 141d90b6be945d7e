// `pgderive run` through kill -9 at random moments and through Redis outages, with a
// concurrent random workload on the source: afterwards `pgderive verify` finds nothing
// wrong (nothing lost, no deleted row back). Own servers (tests/support/own_stack.h).
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>

#include "sinks/opensearch/opensearch_client.h"
#include "sinks/redis/redis_client.h"
#include "tests/support/own_stack.h"
#include "tests/support/subprocess.h"

namespace pgderive {
namespace {

using testing::OwnStack;
using testing::PgderiveBinary;
using testing::Subprocess;

// Random inserts, updates (some of the key), deletes and multi-row transactions until
// stopped. Errors (the server restarting) are retried on a new connection.
class Workload {
 public:
  Workload(const OwnStack& stack, unsigned seed) : stack_(stack), rng_(seed) {}
  ~Workload() { Stop(); }
  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t done() const { return done_.load(); }

 private:
  void Loop() {
    std::optional<PgConnection> c;
    while (!stop_) {
      if (!c) {
        try {
          c.emplace(stack_.ConnectPg());
        } catch (const std::runtime_error&) {
          continue;  // the server is restarting; ConnectPg already waited
        }
      }
      const int id = static_cast<int>(rng_() % 20000) + 1;
      const std::string sid = std::to_string(id);
      std::string sql;
      switch (rng_() % 6) {
        case 0:
        case 1:
          sql = "insert into items values (" + sid + ", md5(random()::text), " + sid +
                ") on conflict (id) do update set v = excluded.v, n = items.n + 1";
          break;
        case 2:
          sql = "update items set n = n + 1, v = md5(v) where id = " + sid;
          break;
        case 3:
          sql = "delete from items where id = " + sid;
          break;
        case 4:
          sql = "update items set id = id + 20000 where id = " + sid +
                " and not exists (select from items where id = " + std::to_string(id + 20000) + ")";
          break;
        default:
          sql = "begin; delete from items where id between " + sid + " and " +
                std::to_string(id + 5) + "; insert into items select g, 'batch', g from " +
                "generate_series(" + sid + ", " + std::to_string(id + 3) +
                ") g on conflict do nothing; commit";
      }
      if (!c->Execute(sql).ok()) {
        c.reset();
        continue;
      }
      ++done_;
    }
  }

  const OwnStack& stack_;
  std::mt19937 rng_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> done_{0};
  std::thread thread_;
};

class RunFaultTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    stack_ = new OwnStack({"--services", "pg,redis,opensearch", "--redis-aof"});
  }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }
  void SetUp() override {
    PgConnection sql = stack_->ConnectPg();
    ASSERT_TRUE(sql.Execute("drop table if exists items").ok());
    ASSERT_TRUE(sql.Execute("drop schema if exists analytics cascade").ok());
    ASSERT_TRUE(sql.Execute("drop schema if exists pgderive cascade").ok());
    IgnoreError(sql.Execute("select pg_drop_replication_slot('pgderive_fault')"), "fresh start");
    ASSERT_TRUE(sql.Execute("create table items (id int primary key, v text, n int)").ok());
    ASSERT_TRUE(sql.Execute("insert into items select g, repeat(md5(g::text), 3), g from "
                            "generate_series(1, 100000) g")
                    .ok());
    config_ = (stack_->dir() / "fault.yml").string();
    std::ofstream(config_) << "pipeline: fault\nsource:\n  dsn: " << stack_->Env("PGDERIVE_PG_DSN")
                           << "\nstores:\n  cache:\n    type: redis\n    url: "
                           << stack_->Env("PGDERIVE_REDIS_URL")
                           << "\n  search:\n    type: opensearch\n    url: "
                           << stack_->Env("PGDERIVE_OPENSEARCH_URL")
                           << "\n  warehouse:\n    type: postgres\n    dsn: "
                           << stack_->Env("PGDERIVE_PG_DSN")
                           << "\nviews:\n  - name: items_cache\n    store: cache\n"
                              "    from: items\n    key: \"item:{id}\"\n"
                              "  - name: items_search\n    store: search\n    from: items\n"
                              "    index: items\n"
                              "  - name: items_buckets\n    store: warehouse\n"
                              "    table: analytics.items_buckets\n    key: [bucket]\n"
                              "    query: select id % 50 as bucket, count(*) as c, sum(n) as s, "
                              "max(v) as v from public.items group by 1\n"
                           << "http:\n  listen: 127.0.0.1:" << testing::FreePort() << "\n";
    ASSERT_TRUE(Redis({"FLUSHALL"}));
    auto search = Search();
    // `items` is the alias of the view's generations (an earlier test of this suite's
    // stack left it): the concrete indexes go, and the alias with them.
    for (const char* index : {"items-1", "items-2", "items-3"}) {
      ASSERT_TRUE(search.DeleteIndex(index, true).ok());
    }
    ASSERT_TRUE(search.DeleteIndex("items", true).ok());
    ASSERT_TRUE(search.DeleteIndex("pgderive-checkpoints", true).ok());
  }
  bool Redis(const RedisCommand& command) {
    auto client = RedisClient::Connect(stack_->Env("PGDERIVE_REDIS_URL"));
    return client.ok() && client.value().Command(command).ok();
  }
  OpenSearchClient Search() {
    HttpClient::Options options;
    options.url = stack_->Env("PGDERIVE_OPENSEARCH_URL");
    auto client = OpenSearchClient::Create(options);
    if (!client.ok()) throw std::runtime_error(client.error().ToString());
    return std::move(client).value();
  }
  // Inserts a marker row and waits until `present` sees it in a store.
  template <typename F>
  bool MarkerArrives(int id, F present) {
    PgConnection sql = stack_->ConnectPg();
    if (!sql.Execute("insert into items values (" + std::to_string(id) + ", 'marker', 0)").ok()) {
      return false;
    }
    // A store just restarted may still recover its shards, and the pipeline's retry
    // backoff reaches 10 s: the deadline allows for both on a loaded machine.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline) {
      if (present(std::to_string(id))) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // poll interval
    }
    return false;
  }
  bool InSearch(const std::string& id) {
    auto search = Search();
    auto doc = search.Get("items", id);
    return doc.ok() && doc.value().has_value();
  }
  bool InRedis(const std::string& id) {
    auto client = RedisClient::Connect(stack_->Env("PGDERIVE_REDIS_URL"));
    if (!client.ok()) return false;
    auto reply = client.value().Command({"EXISTS", "item:" + id});
    return reply.ok() && reply.value().integer == 1;
  }

  std::unique_ptr<Subprocess> StartRun(int n) {
    return std::make_unique<Subprocess>(
        std::vector<std::string>{PgderiveBinary(), "run", "-c", config_},
        (stack_->dir() / ("run" + std::to_string(n) + ".err")).string());
  }
  std::string RunErr(int n) {
    std::ifstream in(stack_->dir() / ("run" + std::to_string(n) + ".err"));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::pair<int, std::string> Verify() { return testing::RunVerify(config_, 120); }

  static OwnStack* stack_;
  std::string config_;
};
OwnStack* RunFaultTest::stack_ = nullptr;

TEST_F(RunFaultTest, KillNineAtTwentyRandomMomentsLosesNothing) {
  // PGDERIVE_FAULT_SEED replays a failed run's workload and kill delays.
  const char* given = std::getenv("PGDERIVE_FAULT_SEED");
  const unsigned seed =
      given != nullptr ? static_cast<unsigned>(std::stoul(given)) : std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  Workload workload(*stack_, seed);
  workload.Start();
  // Kill points spread over the first fill (the first runs: the backfill of 100,000 rows
  // into the Redis and OpenSearch views and the postgres store's mirror, resumed after
  // the last chunk a store made durable) and over streaming.
  for (int i = 0; i < 20; ++i) {
    auto run = StartRun(i);
    const auto delay = std::chrono::milliseconds(100 + rng() % 2400);
    // The kill moment is the point of the test, not a synchronisation.
    std::this_thread::sleep_for(delay);
    run->Signal(SIGKILL);
    ASSERT_TRUE(run->Wait(std::chrono::seconds(10)).has_value());
  }
  auto last = StartRun(20);
  // Let the workload run against a live pipeline, then stop it and check.
  const uint64_t before = workload.done();
  while (workload.done() < before + 500) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  workload.Stop();
  auto [status, out] = Verify();
  EXPECT_EQ(status, 0) << out << RunErr(20);
  if (status != 0) {
    // Every run's log, for the history that led there.
    for (int i = 0; i < 20; ++i) std::printf("=== run %d\n%s", i, RunErr(i).c_str());
  }
  EXPECT_NE(out.find("consistent"), std::string::npos) << out;
  last->Signal(SIGTERM);
  EXPECT_EQ(last->Wait(std::chrono::seconds(10)), 0) << RunErr(20);
  std::string all;
  for (int i = 0; i <= 20; ++i) all += RunErr(i);
  EXPECT_EQ(all.find(stack_->Env("PGDERIVE_PG_PASSWORD")), std::string::npos);
  // The background verifier (on by default) mended nothing: an entry it found differing
  // would be a loss the kills caused, hidden by its repair (or a false alarm).
  const size_t found = all.find("verify found view");
  EXPECT_EQ(found, std::string::npos) << all.substr(found, all.find('\n', found) - found);
  std::printf("workload: %llu operations\n", static_cast<unsigned long long>(workload.done()));
}

// Each store down for a while under load, Redis also back empty, and a PostgreSQL
// restart: the other store keeps up meanwhile, and afterwards every view verifies.
TEST_F(RunFaultTest, StoreOutagesAndPostgresRestart) {
  Workload workload(*stack_, 7);
  auto run = StartRun(100);
  // The outages hit streaming: wait for the snapshot to end first.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (RunErr(100).find("streaming from slot") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // poll interval
  }
  ASSERT_NE(RunErr(100).find("streaming from slot"), std::string::npos) << RunErr(100);
  workload.Start();
  auto progress = [&](uint64_t n) {
    const uint64_t before = workload.done();
    while (workload.done() < before + n) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  };
  progress(300);
  // Redis down for a while under load (its append-only file keeps the data): OpenSearch
  // keeps up meanwhile.
  ASSERT_EQ(stack_->Run("stop", {"redis"}), 0);
  EXPECT_TRUE(MarkerArrives(900001, [&](const std::string& id) { return InSearch(id); }))
      << RunErr(100);
  progress(500);
  ASSERT_EQ(stack_->Run("start", {"redis"}), 0);
  EXPECT_TRUE(MarkerArrives(900002, [&](const std::string& id) { return InRedis(id); }))
      << RunErr(100);
  // OpenSearch down: Redis keeps up.
  ASSERT_EQ(stack_->Run("stop", {"opensearch"}), 0);
  EXPECT_TRUE(MarkerArrives(900003, [&](const std::string& id) { return InRedis(id); }))
      << RunErr(100);
  progress(500);
  ASSERT_EQ(stack_->Run("start", {"opensearch"}), 0);
  EXPECT_TRUE(MarkerArrives(900004, [&](const std::string& id) { return InSearch(id); }))
      << RunErr(100);
  // Redis down, and back empty: the pipeline must notice and fill its views again (the
  // backfill, while the other stores stream), not serve stale data.
  ASSERT_EQ(stack_->Run("stop", {"redis"}), 0);
  std::filesystem::remove_all(stack_->dir() / "redis" / "appendonlydir");
  progress(300);
  ASSERT_EQ(stack_->Run("start", {"redis"}), 0);
  progress(300);
  EXPECT_TRUE(MarkerArrives(900005, [&](const std::string& id) { return InRedis(id); }))
      << RunErr(100);
  // PostgreSQL restarted under the pipeline (once the stores have caught up: a fast
  // shutdown waits for the slot's consumer to confirm the last WAL).
  const size_t before_restart = RunErr(100).size();
  ASSERT_EQ(stack_->Run("stop", {"pg"}), 0);
  ASSERT_EQ(stack_->Run("start", {"pg"}), 0);
  progress(300);
  workload.Stop();
  auto [status, out] = Verify();
  EXPECT_EQ(status, 0) << out << RunErr(100);
  const std::string err = RunErr(100);
  EXPECT_NE(err.find("retrying"), std::string::npos) << err;
  // Says what it found: the checkpoint key gone with the rest of Redis's data.
  EXPECT_NE(err.find("store cache has no checkpoint (key pgderive:fault:checkpoint is missing), "
                     "behind the slot"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("view items_cache is filled from the start (store cache lost its data)"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("store cache goes on from"), std::string::npos) << err;
  // The stream came back after PostgreSQL's restart: either it was lost and is
  // "reconnecting", or the restart caught it while it was being restarted anyway (a
  // store rejoining) - in both cases it streams from the slot again.
  EXPECT_NE(err.find("streaming from slot", before_restart), std::string::npos) << err;
  // The pipeline's lock went with its session and was taken again: a second run is
  // still refused.
  EXPECT_NE(err.find("re-took the pipeline's lock on the source", before_restart),
            std::string::npos)
      << err;
  auto [second, second_out] =
      testing::RunToEnd({PgderiveBinary(), "run", "-c", config_},
                        (stack_->dir() / "second.err").string(), std::chrono::seconds(60));
  EXPECT_EQ(second, 2) << second_out;
  EXPECT_NE(second_out.find("pipeline fault is already running: pgderive run pid "),
            std::string::npos)
      << second_out;
  run->Signal(SIGTERM);
  EXPECT_EQ(run->Wait(std::chrono::seconds(10)), 0) << err;
}

// `pg_ctl stop -m fast` (what `systemctl stop` does) on the source under a write load,
// with every store healthy (the postgres store on the source's own server): the shutdown
// ends within 5 s, pgderive reconnects once PostgreSQL is back, and nothing is lost.
TEST_F(RunFaultTest, FastShutdownUnderLoadEndsWithinFiveSecondsAndLosesNothing) {
  Workload workload(*stack_, 11);
  auto run = StartRun(200);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (RunErr(200).find("streaming from slot") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // poll interval
  }
  ASSERT_NE(RunErr(200).find("streaming from slot"), std::string::npos) << RunErr(200);
  workload.Start();
  auto progress = [&](uint64_t n) {
    const uint64_t before = workload.done();
    while (workload.done() < before + n) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  };
  progress(500);
  // The stack's stop is `pg_ctl stop -m fast -w -t 30` (then immediate): timed here.
  const auto stop_started = std::chrono::steady_clock::now();
  ASSERT_EQ(stack_->Run("stop", {"pg"}), 0);
  const double stop_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stop_started).count();
  std::printf("fast shutdown under load took %.2f s\n", stop_seconds);
  EXPECT_LT(stop_seconds, 5.0) << RunErr(200);
  ASSERT_EQ(stack_->Run("start", {"pg"}), 0);
  progress(500);  // writes continue
  workload.Stop();
  auto [status, out] = Verify();
  EXPECT_EQ(status, 0) << out << RunErr(200);
  // Exact counts, read from each store directly.
  PgConnection sql = stack_->ConnectPg();
  auto source = sql.Query("select count(*) from items");
  ASSERT_TRUE(source.ok());
  const long long rows = std::stoll(source.value().rows[0][0].value_or("-1"));
  auto warehouse = sql.Query("select sum(c) from analytics.items_buckets");
  ASSERT_TRUE(warehouse.ok());
  EXPECT_EQ(std::stoll(warehouse.value().rows[0][0].value_or("-1")), rows);
  auto redis = RedisClient::Connect(stack_->Env("PGDERIVE_REDIS_URL"));
  ASSERT_TRUE(redis.ok());
  auto keys = redis.value().Command({"KEYS", "item:*"});
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(static_cast<long long>(keys.value().elements.size()), rows);
  auto search = Search();
  ASSERT_TRUE(search.Refresh("items").ok());
  auto count = search.Count("items");
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(count.value(), rows);
  const std::string err = RunErr(200);
  // It went on after the restart: the stream reconnected, or waited for the pipeline's
  // lock, taken again with the source's new session, and streamed on from there.
  EXPECT_TRUE(err.find("reconnecting") != std::string::npos ||
              err.find("re-took the pipeline's lock") != std::string::npos)
      << err;
  EXPECT_EQ(err.find("rebuilding"), std::string::npos) << err;
  run->Signal(SIGTERM);
  EXPECT_EQ(run->Wait(std::chrono::seconds(10)), 0) << err;
}

// PostgreSQL invalidates a slot that would keep more WAL than max_slot_wal_keep_size.
// pgderive then cannot keep the views exact from it: a clear error naming the recovery
// command, exit 1, and no rebuild of everything behind the operator's back.
TEST_F(RunFaultTest, InvalidatedSlotIsAClearErrorWithTheRecoveryCommand) {
  auto run = StartRun(40);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (RunErr(40).find("streaming from slot") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // poll interval
  }
  ASSERT_NE(RunErr(40).find("streaming from slot"), std::string::npos) << RunErr(40);
  run->Signal(SIGTERM);
  ASSERT_EQ(run->Wait(std::chrono::seconds(10)), 0) << RunErr(40);

  PgConnection sql = stack_->ConnectPg();
  ASSERT_TRUE(sql.Execute("alter system set max_slot_wal_keep_size = '1MB'").ok());
  ASSERT_TRUE(sql.Execute("select pg_reload_conf()").ok());
  ASSERT_TRUE(sql.Execute("create table if not exists wal_filler (v text)").ok());
  bool lost = false;
  for (int round = 0; round < 10 && !lost; ++round) {
    ASSERT_TRUE(sql.Execute("insert into wal_filler select repeat(md5(g::text), 8) from "
                            "generate_series(1, 20000) g")
                    .ok());
    ASSERT_TRUE(sql.Execute("select pg_switch_wal()").ok());
    ASSERT_TRUE(sql.Execute("checkpoint").ok());
    auto status =
        sql.Query("select wal_status from pg_replication_slots where slot_name = 'pgderive_fault'");
    ASSERT_TRUE(status.ok());
    lost = !status.value().rows.empty() && status.value().rows[0][0].value_or("") == "lost";
  }
  ASSERT_TRUE(sql.Execute("alter system reset max_slot_wal_keep_size").ok());
  ASSERT_TRUE(sql.Execute("select pg_reload_conf()").ok());
  ASSERT_TRUE(sql.Execute("drop table wal_filler").ok());
  ASSERT_TRUE(lost) << "the server did not invalidate the slot";

  run = StartRun(41);
  const auto code = run->Wait(std::chrono::seconds(60));
  ASSERT_TRUE(code.has_value()) << RunErr(41);
  EXPECT_EQ(*code, 1) << RunErr(41);
  const std::string err = RunErr(41);
  EXPECT_NE(err.find("replication slot pgderive_fault has been invalidated"), std::string::npos)
      << err;
  EXPECT_NE(err.find("select pg_drop_replication_slot('pgderive_fault')"), std::string::npos)
      << err;
  EXPECT_EQ(err.find("rebuilding"), std::string::npos) << err;
  // The recovery the message gives works: drop the slot, start again, views rebuilt.
  ASSERT_TRUE(sql.Execute("select pg_drop_replication_slot('pgderive_fault')").ok());
  run = StartRun(42);
  auto [verify_code, verify_out] = Verify();
  EXPECT_EQ(verify_code, 0) << verify_out << RunErr(42);
  run->Signal(SIGTERM);
  EXPECT_EQ(run->Wait(std::chrono::seconds(10)), 0) << RunErr(42);
}

// TLS to PostgreSQL through libpq's DSN parameters: with sslmode=verify-full and the
// server's certificate as root, every pgderive connection (SQL, snapshot, walsender)
// is encrypted; with a root the server's certificate does not chain to, run refuses to
// start, says why, and creates nothing.
TEST_F(RunFaultTest, TlsToPostgresVerifiedAndRefused) {
  const auto dir = stack_->dir();
  auto openssl = [&](const std::string& name) {
    const std::string command =
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
        "-addext subjectAltName=IP:127.0.0.1 -keyout " +
        (dir / (name + ".key")).string() + " -out " + (dir / (name + ".crt")).string() +
        " 2>/dev/null && chmod 600 " + (dir / (name + ".key")).string() +
        // The server may run as another user (postgres, when the tests run as root).
        " && chown --reference=" + stack_->Env("PGDERIVE_PG_DATA") + " " +
        (dir / (name + ".key")).string() + " " + (dir / (name + ".crt")).string();
    return std::system(command.c_str()) == 0;
  };
  ASSERT_TRUE(openssl("server"));
  ASSERT_TRUE(openssl("other"));
  PgConnection sql = stack_->ConnectPg();
  ASSERT_TRUE(
      sql.Execute("alter system set ssl_cert_file = '" + (dir / "server.crt").string() + "'").ok());
  ASSERT_TRUE(
      sql.Execute("alter system set ssl_key_file = '" + (dir / "server.key").string() + "'").ok());
  ASSERT_TRUE(sql.Execute("alter system set ssl = on").ok());
  ASSERT_TRUE(sql.Execute("select pg_reload_conf()").ok());
  // The postmaster reloads asynchronously: wait until a new session gets TLS (libpq's
  // default sslmode=prefer takes it when offered).
  bool offered = false;
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
       !offered && std::chrono::steady_clock::now() < until;) {
    PgConnection probe = stack_->ConnectPg();
    auto rows = probe.Query("select ssl from pg_stat_ssl where pid = pg_backend_pid()");
    offered = rows.ok() && rows.value().rows[0][0].value_or("") == "t";
    if (!offered) std::this_thread::sleep_for(std::chrono::milliseconds(50));  // poll interval
  }
  ASSERT_TRUE(offered) << "the server did not turn TLS on";
  IgnoreError(sql.Execute("select pg_drop_replication_slot('pgderive_tls')"), "fresh start");
  IgnoreError(sql.Execute("drop publication if exists pgderive_tls"), "fresh start");

  auto write_config = [&](const std::string& root) {
    const std::string dsn = stack_->Env("PGDERIVE_PG_DSN") +
                            "?sslmode=verify-full&sslrootcert=" + (dir / root).string();
    const std::string path = (dir / "tls.yml").string();
    std::ofstream(path) << "pipeline: tls\nsource:\n  dsn: \"" << dsn
                        << "\"\nstores:\n  cache:\n    type: redis\n    url: "
                        << stack_->Env("PGDERIVE_REDIS_URL")
                        << "\nviews:\n  - name: tls_cache\n    store: cache\n    from: items\n"
                           "    key: \"tls:{id}\"\n"
                        << "http:\n  listen: 127.0.0.1:" << testing::FreePort() << "\n";
    return path;
  };
  // A root the server's certificate does not chain to: refused, nothing created.
  std::string config = write_config("other.crt");
  {
    Subprocess refused({PgderiveBinary(), "run", "-c", config}, (dir / "tls0.err").string());
    const auto code = refused.Wait(std::chrono::seconds(30));
    ASSERT_TRUE(code.has_value());
    EXPECT_NE(*code, 0);
  }
  std::ifstream err0(dir / "tls0.err");
  const std::string refused_text(std::istreambuf_iterator<char>(err0), {});
  EXPECT_NE(refused_text.find("certificate verify failed"), std::string::npos) << refused_text;
  auto slots =
      sql.Query("select count(*) from pg_replication_slots where slot_name = 'pgderive_tls'");
  ASSERT_TRUE(slots.ok());
  EXPECT_EQ(slots.value().rows[0][0].value_or(""), "0");

  config = write_config("server.crt");
  Subprocess run({PgderiveBinary(), "run", "-c", config}, (dir / "tls1.err").string());
  auto all_tls = [&] {
    auto rows = sql.Query(
        "select count(*), count(*) filter (where s.ssl) from pg_stat_activity a join pg_stat_ssl "
        "s using (pid) where a.application_name like 'pgderive%' and a.application_name <> "
        "'pgderive-test'");
    return rows.ok() ? std::make_pair(rows.value().rows[0][0].value_or("0"),
                                      rows.value().rows[0][1].value_or("0"))
                     : std::make_pair(std::string("0"), std::string("0"));
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::pair<std::string, std::string> seen;
  while (std::chrono::steady_clock::now() < deadline) {
    seen = all_tls();
    if (std::stoi(seen.first) >= 2) break;  // the SQL session and the walsender
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // poll interval
  }
  EXPECT_GE(std::stoi(seen.first), 2);
  auto who = sql.Query(
      "select string_agg(a.application_name || ' ' || a.backend_type || ' ssl=' || s.ssl, '; ') "
      "from pg_stat_activity a join pg_stat_ssl s using (pid) where a.application_name like "
      "'pgderive%' and a.application_name <> 'pgderive-test'");
  EXPECT_EQ(seen.first, seen.second) << "a pgderive connection without TLS: "
                                     << (who.ok() ? who.value().rows[0][0].value_or("") : "");
  auto [code, out] = testing::RunVerify(config, 60);
  EXPECT_EQ(code, 0) << out;
  run.Signal(SIGTERM);
  EXPECT_EQ(run.Wait(std::chrono::seconds(10)), 0);

  IgnoreError(sql.Execute("select pg_drop_replication_slot('pgderive_tls')"), "cleanup");
  IgnoreError(sql.Execute("drop publication if exists pgderive_tls"), "cleanup");
  ASSERT_TRUE(sql.Execute("alter system reset ssl").ok());
  ASSERT_TRUE(sql.Execute("alter system reset ssl_cert_file").ok());
  ASSERT_TRUE(sql.Execute("alter system reset ssl_key_file").ok());
  ASSERT_TRUE(sql.Execute("select pg_reload_conf()").ok());
}

}  // namespace
}  // namespace pgderive
