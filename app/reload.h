#pragma once

// Reloading the configuration of a running `pgderive run` (docs/operations.md, "Reload
// without restart"), and the `pgderive reload -c FILE` command that asks for it.
//
//   SIGHUP, or pgderive reload -c FILE (POST /reload)
//     --> Reloader::Request, beside the running pipeline:
//     1. read the file: a problem -> refused, each "FILE:LINE:COLUMN: key: message"
//        (validate's lines), logged and answered; the running configuration stays
//     2. compare it with the running configuration (config_change.h): a key that cannot
//        change while running (pipeline, source.dsn/slot/publication, http.listen) ->
//        refused at its file:line
//     3. nothing changed -> "unchanged"
//     4. validate --connect's checks against the servers -> refused on any problem
//     5. accepted: RunHost::RequestRestart; the run loop (run.cc) finishes the pipeline
//        and starts the next generation with it (TakeAccepted): views added are
//        backfilled, views redefined rebuilt, views removed no longer written (their data
//        stays where it is: `pgderive teardown --views` with the old file removes it)
//   `pgderive reload` then watches /status until the new generation serves.
//
// SIGHUP is the way without a command (systemd's ExecReload, `kill -HUP`); POST /reload
// is what a command can see the outcome of. Both re-read the file the process was
// started with.

#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/log.h"
#include "config/config.h"
#include "config/config_change.h"
#include "pipeline/run_host.h"

namespace pgderive {

class Reloader {
 public:
  Reloader(std::string path, Logger& logger, RunHost& host);

  // The configuration the pipeline runs now (generation `number`).
  void SetRunning(std::shared_ptr<const Config> config, uint64_t number);

  struct Answer {
    std::string result;                 // "accepted", "unchanged", "refused", "busy"
    uint64_t generation = 0;            // accepted: the new one; else the one serving
    std::string changes;                // ConfigChange::Summary()
    std::vector<std::string> problems;  // refused: one line each
    std::string message;
  };
  // Steps 1-5 above. `via`: "SIGHUP" or "pgderive reload" (for the log); `file`: the file
  // the caller means (empty: the process's own).
  Answer Request(const std::string& via, const std::string& file = "");
  // POST /reload: the body {"file": path} in; the status code and the Answer as JSON out.
  std::pair<int, std::string> HandleHttp(const std::string& body);

  struct Accepted {
    std::shared_ptr<const Config> config;
    ConfigChange change;
    uint64_t generation = 0;
    std::string hash;
  };
  // The run loop: the accepted configuration to start (once).
  std::optional<Accepted> TakeAccepted();

 private:
  Answer Refuse(Answer answer, const std::string& via);

  const std::string path_;
  Logger& logger_;
  RunHost& host_;
  std::mutex request_mutex_;  // one request at a time
  std::mutex mutex_;          // guards what follows
  std::shared_ptr<const Config> running_;
  uint64_t generation_ = 0;
  std::optional<Accepted> accepted_;  // not yet taken, or taken and not serving yet
};

struct ReloadOptions {
  std::string config_path;
  std::chrono::seconds timeout{120};  // for the new generation to serve
  std::FILE* out = stdout;
};

// 0 once the new configuration serves (or nothing changed); 2 when the file is refused
// (each problem printed as FILE:LINE:COLUMN: key: message); 1 when nothing answers, the
// new configuration failed to start (the previous one runs again) or on timeout.
int RunReload(const ReloadOptions& options);

}  // namespace pgderive
