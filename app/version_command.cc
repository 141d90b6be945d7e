#include "app/version_command.h"

#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "app/progress_watch.h"
#include "config/config.h"
#include "sinks/opensearch/http_client.h"

namespace pgderive {
namespace {

// The view's versions as /status lists them; nullopt when nothing answers.
std::optional<nlohmann::json> VersionsOf(const std::string& listen, const std::string& view) {
  auto client = HttpClient::Create(
      {.url = "http://" + listen, .ca_file = "", .timeout = std::chrono::seconds(3)});
  if (!client.ok()) return std::nullopt;
  auto response = client.value().Send("GET", "/status");
  if (!response.ok() || response.value().status != 200) return std::nullopt;
  const auto status = nlohmann::json::parse(response.value().body, nullptr, false);
  if (!status.is_object()) return std::nullopt;
  for (const auto& v : status.value("views", nlohmann::json::array())) {
    if (v.value("name", "") == view) return v.value("versions", nlohmann::json::array());
  }
  return nlohmann::json::array();
}

std::optional<int> InState(const nlohmann::json& versions, const std::string& state) {
  for (const auto& v : versions) {
    if (v.value("state", "") == state) return v.value("generation", 0);
  }
  return std::nullopt;
}

}  // namespace

int RunVersionCommand(const VersionCommandOptions& options) {
  const char* command = options.rollback ? "rollback" : "promote";
  const std::optional<Config> loaded = LoadConfigOrReport(options.config_path, stderr);
  if (!loaded) return 2;
  const Config& config = *loaded;
  auto fail = [&](int code, const std::string& message) {
    std::fprintf(stderr, "pgderive %s: %s\n", command, message.c_str());
    return code;
  };
  auto found = config.FindView(options.view);
  if (!found.ok()) return fail(2, found.error().message());
  const ViewConfig* view = found.value();
  const std::string& listen = config.http.listen;
  auto post = [&]() -> std::optional<std::pair<long, nlohmann::json>> {
    auto client = HttpClient::Create(
        {.url = "http://" + listen, .ca_file = "", .timeout = std::chrono::seconds(120)});
    if (!client.ok()) return std::nullopt;
    auto response = client.value().Send("POST", std::string("/") + command,
                                        nlohmann::json{{"view", view->name}}.dump());
    if (!response.ok()) return std::nullopt;
    auto body = nlohmann::json::parse(response.value().body, nullptr, false);
    if (!body.is_object()) body = nlohmann::json::object();
    return std::make_pair(static_cast<long>(response.value().status), body);
  };
  const std::string nothing = "nothing answers on http://" + listen +
                              " (http.listen): is `pgderive run -c " + options.config_path +
                              "` running?";
  if (options.rollback || !options.wait) {
    auto answer = post();
    if (!answer) return fail(1, nothing);
    const std::string message = answer->second.value("message", "");
    if (answer->first != 200) return fail(1, message.empty() ? "refused" : message);
    std::fprintf(options.out, "%s\n", message.c_str());
    return 0;
  }
  // promote, waiting: the building version's progress until it is ready, then the switch.
  const auto started = std::chrono::steady_clock::now();
  std::optional<ProgressLine> line;
  std::optional<int> waited_for;
  // The version serving when the command started: a later one serving means the new
  // version was built and switched (promote: auto) before /status ever listed it building.
  std::optional<std::optional<int>> first_serving;
  while (true) {
    const std::optional<nlohmann::json> versions = VersionsOf(listen, view->name);
    if (versions && !first_serving) first_serving = InState(*versions, "serving");
    if (versions && !waited_for && first_serving) {
      const std::optional<int> serving = InState(*versions, "serving");
      if (serving && (!*first_serving || *serving > **first_serving)) waited_for = serving;
    }
    if (versions) {
      if (auto building = InState(*versions, "building")) {
        waited_for = building;
        if (!line) {
          line.emplace(ViewProgressLine(
              options.out, "view " + view->name + " version " + std::to_string(*building),
              options.interval));
        }
        line->Update(SampleOf(ReadViewProgress(listen, view->store, view->name), listen));
      } else if (waited_for && InState(*versions, "serving") == waited_for) {
        // Promoted as soon as it was ready (promote: auto).
        const std::string said = "version " + std::to_string(*waited_for) + " of view " +
                                 view->name + " serves (switched when it was ready)";
        if (line) {
          line->Finish("ready, switched");
        }
        std::fprintf(options.out, "%s\n", said.c_str());
        return 0;
      } else {
        auto answer = post();
        if (!answer) return fail(1, nothing);
        const std::string message = answer->second.value("message", "");
        if (answer->first == 200) {
          if (line) line->Finish("ready, promoted");
          std::fprintf(options.out, "%s\n", message.c_str());
          return 0;
        }
        // Switched between the two requests: said by the next /status.
        const std::optional<nlohmann::json> again = VersionsOf(listen, view->name);
        if (waited_for && again && InState(*again, "serving") == waited_for) continue;
        // /status lags the run by a moment: right after a reload the new version may not
        // be listed yet (refused: none to promote) or listed as ready while it still
        // builds (refused: not ready). Both are waited out, the first for 15 s.
        const bool building = message.find(" is not ready (building") != std::string::npos;
        const bool not_yet = message.find(" has no new version to promote") != std::string::npos &&
                             std::chrono::steady_clock::now() - started < std::chrono::seconds(15);
        if (!building && !not_yet) {
          if (line) line->Finish("refused");
          return fail(1, message.empty() ? "refused" : message);
        }
      }
    } else if (line) {
      line->Update(SampleOf(ViewProgress{}, listen));
    }
    if (options.timeout.count() > 0 &&
        std::chrono::steady_clock::now() - started >= options.timeout) {
      if (line) line->Finish("not ready after " + std::to_string(options.timeout.count()) + " s");
      return fail(1, versions ? "the new version of view " + view->name + " is not ready after " +
                                    std::to_string(options.timeout.count()) + " s"
                              : nothing);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace pgderive
