// kill -9 at random points of a 1,000,000-row first fill into Redis, OpenSearch and a
// postgres store at once, with a writer running: each restart resumes every fill after
// the key its store recorded (the log line names it), nothing is read from the start
// again (the rows a run reads are at most those after its resume key and the chunks in
// flight), and at the end every view verifies and holds exactly the source's rows.
// Own servers (tests/support/own_stack.h). Label `slow`: about 4 minutes.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "sinks/opensearch/http_client.h"
#include "sinks/opensearch/opensearch_client.h"
#include "sinks/redis/redis_client.h"
#include "tests/support/own_stack.h"
#include "tests/support/subprocess.h"
#include "tests/support/wait.h"

namespace pgderive {
namespace {

using testing::OwnStack;
using testing::PgderiveBinary;
using testing::Subprocess;

// A string field of a JSON object ("" when absent or not a string).
std::string Field(const nlohmann::json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return "";
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

constexpr int kRows = 1000000;
// What a restart may read again beyond the rows after its resume key: the chunks in
// flight (4 of at most 16,384 rows), and the rows the writer inserts meanwhile.
constexpr uint64_t kInFlight = 4 * 16384;
constexpr uint64_t kWriterSlack = 5000;

// Updates, deletes and inserts back of rows in the table's key range until stopped.
class Writer {
 public:
  explicit Writer(const OwnStack& stack) : stack_(stack) {}
  ~Writer() { Stop(); }
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
    std::mt19937 rng(11);
    PgConnection c = stack_.ConnectPg();
    while (!stop_) {
      const std::string id = std::to_string(1 + rng() % kRows);
      std::string sql;
      switch (rng() % 3) {
        case 0:
          sql = "update items set n = n + 1, v = md5(v) where id = " + id;
          break;
        case 1:
          sql = "delete from items where id = " + id;
          break;
        default:
          sql = "insert into items values (" + id + ", 'back', 0) on conflict (id) do update " +
                "set n = items.n + 1";
      }
      if (c.Execute(sql).ok()) ++done_;
    }
  }

  const OwnStack& stack_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> done_{0};
  std::thread thread_;
};

// One fill as the backfill's log lines name it: a view, or a postgres store's mirror.
struct Fill {
  std::string status_view;  // its entry in /status
  bool done = false;
  uint64_t last_read = 0;   // rows its last run read (its /status progress when killed)
  uint64_t rows_after = 0;  // rows after the key its last run resumed after (at its kill)
};

class MillionFillTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { stack_ = new OwnStack({"--services", "pg,redis,opensearch"}); }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }
  void SetUp() override {
    PgConnection sql = stack_->ConnectPg();
    ASSERT_TRUE(sql.Execute("drop table if exists items").ok());
    ASSERT_TRUE(sql.Execute("create table items (id int primary key, v text, n int)").ok());
    ASSERT_TRUE(sql.Execute("insert into items select g, md5(g::text), g from "
                            "generate_series(1, " +
                            std::to_string(kRows) + ") g")
                    .ok());
    ASSERT_TRUE(sql.Execute("analyze items").ok());
    port_ = testing::FreePort();
    config_ = (stack_->dir() / "million.yml").string();
    std::ofstream(config_)
        << "pipeline: million\nsource:\n  dsn: " << stack_->Env("PGDERIVE_PG_DSN")
        << "\nstores:\n  cache:\n    type: redis\n    url: " << stack_->Env("PGDERIVE_REDIS_URL")
        << "\n  search:\n    type: opensearch\n    url: " << stack_->Env("PGDERIVE_OPENSEARCH_URL")
        << "\n  warehouse:\n    type: postgres\n    dsn: " << stack_->Env("PGDERIVE_PG_DSN")
        << "\nviews:\n  - name: items_cache\n    store: cache\n"
           "    from: items\n    key: \"item:{id}\"\n"
           "  - name: items_search\n    store: search\n    from: items\n"
           "    index: items\n"
           "  - name: items_buckets\n    store: warehouse\n"
           "    table: analytics.items_buckets\n    key: [bucket]\n"
           "    query: select id % 100 as bucket, count(*) as c, sum(n) as s "
           "from public.items group by 1\n"
        << "http:\n  listen: 127.0.0.1:" << port_ << "\n";
  }
  std::string Log(int n) {
    std::ifstream in(stack_->dir() / ("run" + std::to_string(n) + ".err"));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  // The run's JSON log lines with message `msg`.
  std::vector<nlohmann::json> Lines(int n, const std::string& msg) {
    std::vector<nlohmann::json> out;
    std::istringstream lines(Log(n));
    for (std::string line; std::getline(lines, line);) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object() && Field(j, "msg").starts_with(msg)) out.push_back(j);
    }
    return out;
  }
  nlohmann::json Status() {
    auto client = HttpClient::Create({.url = "http://127.0.0.1:" + std::to_string(port_),
                                      .ca_file = "",
                                      .timeout = std::chrono::seconds(10)});
    if (!client.ok()) return nullptr;
    auto response = client.value().Send("GET", "/status", "");
    if (!response.ok() || response.value().status != 200) return nullptr;
    return nlohmann::json::parse(response.value().body, nullptr, false);
  }
  // Rows after `after` (["<id>"]) in the source now.
  uint64_t RowsAfter(const std::string& after) {
    const std::string id = nlohmann::json::parse(after).at(0).get<std::string>();
    PgConnection sql = stack_->ConnectPg();
    auto rows = sql.Query("select count(*) from items where id > " + id);
    return std::stoull(rows.value().rows[0][0].value_or("0"));
  }

  static OwnStack* stack_;
  std::string config_;
  int port_ = 0;
};
OwnStack* MillionFillTest::stack_ = nullptr;

TEST_F(MillionFillTest, KillNineDuringTheFirstFillResumesEveryFillAndReadsNothingAgain) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const auto started = std::chrono::steady_clock::now();
  std::map<std::string, Fill> fills = {{"items_cache", {"items_cache"}},
                                       {"items_search", {"items_search"}},
                                       {"mirror public.items", {"items_buckets"}}};
  Writer writer(*stack_);
  writer.Start();
  constexpr int kKills = 3;
  int run_number = 0;
  std::unique_ptr<Subprocess> run;
  for (; run_number <= kKills; ++run_number) {
    // Outlives the loop: the last run fills to the end after it.
    run = std::make_unique<Subprocess>(
        std::vector<std::string>{PgderiveBinary(), "run", "-c", config_},
        (stack_->dir() / ("run" + std::to_string(run_number) + ".err")).string());
    const int n = run_number;
    ASSERT_TRUE(testing::WaitFor([&] { return !Lines(n, "backfill started").empty(); },
                                 std::chrono::seconds(120)))
        << Log(n);
    // Each restart: every fill not done resumes after the key its store recorded.
    for (const nlohmann::json& line : Lines(n, "backfill started")) {
      const std::string unit = Field(line, "views");
      ASSERT_TRUE(fills.contains(unit)) << line.dump();
      Fill& fill = fills[unit];
      EXPECT_FALSE(fill.done) << unit << " filled again: " << line.dump();
      const std::string after = Field(line, "after");
      if (n == 0) {
        EXPECT_EQ(after, "") << line.dump();
        continue;
      }
      // A fill that had read more than the chunks in flight resumes after a key.
      if (fill.last_read > kInFlight) {
        EXPECT_NE(after, "") << unit << " started over";
      }
      if (after.empty()) continue;
      bool said = false;
      for (const nlohmann::json& resuming : Lines(n, "")) {
        const std::string msg = Field(resuming, "msg");
        said = said || (msg.ends_with("was being backfilled: resuming after " + after) &&
                        (msg.starts_with("view " + unit + " ") ||
                         msg.starts_with("the mirror of " + unit.substr(7) + " ")));
      }
      EXPECT_TRUE(said) << unit << " after " << after << "\n" << Log(n);
      // How far the killed run got, durably: the rows between its resume key and this one.
      const long long durable =
          static_cast<long long>(fill.rows_after) - static_cast<long long>(RowsAfter(after));
      std::printf("run %d %s: resumes after %s (the killed run made %lld rows durable)\n", n,
                  unit.c_str(), after.c_str(), durable);
      fill.last_read = 0;
    }
    if (n == kKills) break;
    // A random point of the fill: 3 to 15 s after it (re)started.
    std::this_thread::sleep_for(std::chrono::milliseconds(3000 + rng() % 12000));
    const nlohmann::json status = Status();
    run->Signal(SIGKILL);
    ASSERT_TRUE(run->Wait(std::chrono::seconds(20)).has_value());
    // Rows each fill read in this run: at most those after its resume key and the
    // chunks in flight.
    for (auto& [unit, fill] : fills) {
      for (const nlohmann::json& line : Lines(n, "backfill done")) {
        if (Field(line, "views") == unit) fill.done = true;
      }
      if (!status.is_object() || fill.done) continue;
      for (const auto& v : status["views"]) {
        if (Field(v, "name") == fill.status_view) {
          fill.last_read = std::stoull("0" + Field(v, "backfill_rows"));
        }
      }
    }
    for (const nlohmann::json& line : Lines(n, "backfill started")) {
      const std::string unit = Field(line, "views");
      const std::string after = Field(line, "after");
      uint64_t read = fills[unit].last_read;
      for (const nlohmann::json& done : Lines(n, "backfill done")) {
        if (Field(done, "views") == unit) read = std::stoull("0" + Field(done, "rows"));
      }
      const uint64_t rows_after = after.empty() ? kRows : RowsAfter(after);
      const uint64_t bound = rows_after + kInFlight + kWriterSlack;
      EXPECT_LE(read, bound) << unit << " in run " << n << " after " << after;
      fills[unit].rows_after = rows_after;
      std::printf(
          "run %d (killed) %s: resumed after %s, %llu rows after it, %llu read by /status "
          "(published every few seconds)\n",
          n, unit.c_str(), after.empty() ? "the start" : after.c_str(),
          static_cast<unsigned long long>(rows_after), static_cast<unsigned long long>(read));
    }
  }
  // The last run fills to the end. A fill the killed run completed durably just before
  // its kill, without its "backfill done" line, is not resumed: its view is live.
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        const nlohmann::json status = Status();
        size_t done = 0;
        for (const auto& [unit, fill] : fills) {
          bool filled = fill.done;
          for (const nlohmann::json& line : Lines(run_number, "backfill done")) {
            filled = filled || Field(line, "views") == unit;
          }
          if (!filled && status.is_object() && status.contains("views")) {
            for (const auto& v : status["views"]) {
              filled =
                  filled || (Field(v, "name") == fill.status_view && Field(v, "state") == "live");
            }
          }
          done += filled ? 1 : 0;
        }
        return done == fills.size();
      },
      std::chrono::seconds(600)))
      << Log(run_number);
  for (const nlohmann::json& done : Lines(run_number, "backfill done")) {
    const std::string unit = Field(done, "views");
    std::string after;
    for (const nlohmann::json& line : Lines(run_number, "backfill started")) {
      if (Field(line, "views") == unit) after = Field(line, "after");
    }
    const uint64_t read = std::stoull("0" + Field(done, "rows"));
    const uint64_t rows_after = after.empty() ? kRows : RowsAfter(after);
    EXPECT_LE(read, rows_after + kInFlight + kWriterSlack) << unit << " after " << after;
    std::printf(
        "run %d (last) %s: resumed after %s, %llu rows after it, %llu read (%lld read again)\n",
        run_number, unit.c_str(), after.empty() ? "the start" : after.c_str(),
        static_cast<unsigned long long>(rows_after), static_cast<unsigned long long>(read),
        static_cast<long long>(read) - static_cast<long long>(rows_after));
  }
  const uint64_t writes = writer.done();
  writer.Stop();
  auto [status, out] = testing::RunVerify(config_, 300);
  EXPECT_EQ(status, 0) << out << Log(run_number);
  // verify compares chunk by chunk: its memory does not grow with the views (a million
  // entries of each of the two row-made views held at once would take several hundred
  // MiB), and it reports its rate.
  const std::regex compared(
      R"(compared (\d+) rows in ([0-9.]+) s \((\d+) rows/s\), peak memory (\d+) MiB)");
  std::smatch said;
  ASSERT_TRUE(std::regex_search(out, said, compared)) << out;
  EXPECT_GE(std::stoull(said[1]), 2ull * 900000) << out;  // the two row views, and the buckets
  EXPECT_GT(std::stoull(said[3]), 0ull) << out;
  EXPECT_LE(std::stoull(said[4]), 128ull) << out;
  std::printf("verify of the million-row views: %s\n", said[0].str().c_str());
  // Exact content beside verify's entry-by-entry comparison: the counts of each store.
  PgConnection sql = stack_->ConnectPg();
  const std::string rows = sql.Query("select count(*) from items").value().rows[0][0].value_or("");
  auto redis = RedisClient::Connect(stack_->Env("PGDERIVE_REDIS_URL"));
  ASSERT_TRUE(redis.ok());
  auto keys = redis.value().Command({"EVAL", "return #redis.call('keys', ARGV[1])", "0", "item:*"});
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(std::to_string(keys.value().integer), rows);
  HttpClient::Options options;
  options.url = stack_->Env("PGDERIVE_OPENSEARCH_URL");
  auto search = OpenSearchClient::Create(options);
  ASSERT_TRUE(search.ok());
  EXPECT_TRUE(testing::WaitFor(
      [&] {
        auto counted = search.value().Count("items");
        return counted.ok() && std::to_string(counted.value()) == rows;
      },
      std::chrono::seconds(60)));
  EXPECT_EQ(sql.Query("select count(*) || ' ' || sum(c) || ' ' || sum(s) from "
                      "analytics.items_buckets")
                .value()
                .rows[0][0]
                .value_or(""),
            sql.Query("select count(*) || ' ' || sum(c) || ' ' || sum(s) from (select id % 100, "
                      "count(*) as c, sum(n) as s from items group by 1) q")
                .value()
                .rows[0][0]
                .value_or(""));
  std::printf("1,000,000-row fill with %d kills: %.0f s, %llu writes\n", kKills,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
              static_cast<unsigned long long>(writes));
}

}  // namespace
}  // namespace pgderive
