// The key reference of docs/configuration.md, generated from the key table the loader
// checks with (ConfigKeyTableMarkdown). The table sits between two marker lines:
//
//   <!-- key-table:begin -->
//   | key | type | default | meaning |
//   ...
//   <!-- key-table:end -->
//
//   pgderive_key_table_doc                 prints the table
//   pgderive_key_table_doc --check FILE    exit 1 (with the table expected) if FILE's differs
//   pgderive_key_table_doc --update FILE   rewrites FILE's table
//
// `cmake --build build/release --target update_config_docs` runs --update; the unit test
// docs.config_key_table runs --check.

#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "config/config.h"

namespace {

constexpr std::string_view kBegin = "<!-- key-table:begin -->\n";
constexpr std::string_view kEnd = "<!-- key-table:end -->";

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The table's place in `text`: [begin, end) between the markers, or nullopt.
std::optional<std::pair<size_t, size_t>> TablePlace(const std::string& text) {
  const size_t begin = text.find(kBegin);
  if (begin == std::string::npos) return std::nullopt;
  const size_t start = begin + kBegin.size();
  const size_t end = text.find(kEnd, start);
  if (end == std::string::npos) return std::nullopt;
  return std::make_pair(start, end);
}

int Usage() {
  std::cerr << "usage: pgderive_key_table_doc [--check FILE | --update FILE]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string table = pgderive::ConfigKeyTableMarkdown();
  if (argc == 1) {
    std::cout << table;
    return 0;
  }
  if (argc != 3) return Usage();
  const std::string mode = argv[1];
  const std::string path = argv[2];
  if (mode != "--check" && mode != "--update") return Usage();

  std::optional<std::string> text = ReadFile(path);
  if (!text) {
    std::cerr << path << ": cannot read the file\n";
    return 1;
  }
  const auto place = TablePlace(*text);
  if (!place) {
    std::cerr << path << ": no key table between the lines '" << kBegin.substr(0, kBegin.size() - 1)
              << "' and '" << kEnd << "'\n";
    return 1;
  }
  const auto [start, end] = *place;
  if (text->compare(start, end - start, table) == 0) {
    if (mode == "--update") std::cout << path << ": the key table is up to date\n";
    return 0;
  }
  if (mode == "--check") {
    std::cerr << path << ": the key table differs from the code's. Regenerate it with\n"
              << "  cmake --build build/release --target update_config_docs\n"
              << "The table the code declares:\n"
              << table;
    return 1;
  }
  text->replace(start, end - start, table);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << *text;
  out.close();
  if (!out) {
    std::cerr << path << ": cannot write the file\n";
    return 1;
  }
  std::cout << path << ": key table rewritten\n";
  return 0;
}
