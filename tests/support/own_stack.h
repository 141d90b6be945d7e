#pragma once

// A private compose/local stack for fault tests: they stop, restart and empty servers,
// which must not disturb tests running in parallel on the shared stack.

#include <filesystem>
#include <string>
#include <vector>

#include "cdc/pg_connection.h"

namespace pgderive::testing {

class OwnStack {
 public:
  // `compose/local/stack up` in a new temporary directory with these arguments, e.g.
  // {"--services", "pg,redis", "--redis-aof"}. Throws std::runtime_error on failure.
  explicit OwnStack(const std::vector<std::string>& up_args);
  ~OwnStack();  // down, and the directory removed
  OwnStack(const OwnStack&) = delete;
  OwnStack& operator=(const OwnStack&) = delete;

  // Runs `compose/local/stack COMMAND DIR ARGS...`; returns its exit status.
  int Run(const std::string& command, const std::vector<std::string>& args = {});
  // A value of the stack's env file ("" when absent).
  std::string Env(const std::string& key) const;
  const std::filesystem::path& dir() const { return dir_; }
  // A SQL connection; right after a restart the server may still refuse, so this
  // retries until a deadline.
  PgConnection ConnectPg() const;

 private:
  std::filesystem::path dir_;
};

}  // namespace pgderive::testing
