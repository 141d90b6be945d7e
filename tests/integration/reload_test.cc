// Reload without restart, against the real servers: `pgderive run` re-reads its file on
// SIGHUP and on `pgderive reload` and applies it in the same process (same pid, same
// HTTP port, the pipeline's lock kept): a view added is filled, a view whose columns
// changed is rebuilt, both verify; a broken file or a key that cannot change while
// running is refused at its file:line (logged, printed, exit 2) and the running views
// keep streaming. And `pgderive backfill`'s progress when its output is not a terminal.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sinks/opensearch/http_client.h"
#include "sinks/redis/redis_client.h"
#include "tests/support/pg.h"
#include "tests/support/pipeline_test.h"
#include "tests/support/stack_env.h"
#include "tests/support/subprocess.h"
#include "tests/support/wait.h"

namespace pgderive {
namespace {

using testing::MustConnect;
using testing::MustExecute;
using testing::PgderiveBinary;
using testing::Scalar;
using testing::UniqueName;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class ReloadTest : public testing::PipelineTest {
 protected:
  void SetUp() override {
    UseSharedStack("reload");
    if (HasFatalFailure()) return;
    dsn_ = endpoints_.pg_dsn;
    redis_url_ = endpoints_.redis_url;
    items_ = UniqueName("rl_items");
    users_ = UniqueName("rl_users");
    config_ = Path("pgderive.yml");
    CleanupSql("drop table if exists " + items_ + ", " + users_);
    MustExecute(*sql_, "create table " + items_ +
                           " (id int primary key, name text not null, price int not null)");
    MustExecute(*sql_, "insert into " + items_ +
                           " select g, 'item ' || g, g * 10 from generate_series(1, 500) g");
    MustExecute(*sql_, "create table " + users_ + " (id int primary key, email text not null)");
    MustExecute(*sql_, "insert into " + users_ +
                           " select g, 'u' || g || '@example.com' from generate_series(1, 300) g");
  }
  void TearDown() override {
    PipelineTest::TearDown();
    if (redis_url_.empty()) return;
    if (auto redis = RedisClient::Connect(redis_url_); redis.ok()) {
      for (const std::string& pattern :
           {items_ + ":*", users_ + ":*", "pgderive:" + pipeline_ + ":*"}) {
        auto keys = redis.value().Command({"KEYS", pattern});
        if (!keys.ok()) continue;
        for (const auto& key : keys.value().elements) {
          (void)redis.value().Command({"DEL", key.str});  // test cleanup
        }
      }
    }
  }

  // The configuration file: the items view (with `items_columns` when not empty), and
  // the users view when `users`; `extra` lines go under `source:`; `view_extra` under
  // the items view.
  void Write(bool users, const std::string& items_columns = "", const std::string& extra = "",
             const std::string& view_extra = "") {
    std::ofstream out(config_);
    out << "pipeline: " << pipeline_ << "\nsource:\n"
        << extra << "  dsn: \"" << dsn_ << "\"\nstores:\n  cache:\n    type: redis\n    url: \""
        << redis_url_ << "\"\nviews:\n  - name: items\n    store: cache\n    from: public."
        << items_ << "\n    key: \"" << items_ << ":{id}\"\n";
    if (!items_columns.empty()) out << "    columns: [" << items_columns << "]\n";
    out << view_extra;
    if (users) {
      out << "  - name: users\n    store: cache\n    from: public." << users_ << "\n    key: \""
          << users_ << ":{id}\"\n";
    }
    out << "http:\n  listen: 127.0.0.1:" << port_ << "\n";
  }

  void StartRun() {
    PipelineTest::StartRun(config_);
    WaitReady(std::chrono::seconds(120));
  }
  std::string Log() { return RunLog(); }
  std::pair<long, std::string> Get(const std::string& path) { return Http(path); }
  nlohmann::json Status() {
    nlohmann::json status = PipelineTest::Status();
    return status.is_object() ? status : nlohmann::json::object();
  }
  uint64_t Generation() {
    return Status().value("config", nlohmann::json::object()).value("generation", uint64_t{0});
  }
  // Every view of `names` live in generation `generation`.
  bool Serving(uint64_t generation, const std::vector<std::string>& names) {
    const auto s = Status();
    if (s.value("config", nlohmann::json::object()).value("generation", uint64_t{0}) !=
            generation ||
        s.value("reloading", true)) {
      return false;
    }
    size_t live = 0;
    for (const auto& v : s.value("views", nlohmann::json::array())) {
      for (const std::string& n : names)
        live += v.value("name", "") == n && v.value("state", "") == "live";
    }
    return live == names.size() && s.value("views", nlohmann::json::array()).size() == names.size();
  }
  std::optional<std::string> RedisGet(const std::string& key) {
    auto client = RedisClient::Connect(redis_url_);
    if (!client.ok()) return std::nullopt;
    auto reply = client.value().Command({"GET", key});
    if (!reply.ok() || reply.value().type != RedisReply::Type::kString) return std::nullopt;
    return reply.value().str;
  }
  // (exit status, stdout, stderr) of a pgderive command.
  struct Ran {
    int code = -1;
    std::string out, err;
  };
  Ran Pgderive(const std::vector<std::string>& args) {
    std::vector<std::string> argv{PgderiveBinary()};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string path = (dir_ / "command.err").string();
    auto [code, out] = testing::RunToEnd(argv, path, std::chrono::seconds(120));
    Ran ran{code, out, testing::ReadFile(path)};
    ran.out = ran.out.substr(0, ran.out.size() - std::min(ran.out.size(), ran.err.size()));
    return ran;
  }
  std::string Pid() {
    return Scalar(*sql_,
                  "select active_pid from pg_replication_slots where slot_name = 'pgderive_" +
                      pipeline_ + "'");
  }

  std::string dsn_, redis_url_, items_, users_, config_;
};

TEST_F(ReloadTest, SighupFillsAViewAddedAndRebuildsAViewWhoseColumnsChanged) {
  Write(/*users=*/false);
  StartRun();
  ASSERT_TRUE(WaitFor([&] { return Serving(1, {"items"}); })) << Log();
  ASSERT_EQ(RedisGet(items_ + ":7"), R"({"id":7,"name":"item 7","price":70})");
  const std::string holder = Scalar(*sql_,
                                    "select application_name from pg_stat_activity where "
                                    "application_name like 'pgderive run pid % http 127.0.0.1:" +
                                        std::to_string(port_) + "'");
  ASSERT_FALSE(holder.empty());

  // A view added, and the items view's columns changed: one SIGHUP.
  Write(/*users=*/true, "id, name");
  run_->Signal(SIGHUP);
  ASSERT_TRUE(WaitFor(
      [&] {
        return Serving(2, {"items", "users"});
      },
      std::chrono::seconds(120)))
      << Log();
  // The same process: its lock was never let go (the holder's session is the same).
  EXPECT_EQ(Scalar(*sql_,
                   "select application_name from pg_stat_activity where application_name like "
                   "'pgderive run pid % http 127.0.0.1:" +
                       std::to_string(port_) + "'"),
            holder);
  EXPECT_FALSE(run_->Wait(std::chrono::milliseconds(0))) << Log();
  auto [code, out] = testing::RunVerify(config_, 60);
  EXPECT_EQ(code, 0) << out << Log();
  EXPECT_TRUE(Contains(out, "view users (store cache): 300 rows, consistent")) << out;
  EXPECT_TRUE(Contains(out, "view items (store cache): 500 rows, consistent")) << out;
  EXPECT_EQ(RedisGet(items_ + ":7"), R"({"id":7,"name":"item 7"})");
  EXPECT_EQ(RedisGet(users_ + ":3"), R"({"id":3,"email":"u3@example.com"})");
  // The stream goes on into both, in the new shape.
  MustExecute(*sql_, "update " + items_ + " set name = 'renamed', price = 1 where id = 7");
  MustExecute(*sql_, "insert into " + users_ + " values (301, 'new@example.com')");
  EXPECT_TRUE(WaitFor([&] { return RedisGet(items_ + ":7") == R"({"id":7,"name":"renamed"})"; }))
      << RedisGet(items_ + ":7").value_or("(none)");
  EXPECT_TRUE(WaitFor([&] { return RedisGet(users_ + ":301").has_value(); }));
  // /status and /metrics say which configuration serves.
  const auto config = Status()["config"];
  EXPECT_EQ(config.value("file", ""), config_);
  EXPECT_EQ(config["last_reload"].value("result", ""), "applied");
  EXPECT_EQ(config.value("hash", "").size(), 16u);
  EXPECT_TRUE(Contains(Get("/metrics").second, "pgderive_config_generation 2"))
      << Get("/metrics").second;
  EXPECT_TRUE(Contains(Log(), "\"changes\":\"views added: users; views rebuilt: items\"")) << Log();

  // A view removed: no longer written; its data is left where it is.
  Write(/*users=*/false, "id, name");
  Ran reload = Pgderive({"reload", "-c", config_});
  EXPECT_EQ(reload.code, 0) << reload.out << reload.err;
  EXPECT_TRUE(Contains(reload.out, "reload accepted: generation 3 (views removed: users)"))
      << reload.out;
  EXPECT_TRUE(Contains(reload.out, "generation 3 serves")) << reload.out;
  MustExecute(*sql_, "update " + users_ + " set email = 'changed' where id = 3");
  MustExecute(*sql_, "update " + items_ + " set name = 'after removal' where id = 7");
  EXPECT_TRUE(
      WaitFor([&] { return RedisGet(items_ + ":7") == R"({"id":7,"name":"after removal"})"; }));
  EXPECT_EQ(RedisGet(users_ + ":3"), R"({"id":3,"email":"u3@example.com"})");

  StopRun(std::chrono::seconds(30));
}

TEST_F(ReloadTest, ABrokenFileOrAKeyThatCannotChangeIsRefusedAndTheViewsStream) {
  Write(/*users=*/false);
  StartRun();
  ASSERT_TRUE(WaitFor([&] { return Serving(1, {"items"}); })) << Log();
  const std::string walsender = Pid();

  // An unknown key: refused by `pgderive reload` before anything is sent (the file is
  // checked first), exit 2, validate's file:line message.
  Write(/*users=*/false, "", "", "    colums: [id]\n");
  Ran reload = Pgderive({"reload", "-c", config_});
  EXPECT_EQ(reload.code, 2) << reload.out << reload.err;
  EXPECT_TRUE(Contains(reload.err, config_ + ":13:5: views[0].colums: unknown key")) << reload.err;
  // The same file on SIGHUP: the running process logs the same line and keeps going.
  run_->Signal(SIGHUP);
  EXPECT_TRUE(WaitFor([&] {
    return Contains(Log(), "reload refused: " + config_ + ":13:5: views[0].colums: unknown key");
  })) << Log();

  // A column the table lacks: the running process checks it against the servers.
  Write(/*users=*/false, "id, nmae");
  reload = Pgderive({"reload", "-c", config_});
  EXPECT_EQ(reload.code, 2) << reload.out << reload.err;
  EXPECT_TRUE(Contains(reload.err, config_ + ":13:19: views[0].columns[1]: ")) << reload.err;
  EXPECT_TRUE(Contains(reload.err, "column nmae is not in table public." + items_)) << reload.err;
  EXPECT_TRUE(Contains(reload.err,
                       "refused (the configuration does not work with these servers); the running "
                       "configuration stays"))
      << reload.err;
  EXPECT_TRUE(Contains(Log(), "reload refused: " + config_ + ":13:19: views[0].columns[1]: "))
      << Log();

  // A key that cannot change while running: the slot.
  Write(/*users=*/false, "", "  slot: another_slot\n");
  reload = Pgderive({"reload", "-c", config_});
  EXPECT_EQ(reload.code, 2) << reload.out << reload.err;
  EXPECT_TRUE(Contains(reload.err, config_ +
                                       ":3:9: source.slot: cannot change while pgderive runs (the "
                                       "running pipeline has slot pgderive_" +
                                       pipeline_ + ")"))
      << reload.err;

  // Nothing changed: the first configuration serves, from the same walsender, and a
  // change still arrives.
  EXPECT_EQ(Generation(), 1u);
  EXPECT_EQ(Pid(), walsender);
  EXPECT_EQ(Status()["config"]["last_reload"].value("result", ""), "refused");
  EXPECT_TRUE(
      Contains(Get("/metrics").second, "pgderive_config_reloads_total{result=\"refused\"} 3"))
      << Get("/metrics").second;
  MustExecute(*sql_, "update " + items_ + " set name = 'still streaming' where id = 9");
  EXPECT_TRUE(WaitFor([&] {
    return RedisGet(items_ + ":9") == R"({"id":9,"name":"still streaming","price":90})";
  })) << RedisGet(items_ + ":9").value_or("(none)")
      << Log();
  // The file as it was: unchanged, exit 0.
  Write(/*users=*/false);
  reload = Pgderive({"reload", "-c", config_});
  EXPECT_EQ(reload.code, 0) << reload.out << reload.err;
  EXPECT_TRUE(Contains(reload.out, "configuration unchanged: generation 1 serves")) << reload.out;

  StopRun(std::chrono::seconds(30));
}

TEST_F(ReloadTest, BackfillShowsProgressLinesWhenNotATerminal) {
  // Enough rows for the fill to take a few seconds.
  MustExecute(*sql_, "insert into " + items_ +
                         " select g, repeat('x', 300) || g, g from generate_series(501, 200000) g");
  MustExecute(*sql_, "analyze " + items_);
  Write(/*users=*/false);
  StartRun();
  ASSERT_TRUE(WaitFor([&] { return Serving(1, {"items"}); }, std::chrono::seconds(120))) << Log();
  // A transaction holding a write on the table keeps the backfill at its first chunk (the
  // chunk waits for every writer its low watermark saw, as CREATE INDEX CONCURRENTLY
  // does): the view stays backfilling until it ends, whatever the machine's speed, so
  // the command's progress line is met before the fill can finish.
  auto blocker = MustConnect(dsn_);
  MustExecute(blocker, "begin");
  MustExecute(blocker, "update " + items_ + " set price = price where id = 1");
  testing::Subprocess command(
      {PgderiveBinary(), "backfill", "-c", config_, "--view", "items", "--progress-interval", "1"},
      Path("backfill.err"));
  auto is_progress = [](const std::string& line) {
    return Contains(line, "view items: ") && Contains(line, " of ~") && Contains(line, " rows (") &&
           Contains(line, "%)");
  };
  std::string out;
  bool progress = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!progress && std::chrono::steady_clock::now() < deadline) {
    auto line = command.ReadLine(std::chrono::seconds(1));
    if (!line) continue;
    out += *line + "\n";
    progress = is_progress(*line);
  }
  MustExecute(blocker, "commit");
  std::string last;
  while (auto line = command.ReadLine(std::chrono::seconds(120))) {
    out += *line + "\n";
    last = *line;
  }
  const std::optional<int> code = command.Wait(std::chrono::seconds(30));
  EXPECT_EQ(code, std::optional<int>(0)) << out << testing::ReadFile(Path("backfill.err"));
  EXPECT_EQ(out.find('\r'), std::string::npos) << out;
  // Plain lines with the rows and the percent of the estimate, then the summary.
  EXPECT_TRUE(progress) << out;
  // The summary gives rows and rate when a sample saw rows done, else the time taken.
  EXPECT_TRUE(Contains(last, "view items: done, live again")) << out;
  auto [verified, report] = testing::RunVerify(config_, 60);
  EXPECT_EQ(verified, 0) << report;
  StopRun(std::chrono::seconds(30));
}

}  // namespace
}  // namespace pgderive
