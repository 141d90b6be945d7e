#include "base/redact.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

TEST(RedactTest, UriPasswords) {
  EXPECT_EQ(RedactSecrets("postgresql://app:s3cr3t@db:5432/shop"),
            "postgresql://app:***@db:5432/shop");
  EXPECT_EQ(RedactSecrets("connect to redis://:pw@127.0.0.1:6379/0 failed"),
            "connect to redis://:***@127.0.0.1:6379/0 failed");
  EXPECT_EQ(RedactSecrets("a http://u:p@h b https://v:q@i c"),
            "a http://u:***@h b https://v:***@i c");
}

TEST(RedactTest, UriWithoutPasswordIsUnchanged) {
  EXPECT_EQ(RedactSecrets("postgresql://postgres@127.0.0.1/shop"),
            "postgresql://postgres@127.0.0.1/shop");
  EXPECT_EQ(RedactSecrets("http://127.0.0.1:9200/_bulk"), "http://127.0.0.1:9200/_bulk");
}

TEST(RedactTest, KeyValueForm) {
  EXPECT_EQ(RedactSecrets("host=db user=app password=s3cr3t dbname=shop"),
            "host=db user=app password=*** dbname=shop");
  EXPECT_EQ(RedactSecrets("host=db password='a b\\'c' dbname=shop"),
            "host=db password=*** dbname=shop");
  EXPECT_EQ(RedactSecrets("PASSWORD = x1"), "PASSWORD = ***");
  EXPECT_EQ(RedactSecrets("postgresql://h/db?sslmode=require&password=x&user=u"),
            "postgresql://h/db?sslmode=require&password=***&user=u");
  EXPECT_EQ(RedactSecrets("sslpassword=k token=t secret=s"),
            "sslpassword=*** token=*** secret=***");
}

TEST(RedactTest, LeavesLookalikesAlone) {
  // Only whole keys: "nopassword=" and "password_hint" are not secrets we know of.
  EXPECT_EQ(RedactSecrets("nopassword=1 password_hint=x"), "nopassword=1 password_hint=x");
  EXPECT_EQ(RedactSecrets("password authentication failed for user \"app\""),
            "password authentication failed for user \"app\"");
}

}  // namespace
}  // namespace pgderive
