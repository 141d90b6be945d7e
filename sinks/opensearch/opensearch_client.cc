#include "sinks/opensearch/opensearch_client.h"

#include <algorithm>
#include <cctype>

#include "base/redact.h"

namespace pgderive {
namespace {

constexpr size_t kMaxQuotedBody = 512;

std::string Excerpt(std::string_view body) {
  std::string text(body.substr(0, kMaxQuotedBody));
  if (body.size() > kMaxQuotedBody) text += "...";
  return RedactSecrets(text);
}

}  // namespace

std::string EncodePathSegment(std::string_view segment) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(segment.size());
  for (unsigned char c : segment) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

Result<OpenSearchClient> OpenSearchClient::Create(const HttpClient::Options& options) {
  auto http = HttpClient::Create(options);
  if (!http.ok()) return http.error();
  return OpenSearchClient(std::move(http).value());
}

Error OpenSearchClient::HttpError(std::string_view what, const HttpResponse& response) const {
  std::string message = "OpenSearch " + http_.redacted_url() + ": " + std::string(what) +
                        " returned HTTP " + std::to_string(response.status) + ": " +
                        Excerpt(response.body);
  // 429 (too many requests) and 5xx heal on their own; other statuses need a fix.
  if (response.status == 429 || response.status >= 500) return Error::Transient(message);
  return Error::Permanent(message);
}

Result<nlohmann::json> OpenSearchClient::ParseBody(std::string_view what,
                                                   const HttpResponse& response) const {
  nlohmann::json body = nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    return Error::Corrupt("OpenSearch " + http_.redacted_url() + ": " + std::string(what) +
                          " returned a body that is not JSON: " + Excerpt(response.body));
  }
  return body;
}

Status OpenSearchClient::CreateIndex(std::string_view index, const nlohmann::json& body,
                                     bool if_missing) {
  auto response = http_.Send("PUT", "/" + EncodePathSegment(index), body.dump());
  if (!response.ok()) return response.error();
  const HttpResponse& r = response.value();
  if (r.status == 200) return Status::Ok();
  if (if_missing && r.status == 400 &&
      r.body.find("resource_already_exists_exception") != std::string::npos) {
    return Status::Ok();
  }
  return HttpError("create index " + std::string(index), r);
}

Status OpenSearchClient::DeleteIndex(std::string_view index, bool if_exists) {
  auto response = http_.Send("DELETE", "/" + EncodePathSegment(index));
  if (!response.ok()) return response.error();
  const HttpResponse& r = response.value();
  if (r.status == 200 || (if_exists && r.status == 404)) return Status::Ok();
  return HttpError("delete index " + std::string(index), r);
}

Status OpenSearchClient::Refresh(std::string_view index) {
  auto response = http_.Send("POST", "/" + EncodePathSegment(index) + "/_refresh");
  if (!response.ok()) return response.error();
  if (response.value().status != 200) return HttpError("refresh", response.value());
  return Status::Ok();
}

Result<std::optional<std::string>> OpenSearchClient::RefreshInterval(std::string_view index) {
  auto response =
      http_.Send("GET", "/" + EncodePathSegment(index) + "/_settings/index.refresh_interval");
  if (!response.ok()) return response.error();
  if (response.value().status != 200) return HttpError("get settings", response.value());
  auto body = ParseBody("get settings", response.value());
  if (!body.ok()) return body.error();
  // {"<index>":{"settings":{"index":{"refresh_interval":"5s"}}}}, or {"<index>":{"settings":{}}}
  // when the index has no setting of its own (keyed by the concrete index: an alias
  // answers with the index it points to).
  for (const auto& [name, entry] : body.value().items()) {
    if (!entry.is_object() || !entry.contains("settings")) continue;
    const nlohmann::json& settings = entry["settings"];
    if (settings.contains("index") && settings["index"].contains("refresh_interval") &&
        settings["index"]["refresh_interval"].is_string()) {
      return std::optional<std::string>(settings["index"]["refresh_interval"].get<std::string>());
    }
    if (settings.contains("index.refresh_interval") &&
        settings["index.refresh_interval"].is_string()) {
      return std::optional<std::string>(settings["index.refresh_interval"].get<std::string>());
    }
  }
  return std::optional<std::string>();
}

Result<bool> OpenSearchClient::SetRefreshInterval(std::string_view index,
                                                  const std::optional<std::string>& interval) {
  nlohmann::json value = interval ? nlohmann::json(*interval) : nlohmann::json(nullptr);
  auto response = http_.Send("PUT", "/" + EncodePathSegment(index) + "/_settings",
                             nlohmann::json{{"index", {{"refresh_interval", value}}}}.dump());
  if (!response.ok()) return response.error();
  if (response.value().status == 404) return false;
  if (response.value().status != 200) return HttpError("update settings", response.value());
  return true;
}

Result<BulkResult> OpenSearchClient::Bulk(std::string_view ndjson, std::string_view refresh) {
  // Only what is judged comes back: an item's _id and status, and its error if any
  // (every item keeps its place). A full answer is some 200 bytes an item that the
  // node writes and we parse.
  auto response = http_.Send("POST",
                             "/_bulk?refresh=" + std::string(refresh) +
                                 "&filter_path=errors,items.*._id,items.*.status,items.*.error",
                             ndjson, "application/x-ndjson");
  if (!response.ok()) return response.error();
  const HttpResponse& r = response.value();
  if (r.status != 200) return HttpError("_bulk", r);
  auto body = ParseBody("_bulk", r);
  if (!body.ok()) return body.error();
  const nlohmann::json& json = body.value();
  if (!json.contains("items") || !json["items"].is_array()) {
    return Error::Corrupt("OpenSearch _bulk response has no items array: " + Excerpt(r.body));
  }
  BulkResult result;
  result.items = json["items"].size();
  if (!json.value("errors", false)) return result;
  for (size_t i = 0; i < json["items"].size(); ++i) {
    const nlohmann::json& item = json["items"][i];
    if (!item.is_object() || item.empty()) continue;
    // Each item is {"<action>": {...}}. Hold the iterator: a key taken from the
    // temporary items() proxy dangles (ASan: stack-use-after-scope).
    const auto first = item.begin();
    const std::string& action = first.key();
    const nlohmann::json& detail = first.value();
    if (!detail.contains("error")) continue;
    BulkItemError failure;
    failure.position = i;
    failure.action = action;
    failure.id = detail.value("_id", "");
    failure.status = detail.value("status", 0L);
    const nlohmann::json& error = detail["error"];
    failure.type = error.is_object() ? error.value("type", "") : "";
    failure.reason = error.is_object() ? error.value("reason", "") : error.dump();
    result.failures.push_back(std::move(failure));
  }
  return result;
}

Result<std::optional<OpenSearchClient::Document>> OpenSearchClient::Get(std::string_view index,
                                                                        std::string_view id) {
  auto response =
      http_.Send("GET", "/" + EncodePathSegment(index) + "/_doc/" + EncodePathSegment(id));
  if (!response.ok()) return response.error();
  const HttpResponse& r = response.value();
  if (r.status == 404) return std::optional<Document>();
  if (r.status != 200) return HttpError("get document", r);
  auto body = ParseBody("get document", r);
  if (!body.ok()) return body.error();
  Document document;
  document.source = body.value().value("_source", nlohmann::json::object());
  document.version = body.value().value("_version", 0LL);
  return std::optional<Document>(std::move(document));
}

Result<bool> OpenSearchClient::DeleteDocument(std::string_view index, std::string_view id) {
  auto response = http_.Send("DELETE", "/" + EncodePathSegment(index) + "/_doc/" +
                                           EncodePathSegment(id) + "?refresh=true");
  if (!response.ok()) return response.error();
  if (response.value().status == 200) return true;
  if (response.value().status == 404) return false;  // no such document, or no such index
  return HttpError("delete document", response.value());
}

Result<long long> OpenSearchClient::Count(std::string_view index) {
  auto response = http_.Send("GET", "/" + EncodePathSegment(index) + "/_count");
  if (!response.ok()) return response.error();
  if (response.value().status != 200) return HttpError("count", response.value());
  auto body = ParseBody("count", response.value());
  if (!body.ok()) return body.error();
  return body.value().value("count", -1LL);
}

Result<bool> OpenSearchClient::IndexExists(std::string_view index) {
  auto response = http_.Send("HEAD", "/" + EncodePathSegment(index));
  if (!response.ok()) return response.error();
  if (response.value().status == 200) return true;
  if (response.value().status == 404) return false;
  return HttpError("HEAD index", response.value());
}

Result<std::vector<std::string>> OpenSearchClient::AliasIndexes(std::string_view alias) {
  auto response = http_.Send("GET", "/_alias/" + EncodePathSegment(alias));
  if (!response.ok()) return response.error();
  if (response.value().status == 404) return std::vector<std::string>();
  if (response.value().status != 200) return HttpError("get alias", response.value());
  auto body = ParseBody("get alias", response.value());
  if (!body.ok()) return body.error();
  // {"<index>": {"aliases": {"<alias>": {}}}, ...}
  std::vector<std::string> out;
  for (const auto& [index, entry] : body.value().items()) out.push_back(index);
  std::sort(out.begin(), out.end());
  return out;
}

Status OpenSearchClient::UpdateAliases(const nlohmann::json& actions) {
  auto response = http_.Send("POST", "/_aliases", nlohmann::json{{"actions", actions}}.dump());
  if (!response.ok()) return response.error();
  if (response.value().status != 200) return HttpError("_aliases", response.value());
  return Status::Ok();
}

Result<std::optional<std::string>> OpenSearchClient::IndexUuid(std::string_view index) {
  auto response = http_.Send(
      "GET", "/" + EncodePathSegment(index) + "/_settings/index.uuid?flat_settings=true");
  if (!response.ok()) return response.error();
  if (response.value().status == 404) return std::optional<std::string>();
  if (response.value().status != 200) return HttpError("index settings", response.value());
  auto body = ParseBody("index settings", response.value());
  if (!body.ok()) return body.error();
  // {"<index>": {"settings": {"index.uuid": "..."}}, ...}, one entry per index behind
  // an alias; the keys come sorted.
  std::string uuids;
  for (const auto& [name, entry] : body.value().items()) {
    if (!entry.is_object() || !entry.contains("settings")) continue;
    const std::string uuid = entry["settings"].value("index.uuid", "");
    uuids += (uuids.empty() ? "" : ",") + uuid;
  }
  if (uuids.empty()) return std::optional<std::string>();
  return std::optional<std::string>(uuids);
}

Status OpenSearchClient::DeleteAllDocuments(std::string_view index) {
  // _delete_by_query deletes what a search finds, and a search sees only what the last
  // refresh made visible: a document indexed just before (the insert right before a
  // TRUNCATE) would survive. Refresh first.
  auto refreshed = http_.Send("POST", "/" + EncodePathSegment(index) + "/_refresh");
  if (!refreshed.ok()) return refreshed.error();
  if (refreshed.value().status != 200 && refreshed.value().status != 404) {
    return HttpError("refresh", refreshed.value());
  }
  auto response = http_.Send(
      "POST", "/" + EncodePathSegment(index) + "/_delete_by_query?conflicts=proceed&refresh=true",
      R"({"query":{"match_all":{}}})");
  if (!response.ok()) return response.error();
  if (response.value().status == 200 || response.value().status == 404) return Status::Ok();
  return HttpError("delete by query", response.value());
}

Result<std::vector<std::pair<std::string, std::string>>> OpenSearchClient::ScanAll(
    std::string_view index, size_t page) {
  std::vector<std::pair<std::string, std::string>> out;
  auto response = http_.Send("POST", "/" + EncodePathSegment(index) + "/_search?scroll=1m",
                             R"({"size":)" + std::to_string(page) + R"(,"sort":["_doc"]})");
  std::string scroll_id;
  while (true) {
    if (!response.ok()) return response.error();
    if (response.value().status != 200) return HttpError("search", response.value());
    auto body = ParseBody("search", response.value());
    if (!body.ok()) return body.error();
    scroll_id = body.value().value("_scroll_id", "");
    const nlohmann::json& hits = body.value()["hits"]["hits"];
    if (!hits.is_array() || hits.empty()) break;
    for (const nlohmann::json& hit : hits) {
      out.emplace_back(hit.value("_id", ""), hit.value("_source", nlohmann::json::object()).dump());
    }
    response = http_.Send("POST", "/_search/scroll",
                          nlohmann::json{{"scroll", "1m"}, {"scroll_id", scroll_id}}.dump());
  }
  if (!scroll_id.empty()) {
    IgnoreError(
        http_.Send("DELETE", "/_search/scroll", nlohmann::json{{"scroll_id", scroll_id}}.dump())
            .status(),
        "a scroll left open expires after a minute");
  }
  return out;
}

Result<OpenSearchClient::IdPage> OpenSearchClient::ScrollIds(std::string_view index,
                                                             const std::string& scroll,
                                                             size_t count) {
  auto response =
      scroll.empty()
          ? http_.Send(
                "POST", "/" + EncodePathSegment(index) + "/_search?scroll=2m",
                nlohmann::json{{"size", count}, {"sort", {"_doc"}}, {"_source", false}}.dump())
          : http_.Send("POST", "/_search/scroll",
                       nlohmann::json{{"scroll", "2m"}, {"scroll_id", scroll}}.dump());
  if (!response.ok()) return response.error();
  if (scroll.empty() && response.value().status == 404) return IdPage{};  // no such index
  if (response.value().status != 200) return HttpError("search", response.value());
  auto body = ParseBody("search", response.value());
  if (!body.ok()) return body.error();
  IdPage page;
  const nlohmann::json& hits = body.value()["hits"]["hits"];
  if (hits.is_array()) {
    for (const nlohmann::json& hit : hits) page.ids.push_back(hit.value("_id", ""));
  }
  const std::string next = body.value().value("_scroll_id", "");
  if (!page.ids.empty()) {
    page.scroll = next;
  } else if (!next.empty()) {
    IgnoreError(http_.Send("DELETE", "/_search/scroll", nlohmann::json{{"scroll_id", next}}.dump())
                    .status(),
                "a scroll left open expires after two minutes");
  }
  return page;
}

Result<std::vector<std::pair<std::string, std::string>>> OpenSearchClient::MultiGet(
    std::string_view index, const std::vector<std::string>& ids) {
  std::vector<std::pair<std::string, std::string>> out;
  constexpr size_t kPerRequest = 1000;
  for (size_t begin = 0; begin < ids.size(); begin += kPerRequest) {
    nlohmann::json body{{"ids", nlohmann::json::array()}};
    for (size_t i = begin; i < std::min(ids.size(), begin + kPerRequest); ++i) {
      body["ids"].push_back(ids[i]);
    }
    auto response = http_.Send("POST", "/" + EncodePathSegment(index) + "/_mget", body.dump());
    if (!response.ok()) return response.error();
    if (response.value().status == 404) return out;  // no such index
    if (response.value().status != 200) return HttpError("_mget", response.value());
    auto parsed = ParseBody("_mget", response.value());
    if (!parsed.ok()) return parsed.error();
    const nlohmann::json& docs = parsed.value()["docs"];
    if (!docs.is_array()) return Error::Corrupt("OpenSearch _mget answered without docs");
    for (const nlohmann::json& doc : docs) {
      if (!doc.value("found", false)) continue;
      out.emplace_back(doc.value("_id", ""), doc.value("_source", nlohmann::json::object()).dump());
    }
  }
  return out;
}

Result<std::string> OpenSearchClient::ServerVersion() {
  auto response = http_.Send("GET", "/");
  if (!response.ok()) return response.error();
  if (response.value().status != 200) return HttpError("GET /", response.value());
  auto body = ParseBody("GET /", response.value());
  if (!body.ok()) return body.error();
  const nlohmann::json& json = body.value();
  if (!json.contains("version") || !json["version"].is_object()) {
    return Error::Corrupt("OpenSearch GET / has no version object");
  }
  return json["version"].value("number", "");
}

}  // namespace pgderive
