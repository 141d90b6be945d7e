// The corpus file format (tests/support/corpus_case.h): sections, steps in order, and
// malformed files refused with their line.
#include "tests/support/corpus_case.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace pgderive::testing {
namespace {

TEST(CorpusCase, ParsesSectionsAndStepsInOrder) {
  const CorpusCase c = ParseCorpusCase("x",
                                       "-- what it is\n"
                                       "---- config\n  - name: v\n"
                                       "---- schema\ncreate table t (id int);\n"
                                       "---- stream\ninsert into t values (1);\n"
                                       "---- restart\n"
                                       "---- stream\ndelete from t;\n"
                                       "---- expect postgres select id from t\n1\n\n"
                                       "---- expect verify 1\n");
  EXPECT_EQ(c.description, "what it is\n");
  EXPECT_EQ(c.views_yaml, "  - name: v\n");
  EXPECT_EQ(c.schema, "create table t (id int);\n");
  ASSERT_EQ(c.steps.size(), 3u);
  EXPECT_EQ(c.steps[0].sql, "insert into t values (1);\n");
  EXPECT_EQ(c.steps[1].kind, CorpusStep::Kind::kRestart);
  EXPECT_EQ(c.steps[2].line, 9);
  ASSERT_EQ(c.expectations.size(), 2u);
  EXPECT_EQ(c.expectations[0].argument, "select id from t");
  EXPECT_EQ(c.expectations[0].lines, std::vector<std::string>{"1"});
  ASSERT_NE(c.Find("verify"), nullptr);
  EXPECT_EQ(c.Find("verify")->argument, "1");
}

TEST(CorpusCase, RefusesMalformedFilesNamingTheLine) {
  auto message = [](const std::string& text) {
    try {
      ParseCorpusCase("bad", text);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(message("---- config\n---- expect nonsense\n"),
            "corpus case bad, line 2: unknown expectation 'nonsense'");
  EXPECT_EQ(message("---- config\n---- sideways\n"),
            "corpus case bad, line 2: unknown section 'sideways'");
  EXPECT_EQ(message("select 1;\n---- config\n"),
            "corpus case bad, line 1: text before the first section");
  EXPECT_EQ(message("---- schema\n---- expect verify 0\n"),
            "corpus case bad, line 2: no config section");
  EXPECT_EQ(message("---- config\n"), "corpus case bad, line 1: no expect section");
}

}  // namespace
}  // namespace pgderive::testing
