#pragma once

// The OpenSearch REST calls the sink needs: index management, `_bulk` with every
// item's result checked, and single-document reads (for verify and tests).

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "sinks/opensearch/http_client.h"

namespace pgderive {

// One failed item of a `_bulk` response.
struct BulkItemError {
  size_t position = 0;  // index of the action in the request
  std::string action;   // index, create, update, delete
  std::string id;
  long status = 0;
  std::string type;  // e.g. version_conflict_engine_exception
  std::string reason;
};

struct BulkResult {
  size_t items = 0;
  std::vector<BulkItemError> failures;
};

class OpenSearchClient {
 public:
  static Result<OpenSearchClient> Create(const HttpClient::Options& options);

  // PUT /index with `body` (settings and mappings); an existing index is not an error
  // when `if_missing` is true.
  Status CreateIndex(std::string_view index, const nlohmann::json& body, bool if_missing);
  Status DeleteIndex(std::string_view index, bool if_exists);
  Status Refresh(std::string_view index);
  // The index's own `index.refresh_interval` ("5s", "-1"); nullopt when it has none (the
  // node's default, 1 s, applies).
  Result<std::optional<std::string>> RefreshInterval(std::string_view index);
  // Sets it (nullopt: removes it, back to the default). False when the index is missing.
  Result<bool> SetRefreshInterval(std::string_view index,
                                  const std::optional<std::string>& interval);

  // POST /_bulk with an NDJSON body (every line ends with '\n'). 429 and 5xx are
  // transient errors; item failures are returned in BulkResult for the caller to judge
  // (a version conflict on replay is success for an externally versioned sink).
  Result<BulkResult> Bulk(std::string_view ndjson, std::string_view refresh = "false");

  // GET /index/_doc/id: the document's _source and _version, or nullopt when absent.
  struct Document {
    nlohmann::json source;
    long long version = 0;
  };
  Result<std::optional<Document>> Get(std::string_view index, std::string_view id);
  // DELETE /index/_doc/id (refreshed): whether there was such a document (a missing
  // index has none).
  Result<bool> DeleteDocument(std::string_view index, std::string_view id);
  Result<long long> Count(std::string_view index);
  Result<bool> IndexExists(std::string_view index);
  // The indexes the alias `alias` points to (sorted); empty when there is no such alias
  // (an index of that name is no alias).
  Result<std::vector<std::string>> AliasIndexes(std::string_view alias);
  // POST /_aliases with `actions` (add, remove, remove_index): applied as one change of
  // the cluster state, so readers of an alias see the old index or the new, never none.
  Status UpdateAliases(const nlohmann::json& actions);
  // The UUID of `index` (the indexes behind it, comma-separated, when it is an alias),
  // or nullopt when there is none: a deleted and recreated index has another.
  Result<std::optional<std::string>> IndexUuid(std::string_view index);

  // Deletes every document of `index`, including those indexed since the last refresh
  // (_refresh, then _delete_by_query, conflicts proceed, refresh); a missing index is
  // not an error.
  Status DeleteAllDocuments(std::string_view index);

  // Every document of `index` as (_id, _source as JSON text), read with a scroll of
  // `page` documents at a time. Reads what is searchable: refresh first.
  Result<std::vector<std::pair<std::string, std::string>>> ScanAll(std::string_view index,
                                                                   size_t page = 1000);

  // One page of the ids of `index` (a scroll, _source left out, `count` a page): from
  // `scroll` (empty: a new scroll), with the scroll to go on from (empty after the last
  // page, the scroll then cleared). Searchable documents only. A scroll is kept 2
  // minutes between pages; a missing index has no ids.
  struct IdPage {
    std::vector<std::string> ids;
    std::string scroll;
  };
  Result<IdPage> ScrollIds(std::string_view index, const std::string& scroll, size_t count);

  // The documents of `index` with the ids `ids` as (_id, _source as JSON text), in the
  // order of `ids`, those found only; read with _mget (real time: what was indexed,
  // refreshed or not), 1000 ids a request. A missing index holds none.
  Result<std::vector<std::pair<std::string, std::string>>> MultiGet(
      std::string_view index, const std::vector<std::string>& ids);

  // GET / : the server's version number, e.g. "2.19.1".
  Result<std::string> ServerVersion();

 private:
  explicit OpenSearchClient(HttpClient http) : http_(std::move(http)) {}
  Error HttpError(std::string_view what, const HttpResponse& response) const;
  Result<nlohmann::json> ParseBody(std::string_view what, const HttpResponse& response) const;

  HttpClient http_;
};

// Percent-encodes a document id or index name for use in a URL path.
std::string EncodePathSegment(std::string_view segment);

}  // namespace pgderive
