#include "config/url.h"

#include <gtest/gtest.h>

#include <cctype>

namespace pgderive {
namespace {

TEST(UrlTest, SplitsEveryPart) {
  auto url = Url::Parse("redis://app:s%40cret@127.0.0.1:6380/2?timeout=5");
  ASSERT_TRUE(url.has_value());
  EXPECT_EQ(url->scheme, "redis");
  EXPECT_EQ(url->user, "app");
  EXPECT_EQ(url->password, "s@cret");
  EXPECT_EQ(url->host, "127.0.0.1");
  EXPECT_EQ(url->port, 6380);
  EXPECT_EQ(url->path, "/2");
  EXPECT_EQ(url->query, "timeout=5");
}

TEST(UrlTest, OptionalPartsMayBeAbsent) {
  auto url = Url::Parse("HTTP://localhost");
  ASSERT_TRUE(url.has_value());
  EXPECT_EQ(url->scheme, "http");
  EXPECT_EQ(url->host, "localhost");
  EXPECT_FALSE(url->port.has_value());
  EXPECT_FALSE(url->password.has_value());
  EXPECT_EQ(url->path, "");
}

TEST(UrlTest, UserWithoutPassword) {
  auto url = Url::Parse("postgresql://postgres@db:5432/shop");
  ASSERT_TRUE(url.has_value());
  EXPECT_EQ(url->user, "postgres");
  EXPECT_FALSE(url->password.has_value());
  EXPECT_EQ(url->Redacted(), "postgresql://postgres@db:5432/shop");
}

TEST(UrlTest, Ipv6Literal) {
  auto url = Url::Parse("http://[::1]:9200/");
  ASSERT_TRUE(url.has_value());
  EXPECT_EQ(url->host, "::1");
  EXPECT_EQ(url->port, 9200);
  EXPECT_EQ(url->Redacted(), "http://[::1]:9200");  // a lone "/" path is dropped
}

TEST(UrlTest, RedactedHidesPasswordEverywhere) {
  auto url = Url::Parse("https://admin:hunter2@search:9200/?password=hunter3");
  ASSERT_TRUE(url.has_value());
  const std::string redacted = url->Redacted();
  EXPECT_EQ(redacted.find("hunter"), std::string::npos) << redacted;
  EXPECT_EQ(redacted, "https://admin:***@search:9200?password=***");
}

TEST(UrlTest, RejectionsSayWhyWithoutTheSecret) {
  struct Case {
    const char* text;
    const char* why;
  };
  for (const Case& c : {Case{"127.0.0.1:6379", "scheme"}, Case{"redis://:pw@/0", "host"},
                        Case{"redis://h:0", "port"}, Case{"redis://pw:65536@h:65536", "port"},
                        Case{"redis://h:12ab", "port"}, Case{"http://u:pw@[::1", ""}}) {
    std::string why;
    EXPECT_FALSE(Url::Parse(c.text, &why).has_value()) << c.text;
    std::string lower = why;
    for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    EXPECT_FALSE(why.empty()) << c.text;
    EXPECT_NE(lower.find(c.why), std::string::npos) << c.text << " -> " << why;
    EXPECT_EQ(why.find("pw"), std::string::npos) << why;
  }
}

}  // namespace
}  // namespace pgderive
