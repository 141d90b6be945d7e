#include "pipeline/run_host.h"

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "base/retry.h"
#include "cdc/sql_session.h"

namespace pgderive {
namespace {

std::string UtcText(std::chrono::system_clock::time_point at) {
  const std::time_t t = std::chrono::system_clock::to_time_t(at);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

double UnixSeconds(std::chrono::system_clock::time_point at) {
  return std::chrono::duration<double>(at.time_since_epoch()).count();
}

}  // namespace

RunHost::RunHost(std::optional<PipelineLock> lock, std::string pipeline)
    : lock_(std::move(lock)), pipeline_(std::move(pipeline)) {}

// The endpoint stops before the state its handlers read; the lock is released last.
RunHost::~RunHost() { http_.reset(); }

Result<int> RunHost::Serve(const std::string& listen, HttpServer::Handlers handlers) {
  {
    std::lock_guard lock(mutex_);
    current_ = std::move(handlers);
    if (http_) return http_->port();
  }
  auto http = HttpServer::Start(
      listen, {.not_ready = [this] { return NotReady(); },
               .metrics = [this] { return RenderMetrics(); },
               .status_json = [this] { return StatusJson(); },
               .reload = [this](const std::string& body) -> std::pair<int, std::string> {
                 std::function<std::pair<int, std::string>(const std::string&)> reload;
                 {
                   std::lock_guard lock(mutex_);
                   reload = reload_;
                 }
                 if (!reload) return {404, R"({"error":"this process does not reload"})"};
                 // Outside the lock: a reload checks the file against the servers.
                 return reload(body);
               },
               .version = [this](const std::string& action,
                                 const std::string& body) -> std::pair<int, std::string> {
                 std::lock_guard lock(mutex_);
                 if (!current_.version) {
                   return {503, R"({"result":"busy","message":"the pipeline is reloading or )"
                                R"(starting; ask again once it streams"})"};
                 }
                 return current_.version(action, body);
               }});
  if (!http.ok()) {
    std::lock_guard lock(mutex_);
    current_ = {};
    return http.error();
  }
  std::lock_guard lock(mutex_);
  http_ = std::move(http).value();
  return http_->port();
}

void RunHost::Unserve() {
  std::lock_guard lock(mutex_);
  current_ = {};
}

void RunHost::SetReloadHandler(
    std::function<std::pair<int, std::string>(const std::string&)> handler) {
  std::lock_guard lock(mutex_);
  reload_ = std::move(handler);
}

void RunHost::SetGeneration(ConfigGeneration generation) {
  std::lock_guard lock(mutex_);
  generation_ = std::move(generation);
}

void RunHost::SetOutcome(ReloadOutcome outcome) {
  std::lock_guard lock(mutex_);
  if (outcome.result == "applied") ++reloads_applied_;
  if (outcome.result == "refused") ++reloads_refused_;
  if (outcome.result == "failed") ++reloads_failed_;
  outcome_ = std::move(outcome);
}

std::optional<ConfigGeneration> RunHost::generation() const {
  std::lock_guard lock(mutex_);
  return generation_;
}

std::string RunHost::ConfigJson() const {
  nlohmann::json config = nlohmann::json::object();
  if (generation_) {
    config = {{"file", generation_->file},
              {"generation", generation_->number},
              {"hash", generation_->hash},
              {"loaded_at", UtcText(generation_->loaded_at)}};
  }
  if (outcome_) {
    nlohmann::json last = {{"result", outcome_->result},
                           {"generation", outcome_->generation},
                           {"at", UtcText(outcome_->at)}};
    if (!outcome_->message.empty()) last["message"] = outcome_->message;
    config["last_reload"] = last;
  }
  return config.dump();
}

std::string RunHost::StatusJson() {
  std::lock_guard lock(mutex_);
  nlohmann::json status;
  if (current_.status_json) {
    status = nlohmann::json::parse(current_.status_json(), nullptr, false);
    if (status.is_discarded() || !status.is_object()) status = nlohmann::json::object();
  } else {
    status = {{"pipeline", pipeline_},
              {"state", "reloading"},
              {"stream_connected", false},
              {"ready", false}};
  }
  status["config"] = nlohmann::json::parse(ConfigJson());
  status["reloading"] = !current_.status_json;
  return status.dump();
}

std::vector<std::string> RunHost::NotReady() {
  std::lock_guard lock(mutex_);
  if (!current_.not_ready) return {"reloading the configuration"};
  return current_.not_ready();
}

std::string RunHost::RenderMetrics() {
  std::lock_guard lock(mutex_);
  Metrics own;
  if (generation_) {
    own.gauge("pgderive_config_generation",
              "The generation of the configuration serving: 1 at start, +1 for each reload "
              "applied")
        .Set(static_cast<double>(generation_->number));
    own.gauge("pgderive_config_loaded_timestamp_seconds",
              "When the configuration serving was loaded (Unix time)")
        .Set(UnixSeconds(generation_->loaded_at));
  }
  for (const auto& [result, count] : {std::pair<const char*, uint64_t>{"applied", reloads_applied_},
                                      {"refused", reloads_refused_},
                                      {"failed", reloads_failed_}}) {
    own.counter("pgderive_config_reloads_total",
                "Reload requests (SIGHUP, POST /reload) by outcome: applied, refused (the file "
                "is invalid or changes what cannot change while running; the running "
                "configuration stays), failed (the new configuration did not start; the "
                "previous one runs again)",
                {{"result", result}})
        .Add(static_cast<double>(count));
  }
  return (current_.metrics ? current_.metrics() : std::string()) + own.Render();
}

std::string FileHash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

Status WaitForSlotReleased(const std::string& dsn, const std::string& slot,
                           std::chrono::milliseconds timeout,
                           const std::function<bool()>& stopped) {
  auto sql = SqlSession::Connect(dsn, "pgderive-run");
  if (!sql.ok()) return sql.error();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto active = sql.value().Query("select active from pg_replication_slots where slot_name = " +
                                    sql.value().QuoteLiteral(slot));
    if (!active.ok()) return active.error();
    if (active.value().rows.empty() || active.value().rows[0][0].value_or("") != "t") {
      return Status::Ok();
    }
    if (stopped() || std::chrono::steady_clock::now() >= deadline) {
      return Error::Transient("slot " + slot + " is still active");
    }
    WaitUnlessStopped(std::chrono::milliseconds(50), stopped);
  }
}

}  // namespace pgderive
