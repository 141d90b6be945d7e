#include "app/reload.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "app/validate.h"
#include "base/redact.h"
#include "sinks/opensearch/http_client.h"

namespace pgderive {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  size_t from = 0;
  while (from < text.size()) {
    size_t end = text.find('\n', from);
    if (end == std::string::npos) end = text.size();
    if (end > from) out.push_back(text.substr(from, end - from));
    from = end + 1;
  }
  return out;
}

std::string Canonical(const std::string& path) {
  std::error_code error;
  const auto canonical = std::filesystem::weakly_canonical(path, error);
  return error ? path : canonical.string();
}

nlohmann::json ToJson(const Reloader::Answer& answer) {
  nlohmann::json j = {{"result", answer.result}, {"generation", answer.generation}};
  if (!answer.changes.empty()) j["changes"] = answer.changes;
  if (!answer.problems.empty()) j["problems"] = answer.problems;
  if (!answer.message.empty()) j["message"] = answer.message;
  return j;
}

}  // namespace

Reloader::Reloader(std::string path, Logger& logger, RunHost& host)
    : path_(std::move(path)), logger_(logger), host_(host) {}

void Reloader::SetRunning(std::shared_ptr<const Config> config, uint64_t number) {
  std::lock_guard lock(mutex_);
  running_ = std::move(config);
  generation_ = number;
  accepted_.reset();
}

std::optional<Reloader::Accepted> Reloader::TakeAccepted() {
  std::lock_guard lock(mutex_);
  return accepted_;
}

Reloader::Answer Reloader::Refuse(Answer answer, const std::string& via) {
  answer.result = "refused";
  logger_.Error("configuration reload refused; the running configuration stays",
                {{"file", path_},
                 {"via", via},
                 {"generation", std::to_string(answer.generation)},
                 {"problems", std::to_string(answer.problems.size())}});
  for (const std::string& line : answer.problems) {
    logger_.Error("reload refused: " + line, {{"file", path_}});
  }
  host_.SetOutcome({.result = "refused",
                    .generation = answer.generation,
                    .message = answer.message,
                    .at = std::chrono::system_clock::now()});
  return answer;
}

Reloader::Answer Reloader::Request(const std::string& via, const std::string& file) {
  std::lock_guard request(request_mutex_);
  Answer answer;
  std::shared_ptr<const Config> running;
  {
    std::lock_guard lock(mutex_);
    running = running_;
    answer.generation = generation_;
    if (accepted_) {
      answer.result = "busy";
      answer.message = "a reload to generation " + std::to_string(accepted_->generation) +
                       " is under way; ask again once it serves";
    } else if (!running) {
      answer.result = "busy";
      answer.message = "the pipeline is still starting; ask again once it streams";
    }
  }
  if (answer.result == "busy") {
    // Said, not queued: the file is read when the request is made again.
    logger_.Warn("configuration reload not made: " + answer.message,
                 {{"file", path_}, {"via", via}});
    return answer;
  }
  logger_.Info("reloading the configuration", {{"file", path_}, {"via", via}});
  if (!file.empty() && Canonical(file) != Canonical(path_)) {
    answer.message = "the running pipeline reads " + path_ + ", not " + file +
                     ": edit and reload that file (the file a process reads is fixed at start)";
    answer.problems.push_back(file + ": " + answer.message);
    return Refuse(answer, via);
  }
  // 1. The file, with validate's messages.
  ConfigResult loaded = LoadConfigFile(path_);
  if (!loaded.config) {
    answer.problems = Lines(loaded.Describe(path_));
    answer.message = "the file has " + std::to_string(answer.problems.size()) + " problem(s)";
    return Refuse(answer, via);
  }
  auto next = std::make_shared<const Config>(std::move(*loaded.config));
  // 2. What it changes; what cannot change while running.
  const ConfigChange change = CompareConfigs(*running, *next);
  if (!change.refused.empty()) {
    ConfigResult refused;
    refused.problems = change.refused;
    answer.problems = Lines(refused.Describe(path_));
    answer.message = "the file changes what cannot change while pgderive runs";
    return Refuse(answer, via);
  }
  // 3. Nothing to do.
  if (change.empty()) {
    answer.result = "unchanged";
    answer.changes = change.Summary();
    logger_.Info("configuration reload: nothing changed",
                 {{"file", path_}, {"generation", std::to_string(answer.generation)}});
    host_.SetOutcome({.result = "unchanged",
                      .generation = answer.generation,
                      .message = change.kept_until_restart.empty()
                                     ? ""
                                     : "kept until the next start: " + change.Summary(),
                      .at = std::chrono::system_clock::now()});
    return answer;
  }
  // 4. Against the servers, as `validate --connect` and a start check it.
  ConfigResult checked;
  checked.problems = CheckConnected(*next);
  if (!checked.problems.empty()) {
    answer.problems = Lines(RedactSecrets(checked.Describe(path_)));
    answer.message = "the configuration does not work with these servers";
    return Refuse(answer, via);
  }
  // 5. Handed to the run loop.
  answer.result = "accepted";
  answer.changes = change.Summary();
  {
    std::lock_guard lock(mutex_);
    answer.generation = generation_ + 1;
    accepted_ = Accepted{next, change, answer.generation, FileHash(path_)};
  }
  logger_.Info("configuration reload accepted: restarting the pipeline with it",
               {{"file", path_},
                {"generation", std::to_string(answer.generation)},
                {"changes", answer.changes}});
  host_.RequestRestart();
  return answer;
}

std::pair<int, std::string> Reloader::HandleHttp(const std::string& body) {
  std::string file;
  if (!body.empty()) {
    const auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_object() && j.contains("file") && j["file"].is_string()) file = j["file"];
  }
  const Answer answer = Request("pgderive reload", file);
  const int status = answer.result == "refused" ? 422 : answer.result == "busy" ? 409 : 200;
  return {status, ToJson(answer).dump()};
}

// ------------------------------------------------------------------ pgderive reload

namespace {

Result<HttpResponse> Call(const std::string& listen, const std::string& method,
                          const std::string& path, const std::string& body,
                          std::chrono::seconds timeout) {
  auto client = HttpClient::Create({.url = "http://" + listen, .ca_file = "", .timeout = timeout});
  if (!client.ok()) return client.error();
  return client.value().Send(method, path, body);
}

}  // namespace

int RunReload(const ReloadOptions& options) {
  const std::optional<Config> loaded = LoadConfigOrReport(options.config_path, stderr);
  if (!loaded) {
    std::fprintf(stderr,
                 "pgderive reload: refused; nothing was sent (the running configuration "
                 "stays)\n");
    return 2;
  }
  const Config& config = *loaded;
  const std::string listen = config.http.listen;
  const nlohmann::json request = {{"file", Canonical(options.config_path)}};
  auto sent = Call(listen, "POST", "/reload", request.dump(), std::chrono::seconds(120));
  if (!sent.ok()) {
    std::fprintf(stderr,
                 "pgderive reload: nothing answers on http://%s (http.listen): is `pgderive run "
                 "-c %s` running? (`kill -HUP` its pid reloads it as well)\n",
                 listen.c_str(), options.config_path.c_str());
    return 1;
  }
  const auto answer = nlohmann::json::parse(sent.value().body, nullptr, false);
  if (!answer.is_object() || !answer.contains("result")) {
    std::fprintf(stderr, "pgderive reload: http://%s/reload answered %ld: %s\n", listen.c_str(),
                 sent.value().status, sent.value().body.c_str());
    return 1;
  }
  const std::string result = answer.value("result", "");
  const uint64_t generation = answer.value("generation", uint64_t{0});
  if (result == "refused") {
    for (const auto& line : answer.value("problems", nlohmann::json::array())) {
      std::fprintf(stderr, "%s\n", line.get<std::string>().c_str());
    }
    std::fprintf(stderr, "pgderive reload: refused (%s); the running configuration stays\n",
                 answer.value("message", "").c_str());
    return 2;
  }
  if (result == "busy") {
    std::fprintf(stderr, "pgderive reload: %s\n", answer.value("message", "").c_str());
    return 1;
  }
  if (result == "unchanged") {
    std::fprintf(options.out, "configuration unchanged: generation %llu serves\n",
                 static_cast<unsigned long long>(generation));
    return 0;
  }
  std::fprintf(options.out, "reload accepted: generation %llu (%s)\n",
               static_cast<unsigned long long>(generation), answer.value("changes", "").c_str());
  std::fflush(options.out);
  // Until the new generation streams (or failed to start, and the previous one runs
  // again).
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto status = Call(listen, "GET", "/status", "", std::chrono::seconds(5));
    if (status.ok() && status.value().status == 200) {
      const auto s = nlohmann::json::parse(status.value().body, nullptr, false);
      if (s.is_object() && s.contains("config")) {
        const auto& c = s["config"];
        const auto last = c.value("last_reload", nlohmann::json::object());
        if (last.value("result", "") == "failed" &&
            last.value("generation", uint64_t{0}) == generation) {
          std::fprintf(stderr,
                       "pgderive reload: generation %llu failed to start: %s; the previous "
                       "configuration runs again\n",
                       static_cast<unsigned long long>(generation),
                       last.value("message", "").c_str());
          return 1;
        }
        if (c.value("generation", uint64_t{0}) == generation && !s.value("reloading", true)) {
          std::fprintf(options.out, "generation %llu serves (file hash %s, loaded %s)\n",
                       static_cast<unsigned long long>(generation), c.value("hash", "").c_str(),
                       c.value("loaded_at", "").c_str());
          return 0;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::fprintf(stderr,
               "pgderive reload: generation %llu does not serve after %lld s (`pgderive status "
               "-c %s` and the log say where it is)\n",
               static_cast<unsigned long long>(generation),
               static_cast<long long>(options.timeout.count()), options.config_path.c_str());
  return 1;
}

}  // namespace pgderive
