// The Grafana dashboard (compose/grafana/dashboards/pgderive.json) against the code and
// the docs: it is JSON Grafana can import, and every metric its queries read is one
// pgderive emits (a name in the sources) and documents (docs/operations.md's table), so
// a renamed or removed metric cannot leave a panel silently empty.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "tests/support/subprocess.h"

namespace pgderive {
namespace {

std::string ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Every pgderive_* name in `text`, without a histogram's _bucket/_sum/_count suffix.
std::set<std::string> MetricNames(const std::string& text) {
  static const std::regex kName("pgderive_[a-z_]+");
  std::set<std::string> names;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), kName);
       it != std::sregex_iterator(); ++it) {
    std::string name = it->str();
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      if (name.ends_with(suffix)) name.resize(name.size() - std::string(suffix).size());
    }
    names.insert(name);
  }
  return names;
}

TEST(DashboardTest, EveryQueriedMetricIsEmittedAndDocumented) {
  const std::filesystem::path root = testing::SourceDir();
  const auto dashboard = nlohmann::json::parse(
      ReadAll(root / "compose/grafana/dashboards/pgderive.json"), nullptr, false);
  ASSERT_FALSE(dashboard.is_discarded()) << "the dashboard is not JSON";
  ASSERT_EQ(dashboard.value("uid", ""), "pgderive");
  ASSERT_TRUE(dashboard.contains("panels") && dashboard["panels"].is_array());

  std::string queries;
  int panels_with_queries = 0;
  for (const auto& panel : dashboard["panels"]) {
    if (!panel.contains("targets")) continue;
    ++panels_with_queries;
    for (const auto& target : panel["targets"]) queries += target.value("expr", "") + "\n";
  }
  EXPECT_GE(panels_with_queries, 10);
  const std::set<std::string> used = MetricNames(queries);
  ASSERT_FALSE(used.empty());

  // The names the code registers: string literals in the sources.
  std::string sources;
  for (const char* folder : {"base", "pipeline", "sinks", "snapshot", "spool", "app", "cdc"}) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root / folder)) {
      if (entry.path().extension() == ".cc") sources += ReadAll(entry.path());
    }
  }
  const std::string docs = ReadAll(root / "docs/operations.md");
  for (const std::string& name : used) {
    EXPECT_NE(sources.find("\"" + name + "\""), std::string::npos)
        << name << " is queried by the dashboard but no source registers it";
    // `name` or `name{labels}`.
    const bool documented = docs.find("`" + name + "`") != std::string::npos ||
                            docs.find("`" + name + "{") != std::string::npos;
    EXPECT_TRUE(documented)
        << name << " is queried by the dashboard but docs/operations.md does not list it";
  }
}

}  // namespace
}  // namespace pgderive
