#include "tests/support/pipeline_test.h"

#include <signal.h>

#include <fstream>

#include "sinks/opensearch/http_client.h"
#include "sinks/redis/redis_client.h"
#include "tests/support/pg.h"
#include "tests/support/stack_env.h"

namespace pgderive::testing {

void PipelineTest::UseSharedStack(const std::string& prefix) {
  PGDERIVE_REQUIRE_STACK();
  endpoints_ = {stack.pg_dsn(), stack.redis_url(), stack.opensearch_url()};
  dir_ = std::filesystem::temp_directory_path() / UniqueName("pgderive_" + prefix);
  std::filesystem::create_directories(dir_);
  own_dir_ = true;
  pipeline_ = UniqueName(prefix);
  Open();
}

void PipelineTest::UseEndpoints(const Endpoints& endpoints, const std::filesystem::path& dir,
                                const std::string& pipeline) {
  endpoints_ = endpoints;
  dir_ = dir;
  own_dir_ = false;
  pipeline_ = pipeline;
  Open();
}

void PipelineTest::Open() {
  pipelines_.insert(pipelines_.begin(), pipeline_);
  port_ = FreePort();
  sql_ = std::make_unique<PgConnection>(MustConnect(endpoints_.pg_dsn));
}

void PipelineTest::TearDown() {
  if (run_) {
    // Gone before its slot is dropped (a loaded machine may take a while to stop it).
    run_->Signal(SIGTERM);
    if (!run_->Wait(std::chrono::seconds(60))) {
      run_->Signal(SIGKILL);
      run_->Wait(std::chrono::seconds(10));
    }
    run_.reset();
  }
  if (sql_) {
    for (const std::string& p : pipelines_) {
      // The server ends a stopped run's walsender a moment after the run exits; an
      // active slot cannot be dropped.
      const std::string active =
          "select count(*) from pg_replication_slots where slot_name = "
          "'pgderive_" +
          p + "' and active";
      testing::WaitFor(
          [&] {
            auto rows = sql_->Query(active);
            return !rows.ok() || rows.value().rows.empty() || rows.value().rows[0][0] == "0";
          },
          std::chrono::seconds(10));
      IgnoreError(sql_->Execute("select pg_drop_replication_slot(slot_name) from "
                                "pg_replication_slots where slot_name = 'pgderive_" +
                                p + "'"),
                  "test cleanup");
      IgnoreError(sql_->Execute("drop publication if exists pgderive_" + p), "test cleanup");
    }
    for (const std::string& statement : cleanup_sql_) {
      IgnoreError(sql_->Execute(statement), "test cleanup");
    }
  }
  for (const std::string& index : cleanup_indexes_) {
    HttpRequest(endpoints_.opensearch_url, "DELETE", "/" + index);
    // A view's index is an alias of <index>-<n>: its generations go too.
    for (int n = 1; n <= 3; ++n) {
      HttpRequest(endpoints_.opensearch_url, "DELETE", "/" + index + "-" + std::to_string(n));
    }
  }
  // On the shared stack, the Redis keys of the test's pipeline: its views' keys (templates
  // begin with the pipeline's name) and pgderive's own for it.
  if (own_dir_ && !endpoints_.redis_url.empty()) {
    if (auto redis = RedisClient::Connect(endpoints_.redis_url); redis.ok()) {
      for (const std::string& pattern : {pipeline_ + ":*", "pgderive:" + pipeline_ + ":*"}) {
        IgnoreError(
            redis.value().Scan(pattern,
                               [&](const std::vector<RedisReply>& keys) -> pgderive::Status {
                                 RedisCommand del{"DEL"};
                                 for (const RedisReply& k : keys) del.push_back(k.str);
                                 return redis.value().Command(del).status();
                               }),
            "test cleanup");
      }
    }
  }
  if (own_dir_ && !dir_.empty()) std::filesystem::remove_all(dir_);
}

std::string PipelineTest::WriteFile(const std::string& name, const std::string& text) const {
  const std::string path = Path(name);
  std::ofstream(path) << text;
  return path;
}

std::string PipelineTest::Read(const std::string& name) const { return ReadFile(Path(name)); }

int PipelineTest::Count(const std::string& name, const std::string& text) const {
  const std::string all = Read(name);
  int n = 0;
  for (size_t at = all.find(text); at != std::string::npos; at = all.find(text, at + 1)) ++n;
  return n;
}

void PipelineTest::StartRun(const std::string& config, const std::string& log) {
  run_log_ = log;
  run_ = std::make_unique<Subprocess>(
      std::vector<std::string>{PgderiveBinary(), "run", "-c", config}, Path(log));
}

void PipelineTest::WaitReady(std::chrono::milliseconds timeout) {
  ASSERT_TRUE(WaitFor([&] { return Http("/readyz").first == 200; }, timeout))
      << Http("/readyz").second << RunLog();
}

void PipelineTest::StopRun(std::chrono::milliseconds timeout) {
  ASSERT_TRUE(run_);
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(timeout), std::optional<int>(0)) << RunLog();
  run_.reset();
}

bool PipelineTest::WaitLog(const std::string& log, const std::string& text, int times) {
  return WaitFor(
             [&] { return Count(log, text) >= times || (run_ && run_->Wait({}).has_value()); }) &&
         Count(log, text) >= times;
}

std::pair<long, std::string> PipelineTest::HttpRequest(const std::string& base,
                                                       const std::string& method,
                                                       const std::string& path,
                                                       const std::string& body) {
  auto client =
      HttpClient::Create({.url = base, .ca_file = "", .timeout = std::chrono::seconds(10)});
  if (!client.ok()) return {0, ""};
  auto response = client.value().Send(method, path, body);
  if (!response.ok()) return {0, ""};
  return {response.value().status, response.value().body};
}

std::pair<long, std::string> PipelineTest::Http(const std::string& path) const {
  return HttpRequest("http://127.0.0.1:" + std::to_string(port_), "GET", path);
}

nlohmann::json PipelineTest::Status() const {
  const auto [code, body] = Http("/status");
  if (code == 0) return nullptr;
  const nlohmann::json status = nlohmann::json::parse(body, nullptr, false);
  return status.is_discarded() ? nlohmann::json(nullptr) : status;
}

nlohmann::json PipelineTest::ViewStatus(const std::string& view) const {
  const nlohmann::json status = Status();
  if (!status.is_object() || !status.contains("views") || !status["views"].is_array()) {
    return nullptr;
  }
  for (const auto& v : status["views"]) {
    if (v.is_object() && v.value("name", "") == view) return v;
  }
  return nullptr;
}

std::pair<int, std::string> PipelineTest::Command(const std::vector<std::string>& args,
                                                  std::chrono::seconds patience) {
  return RunToEnd(args, Path("command.err"), patience);
}

}  // namespace pgderive::testing
