#include "commands/glob.h"

#include <catch2/catch.hpp>
#include <string>

using kvstore::GlobMatch;

TEST_CASE("glob: literals, ? and *") {
  CHECK(GlobMatch("abc", "abc"));
  CHECK_FALSE(GlobMatch("abc", "abd"));
  CHECK_FALSE(GlobMatch("abc", "abcd"));
  CHECK(GlobMatch("a?c", "abc"));
  CHECK_FALSE(GlobMatch("a?c", "ac"));
  CHECK(GlobMatch("*", ""));
  CHECK(GlobMatch("*", "anything"));
  CHECK(GlobMatch("user:*", "user:42"));
  CHECK_FALSE(GlobMatch("user:*", "users:42"));
  CHECK(GlobMatch("*:42", "user:42"));
  CHECK(GlobMatch("a*b*c", "aXXbYYc"));
  CHECK_FALSE(GlobMatch("a*b*c", "aXXbYY"));
  CHECK(GlobMatch("**a", "bba"));
}

TEST_CASE("glob: classes and escapes") {
  CHECK(GlobMatch("h[ae]llo", "hello"));
  CHECK(GlobMatch("h[ae]llo", "hallo"));
  CHECK_FALSE(GlobMatch("h[ae]llo", "hillo"));
  CHECK(GlobMatch("h[^e]llo", "hallo"));
  CHECK_FALSE(GlobMatch("h[^e]llo", "hello"));
  CHECK(GlobMatch("h[a-c]llo", "hbllo"));
  CHECK_FALSE(GlobMatch("h[a-c]llo", "hdllo"));
  CHECK(GlobMatch("h[c-a]llo", "hbllo"));
  CHECK(GlobMatch("a\\*b", "a*b"));
  CHECK_FALSE(GlobMatch("a\\*b", "aXb"));
  CHECK(GlobMatch("[\\]]", "]"));
  // A range ending in ']' (redis-server 7.0: "[a-]" is the range ']'..'a').
  for (const char* key : {"]", "^", "_", "`", "a"}) CHECK(GlobMatch("[a-]", key));
  CHECK_FALSE(GlobMatch("[a-]", "-"));
  CHECK_FALSE(GlobMatch("[a-]", "b"));
  CHECK(GlobMatch("[a-]]", "_"));
  CHECK_FALSE(GlobMatch("[a-]]", "a]"));
}

TEST_CASE("glob: pathological patterns stay fast") {
  const std::string text(5000, 'a');
  CHECK_FALSE(GlobMatch("*a*a*a*a*a*a*a*a*a*a*b", text));
  CHECK(GlobMatch("*a*a*a*a*a*a*a*a*a*a*", text));
}
