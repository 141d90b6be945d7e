#pragma once

// Captured wire bytes under tests/fixtures (see tests/capture/).

#include <cstdint>
#include <string>
#include <vector>

namespace pgderive::testing {

struct CapturedMessage {
  std::string lsn;
  uint32_t xid = 0;
  std::vector<uint8_t> bytes;
};

// Reads a "LSN XID HEX" file below tests/fixtures ('#' lines are comments). Throws
// std::runtime_error naming the file and line on anything malformed.
std::vector<CapturedMessage> LoadCapture(const std::string& relative_path);

// The whole content of a file below tests/fixtures, bytes as they are. Throws
// std::runtime_error when it cannot be read.
std::string ReadFixture(const std::string& relative_path);

std::vector<uint8_t> FromHex(const std::string& hex);

}  // namespace pgderive::testing
