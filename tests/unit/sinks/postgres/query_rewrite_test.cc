// The SQL lexing that points a view's query at mirror tables or changed rows.
#include "sinks/postgres/query_rewrite.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

TEST(QueryRewriteTest, ReplacesQualifiedAndBareTablesKeepingAliases) {
  QueryRewrite rewrite;
  rewrite.replacements["public.orders"] = "pgderive.m_orders";
  rewrite.replacements["public.customers"] = "pgderive.m_customers";
  auto out = RewriteQuery(
      "select o.customer_id, c.name from public.orders o join customers as c on c.id = "
      "o.customer_id where o.note <> 'from public.orders' -- public.orders\ngroup by 1, 2",
      rewrite);
  ASSERT_TRUE(out.ok()) << out.error().message();
  EXPECT_EQ(out.value(),
            "select o.customer_id, c.name from pgderive.m_orders o join pgderive.m_customers as "
            "c on c.id = o.customer_id where o.note <> 'from public.orders' -- public.orders\n"
            "group by 1, 2");
}

TEST(QueryRewriteTest, ATableWithoutAliasKeepsItsNameAndLeftJoinsBecomeInner) {
  QueryRewrite rewrite;
  rewrite.replacements["public.customers"] = "pgderive.m_c";
  rewrite.replacements["shop.orders"] = "(select m.* from pgderive.m_o m join k using (id))";
  rewrite.inner_join_to = "shop.orders";
  auto out = RewriteQuery(
      "select customers.id, count(orders.id) from public.customers left outer join "
      "\"shop\".\"orders\" on orders.customer_id = customers.id group by customers.id",
      rewrite);
  ASSERT_TRUE(out.ok()) << out.error().message();
  EXPECT_EQ(out.value(),
            "select customers.id, count(orders.id) from pgderive.m_c as \"customers\" join "
            "(select m.* from pgderive.m_o m join k using (id)) as \"orders\" on "
            "orders.customer_id = customers.id group by customers.id");
}

TEST(QueryRewriteTest, LiteralsCommentsAndFunctionsAreNotTables) {
  QueryRewrite rewrite;
  rewrite.replacements["public.t"] = "X";
  auto out = RewriteQuery(
      "select extract(year from ts), $q$ from t $q$, E'it''s \\' from t' from t /* from t */",
      rewrite);
  ASSERT_TRUE(out.ok()) << out.error().message();
  EXPECT_EQ(out.value(),
            "select extract(year from ts), $q$ from t $q$, E'it''s \\' from t' from X as \"t\" "
            "/* from t */");
  EXPECT_FALSE(RewriteQuery("select 'unterminated", rewrite).ok());
  EXPECT_FALSE(RewriteQuery("select 1 /* open", rewrite).ok());
}

TEST(QueryRewriteTest, UnsupportedConstructsAreNamed) {
  EXPECT_EQ(UnsupportedConstruct("select id, sum(x) over () from t"), "a window function (OVER)");
  EXPECT_EQ(UnsupportedConstruct("select id from t order by id limit 5"), "LIMIT/OFFSET/FETCH");
  EXPECT_EQ(UnsupportedConstruct("select * from a right join b on a.id = b.id"), "a RIGHT JOIN");
  EXPECT_EQ(UnsupportedConstruct("select * from a full outer join b on true"), "a FULL JOIN");
  EXPECT_EQ(UnsupportedConstruct("select id from a union select id from b"),
            "a set operation (union)");
  EXPECT_EQ(UnsupportedConstruct("select 'limit over union' as s, id from t left join u on "
                                 "true group by 1, 2"),
            std::nullopt);
  EXPECT_EQ(CalledFunctions("select count(*), now(), \"Lower\"(x), 'f(1)' from t"),
            (std::vector<std::string>{"count", "now", "Lower"}));
}

}  // namespace
}  // namespace pgderive
