#include "config/key_template.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

TEST(KeyTemplateTest, SplitsLiteralsAndColumns) {
  auto parsed = KeyTemplate::Parse("order:{region}:{id}");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message();
  EXPECT_EQ(parsed.value().columns(), (std::vector<std::string>{"region", "id"}));
  ASSERT_EQ(parsed.value().parts().size(), 4u);
  EXPECT_EQ(parsed.value().parts()[0].literal, "order:");
  EXPECT_EQ(parsed.value().parts()[1].column, "region");
  EXPECT_EQ(parsed.value().parts()[2].literal, ":");
  EXPECT_EQ(parsed.value().parts()[3].column, "id");
  EXPECT_EQ(parsed.value().Prefix(), "order:");
  EXPECT_EQ(parsed.value().Pattern(), "order:*:*");
}

TEST(KeyTemplateTest, PatternEscapesGlobCharactersAndFoldsAdjacentColumns) {
  auto parsed = KeyTemplate::Parse("a*[b]{x}{y}");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed.value().Pattern(), "a\\*\\[b\\]*");
  EXPECT_EQ(KeyTemplate::Parse("{id}").value().Prefix(), "");
}

TEST(KeyTemplateTest, RefusesWhatTheConfigurationRefuses) {
  const std::pair<const char*, const char*> cases[] = {
      {"p:{id", "never closed"},       {"p:id}", "without its '{'"},
      {"p:{}", "has an empty {}"},     {"p:{a{b}}", "inside a {column}"},
      {"p:{a{b", "inside a {column}"}, {"plain", "names no {column}"},
      {"", "names no {column}"},
  };
  for (const auto& [text, why] : cases) {
    auto parsed = KeyTemplate::Parse(text);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_EQ(parsed.error().kind(), ErrorKind::kPermanent);
    EXPECT_NE(parsed.error().message().find(why), std::string::npos)
        << text << ": " << parsed.error().message();
  }
}

}  // namespace
}  // namespace pgderive
