#include "app/sink_factory.h"

#include "sinks/opensearch/opensearch_sink.h"
#include "sinks/postgres/postgres_sink.h"
#include "sinks/redis/redis_sink.h"

namespace pgderive {

Result<std::vector<std::unique_ptr<Sink>>> MakeSinks(const Config& config,
                                                     const std::optional<std::string>& only_view) {
  std::vector<std::unique_ptr<Sink>> sinks;
  for (const auto& [name, store] : config.stores) {
    bool used = false;
    for (const ViewConfig& view : config.views) {
      used = used || (view.store == name && (!only_view || view.name == *only_view));
    }
    if (!used) continue;
    Config scoped = config;
    if (only_view) {
      std::erase_if(scoped.views, [&](const ViewConfig& v) { return v.name != *only_view; });
    }
    if (store.type == StoreType::kRedis) {
      auto sink = RedisSink::Make(scoped, store);
      if (!sink.ok()) return sink.error();
      sinks.push_back(std::move(sink).value());
    } else if (store.type == StoreType::kOpenSearch) {
      auto sink = OpenSearchSink::Make(scoped, store);
      if (!sink.ok()) return sink.error();
      sinks.push_back(std::move(sink).value());
    } else {
      auto sink = PostgresSink::Make(scoped, store);
      if (!sink.ok()) return sink.error();
      sinks.push_back(std::move(sink).value());
    }
  }
  return sinks;
}

}  // namespace pgderive
