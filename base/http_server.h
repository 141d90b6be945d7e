#pragma once

// The sidecar's HTTP endpoint (issue 5; default 127.0.0.1:9187), on its own thread:
//   /healthz  200 while the process runs its loop;
//   /readyz   200 when the snapshot is done, the stream is connected and every store
//             is reachable, else 503 with the reasons, one per line;
//   /metrics  Prometheus text format;
//   /status   the running pipeline's state as JSON, which `pgderive status` reads;
//   POST /reload  re-read the configuration file (what `pgderive reload` sends): the
//             status code and JSON body the handler returns (404 without a handler).
//   POST /promote, POST /rollback  switch a view's version (`pgderive promote`,
//             `pgderive rollback`; body {"view": NAME}): likewise.
// The handlers are callbacks into the pipeline, which owns the state they read.

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/status.h"

namespace httplib {
class Server;
}

namespace pgderive {

class HttpServer {
 public:
  struct Handlers {
    std::function<std::vector<std::string>()> not_ready;  // empty when ready
    std::function<std::string()> metrics;
    std::function<std::string()> status_json;
    // The request's body in; the status code and the JSON body out. May be empty.
    std::function<std::pair<int, std::string>(const std::string& body)> reload;
    // "promote" or "rollback", and the request's body.
    std::function<std::pair<int, std::string>(const std::string& action, const std::string& body)>
        version;
  };

  // Binds `listen` ("host:port"; port 0 picks a free one) and serves on a thread.
  static Result<std::unique_ptr<HttpServer>> Start(const std::string& listen, Handlers handlers);
  ~HttpServer();

  int port() const { return port_; }

 private:
  HttpServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  Handlers handlers_;
  int port_ = 0;
};

}  // namespace pgderive
