#include "tests/support/fixtures.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

#ifndef PGDERIVE_FIXTURES_DIR
#error "PGDERIVE_FIXTURES_DIR must be defined by the build"
#endif

namespace pgderive::testing {

std::vector<uint8_t> FromHex(const std::string& hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (hex.size() % 2 != 0) throw std::runtime_error("odd number of hex digits");
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(hex[2 * i]);
    const int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) throw std::runtime_error("not a hex digit");
    out[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return out;
}

std::string ReadFixture(const std::string& relative_path) {
  const std::string path = std::string(PGDERIVE_FIXTURES_DIR) + "/" + relative_path;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open fixture " + path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<CapturedMessage> LoadCapture(const std::string& relative_path) {
  const std::string path = std::string(PGDERIVE_FIXTURES_DIR) + "/" + relative_path;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open fixture " + path);
  std::vector<CapturedMessage> messages;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    CapturedMessage message;
    std::string hex;
    if (!(fields >> message.lsn >> message.xid >> hex)) {
      throw std::runtime_error(path + ":" + std::to_string(line_no) + ": expected LSN XID HEX");
    }
    try {
      message.bytes = FromHex(hex);
    } catch (const std::exception& e) {
      throw std::runtime_error(path + ":" + std::to_string(line_no) + ": " + e.what());
    }
    messages.push_back(std::move(message));
  }
  return messages;
}

}  // namespace pgderive::testing
