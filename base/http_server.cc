#include "base/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <chrono>

#include "base/number.h"

namespace pgderive {

Result<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& listen,
                                                      Handlers handlers) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return Error::Permanent("http.listen '" + listen + "' is not host:port");
  }
  const std::string host = listen.substr(0, colon);
  auto port_number = ParseNumber<uint16_t>(std::string_view(listen).substr(colon + 1));
  if (!port_number.ok()) {
    return Error::Permanent("http.listen '" + listen + "' has no port number");
  }
  int port = port_number.value();
  std::unique_ptr<HttpServer> self(new HttpServer());
  self->handlers_ = std::move(handlers);
  self->server_ = std::make_unique<httplib::Server>();
  // cpp-httplib's default also sets SO_REUSEPORT, which lets a second pgderive bind the
  // same port and answer half the requests for another pipeline: SO_REUSEADDR only (a
  // restart can still bind while old connections sit in TIME_WAIT).
  self->server_->set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  HttpServer* raw = self.get();
  self->server_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  self->server_->Get("/readyz", [raw](const httplib::Request&, httplib::Response& res) {
    const std::vector<std::string> reasons = raw->handlers_.not_ready();
    if (reasons.empty()) {
      res.set_content("ready\n", "text/plain");
      return;
    }
    std::string body;
    for (const std::string& r : reasons) body += r + "\n";
    res.status = 503;
    res.set_content(body, "text/plain");
  });
  self->server_->Get("/metrics", [raw](const httplib::Request&, httplib::Response& res) {
    res.set_content(raw->handlers_.metrics(), "text/plain; version=0.0.4");
  });
  self->server_->Get("/status", [raw](const httplib::Request&, httplib::Response& res) {
    res.set_content(raw->handlers_.status_json(), "application/json");
  });
  self->server_->Post("/reload", [raw](const httplib::Request& req, httplib::Response& res) {
    if (!raw->handlers_.reload) {
      res.status = 404;
      return;
    }
    auto [status, body] = raw->handlers_.reload(req.body);
    res.status = status;
    res.set_content(body, "application/json");
  });
  for (const char* action : {"promote", "rollback"}) {
    self->server_->Post(std::string("/") + action,
                        [raw, action](const httplib::Request& req, httplib::Response& res) {
                          if (!raw->handlers_.version) {
                            res.status = 404;
                            return;
                          }
                          auto [status, body] = raw->handlers_.version(action, req.body);
                          res.status = status;
                          res.set_content(body, "application/json");
                        });
  }
  if (port == 0) {
    port = self->server_->bind_to_any_port(host);
    if (port < 0) return Error::Permanent("cannot listen on " + listen + " (http.listen)");
  } else if (!self->server_->bind_to_port(host, port)) {
    return Error::Permanent("cannot listen on " + listen +
                            " (http.listen): the address is in use or not local");
  }
  self->port_ = port;
  self->thread_ = std::thread([raw] { raw->server_->listen_after_bind(); });
  // stop() does nothing until the server runs: wait for it, so that a return right after
  // Start (a later start-up check failing) cannot leave the thread serving forever.
  for (int i = 0; i < 5000 && !self->server_->is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return self;
}

HttpServer::~HttpServer() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace pgderive
