#include "tests/support/subprocess.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "tests/support/stack_env.h"

#ifndef PGDERIVE_BINARY
#error "PGDERIVE_BINARY must be defined by the build"
#endif

namespace pgderive::testing {

std::string PgderiveBinary() {
  // Another build's binary under this build's tests, e.g. the sanitizer build's under the
  // release-only fault tests: PGDERIVE_TEST_BINARY=build/asan/app/pgderive.
  if (const char* other = std::getenv("PGDERIVE_TEST_BINARY"); other != nullptr && *other != 0) {
    return other;
  }
  return PGDERIVE_BINARY;
}
std::string SourceDir() { return PGDERIVE_SOURCE_DIR; }

Subprocess::Subprocess(const std::vector<std::string>& argv, const std::string& stderr_path) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    if (!stderr_path.empty()) {
      const int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (err >= 0) dup2(err, STDERR_FILENO);
    }
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  stdout_fd_ = fds[0];
}

Subprocess::~Subprocess() {
  if (!status_ && pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

std::optional<std::string> Subprocess::ReadLine(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd fd{stdout_fd_, POLLIN, 0};
    if (poll(&fd, 1, static_cast<int>(left.count())) <= 0) continue;
    char chunk[65536];
    const ssize_t n = read(stdout_fd_, chunk, sizeof chunk);
    if (n <= 0) return std::nullopt;  // end of output
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

void Subprocess::Signal(int signal) {
  if (!status_ && pid_ > 0) kill(pid_, signal);
}

std::optional<int> Subprocess::Wait(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return status_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    // Polling the child's state: there is no condition to wait on for a child's exit
    // besides waitpid itself, and a blocking waitpid would ignore the deadline.
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::pair<int, std::string> RunToEnd(const std::vector<std::string>& argv,
                                     const std::string& stderr_path,
                                     std::chrono::seconds patience) {
  std::string out;
  int status = -1;
  {
    Subprocess p(argv, stderr_path);
    while (auto line = p.ReadLine(patience)) out += *line + "\n";
    status = p.Wait(std::chrono::seconds(30)).value_or(-1);
  }
  return {status, out + ReadFile(stderr_path)};
}

std::pair<int, std::string> RunVerify(const std::string& config, int wait_seconds) {
  const std::filesystem::path err =
      std::filesystem::temp_directory_path() / UniqueName("pgderive_verify_err");
  auto [status, out] =
      RunToEnd({PgderiveBinary(), "verify", "-c", config, "--wait", std::to_string(wait_seconds)},
               err.string(), std::chrono::seconds(wait_seconds * 4 + 60));
  std::filesystem::remove(err);
  return {status, out};
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  const int port = ntohs(address.sin_port);
  close(fd);
  return port;
}

}  // namespace pgderive::testing
