#include "tests/support/stack_env.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

namespace pgderive::testing {

std::optional<StackEnv> StackEnv::Parse(std::string_view text, std::string* why) {
  StackEnv env;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t end = std::min(text.find('\n', pos), text.size());
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.empty() || line.front() == '#') continue;
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      if (why != nullptr) *why = "line " + std::to_string(line_no) + ": expected KEY=VALUE";
      return std::nullopt;
    }
    env.values_[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
  }
  return env;
}

const StackEnv* StackEnv::Find(std::string* why) {
  struct Loaded {
    std::optional<StackEnv> env;
    std::string why;
  };
  static const Loaded loaded = [] {
    Loaded out;
    const char* path = std::getenv("PGDERIVE_STACK_ENV");
    if (path == nullptr || *path == '\0') {
      out.why =
          "PGDERIVE_STACK_ENV is not set: integration tests need the real servers; run "
          "`compose/local/stack up DIR` and export PGDERIVE_STACK_ENV=DIR/stack.env "
          "(scripts/test.sh does both)";
      return out;
    }
    std::ifstream in(path);
    if (!in) {
      out.why = std::string("cannot read PGDERIVE_STACK_ENV file ") + path;
      return out;
    }
    std::stringstream text;
    text << in.rdbuf();
    std::string parse_why;
    out.env = Parse(text.str(), &parse_why);
    if (!out.env) out.why = std::string(path) + ": " + parse_why;
    return out;
  }();
  if (!loaded.env && why != nullptr) *why = loaded.why;
  return loaded.env ? &*loaded.env : nullptr;
}

std::string StackEnv::Value(std::string_view key) const {
  auto it = values_.find(key);
  return it == values_.end() ? std::string() : it->second;
}

std::string UniqueName(std::string_view prefix) {
  static std::atomic<int> counter{0};
  static const unsigned salt = std::random_device{}();
  return std::string(prefix) + "_" + std::to_string(getpid()) + "_" +
         std::to_string(counter.fetch_add(1)) + "_" + std::to_string(salt % 100000);
}

}  // namespace pgderive::testing
