#include "base/names.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

TEST(NamesTest, EditDistanceCountsASwapOfNeighboursAsOne) {
  EXPECT_EQ(EditDistance("product_cahce", "product_cache"), 1u);
  EXPECT_EQ(EditDistance("cache", "cache"), 0u);
  EXPECT_EQ(EditDistance("", "abc"), 3u);
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
}

TEST(NamesTest, ClosestNameOnlyForATypo) {
  const std::vector<std::string> views = {"product_cache", "product_search", "customer_totals"};
  EXPECT_EQ(ClosestName("product_cahce", views), "product_cache");
  EXPECT_EQ(ClosestName("product_serch", views), "product_search");
  EXPECT_EQ(ClosestName("orders", views), std::nullopt);
  EXPECT_EQ(ClosestName("product_cache", views), std::nullopt);  // it is valid
  // Two equally close: no guess.
  EXPECT_EQ(ClosestName("ab", {"aa", "bb"}), std::nullopt);
}

TEST(NamesTest, ValidNamesListsThemAndGuessesWhenClose) {
  const std::vector<std::string> views = {"product_cache", "product_search", "customer_totals"};
  EXPECT_EQ(ValidNames("product_cahce", views, "views"),
            "(views: product_cache, product_search, customer_totals; did you mean "
            "product_cache?)");
  EXPECT_EQ(ValidNames("orders", views, "views"),
            "(views: product_cache, product_search, customer_totals)");
  EXPECT_EQ(ValidNames("x", {}, "stores"), "(there are no stores)");
}

}  // namespace
}  // namespace pgderive
