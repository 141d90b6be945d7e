// Redis 7 from compose/local: pipelined writes and reads, binary-safe values, error
// replies per command, and connection errors that say where without the password.
#include <gtest/gtest.h>

#include "sinks/redis/redis_client.h"
#include "sinks/redis/redis_sink.h"
#include "tests/support/stack_env.h"

namespace pgderive {
namespace {

using testing::UniqueName;

TEST(RedisIntegrationTest, PipelinedWritesThenReads) {
  PGDERIVE_REQUIRE_STACK();
  auto client = RedisClient::Connect(stack.redis_url());
  ASSERT_TRUE(client.ok()) << client.error().ToString();
  RedisClient& redis = client.value();

  const std::string prefix = UniqueName("pipe");
  constexpr int kKeys = 2000;
  std::vector<RedisCommand> writes;
  std::vector<RedisCommand> reads;
  for (int i = 0; i < kKeys; ++i) {
    std::string value = "{\"id\":" + std::to_string(i) + ",\"title\":\"caf\xC3\xA9\"}";
    if (i % 7 == 0) value.push_back('\0');  // binary-safe: embedded NUL survives
    writes.push_back({"SET", prefix + ":" + std::to_string(i), value});
    reads.push_back({"GET", prefix + ":" + std::to_string(i)});
  }
  auto written = redis.Pipeline(writes);
  ASSERT_TRUE(written.ok()) << written.error().ToString();
  ASSERT_EQ(written.value().size(), static_cast<size_t>(kKeys));
  for (const RedisReply& reply : written.value()) {
    ASSERT_EQ(reply.type, RedisReply::Type::kStatus);
    EXPECT_EQ(reply.str, "OK");
  }

  auto read = redis.Pipeline(reads);
  ASSERT_TRUE(read.ok()) << read.error().ToString();
  ASSERT_EQ(read.value().size(), static_cast<size_t>(kKeys));
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_EQ(read.value()[i].type, RedisReply::Type::kString) << i;
    EXPECT_EQ(read.value()[i].str, writes[i][2]) << i;
  }

  std::vector<RedisCommand> deletes;
  for (const RedisCommand& write : writes) deletes.push_back({"DEL", write[1]});
  auto deleted = redis.Pipeline(deletes);
  ASSERT_TRUE(deleted.ok());
  long long removed = 0;
  for (const RedisReply& reply : deleted.value()) removed += reply.integer;
  EXPECT_EQ(removed, kKeys);
  auto gone = redis.Command({"EXISTS", writes[0][1]});
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone.value().integer, 0);
}

TEST(RedisIntegrationTest, ErrorReplyBelongsToItsCommandOnly) {
  PGDERIVE_REQUIRE_STACK();
  auto client = RedisClient::Connect(stack.redis_url());
  ASSERT_TRUE(client.ok()) << client.error().ToString();
  const std::string key = UniqueName("err");
  auto replies = client.value().Pipeline(
      {{"SET", key, "not a number"}, {"INCR", key}, {"GET", key}, {"DEL", key}});
  ASSERT_TRUE(replies.ok()) << replies.error().ToString();
  ASSERT_EQ(replies.value().size(), 4u);
  EXPECT_EQ(replies.value()[1].type, RedisReply::Type::kError);
  EXPECT_NE(replies.value()[1].str.find("not an integer"), std::string::npos);
  EXPECT_EQ(replies.value()[2].str, "not a number");
  EXPECT_FALSE(client.value().broken());
}

TEST(RedisIntegrationTest, SelectsTheDatabaseOfTheUrl) {
  PGDERIVE_REQUIRE_STACK();
  const std::string base = "redis://127.0.0.1:" + stack.Value("PGDERIVE_REDIS_PORT");
  auto db3 = RedisClient::Connect(base + "/3");
  auto db0 = RedisClient::Connect(base + "/0");
  ASSERT_TRUE(db3.ok() && db0.ok());
  const std::string key = UniqueName("db");
  ASSERT_TRUE(db3.value().Command({"SET", key, "in db 3"}).ok());
  auto in0 = db0.value().Command({"EXISTS", key});
  auto in3 = db3.value().Command({"GET", key});
  ASSERT_TRUE(in0.ok() && in3.ok());
  EXPECT_EQ(in0.value().integer, 0);
  EXPECT_EQ(in3.value().str, "in db 3");
  IgnoreError(db3.value().Command({"DEL", key}).status(), "test cleanup");
}

TEST(RedisIntegrationTest, ConnectionErrorsSayWhereButNotThePassword) {
  PGDERIVE_REQUIRE_STACK();
  // The stack's Redis has no password: AUTH is refused, and the message names the URL
  // with the password masked.
  auto auth = RedisClient::Connect(
      "redis://:T0pSecret@127.0.0.1:" + stack.Value("PGDERIVE_REDIS_PORT") + "/0");
  ASSERT_FALSE(auth.ok());
  EXPECT_EQ(auth.error().kind(), ErrorKind::kPermanent);
  EXPECT_EQ(auth.error().message().find("T0pSecret"), std::string::npos);
  EXPECT_NE(auth.error().message().find(":***@127.0.0.1"), std::string::npos)
      << auth.error().message();

  auto bad_db = RedisClient::Connect("redis://127.0.0.1:6379/zero");
  ASSERT_FALSE(bad_db.ok());
  EXPECT_EQ(bad_db.error().kind(), ErrorKind::kPermanent);
  EXPECT_NE(bad_db.error().message().find("database number"), std::string::npos);

  // Port 1 on loopback is closed: a transient error naming the endpoint.
  auto refused = RedisClient::Connect("redis://:pw@127.0.0.1:1/0", std::chrono::milliseconds(500));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind(), ErrorKind::kTransient);
  EXPECT_NE(refused.error().message().find("127.0.0.1:1"), std::string::npos)
      << refused.error().message();
}

// The verification of a chunk reads a view's entries by key: those held, in one
// pipeline, a key not held left out; a key of another pattern is never read as the
// view's.
TEST(RedisIntegrationTest, ReadEntriesReadsAViewsEntriesByKey) {
  PGDERIVE_REQUIRE_STACK();
  const std::string prefix = UniqueName("entries");
  const ConfigResult parsed =
      ParseConfig("pipeline: " + prefix + "\nsource:\n  dsn: \"" + stack.pg_dsn() +
                      "\"\nstores:\n  cache:\n    type: redis\n    url: \"" + stack.redis_url() +
                      "\"\nviews:\n  - name: items\n"
                      "    store: cache\n    from: public.items\n    key: \"" +
                      prefix + ":{id}\"\n",
                  "test.yaml");
  ASSERT_TRUE(parsed.config) << parsed.Describe("test.yaml");
  auto sink = RedisSink::Make(*parsed.config, parsed.config->stores.at("cache"));
  ASSERT_TRUE(sink.ok()) << sink.error().ToString();
  ASSERT_TRUE(sink.value()->Connect().ok());
  auto client = RedisClient::Connect(stack.redis_url());
  ASSERT_TRUE(client.ok());
  std::vector<RedisCommand> writes;
  std::vector<std::string> keys;
  for (int i = 1; i <= 2500; ++i) {
    keys.push_back(prefix + ":" + std::to_string(i));
    if (i % 10 != 0) writes.push_back({"SET", keys.back(), R"({"id":)" + std::to_string(i) + "}"});
  }
  ASSERT_TRUE(client.value().Pipeline(writes).ok());

  auto entries = sink.value()->ReadEntries("items", keys);
  ASSERT_TRUE(entries.ok()) << entries.error().ToString();
  ASSERT_EQ(entries.value().size(), 2250u);  // every tenth is not held
  EXPECT_EQ(entries.value().front().first, prefix + ":1");
  EXPECT_EQ(entries.value().front().second, R"({"id":1})");
  EXPECT_EQ(entries.value().back().first, prefix + ":2499");
  EXPECT_FALSE(sink.value()->ReadEntries("no_such_view", keys).ok());

  std::vector<RedisCommand> deletes;
  for (const std::string& key : keys) deletes.push_back({"DEL", key});
  ASSERT_TRUE(client.value().Pipeline(deletes).ok());
}

}  // namespace
}  // namespace pgderive
