#include "app/teardown.h"

#include "app/sink_factory.h"
#include "base/redact.h"
#include "config/config.h"
#include "pipeline/run_lock.h"
#include "pipeline/teardown.h"

namespace pgderive {

int RunTeardown(const TeardownOptions& options) {
  const std::optional<Config> loaded = LoadConfigOrReport(options.config_path, stderr);
  if (!loaded) return 2;
  const Config& config = *loaded;
  auto fail = [&](int code, const std::string& message) {
    std::fprintf(stderr, "pgderive teardown: %s\n", RedactSecrets(message).c_str());
    return code;
  };
  // Held until the end: no `run` of the pipeline starts meanwhile. Taken once no run has
  // held it for the time a running one takes to re-take it after losing its session (a
  // source restart): a run alive is refused, not torn down under it.
  auto lock = PipelineLock::TakeQuiet(config.source.dsn, config.source.slot,
                                      ProcessName("teardown"), kRunRetakeWindow);
  if (!lock.ok()) {
    return fail(1, "cannot reach the source to check that no `pgderive run` of pipeline " +
                       config.pipeline + " is active: " + lock.error().message() +
                       "; nothing was removed");
  }
  if (!lock.value().taken()) {
    return fail(2, "pipeline " + config.pipeline +
                       " is running: " + lock.value().holder()->Describe() +
                       ". Stop it before tearing the pipeline down; nothing was removed");
  }
  auto sinks = MakeSinks(config);
  if (!sinks.ok()) return fail(1, sinks.error().message() + "; nothing was removed");
  const TeardownReport report = TeardownPipeline(config, sinks.value(), options.views);
  for (const std::string& item : report.removed) {
    std::fprintf(options.out, "removed %s\n", RedactSecrets(item).c_str());
  }
  for (const std::string& item : report.kept) {
    std::fprintf(options.out, "kept %s\n", RedactSecrets(item).c_str());
  }
  if (!report.left.empty()) {
    for (const std::string& item : report.left) fail(1, "left " + item);
    return fail(1, "pipeline " + config.pipeline +
                       " is not torn down completely: run teardown again once that is fixed");
  }
  if (report.removed.empty()) {
    std::fprintf(options.out, "pipeline %s: nothing left to remove\n", config.pipeline.c_str());
  } else {
    std::fprintf(options.out, "pipeline %s is torn down%s\n", config.pipeline.c_str(),
                 options.views ? ", its views' data with it" : " (its views' data is kept)");
  }
  return 0;
}

}  // namespace pgderive
