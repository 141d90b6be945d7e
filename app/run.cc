#include "app/run.h"

#include <cstdio>

#include "app/sink_factory.h"
#include "app/validate.h"
#include "base/log.h"
#include "base/redact.h"
#include "config/config.h"
#include "pipeline/pipeline.h"
#include "pipeline/run_lock.h"

namespace pgderive {
namespace {

std::string AlreadyRunningMessage(const Config& config, const std::string& holder) {
  return "pipeline " + config.pipeline + " is already running: " + holder +
         ". One process runs a pipeline: stop that one first (`pgderive status -c " + config.path +
         "` asks it over HTTP); nothing was done";
}

}  // namespace

int RunPipeline(const RunOptions& options) {
  const std::optional<Config> loaded = LoadConfigOrReport(options.config_path, stderr);
  if (!loaded) return 2;
  const Config& config = *loaded;
  Logger logger(config.log);
  // One process per pipeline: its lock on the source before anything else (run_lock.h).
  // A source that cannot be reached is reported by the checks below.
  auto lock = PipelineLock::Take(config.source.dsn, config.source.slot, ProcessName("run"));
  if (lock.ok() && !lock.value().taken()) {
    const std::string message = AlreadyRunningMessage(config, lock.value().holder()->Describe());
    std::fprintf(stderr, "pgderive run: %s\n", message.c_str());
    logger.Error("another process runs this pipeline; nothing was done",
                 {{"pipeline", config.pipeline}, {"slot", config.source.slot}});
    return 2;
  }
  // The checks of `pgderive validate --connect`, before anything is made: a source or
  // store that cannot work exits 2 with every problem listed, creating nothing.
  ConfigResult checked;
  checked.problems = CheckConnected(config);
  if (!checked.problems.empty()) {
    std::fputs(RedactSecrets(checked.Describe(options.config_path)).c_str(), stderr);
    logger.Error(
        "the configuration does not work with these servers; nothing was created",
        {{"pipeline", config.pipeline}, {"problems", std::to_string(checked.problems.size())}});
    return 2;
  }
  if (!lock.ok()) {
    // The source answered the checks since: take it now.
    lock = PipelineLock::Take(config.source.dsn, config.source.slot, ProcessName("run"));
    if (!lock.ok()) {
      logger.Error("cannot take the pipeline's lock on the source: " + lock.error().message(),
                   {{"pipeline", config.pipeline}, {"slot", config.source.slot}});
      return 1;
    }
    if (!lock.value().taken()) {
      const std::string message = AlreadyRunningMessage(config, lock.value().holder()->Describe());
      std::fprintf(stderr, "pgderive run: %s\n", message.c_str());
      logger.Error("another process runs this pipeline; nothing was done",
                   {{"pipeline", config.pipeline}, {"slot", config.source.slot}});
      return 2;
    }
  }
  auto sinks = MakeSinks(config);
  if (!sinks.ok()) {
    logger.Error(sinks.error().message(),
                 {{"pipeline", config.pipeline}, {"slot", config.source.slot}});
    return 1;
  }
  Pipeline pipeline(config, std::move(sinks).value(), options.stop, logger,
                    std::move(lock).value());
  if (auto code = pipeline.Start()) return *code;
  return pipeline.Run();
}

}  // namespace pgderive
