#pragma once

// What outlives one configuration of `pgderive run`. A reload (SIGHUP, or POST /reload,
// which `pgderive reload` sends) stops the pipeline engine cleanly inside the process
// and starts it again with the file's new configuration; the process keeps its pid, the
// pipeline's lock on the source (run_lock.h: never released by a reload, so no second
// `run` or a teardown can slip in between) and its HTTP endpoint (bound once, pointed at
// each generation's pipeline in turn):
//
//   RunHost: lock, endpoint ----------------------------------------------------> exit
//     generation 1: Pipeline(config 1) Start, Run ... reload accepted: Finish
//                   (drain, checkpoints, confirm the slot; a backfill under way stops
//                   where its store's recorded state lets the next generation resume)
//     generation 2: Pipeline(config 2) Start (each store resumes from its checkpoint),
//                   Run ...
//
// Between two generations /readyz answers 503 "reloading the configuration" and /status
// says so. /status and /metrics say which configuration serves: its generation, the
// file's hash and when it was loaded; and the last reload's outcome.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "base/http_server.h"
#include "base/metrics.h"
#include "base/status.h"
#include "pipeline/run_lock.h"

namespace pgderive {

// The configuration a generation runs.
struct ConfigGeneration {
  uint64_t number = 0;  // 1 for the file as read at start, +1 for each accepted reload
  std::string file;
  std::string hash;  // of the file's bytes (FileHash)
  std::chrono::system_clock::time_point loaded_at;
};

// What became of the last reload request.
struct ReloadOutcome {
  std::string result;  // "applied", "unchanged", "refused", "failed"
  uint64_t generation = 0;
  std::string message;  // refused / failed: why (file:line lines for a refused file)
  std::chrono::system_clock::time_point at;
};

class RunHost {
 public:
  // `lock`: the pipeline's lock, held until the host goes away; `pipeline`: its name
  // (what /status says while no generation runs).
  RunHost(std::optional<PipelineLock> lock, std::string pipeline);
  ~RunHost();
  RunHost(const RunHost&) = delete;
  RunHost& operator=(const RunHost&) = delete;

  PipelineLock* lock() { return lock_ ? &*lock_ : nullptr; }

  // A generation's pipeline serves the endpoint: the first call binds `listen`; the
  // port bound (`listen` may ask for port 0). The error: the address cannot be bound.
  Result<int> Serve(const std::string& listen, HttpServer::Handlers handlers);
  // The pipeline goes away: from now on the host answers alone. Returns once no request
  // is inside the pipeline's handlers.
  void Unserve();
  // POST /reload (set once, before the first Serve).
  void SetReloadHandler(std::function<std::pair<int, std::string>(const std::string&)> handler);

  // The configuration now serving (after its pipeline streams), and a reload's outcome.
  void SetGeneration(ConfigGeneration generation);
  void SetOutcome(ReloadOutcome outcome);
  std::optional<ConfigGeneration> generation() const;

  // A reload was accepted: the running pipeline finishes and the run starts the next.
  void RequestRestart() { restart_.store(true); }
  bool restart_requested() const { return restart_.load(); }
  void ClearRestart() { restart_.store(false); }

 private:
  std::string StatusJson();
  std::vector<std::string> NotReady();
  std::string RenderMetrics();
  // The "config" object of /status (under mutex_).
  std::string ConfigJson() const;

  std::optional<PipelineLock> lock_;
  const std::string pipeline_;
  std::atomic<bool> restart_{false};
  mutable std::mutex mutex_;      // guards what follows; held while a pipeline handler runs
  HttpServer::Handlers current_;  // the serving pipeline's; empty between generations
  std::function<std::pair<int, std::string>(const std::string&)> reload_;
  std::optional<ConfigGeneration> generation_;
  std::optional<ReloadOutcome> outcome_;
  uint64_t reloads_applied_ = 0, reloads_refused_ = 0, reloads_failed_ = 0;
  std::unique_ptr<HttpServer> http_;  // last member: stopped first
};

// A short hash of a file's bytes (64-bit FNV-1a, 16 hex digits): what /status shows to
// tell one version of the file from another. "" when it cannot be read.
std::string FileHash(const std::string& path);

// After a generation's replication connection closed: waits until the server has let
// the slot go (its walsender exits after the connection), so that the next generation
// can take it; up to `timeout`.
Status WaitForSlotReleased(const std::string& dsn, const std::string& slot,
                           std::chrono::milliseconds timeout, const std::function<bool()>& stopped);

}  // namespace pgderive
