#pragma once

// The fixture base of the tests that drive `pgderive run` against real servers: what
// each of them needs before and after its test, written once.
//
//   SetUp:    the stack's endpoints (the shared stack, or a fault test's own), a
//             private temporary directory, a free HTTP port, a unique pipeline name,
//             a SQL connection to the source
//   the test: WriteFile (a config), StartRun / WaitReady / StopRun, Http / ViewStatus,
//             RunLog / Count / WaitLog, Command (another pgderive command to its end),
//             WaitFor (a condition with the suite's deadline)
//   TearDown: the run stopped (SIGTERM, SIGKILL after a minute), the slot and
//             publication of each pipeline dropped, the cleanup statements run, the
//             OpenSearch indexes deleted, on the shared stack the Redis keys `<pipeline>:*` and
//             `pgderive:<pipeline>:*` deleted, the directory removed
//
// A suite derives from PipelineTest, calls UseSharedStack (or UseEndpoints) first in
// its SetUp, and registers what it creates (CleanupSql, CleanupIndex) for TearDown.

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "cdc/pg_connection.h"
#include "tests/support/stack_env.h"
#include "tests/support/subprocess.h"
#include "tests/support/wait.h"

namespace pgderive::testing {

struct Endpoints {
  std::string pg_dsn;
  std::string redis_url;
  std::string opensearch_url;
};

class PipelineTest : public ::testing::Test {
 protected:
  // The shared stack named by PGDERIVE_STACK_ENV (a fatal failure when it is missing):
  // a directory and a pipeline named `prefix`_<unique>. Check HasFatalFailure after it.
  void UseSharedStack(const std::string& prefix);
  // A fault test's own stack: `dir` is the stack's (kept at TearDown), the pipeline
  // named `pipeline` as it is.
  void UseEndpoints(const Endpoints& endpoints, const std::filesystem::path& dir,
                    const std::string& pipeline);
  void TearDown() override;

  // Run at TearDown, errors ignored (e.g. "drop table if exists ..."), in order.
  void CleanupSql(const std::string& statement) { cleanup_sql_.push_back(statement); }
  // Deleted at TearDown.
  void CleanupIndex(const std::string& index) { cleanup_indexes_.push_back(index); }
  // Another pipeline whose slot and publication TearDown drops.
  void CleanupPipeline(const std::string& pipeline) { pipelines_.push_back(pipeline); }

  // `text` into `name` below the directory; its path.
  std::string WriteFile(const std::string& name, const std::string& text) const;
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  // A file of the directory ("" when it cannot be read).
  std::string Read(const std::string& name) const;
  // The log (stderr) of the last StartRun.
  std::string RunLog() const { return Read(run_log_); }
  // How many times `text` occurs in the file `name`.
  int Count(const std::string& name, const std::string& text) const;

  // `pgderive run -c config`, its stderr into `log` below the directory.
  void StartRun(const std::string& config, const std::string& log = "run.err");
  // Until /readyz answers 200 (a fatal failure naming the run's log otherwise).
  void WaitReady(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // SIGTERM; expects exit status 0 within `timeout`.
  void StopRun(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Until `text` occurs `times` times in the log `log`; false at once if the run exits.
  bool WaitLog(const std::string& log, const std::string& text, int times = 1);

  // A request to `base` (e.g. the OpenSearch URL): (status, body), status 0 when
  // nothing answers.
  static std::pair<long, std::string> HttpRequest(const std::string& base,
                                                  const std::string& method,
                                                  const std::string& path,
                                                  const std::string& body = "");
  // GET on the run's HTTP endpoint.
  std::pair<long, std::string> Http(const std::string& path) const;
  // /status as JSON (null when it does not answer), and one view's entry of it.
  nlohmann::json Status() const;
  nlohmann::json ViewStatus(const std::string& view) const;
  // Another command to its end, stderr into command.err: exit status (-1 if it hangs)
  // and stdout followed by stderr.
  std::pair<int, std::string> Command(const std::vector<std::string>& args,
                                      std::chrono::seconds patience = std::chrono::seconds(60));

  // Polls `condition` until it holds or `timeout` (the suite's deadline_ by default)
  // passes.
  template <typename F>
  bool WaitFor(F condition, std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) {
    return testing::WaitFor(condition, timeout.count() > 0 ? timeout : deadline_);
  }

  Endpoints endpoints_;
  std::string pipeline_;
  std::filesystem::path dir_;
  int port_ = 0;
  std::unique_ptr<PgConnection> sql_;
  std::unique_ptr<Subprocess> run_;
  std::chrono::milliseconds deadline_ = std::chrono::seconds(60);

 private:
  void Open();

  bool own_dir_ = false;
  std::string run_log_ = "run.err";
  std::vector<std::string> pipelines_;
  std::vector<std::string> cleanup_sql_;
  std::vector<std::string> cleanup_indexes_;
};

}  // namespace pgderive::testing
