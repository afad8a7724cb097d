// Redis-style glob matching for KEYS, SCAN MATCH and CONFIG GET: * ? [abc] [^a] [a-z] and \x.
// Pure function, thread-safe. Runs in O(len(pattern) * len(text)) at worst (no exponential
// backtracking on patterns like "*a*a*a*b").
#pragma once

#include <string_view>

namespace kvstore {

bool GlobMatch(std::string_view pattern, std::string_view text);

}  // namespace kvstore
