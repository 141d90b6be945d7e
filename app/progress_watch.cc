#include "app/progress_watch.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "sinks/opensearch/http_client.h"

namespace pgderive {

ViewProgress ReadViewProgress(const std::string& listen, const std::string& store,
                              const std::string& view) {
  ViewProgress out;
  auto client = HttpClient::Create(
      {.url = "http://" + listen, .ca_file = "", .timeout = std::chrono::seconds(3)});
  if (!client.ok()) return out;
  auto response = client.value().Send("GET", "/status");
  if (!response.ok() || response.value().status != 200) return out;
  const auto status = nlohmann::json::parse(response.value().body, nullptr, false);
  if (!status.is_object()) return out;
  out.answered = true;
  for (const auto& v : status.value("views", nlohmann::json::array())) {
    if (v.value("name", "") != view || v.value("store", "") != store) continue;
    out.state = v.value("state", "");
    out.rows = v.value("backfill_rows", uint64_t{0});
    out.estimated = v.value("backfill_estimated_rows", uint64_t{0});
    out.reason = v.value("reason", "");
  }
  if (out.state.empty() && status.value("reloading", false)) out.state = "reloading";
  return out;
}

ProgressSample SampleOf(const ViewProgress& progress, const std::string& listen) {
  ProgressSample sample{.rows = progress.rows, .estimated = progress.estimated, .note = ""};
  if (!progress.answered) {
    sample.note = "waiting: nothing answers on http://" + listen + " (is `pgderive run` running?)";
  } else if (progress.state == "live") {
    sample.note = "waiting for the running pipeline to reach the request";
  } else if (progress.state != "backfilling") {
    sample.note =
        "waiting: the view is " +
        (progress.state.empty() ? std::string("not in the running pipeline") : progress.state) +
        (progress.reason.empty() ? "" : " (" + progress.reason + ")");
  } else if (progress.rows == 0 && progress.estimated == 0) {
    sample.note = "backfilling, starting";
  }
  return sample;
}

ProgressLine ViewProgressLine(std::FILE* out, const std::string& what,
                              std::chrono::milliseconds plain_interval) {
  return ProgressLine(out, isatty(fileno(out)) == 1, what, plain_interval);
}

}  // namespace pgderive
