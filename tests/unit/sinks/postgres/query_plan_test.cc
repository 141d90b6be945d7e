// Query-plan analysis: what EXPLAIN (VERBOSE, FORMAT JSON) says a view's query reads,
// and whether its key passes a table's key through. The plans are PostgreSQL 15's
// output, trimmed to the fields the analysis reads.
#include "sinks/postgres/query_plan.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

// select o.customer_id, c.name, sum(o.amount) from public.orders o join customers c
// on c.id = o.customer_id where o.amount > 0 group by 1, 2
constexpr const char* kJoinPlan = R"json([{"Plan": {
  "Node Type": "Aggregate", "Output": ["o.customer_id", "c.name", "sum(o.amount)"],
  "Group Key": ["o.customer_id", "c.name"],
  "Plans": [{"Node Type": "Hash Join", "Join Type": "Inner",
    "Output": ["o.customer_id", "c.name", "o.amount"], "Hash Cond": "(o.customer_id = c.id)",
    "Plans": [
      {"Node Type": "Seq Scan", "Relation Name": "orders", "Schema": "public", "Alias": "o",
       "Output": ["o.customer_id", "o.amount"], "Filter": "(o.amount > '0'::numeric)"},
      {"Node Type": "Hash", "Output": ["c.name", "c.id"],
       "Plans": [{"Node Type": "Seq Scan", "Relation Name": "customers", "Schema": "public",
                  "Alias": "c", "Output": ["c.name", "c.id"]}]}]}]
}
}])json";

// select id, customer_id, total from orders (one scan: columns unqualified)
constexpr const char* kOneScanPlan = R"json([{"Plan": {
  "Node Type": "Seq Scan", "Relation Name": "orders", "Schema": "public", "Alias": "orders",
  "Output": ["id", "customer_id", "total"]}}])json";

// select id from (select id, amount from orders where amount > 1) q
constexpr const char* kKeyPlan = R"json([{"Plan": {
  "Node Type": "Seq Scan", "Relation Name": "orders", "Schema": "public", "Alias": "orders",
  "Output": ["orders.id"], "Filter": "(orders.amount > '1'::numeric)"
}
}])json";

// select customer_id from (select customer_id, count(*) from orders group by 1) q
constexpr const char* kGroupedKeyPlan = R"json([{"Plan": {
  "Node Type": "Subquery Scan", "Alias": "q", "Output": ["q.customer_id"],
  "Plans": [{"Node Type": "Aggregate", "Output": ["orders.customer_id", "NULL::bigint"],
    "Group Key": ["orders.customer_id"],
    "Plans": [{"Node Type": "Seq Scan", "Relation Name": "orders", "Schema": "public",
               "Alias": "orders", "Output": ["orders.id", "orders.customer_id"]}]}]}}])json";

// PostgreSQL's error about EXPLAIN of a query quotes the query's first line with the
// EXPLAIN before it; the user sees their own line, the caret under the same character.
TEST(QueryPlanTest, AnErrorQuotesTheQueryNotTheStatementAroundIt) {
  const std::string prefix = "explain (verbose, format json) ";
  const std::string caret(8 + prefix.size() + 9, ' ');
  EXPECT_EQ(WithoutStatementPrefix("explain failed: ERROR:  syntax error at or near \"x\"\nLINE "
                                   "1: explain (verbose, format json) select 1 frm x\n" +
                                       caret + "^ (SQLSTATE 42601)",
                                   prefix),
            "explain failed: ERROR:  syntax error at or near \"x\"\nLINE 1: select 1 frm x\n" +
                std::string(8 + 9, ' ') + "^ (SQLSTATE 42601)");
  // Another line of the query, or no quote at all: as it is.
  const std::string line2 = "ERROR:  column \"nope\" does not exist\nLINE 2:  nope from t\n   ^";
  EXPECT_EQ(WithoutStatementPrefix(line2, prefix), line2);
  EXPECT_EQ(WithoutStatementPrefix("connection lost", prefix), "connection lost");
}

TEST(QueryPlanTest, ReadsScansRelationsAndExpressions) {
  const QueryPlan plan = ParsePlan(kJoinPlan);
  EXPECT_EQ(plan.relations, (std::vector<std::string>{"public.orders", "public.customers"}));
  ASSERT_EQ(plan.scans.size(), 2u);
  EXPECT_EQ(plan.scans[0].alias, "o");
  EXPECT_EQ(plan.scans[0].table, "public.orders");
  EXPECT_EQ(plan.scans[1].alias, "c");
  EXPECT_EQ(plan.scans[1].table, "public.customers");
  auto has = [&](const std::string& e) {
    return std::find(plan.expressions.begin(), plan.expressions.end(), e) != plan.expressions.end();
  };
  EXPECT_TRUE(has("(o.customer_id = c.id)"));
  EXPECT_TRUE(has("(o.amount > '0'::numeric)"));
  EXPECT_TRUE(has("sum(o.amount)"));
  // Names of nodes and relations are not expressions.
  EXPECT_FALSE(has("Seq Scan"));
  EXPECT_FALSE(has("orders"));
  EXPECT_FALSE(has("public"));
}

TEST(QueryPlanTest, ATableScannedTwiceIsOneRelation) {
  const QueryPlan plan = ParsePlan(R"json([{"Plan": {"Node Type": "Nested Loop", "Plans": [
      {"Node Type": "Seq Scan", "Relation Name": "t", "Schema": "s", "Alias": "a"},
      {"Node Type": "Seq Scan", "Relation Name": "t", "Schema": "s", "Alias": "b"}]}}])json");
  EXPECT_EQ(plan.relations, std::vector<std::string>{"s.t"});
  EXPECT_EQ(plan.scans.size(), 2u);
}

TEST(QueryPlanTest, TextThatIsNotJsonIsAnEmptyPlan) {
  const QueryPlan plan = ParsePlan("not json [");
  EXPECT_TRUE(plan.relations.empty());
  EXPECT_TRUE(plan.scans.empty());
  EXPECT_TRUE(plan.expressions.empty());
}

TEST(QueryPlanTest, AReferenceCountsOnlyAsAWholeName) {
  EXPECT_TRUE(MentionsReference("(o.amount > 0)", "o.amount"));
  EXPECT_TRUE(MentionsReference("o.amount", "o.amount"));
  EXPECT_TRUE(MentionsReference("sum(o.amount) + o.amount_x", "o.amount"));
  EXPECT_FALSE(MentionsReference("(o.amount_x > 0)", "o.amount"));
  EXPECT_FALSE(MentionsReference("(po.amount > 0)", "o.amount"));
  EXPECT_FALSE(MentionsReference("(x.o.amount > 0)", "o.amount"));
  EXPECT_FALSE(MentionsReference("(\"o\".amount > 0)", "o.amount"));
  EXPECT_TRUE(MentionsReference("(\"o\".amount > 0)", "\"o\".amount"));
  EXPECT_FALSE(MentionsReference("o.amount$1", "o.amount"));
}

TEST(QueryPlanTest, AColumnIsReadThroughItsScansAlias) {
  const QueryPlan plan = ParsePlan(kJoinPlan);
  const PlanScan& orders = plan.scans[0];
  EXPECT_EQ(FirstColumnRead(plan, orders, {"total", "amount"}), std::optional<size_t>(1));
  EXPECT_EQ(FirstColumnRead(plan, orders, {"total"}), std::nullopt);
  // c.id is read, but not through the scan of orders.
  EXPECT_EQ(FirstColumnRead(plan, orders, {"id"}), std::nullopt);
  EXPECT_EQ(FirstColumnRead(plan, plan.scans[1], {"id"}), std::optional<size_t>(0));
}

TEST(QueryPlanTest, InAPlanOfOneScanColumnsAreUnqualified) {
  const QueryPlan plan = ParsePlan(kOneScanPlan);
  ASSERT_EQ(plan.scans.size(), 1u);
  EXPECT_EQ(FirstColumnRead(plan, plan.scans[0], {"note", "total"}), std::optional<size_t>(1));
  EXPECT_EQ(FirstColumnRead(plan, plan.scans[0], {"note"}), std::nullopt);
  // A quoted name as EXPLAIN writes one that needs quoting.
  const QueryPlan quoted = ParsePlan(R"json([{"Plan": {"Node Type": "Seq Scan",
      "Relation Name": "t", "Schema": "public", "Alias": "t", "Output": ["\"Total\""]}}])json");
  EXPECT_EQ(FirstColumnRead(quoted, quoted.scans[0], {"Total"}), std::optional<size_t>(0));
}

TEST(QueryPlanTest, APartitionStandsForTheNearestAncestorTheQueryNames) {
  const std::vector<std::string> ancestors = {"orders_2024_q1", "orders_2024", "orders"};
  EXPECT_EQ(NearestNamed(QueryNames("select * from public.orders"), ancestors), 2u);
  EXPECT_EQ(NearestNamed(QueryNames("select * from orders_2024 where id > 1"), ancestors), 1u);
  EXPECT_EQ(NearestNamed(QueryNames("select * from orders_2024_q1"), ancestors), 0u);
  // Named through a view: the root.
  EXPECT_EQ(NearestNamed(QueryNames("select * from recent_orders"), ancestors), 2u);
  // A table that is no partition is its own only ancestor.
  EXPECT_EQ(NearestNamed({}, {"orders"}), 0u);
}

TEST(QueryPlanTest, QueryNamesAreWordsAndQuotedNamesNotLiterals) {
  const auto names = QueryNames("select \"Mixed\".a from S.\"Mixed\" where b = 'orders'");
  EXPECT_TRUE(names.contains("Mixed"));
  EXPECT_TRUE(names.contains("s"));  // a word, lower-cased
  EXPECT_TRUE(names.contains("select"));
  EXPECT_FALSE(names.contains("orders"));
  EXPECT_TRUE(QueryNames("select 'unterminated").empty());
}

TEST(QueryPlanTest, AKeyPassedThroughFromTheTablesKeyIsFound) {
  EXPECT_EQ(KeyPassThrough(kKeyPlan, "public.orders", {"id"}, 1), std::vector<std::string>{"id"});
  // Composite keys map column by column, in the view key's order.
  EXPECT_EQ(KeyPassThrough(R"json([{"Plan": {"Node Type": "Index Only Scan", "Relation Name": "t",
                "Schema": "s", "Alias": "x", "Output": ["x.b", "x.a"]}}])json",
                           "s.t", {"a", "b"}, 2),
            (std::vector<std::string>{"b", "a"}));
  // A bitmap scan reads through its index scans only.
  EXPECT_EQ(KeyPassThrough(R"json([{"Plan": {"Node Type": "Bitmap Heap Scan", "Relation Name": "t",
                "Schema": "s", "Alias": "t", "Output": ["t.id"],
                "Plans": [{"Node Type": "Bitmap Index Scan"}]}}])json",
                           "s.t", {"id"}, 1),
            std::vector<std::string>{"id"});
}

TEST(QueryPlanTest, AnythingElseIsNoPassThrough) {
  // An aggregate's group key.
  EXPECT_TRUE(KeyPassThrough(kGroupedKeyPlan, "public.orders", {"id"}, 1).empty());
  // Another table, a non-key column, a repeated column, fewer key columns, no JSON.
  EXPECT_TRUE(KeyPassThrough(kKeyPlan, "public.customers", {"id"}, 1).empty());
  EXPECT_TRUE(KeyPassThrough(kKeyPlan, "public.orders", {"customer_id"}, 1).empty());
  EXPECT_TRUE(KeyPassThrough(R"json([{"Plan": {"Node Type": "Seq Scan", "Relation Name": "t",
                "Schema": "s", "Alias": "t", "Output": ["t.a", "t.a"]}}])json",
                             "s.t", {"a", "b"}, 2)
                  .empty());
  EXPECT_TRUE(KeyPassThrough(kKeyPlan, "public.orders", {"id", "region"}, 1).empty());
  EXPECT_TRUE(KeyPassThrough("", "public.orders", {"id"}, 1).empty());
  // An expression over the key column.
  EXPECT_TRUE(KeyPassThrough(R"json([{"Plan": {"Node Type": "Seq Scan", "Relation Name": "t",
                "Schema": "s", "Alias": "t", "Output": ["(t.id + 1)"]}}])json",
                             "s.t", {"id"}, 1)
                  .empty());
  // A scan with another child (a sub-plan in a filter).
  EXPECT_TRUE(KeyPassThrough(R"json([{"Plan": {"Node Type": "Seq Scan", "Relation Name": "t",
                "Schema": "s", "Alias": "t", "Output": ["t.id"],
                "Plans": [{"Node Type": "Seq Scan"}]}}])json",
                             "s.t", {"id"}, 1)
                  .empty());
}

TEST(QueryPlanTest, LookupColumnsAreThoseJoinedFilteredOrGroupedOn) {
  const std::vector<std::string> columns = {"a", "b", "c", "d", "e", "f", "x", "y"};
  EXPECT_EQ(LookupColumns("select a, b from t join u on u.x = t.y where c > 1 group by d "
                          "having count(e) > 0 order by f",
                          columns),
            (std::set<std::string>{"c", "d", "e", "x", "y"}));
  // Clauses are told by the keyword that opened them last: a subquery's SELECT ends the
  // WHERE it is in (d goes unindexed - a slower lookup, never a wrong row).
  EXPECT_EQ(LookupColumns("select a from t where c in (select b from u) and d = 1", columns),
            (std::set<std::string>{"c"}));
  EXPECT_TRUE(LookupColumns("select a from t where 'x", columns).empty());
}

}  // namespace
}  // namespace pgderive
