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

using Splits = std::vector<std::vector<std::string>>;

TEST(KeyTemplateTest, SplitsAKeyBackIntoItsColumnsValues) {
  const KeyTemplate simple = KeyTemplate::Parse("product:{id}").value();
  EXPECT_EQ(simple.Splits("product:42"), (Splits{{"42"}}));
  EXPECT_EQ(simple.Splits("product:"), (Splits{{""}}));
  EXPECT_EQ(simple.Splits("products:42"), Splits{});
  EXPECT_EQ(simple.Splits("other:42"), Splits{});

  const KeyTemplate two = KeyTemplate::Parse("t:{a}:{b}!").value();
  EXPECT_EQ(two.Splits("t:1:2!"), (Splits{{"1", "2"}}));
  // A value holding the literal after it: every reading, shortest first.
  EXPECT_EQ(two.Splits("t:1:2:3!"), (Splits{{"1", "2:3"}, {"1:2", "3"}}));
  EXPECT_EQ(two.Splits("t:1:2:3"), Splits{});  // no closing literal

  // Adjacent columns split everywhere; the limit bounds the readings.
  const KeyTemplate adjacent = KeyTemplate::Parse("{a}{b}").value();
  EXPECT_EQ(adjacent.Splits("xy"), (Splits{{"", "xy"}, {"x", "y"}, {"xy", ""}}));
  EXPECT_EQ(adjacent.Splits("xyz", 2).size(), 2u);

  // Whatever the template makes splits back to at least the values it was made of.
  const KeyTemplate mixed = KeyTemplate::Parse("{tenant}/orders/{id}").value();
  const Splits read = mixed.Splits("acme/orders/x/orders/7");
  EXPECT_EQ(read, (Splits{{"acme", "x/orders/7"}, {"acme/orders/x", "7"}}));
}

}  // namespace
}  // namespace pgderive
