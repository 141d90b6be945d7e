// The integrity corpus: each tests/corpus/*.sql file is one input drawn from what breaks
// CDC tools in the field (TOASTed keys, partitioned tables, tables dropped and made
// again, domains, NULL groups, ...). For each, on a fresh database: the schema and the
// rows before, `pgderive run` with the case's views on all three real stores, the writes
// while it streams, then every expectation polled until it holds - the exact content of
// each store, the views' states, /readyz, metrics - and `pgderive verify`.
// tests/corpus/README.md describes the format; a new case is one file.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <stdlib.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "sinks/opensearch/opensearch_client.h"
#include "sinks/redis/redis_client.h"
#include "tests/support/corpus_case.h"
#include "tests/support/pg.h"
#include "tests/support/stack_env.h"
#include "tests/support/subprocess.h"
#include "tests/support/wait.h"

#ifndef PGDERIVE_CORPUS_DIR
#error "PGDERIVE_CORPUS_DIR must be defined by the build"
#endif

namespace pgderive {
namespace {

using nlohmann::json;
using testing::CorpusCase;
using testing::CorpusExpectation;
using testing::CorpusStep;
using testing::MustConnect;
using testing::MustExecute;
using testing::PgderiveBinary;
using testing::Subprocess;
using testing::WaitFor;

// Generous: on two busy cores a case's whole stream normally lands within seconds.
constexpr auto kCatchUp = std::chrono::seconds(180);

// The stack's Redis URL with database 1 instead of its own: the corpus's keys live apart
// from the other suites' (a truncate SCANs its view's pattern over the whole database).
std::string CorpusRedisUrl(const std::string& url) { return url.substr(0, url.rfind('/')) + "/1"; }

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// A JSON text's canonical form (objects' keys sorted), or the text itself when it does
// not parse, so that a malformed value shows up as a difference, not a crash.
std::string Canonical(const std::string& text) {
  try {
    return json::parse(text).dump();
  } catch (const json::exception&) {
    return text;
  }
}

// "KEY JSON" lines as a map KEY -> canonical JSON.
std::map<std::string, std::string> KeyedLines(const std::vector<std::string>& lines) {
  std::map<std::string, std::string> out;
  for (const std::string& line : lines) {
    const auto space = line.find(' ');
    out[line.substr(0, space)] =
        space == std::string::npos ? "" : Canonical(line.substr(space + 1));
  }
  return out;
}

std::string Show(const std::map<std::string, std::string>& entries) {
  std::string out;
  for (const auto& [k, v] : entries) out += "    " + k + " " + v + "\n";
  return out.empty() ? "    (nothing)\n" : out;
}
std::string Show(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += "    " + l + "\n";
  return out.empty() ? "    (nothing)\n" : out;
}

class CorpusTest : public ::testing::TestWithParam<CorpusCase> {
 protected:
  void SetUp() override {
    PGDERIVE_REQUIRE_STACK();
    stack_ = &stack;
    // Lower case, digits and '_' only: it names a database, a slot, indexes and keys.
    // Short, whatever the case's name: the slot and the postgres store's mirror tables
    // ("<pipeline>__<schema>__<table>") must fit PostgreSQL's 63 bytes.
    id_ = testing::UniqueName("c_" + GetParam().name.substr(0, 10));
    std::transform(id_.begin(), id_.end(), id_.begin(),
                   [](unsigned char c) { return std::isalnum(c) ? std::tolower(c) : '_'; });
    setenv("CORPUS_ID", id_.c_str(), 1);
    dir_ = std::filesystem::temp_directory_path() / id_;
    std::filesystem::create_directories(dir_);
    admin_ = std::make_unique<PgConnection>(MustConnect(stack.pg_dsn()));
    MustExecute(*admin_, "create database " + id_);
    created_database_ = true;
    const std::string base = stack.pg_dsn();
    dsn_ = base.substr(0, base.rfind('/') + 1) + id_;
    sql_ = std::make_unique<PgConnection>(MustConnect(dsn_));
    auto redis = RedisClient::Connect(CorpusRedisUrl(stack.redis_url()));
    ASSERT_TRUE(redis.ok()) << redis.error().ToString();
    redis_.emplace(std::move(redis).value());
    auto search = OpenSearchClient::Create(
        {.url = stack.opensearch_url(), .ca_file = "", .timeout = std::chrono::seconds(10)});
    ASSERT_TRUE(search.ok()) << search.error().ToString();
    search_.emplace(std::move(search).value());
    port_ = testing::FreePort();
  }

  void TearDown() override {
    run_.reset();  // kills it if it still runs
    sql_.reset();
    if (redis_) {
      auto keys = redis_->Command({"KEYS", "*" + id_ + "*"});
      if (keys.ok()) {
        for (const RedisReply& k : keys.value().elements) {
          IgnoreError(redis_->Command({"DEL", k.str}).status(), "test cleanup");
        }
      }
    }
    if (search_) IgnoreError(search_->DeleteIndex(id_ + "*", true), "test cleanup");
    if (admin_ && created_database_) {
      IgnoreError(admin_->Execute("select pg_drop_replication_slot(slot_name) from "
                                  "pg_replication_slots where slot_name = 'pgderive_" +
                                  id_ + "'"),
                  "test cleanup");
      IgnoreError(admin_->Execute("drop database if exists " + id_ + " with (force)"),
                  "test cleanup");
    }
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::string Substitute(const std::string& text) const {
    return Replace(text, "${CORPUS_ID}", id_);
  }

  std::string WriteConfig() {
    const std::string path = (dir_ / "pgderive.yml").string();
    std::ofstream(path) << "pipeline: " << id_ << "\nsource:\n  dsn: \"" << dsn_
                        << "\"\nstores:\n  cache:\n    type: redis\n    url: \""
                        << CorpusRedisUrl(stack_->redis_url())
                        << "\"\n  search:\n    type: opensearch\n    url: \""
                        << stack_->opensearch_url() << "\"\n  warehouse:\n    type: postgres\n"
                        << "    dsn: \"" << dsn_ << "\"\nhttp:\n  listen: 127.0.0.1:" << port_
                        << "\nviews:\n"
                        << GetParam().views_yaml;
    return path;
  }

  void StartRun() {
    run_ = std::make_unique<Subprocess>(
        std::vector<std::string>{PgderiveBinary(), "run", "-c", config_},
        (dir_ / ("run" + std::to_string(++runs_) + ".err")).string());
  }

  // Every log of this case's runs, for failure messages.
  std::string RunLogs() const {
    std::string out;
    for (int i = 1; i <= runs_; ++i) {
      const std::string log =
          testing::ReadFile((dir_ / ("run" + std::to_string(i) + ".err")).string());
      out += "--- run " + std::to_string(i) + " (last 6000 bytes)\n" +
             (log.size() > 6000 ? log.substr(log.size() - 6000) : log);
    }
    return out;
  }

  std::optional<json> Status() {
    httplib::Client client("127.0.0.1", port_);
    client.set_connection_timeout(1);
    auto res = client.Get("/status");
    if (!res || res->status != 200) return std::nullopt;
    try {
      return json::parse(res->body);
    } catch (const json::exception&) {
      return std::nullopt;
    }
  }

  // Streaming: connected, and no view still in its initial snapshot. A run that exited
  // (e.g. refused its configuration) ends the wait at once; the caller's check fails.
  bool StreamingOrExited() {
    return run_->Wait(std::chrono::milliseconds(0)).has_value() || Streaming();
  }
  bool Streaming() {
    auto status = Status();
    if (!status || !status->value("stream_connected", false)) return false;
    for (const auto& v : (*status)["views"]) {
      const std::string state = v.value("state", "");
      if (state == "starting" || state == "backfilling") return false;
    }
    return true;
  }

  // Whether `e` holds now; `why` says what differs.
  bool Holds(const CorpusExpectation& e, std::string* why) {
    if (e.kind == "postgres") {
      auto rows = sql_->Query(Substitute(e.argument));
      if (!rows.ok()) {
        *why = "query failed: " + rows.error().ToString();
        return false;
      }
      std::vector<std::string> got;
      for (const auto& row : rows.value().rows) {
        std::string line;
        for (size_t i = 0; i < row.size(); ++i) {
          line += (i ? "|" : "") + row[i].value_or("<null>");
        }
        got.push_back(line);
      }
      std::vector<std::string> want;
      for (const auto& l : e.lines) want.push_back(Substitute(l));
      if (got == want) return true;
      *why = "  expected:\n" + Show(want) + "  found:\n" + Show(got);
      return false;
    }
    if (e.kind == "redis") {
      std::map<std::string, std::string> got;
      auto keys = redis_->Command({"KEYS", Substitute(e.argument)});
      if (!keys.ok()) {
        *why = keys.error().ToString();
        return false;
      }
      for (const RedisReply& k : keys.value().elements) {
        auto value = redis_->Command({"GET", k.str});
        got[k.str] = value.ok() ? Canonical(value.value().str) : "<unreadable>";
      }
      std::vector<std::string> lines;
      for (const auto& l : e.lines) lines.push_back(Substitute(l));
      const auto want = KeyedLines(lines);
      if (got == want) return true;
      *why = "  expected:\n" + Show(want) + "  found:\n" + Show(got);
      return false;
    }
    if (e.kind == "opensearch") {
      const std::string index = Substitute(e.argument);
      std::map<std::string, std::string> got;
      auto exists = search_->IndexExists(index);
      if (exists.ok() && exists.value()) {
        if (auto s = search_->Refresh(index); !s.ok()) {
          *why = s.error().ToString();
          return false;
        }
        auto docs = search_->ScanAll(index);
        if (!docs.ok()) {
          *why = docs.error().ToString();
          return false;
        }
        for (const auto& [id, source] : docs.value()) got[id] = Canonical(source);
      }
      std::vector<std::string> lines;
      for (const auto& l : e.lines) lines.push_back(Substitute(l));
      const auto want = KeyedLines(lines);
      if (got == want) return true;
      *why = "  expected:\n" + Show(want) + "  found:\n" + Show(got);
      return false;
    }
    if (e.kind == "status") {
      auto status = Status();
      if (!status) {
        *why = "no /status";
        return false;
      }
      for (const std::string& line : e.lines) {
        std::istringstream in(line);
        std::string view, state, reason;
        in >> view >> state;
        std::getline(in, reason);
        reason = reason.empty() ? "" : reason.substr(1);
        bool found = false;
        for (const auto& v : (*status)["views"]) {
          if (v.value("name", "") != view) continue;
          found = true;
          if (v.value("state", "") != state ||
              v.value("reason", "").find(reason) == std::string::npos) {
            *why = "  expected " + line + "\n  found " + v.dump();
            return false;
          }
        }
        if (!found) {
          *why = "  view " + view + " not in /status: " + status->dump();
          return false;
        }
      }
      return true;
    }
    if (e.kind == "readyz") {
      httplib::Client client("127.0.0.1", port_);
      auto res = client.Get("/readyz");
      const int code = res ? res->status : -1;
      if (std::to_string(code) == e.argument) return true;
      *why = "  /readyz answered " + std::to_string(code) + (res ? ": " + res->body : "");
      return false;
    }
    if (e.kind == "metric") {
      httplib::Client client("127.0.0.1", port_);
      auto res = client.Get("/metrics");
      if (!res) {
        *why = "no /metrics";
        return false;
      }
      // Each line: SERIES OP VALUE, OP one of = >=.
      for (const std::string& line : e.lines) {
        std::istringstream in(Substitute(line));
        std::string series, op;
        double want = 0;
        in >> series >> op >> want;
        std::optional<double> got;
        std::istringstream text(res->body);
        for (std::string l; std::getline(text, l);) {
          if (l.rfind(series + " ", 0) == 0) got = std::stod(l.substr(series.size() + 1));
        }
        const bool ok = got && (op == ">=" ? *got >= want : *got == want);
        if (!ok) {
          *why = "  expected " + line + "\n  found " + (got ? std::to_string(*got) : "no series");
          return false;
        }
      }
      return true;
    }
    return true;  // verify and validate are checked once, after the rest
  }

  // Polls every expectation until all hold or the deadline passes; fails the test with
  // what still differs.
  void ExpectEventually() {
    std::string why;
    const bool held = WaitFor(
        [&] {
          for (const CorpusExpectation& e : GetParam().expectations) {
            std::string reason;
            if (!Holds(e, &reason)) {
              why = "expect " + e.kind + " " + e.argument + " (line " + std::to_string(e.line) +
                    "):\n" + reason;
              return false;
            }
          }
          return true;
        },
        kCatchUp);
    EXPECT_TRUE(held) << GetParam().name << ": not reached within " << kCatchUp.count() << " s:\n"
                      << why << RunLogs();
  }

  void ExpectRefused(const CorpusExpectation& e) {
    const int want = std::stoi(e.argument);
    for (const std::string command : {"validate", "run"}) {
      std::vector<std::string> argv = {PgderiveBinary(), command, "-c", config_};
      if (command == std::string("validate")) argv.push_back("--connect");
      auto [code, out] = testing::RunToEnd(argv, (dir_ / (command + std::string(".err"))).string(),
                                           std::chrono::seconds(60));
      EXPECT_EQ(code, want) << command << " said:\n" << out;
      for (const std::string& needle : e.lines) {
        EXPECT_NE(out.find(Substitute(needle)), std::string::npos)
            << command << " does not say '" << needle << "':\n"
            << out;
      }
    }
    EXPECT_EQ(testing::Scalar(*sql_,
                              "select count(*) from pg_replication_slots where "
                              "slot_name = 'pgderive_" +
                                  id_ + "'"),
              "0")
        << "a refused run left its slot behind";
    EXPECT_EQ(testing::Scalar(*sql_, "select count(*) from pg_publication"), "0")
        << "a refused run left a publication behind";
  }

  const testing::StackEnv* stack_ = nullptr;
  std::string id_, dsn_, config_;
  std::filesystem::path dir_;
  int port_ = 0;
  int runs_ = 0;
  bool created_database_ = false;
  std::unique_ptr<PgConnection> admin_, sql_;
  std::optional<RedisClient> redis_;
  std::optional<OpenSearchClient> search_;
  std::unique_ptr<Subprocess> run_;
};

TEST_P(CorpusTest, ViewsEndEqualToTheirDefinition) {
  const CorpusCase& c = GetParam();
  if (!c.schema.empty()) MustExecute(*sql_, Substitute(c.schema));
  if (!c.before.empty()) MustExecute(*sql_, Substitute(c.before));
  config_ = WriteConfig();
  if (const CorpusExpectation* refused = c.Find("validate")) {
    ExpectRefused(*refused);
    return;
  }
  StartRun();
  ASSERT_TRUE(WaitFor([&] { return StreamingOrExited(); }, kCatchUp) && Streaming())
      << "run did not start streaming\n"
      << RunLogs();
  for (const CorpusStep& step : c.steps) {
    if (step.kind == CorpusStep::Kind::kStream) {
      auto done = sql_->Execute(Substitute(step.sql));
      ASSERT_TRUE(done.ok()) << "stream section at line " << step.line << ": "
                             << done.error().ToString();
      continue;
    }
    // Restart: a clean stop, then a new run that must stream again.
    run_->Signal(SIGTERM);
    auto code = run_->Wait(std::chrono::seconds(60));
    ASSERT_EQ(code, std::optional<int>(0)) << "run did not stop cleanly\n" << RunLogs();
    StartRun();
    ASSERT_TRUE(WaitFor([&] { return StreamingOrExited(); }, kCatchUp) && Streaming())
        << "run did not stream again after the restart at line " << step.line << "\n"
        << RunLogs();
  }
  ExpectEventually();
  int want_verify = 0;
  if (const CorpusExpectation* v = c.Find("verify")) want_verify = std::stoi(v->argument);
  auto [code, out] = testing::RunVerify(config_, 30);
  EXPECT_EQ(code, want_verify) << "verify said:\n" << out << RunLogs();
  EXPECT_TRUE(run_->Wait(std::chrono::milliseconds(0)) == std::nullopt)
      << "run exited during the case\n"
      << RunLogs();
}

std::string CaseName(const ::testing::TestParamInfo<CorpusCase>& info) {
  std::string name = info.param.name;
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Corpus, CorpusTest,
                         ::testing::ValuesIn(testing::LoadCorpus(PGDERIVE_CORPUS_DIR)), CaseName);

}  // namespace
}  // namespace pgderive
