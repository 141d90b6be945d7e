#include "app/sink_factory.h"

#include "sinks/opensearch/opensearch_sink.h"
#include "sinks/postgres/postgres_sink.h"
#include "sinks/redis/redis_sink.h"

namespace pgderive {
namespace {

template <typename Store>
Result<InspectedStore> Make(const Config& config, const StoreConfig& store) {
  auto made = Store::Make(config, store);
  if (!made.ok()) return made.error();
  ViewInspector* inspector = made.value().get();
  return InspectedStore{std::move(made).value(), inspector};
}

}  // namespace

Result<std::vector<InspectedStore>> MakeInspectedStores(
    const Config& config, const std::optional<std::string>& only_view) {
  std::vector<InspectedStore> stores;
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
    auto made = store.type == StoreType::kRedis        ? Make<RedisSink>(scoped, store)
                : store.type == StoreType::kOpenSearch ? Make<OpenSearchSink>(scoped, store)
                                                       : Make<PostgresSink>(scoped, store);
    if (!made.ok()) return made.error();
    stores.push_back(std::move(made).value());
  }
  return stores;
}

Result<std::vector<std::unique_ptr<Sink>>> MakeSinks(const Config& config,
                                                     const std::optional<std::string>& only_view) {
  auto stores = MakeInspectedStores(config, only_view);
  if (!stores.ok()) return stores.error();
  std::vector<std::unique_ptr<Sink>> sinks;
  for (InspectedStore& store : stores.value()) sinks.push_back(std::move(store.sink));
  return sinks;
}

}  // namespace pgderive
