#pragma once

// Runs a program with its stdout on a pipe, for tests that drive the real binary.

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pgderive::testing {

class Subprocess {
 public:
  // Starts argv[0] with the arguments; stderr goes to `stderr_path` when given.
  explicit Subprocess(const std::vector<std::string>& argv, const std::string& stderr_path = "");
  ~Subprocess();  // kills the process if it still runs

  // The next line of stdout without its newline; nullopt at end of output or when
  // `timeout` passes first.
  std::optional<std::string> ReadLine(std::chrono::milliseconds timeout);
  void Signal(int signal);
  // Waits up to `timeout` for the exit status; nullopt if it is still running.
  std::optional<int> Wait(std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string buffer_;
  std::optional<int> status_;
};

// Runs `argv` to its end: its exit status (-1 if it hangs) and its stdout followed by
// its stderr (kept in `stderr_path`). `patience`: the most to wait for each line.
std::pair<int, std::string> RunToEnd(const std::vector<std::string>& argv,
                                     const std::string& stderr_path, std::chrono::seconds patience);
// A file's whole text ("" when it cannot be read).
std::string ReadFile(const std::string& path);

// `pgderive verify -c CONFIG --wait WAIT_SECONDS`: its exit status (-1 if it hangs)
// and its stdout followed by its stderr.
std::pair<int, std::string> RunVerify(const std::string& config, int wait_seconds);

// A port nothing listens on right now (the kernel's pick for an ephemeral bind).
int FreePort();

// The path of the pgderive binary under test (set by the build; PGDERIVE_TEST_BINARY in
// the environment names another, e.g. a sanitizer build's), and of the source tree.
std::string PgderiveBinary();
std::string SourceDir();

}  // namespace pgderive::testing
