#include "sinks/common/view_versions.h"

#include <cstdio>
#include <ctime>

namespace pgderive {

Versions Recover(Versions recorded, std::optional<int> aliased, int64_t now, int64_t retain,
                 std::vector<int>& retired) {
  if (!aliased || aliased == recorded.serving) return recorded;
  if (aliased == recorded.building) return AfterPromote(std::move(recorded), now, retain, retired);
  if (aliased == recorded.previous) return AfterRollback(std::move(recorded));
  return recorded;
}

Versions AfterPromote(Versions versions, int64_t now, int64_t retain, std::vector<int>& retired) {
  if (!versions.building) return versions;
  if (versions.previous) retired.push_back(*versions.previous);
  versions.previous.reset();
  versions.drop_at = 0;
  if (versions.serving) {
    const auto was = versions.definitions.find(*versions.serving);
    const auto now_def = versions.definitions.find(*versions.building);
    const bool other = was != versions.definitions.end() && now_def != versions.definitions.end() &&
                       was->second != now_def->second;
    if (other) {
      versions.previous = versions.serving;
      versions.drop_at = now + retain;
    } else {
      retired.push_back(*versions.serving);
      versions.definitions.erase(*versions.serving);
    }
  }
  versions.serving = versions.building;
  versions.building.reset();
  versions.held = false;
  return versions;
}

Versions AfterRollback(Versions versions) {
  if (!versions.previous) return versions;
  versions.building = versions.serving;
  versions.serving = versions.previous;
  versions.previous.reset();
  versions.drop_at = 0;
  versions.held = true;
  return versions;
}

std::optional<std::string> PromoteRefusal(const Versions& versions, const std::string& view,
                                          bool backfilling, double percent) {
  if (!versions.building) {
    return "view " + view + " has no new version to promote" +
           (versions.serving ? " (version " + std::to_string(*versions.serving) + " serves)"
                             : std::string());
  }
  if (backfilling) {
    std::string how = "building";
    if (percent >= 0) {
      char text[32];
      std::snprintf(text, sizeof text, " %.0f%%", percent);
      how += text;
    }
    return "version " + std::to_string(*versions.building) + " of view " + view +
           " is not ready (" + how +
           "): it is promoted once it is complete and caught up; `pgderive promote` waits for "
           "that unless --no-wait";
  }
  return std::nullopt;
}

std::optional<std::string> RollbackRefusal(const Versions& versions, const std::string& view) {
  if (!versions.previous) {
    return "view " + view +
           " has no retained previous version to roll back to (none was "
           "switched away from, or it was dropped after retain_previous)";
  }
  return std::nullopt;
}

bool OtherThanServing(const Versions& versions) {
  if (!versions.building || !versions.serving) return false;
  const auto built = versions.definitions.find(*versions.building);
  const auto served = versions.definitions.find(*versions.serving);
  return built != versions.definitions.end() && served != versions.definitions.end() &&
         built->second != served->second;
}

bool SwitchesOnReady(const Versions& versions, bool manual) {
  if (!versions.building || versions.held) return false;
  return !manual || !OtherThanServing(versions);
}

std::vector<std::pair<int, std::string>> OtherDefinitions(const Versions& versions,
                                                          const std::string& file) {
  std::vector<std::pair<int, std::string>> out;
  for (const std::optional<int>& g : {versions.serving, versions.previous}) {
    if (!g) continue;
    auto it = versions.definitions.find(*g);
    if (it == versions.definitions.end() || it->second == file) continue;
    out.emplace_back(*g, it->second);
  }
  return out;
}

bool PreviousDue(const Versions& versions, int64_t now) {
  return versions.previous && now >= versions.drop_at;
}

std::string UnixTimeText(int64_t seconds) {
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::vector<VersionInfo> Describe(const Versions& versions, const std::string& view,
                                  bool backfilling, const std::function<std::string(int)>& where) {
  std::vector<VersionInfo> out;
  if (versions.serving)
    out.push_back({view, *versions.serving, where(*versions.serving), "serving"});
  if (versions.building) {
    out.push_back(
        {view, *versions.building, where(*versions.building), backfilling ? "building" : "ready"});
  }
  if (versions.previous) {
    out.push_back(
        {view, *versions.previous, where(*versions.previous), "retained", versions.drop_at});
  }
  return out;
}

nlohmann::json VersionsToJson(const Versions& versions) {
  nlohmann::json j = {{"serving", nullptr}, {"building", nullptr}, {"previous", nullptr}};
  if (versions.serving) j["serving"] = *versions.serving;
  if (versions.building) j["building"] = *versions.building;
  if (versions.previous) {
    j["previous"] = *versions.previous;
    j["drop_at"] = versions.drop_at;
  }
  if (versions.held) j["held"] = true;
  nlohmann::json definitions = nlohmann::json::object();
  for (const auto& [n, record] : versions.definitions) definitions[std::to_string(n)] = record;
  j["definitions"] = definitions;
  return j;
}

Versions VersionsFromJson(const nlohmann::json& j) {
  Versions versions;
  if (!j.is_object()) return versions;
  auto number = [&](const char* key) -> std::optional<int> {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer()) return std::nullopt;
    return it->get<int>();
  };
  versions.serving = number("serving");
  versions.building = number("building");
  versions.previous = number("previous");
  if (auto it = j.find("drop_at"); it != j.end() && it->is_number()) {
    versions.drop_at = it->get<int64_t>();
  }
  versions.held = j.value("held", false);
  if (auto it = j.find("definitions"); it != j.end() && it->is_object()) {
    for (const auto& [key, record] : it->items()) {
      if (!record.is_string()) continue;
      try {
        versions.definitions[std::stoi(key)] = record.get<std::string>();
      } catch (const std::exception&) {
        continue;  // not a generation number: not ours to read
      }
    }
  }
  return versions;
}

}  // namespace pgderive
