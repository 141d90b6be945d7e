#include "tests/support/own_stack.h"

#include <fstream>
#include <stdexcept>
#include <thread>

#include "tests/support/stack_env.h"
#include "tests/support/subprocess.h"

namespace pgderive::testing {

OwnStack::OwnStack(const std::vector<std::string>& up_args)
    : dir_(std::filesystem::temp_directory_path() / UniqueName("pgderive_own_stack")) {
  if (Run("up", up_args) != 0) {
    throw std::runtime_error("compose/local/stack up " + dir_.string() + " failed");
  }
}

OwnStack::~OwnStack() {
  Run("down");
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

int OwnStack::Run(const std::string& command, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {SourceDir() + "/compose/local/stack", command, dir_.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  Subprocess stack(argv);
  while (stack.ReadLine(std::chrono::seconds(120))) {
  }
  return stack.Wait(std::chrono::seconds(120)).value_or(-1);
}

std::string OwnStack::Env(const std::string& key) const {
  std::ifstream in(dir_ / "stack.env");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + "=", 0) == 0) return line.substr(key.size() + 1);
  }
  return "";
}

PgConnection OwnStack::ConnectPg() const {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (true) {
    auto conn =
        PgConnection::Connect(Env("PGDERIVE_PG_DSN"), PgConnection::Mode::kSql, "pgderive-test");
    if (conn.ok()) return std::move(conn).value();
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error(conn.error().ToString());
    }
    // A retry interval, not synchronisation: the condition is the connect itself.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace pgderive::testing
