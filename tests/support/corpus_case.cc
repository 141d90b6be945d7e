#include "tests/support/corpus_case.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace pgderive::testing {
namespace {

const std::set<std::string> kExpectationKinds = {"postgres", "redis",  "opensearch", "status",
                                                 "readyz",   "verify", "validate",   "metric"};

std::string Trim(const std::string& s) {
  const auto begin = s.find_first_not_of(" \t\r");
  if (begin == std::string::npos) return "";
  const auto end = s.find_last_not_of(" \t\r");
  return s.substr(begin, end - begin + 1);
}

[[noreturn]] void Fail(const std::string& name, int line, const std::string& what) {
  throw std::runtime_error("corpus case " + name + ", line " + std::to_string(line) + ": " + what);
}

}  // namespace

const CorpusExpectation* CorpusCase::Find(const std::string& kind) const {
  for (const CorpusExpectation& e : expectations) {
    if (e.kind == kind) return &e;
  }
  return nullptr;
}

CorpusCase ParseCorpusCase(const std::string& name, const std::string& text) {
  CorpusCase result;
  result.name = name;
  enum class Section { kNone, kConfig, kSchema, kBefore, kStream, kRestart, kExpect };
  Section section = Section::kNone;
  bool have_config = false;
  std::istringstream in(text);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.rfind("---- ", 0) == 0) {
      const std::string header = Trim(line.substr(5));
      const auto space = header.find(' ');
      const std::string kind = header.substr(0, space);
      const std::string argument = space == std::string::npos ? "" : Trim(header.substr(space + 1));
      if (kind == "config") {
        if (have_config) Fail(name, number, "a second config section");
        section = Section::kConfig;
        have_config = true;
      } else if (kind == "schema") {
        section = Section::kSchema;
      } else if (kind == "before") {
        section = Section::kBefore;
      } else if (kind == "stream") {
        section = Section::kStream;
        result.steps.push_back({CorpusStep::Kind::kStream, "", number});
      } else if (kind == "restart") {
        section = Section::kRestart;
        result.steps.push_back({CorpusStep::Kind::kRestart, "", number});
      } else if (kind == "expect") {
        const auto sp = argument.find(' ');
        const std::string what = argument.substr(0, sp);
        if (!kExpectationKinds.contains(what)) {
          Fail(name, number, "unknown expectation '" + what + "'");
        }
        section = Section::kExpect;
        result.expectations.push_back(
            {what, sp == std::string::npos ? "" : Trim(argument.substr(sp + 1)), {}, number});
      } else {
        Fail(name, number, "unknown section '" + kind + "'");
      }
      continue;
    }
    switch (section) {
      case Section::kNone:
        if (Trim(line).empty()) break;
        if (line.rfind("--", 0) != 0) Fail(name, number, "text before the first section");
        result.description += Trim(line.substr(2)) + "\n";
        break;
      case Section::kConfig:
        result.views_yaml += line + "\n";
        break;
      case Section::kSchema:
        result.schema += line + "\n";
        break;
      case Section::kBefore:
        result.before += line + "\n";
        break;
      case Section::kStream:
        result.steps.back().sql += line + "\n";
        break;
      case Section::kRestart:
        if (!Trim(line).empty()) Fail(name, number, "restart takes no lines");
        break;
      case Section::kExpect:
        if (!Trim(line).empty()) result.expectations.back().lines.push_back(Trim(line));
        break;
    }
  }
  if (!have_config) Fail(name, number, "no config section");
  if (result.expectations.empty()) Fail(name, number, "no expect section");
  return result;
}

std::vector<CorpusCase> LoadCorpus(const std::string& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".sql") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<CorpusCase> cases;
  for (const auto& file : files) {
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    cases.push_back(ParseCorpusCase(file.stem().string(), text.str()));
  }
  return cases;
}

}  // namespace pgderive::testing
