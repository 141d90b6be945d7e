#include "app/run.h"

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <set>

#include "app/reload.h"
#include "app/sink_factory.h"
#include "app/validate.h"
#include "base/log.h"
#include "base/redact.h"
#include "base/stoppable_thread.h"
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

constexpr auto kSlotReleaseWait = std::chrono::seconds(30);
// How long `run` waits for a walsender on its slot without the lock to end.
constexpr auto kWalsenderPatience = std::chrono::seconds(30);
constexpr auto kSignalPoll = std::chrono::milliseconds(100);

bool Stopped(const RunOptions& options) { return options.stop != nullptr && options.stop->load(); }

// One generation: the pipeline with `config` from its start to its end. nullopt: it
// ended for a reload; else the exit code. `on_streaming` is called once it streams.
// `waited`: stores that did not answer the start-up checks, waited for (Pipeline::
// WaitForStores) and checked once they answer.
std::optional<int> RunGeneration(const RunOptions& options, const Config& config,
                                 const std::set<std::string>& redefined,
                                 const std::set<std::string>& waited, Logger& logger, RunHost& host,
                                 const std::function<void()>& on_streaming) {
  auto sinks = MakeSinks(config);
  if (!sinks.ok()) {
    logger.Error(sinks.error().message(),
                 {{"pipeline", config.pipeline}, {"slot", config.source.slot}});
    return 1;
  }
  Pipeline pipeline(config, std::move(sinks).value(), options.stop, logger, host);
  pipeline.RebuildViews(redefined);
  if (!waited.empty()) {
    pipeline.WaitForStores(waited, [&](const std::string& store) {
      ConfigResult checked;
      checked.problems = CheckConnectedStore(config, store);
      Pipeline::StoreCheck check;
      check.answers = std::none_of(checked.problems.begin(), checked.problems.end(),
                                   [](const ConfigProblem& p) { return p.unreachable; });
      if (!checked.problems.empty()) {
        check.problems = RedactSecrets(checked.Describe(options.config_path));
        while (!check.problems.empty() && check.problems.back() == '\n') check.problems.pop_back();
      }
      return check;
    });
  }
  if (auto code = pipeline.Start()) return *code;
  on_streaming();
  const int code = pipeline.Run();
  if (code == 0 && host.restart_requested() && !Stopped(options)) return std::nullopt;
  return code;
}

// Generation after generation (app/reload.h): each runs until a reload is accepted,
// then the next starts with the file's new configuration. Should that one fail to
// start, the previous configuration runs again. The host (the lock, the endpoint)
// stays all along.
int RunGenerations(const RunOptions& options, std::shared_ptr<const Config> config, Logger& logger,
                   RunHost& host, std::set<std::string> waited) {
  Reloader reloader(options.config_path, logger, host);
  host.SetReloadHandler([&](const std::string& body) { return reloader.HandleHttp(body); });
  // SIGHUP sets a flag (all a signal handler may do): this thread turns it into a request.
  StoppableThread signals;
  if (options.reload != nullptr) {
    signals.Start([&](std::stop_token stop) {
      std::mutex mutex;
      std::condition_variable_any wake;
      while (!stop.stop_requested()) {
        if (options.reload->exchange(false)) reloader.Request("SIGHUP");
        std::unique_lock lock(mutex);
        wake.wait_for(lock, stop, kSignalPoll, [] { return false; });
      }
    });
  }
  uint64_t number = 1;
  std::string hash = FileHash(options.config_path);
  std::set<std::string> redefined;
  bool applying = false;                   // this generation is a reload being applied
  std::shared_ptr<const Config> previous;  // what ran before it
  uint64_t previous_number = 0;
  while (true) {
    auto on_streaming = [&] {
      reloader.SetRunning(config, number);
      host.SetGeneration({.number = number,
                          .file = options.config_path,
                          .hash = hash,
                          .loaded_at = std::chrono::system_clock::now()});
      if (!applying) return;
      host.SetOutcome({.result = "applied",
                       .generation = number,
                       .message = "",
                       .at = std::chrono::system_clock::now()});
      logger.Info("configuration generation " + std::to_string(number) + " serves",
                  {{"file", options.config_path}, {"hash", hash}});
    };
    const std::optional<int> code =
        RunGeneration(options, *config, redefined, waited, logger, host, on_streaming);
    waited.clear();  // the first generation's
    // A lock lost to another process ends the run: no generation falls back then.
    const bool lock_lost = host.lock() != nullptr && host.lock()->lost();
    const bool failed_reload = code && *code != 0 && applying && !Stopped(options) && !lock_lost &&
                               previous && host.generation() &&
                               host.generation()->number == previous_number;
    if (code && !failed_reload) return *code;
    // The next generation takes the slot once the server let this one's go.
    Status released = WaitForSlotReleased(config->source.dsn, config->source.slot, kSlotReleaseWait,
                                          [&] { return Stopped(options); });
    if (!released.ok() && !Stopped(options)) {
      logger.Warn("the slot is not released yet: " + released.error().message(),
                  {{"slot", config->source.slot}});
    }
    if (Stopped(options)) return 0;
    if (failed_reload) {
      logger.Error("configuration generation " + std::to_string(number) +
                       " did not start; the previous configuration (generation " +
                       std::to_string(previous_number) + ") runs again",
                   {{"file", options.config_path}});
      host.SetOutcome({.result = "failed",
                       .generation = number,
                       .message = "it did not start (exit code " + std::to_string(*code) +
                                  "; the log says why); generation " +
                                  std::to_string(previous_number) + " runs again",
                       .at = std::chrono::system_clock::now()});
      config = previous;
      number = previous_number;
      hash = host.generation()->hash;
      redefined.clear();
      applying = false;
      previous.reset();
      continue;
    }
    std::optional<Reloader::Accepted> accepted = reloader.TakeAccepted();
    host.ClearRestart();
    if (!accepted) continue;  // cannot happen: a restart is asked for with one
    previous = config;
    previous_number = number;
    config = accepted->config;
    number = accepted->generation;
    hash = accepted->hash;
    redefined = {accepted->change.views_redefined.begin(), accepted->change.views_redefined.end()};
    applying = true;
  }
}

}  // namespace

int RunPipeline(const RunOptions& options) {
  const std::optional<Config> loaded = LoadConfigOrReport(options.config_path, stderr);
  if (!loaded) return 2;
  const Config& config = *loaded;
  Logger logger(config.log);
  // One process per pipeline: its lock on the source before anything else (run_lock.h).
  // A source that cannot be reached is reported by the checks below.
  // A walsender left by a process killed a moment ago (a restart after a crash) is waited
  // for; a process holding the lock refuses this one at once.
  auto take_lock = [&] {
    return PipelineLock::TakeAfterWalsender(
        config.source.dsn, config.source.slot, ProcessName("run"), kWalsenderPatience,
        [&](const LockHolder& holder) {
          logger.Info(
              "the slot is still streamed to a session that does not hold the "
              "pipeline's lock (" +
                  holder.Describe() +
                  "), a process that just ended or lost its lock session: waiting "
                  "for it to end",
              {{"pipeline", config.pipeline}, {"slot", config.source.slot}});
        });
  };
  auto lock = take_lock();
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
  bool slot_exists = false;
  checked.problems = CheckConnected(config, nullptr, &slot_exists);
  // A store that does not answer, of a pipeline that already streams (a restart during
  // its outage): run waits for it and checks it once it answers, rather than refusing.
  // On a first start it is refused like every other problem.
  std::set<std::string> waited;
  if (slot_exists && !checked.problems.empty() &&
      std::all_of(checked.problems.begin(), checked.problems.end(),
                  [](const ConfigProblem& p) { return p.unreachable; })) {
    for (const ConfigProblem& problem : checked.problems) {
      const std::string store =
          problem.key.substr(7, problem.key.rfind('.') - 7);  // stores.NAME.url
      waited.insert(store);
      logger.Warn("store " + store + " does not answer: " + RedactSecrets(problem.message) +
                      "; waiting for it (the views wait, the slot keeps the WAL)",
                  {{"pipeline", config.pipeline}, {"store", store}});
    }
    checked.problems.clear();
  }
  if (!checked.problems.empty()) {
    std::fputs(RedactSecrets(checked.Describe(options.config_path)).c_str(), stderr);
    logger.Error(
        "the configuration does not work with these servers; nothing was created",
        {{"pipeline", config.pipeline}, {"problems", std::to_string(checked.problems.size())}});
    return 2;
  }
  if (!lock.ok()) {
    // The source answered the checks since: take it now.
    lock = take_lock();
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
  RunHost host(std::move(lock).value(), config.pipeline);
  return RunGenerations(options, std::make_shared<const Config>(config), logger, host,
                        std::move(waited));
}

}  // namespace pgderive
