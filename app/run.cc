#include "app/run.h"

#include <cstdio>

#include "app/sink_factory.h"
#include "app/validate.h"
#include "base/log.h"
#include "base/redact.h"
#include "config/config.h"
#include "pipeline/pipeline.h"

namespace pgderive {

int RunPipeline(const RunOptions& options) {
  const std::optional<Config> loaded = LoadConfigOrReport(options.config_path, stderr);
  if (!loaded) return 2;
  const Config& config = *loaded;
  Logger logger(config.log);
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
  auto sinks = MakeSinks(config);
  if (!sinks.ok()) {
    logger.Error(sinks.error().message(),
                 {{"pipeline", config.pipeline}, {"slot", config.source.slot}});
    return 1;
  }
  Pipeline pipeline(config, std::move(sinks).value(), options.stop, logger);
  if (auto code = pipeline.Start()) return *code;
  return pipeline.Run();
}

}  // namespace pgderive
