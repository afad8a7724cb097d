// Glob matching with one backtrack point per '*': when a later part fails, the most recent star
// absorbs one more character. That is enough for globs because '*' is the only variable-length
// token, and keeps the match linear-times-pattern instead of exponential.
#include "commands/glob.h"

#include <cstddef>

namespace kvstore {
namespace {

// Matches one single-character token at pattern[*p] against c; advances *p past the token.
// Returns false when the token does not match c.
bool MatchOne(std::string_view pattern, std::size_t* p, char c) {
  const char token = pattern[*p];
  if (token == '?') {
    ++*p;
    return true;
  }
  if (token == '\\' && *p + 1 < pattern.size()) {
    const bool matched = pattern[*p + 1] == c;
    *p += 2;
    return matched;
  }
  if (token != '[') {
    ++*p;
    return token == c;
  }
  // A character class: [abc], [^abc], [a-z], with \ escaping the next character.
  std::size_t i = *p + 1;
  bool negate = false;
  if (i < pattern.size() && pattern[i] == '^') {
    negate = true;
    ++i;
  }
  bool matched = false;
  while (i < pattern.size() && pattern[i] != ']') {
    if (pattern[i] == '\\' && i + 1 < pattern.size()) {
      if (pattern[i + 1] == c) matched = true;
      i += 2;
    } else if (i + 2 < pattern.size() && pattern[i + 1] == '-') {
      // As in Redis, a range takes the character after '-' even when it is ']': "[a-]" is the
      // range from ']' to 'a', and the class runs on to the next ']'.
      char low = pattern[i], high = pattern[i + 2];
      if (low > high) std::swap(low, high);
      if (c >= low && c <= high) matched = true;
      i += 3;
    } else {
      if (pattern[i] == c) matched = true;
      ++i;
    }
  }
  // An unterminated class runs to the end of the pattern, as in Redis.
  *p = i < pattern.size() ? i + 1 : i;
  return negate ? !matched : matched;
}

}  // namespace

bool GlobMatch(std::string_view pattern, std::string_view text) {
  std::size_t p = 0, t = 0;
  std::size_t star_p = std::string_view::npos;  // pattern index just after the last '*'
  std::size_t star_t = 0;                       // text index that star currently ends at
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      while (p < pattern.size() && pattern[p] == '*') ++p;
      if (p == pattern.size()) return true;
      star_p = p;
      star_t = t;
      continue;
    }
    std::size_t next_p = p;
    if (p < pattern.size() && MatchOne(pattern, &next_p, text[t])) {
      p = next_p;
      ++t;
      continue;
    }
    if (star_p == std::string_view::npos) return false;
    p = star_p;
    t = ++star_t;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace kvstore
