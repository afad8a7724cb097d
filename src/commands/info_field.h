// One "name:value" line of an INFO section, as Redis writes them; every INFO section uses it.
#pragma once

#include <concepts>
#include <string>
#include <string_view>

namespace kvstore {

inline void Field(std::string* text, std::string_view name, std::string_view value) {
  text->append(name);
  text->push_back(':');
  text->append(value);
  text->append("\r\n");
}

template <typename Number>
requires std::integral<Number> || std::floating_point<Number>
void Field(std::string* text, std::string_view name, Number value) {
  Field(text, name, std::string_view(std::to_string(value)));
}

}  // namespace kvstore
