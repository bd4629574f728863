#pragma once

// ASCII character classes and case folding, independent of the C locale.
//
// Protocol text is ASCII and its case rules are ASCII's: SMTP verbs, ESMTP keywords and domain
// names are case-insensitive (RFC 5321 §2.4), and so are header field names (RFC 5322 §1.2.2).
// <cctype> answers by the current C locale (in a Turkish locale 'I' does not lower to 'i') and is
// undefined for a negative char, which every octet >= 0x80 is where char is signed. These never
// consult the locale; an octet outside ASCII is no letter and no digit and is never changed.

#include <cstddef>
#include <string>
#include <string_view>

namespace sluice {

constexpr bool IsAsciiUpper(char c) {
  return c >= 'A' && c <= 'Z';
}
constexpr bool IsAsciiLower(char c) {
  return c >= 'a' && c <= 'z';
}
constexpr bool IsAsciiAlpha(char c) {
  return IsAsciiUpper(c) || IsAsciiLower(c);
}
constexpr bool IsAsciiDigit(char c) {
  return c >= '0' && c <= '9';
}
// A letter or a digit: RFC 5321 §4.1.2 "Let-dig".
constexpr bool IsAsciiAlnum(char c) {
  return IsAsciiAlpha(c) || IsAsciiDigit(c);
}
constexpr bool IsAsciiHexDigit(char c) {
  return IsAsciiDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// The value of a hexadecimal digit of either case, or -1 for any other octet.
constexpr int HexDigitValue(char c) {
  if (IsAsciiDigit(c)) {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

constexpr char AsciiLower(char c) {
  return IsAsciiUpper(c) ? static_cast<char>(c - 'A' + 'a') : c;
}
constexpr char AsciiUpper(char c) {
  return IsAsciiLower(c) ? static_cast<char>(c - 'a' + 'A') : c;
}

inline void AsciiLowerInPlace(std::string* s) {
  for (char& c : *s) {
    c = AsciiLower(c);
  }
}
inline void AsciiUpperInPlace(std::string* s) {
  for (char& c : *s) {
    c = AsciiUpper(c);
  }
}

inline std::string AsciiToLower(std::string_view s) {
  std::string out(s);
  AsciiLowerInPlace(&out);
  return out;
}
inline std::string AsciiToUpper(std::string_view s) {
  std::string out(s);
  AsciiUpperInPlace(&out);
  return out;
}

constexpr bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (AsciiLower(a[i]) != AsciiLower(b[i])) {
      return false;
    }
  }
  return true;
}

constexpr bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && EqualsIgnoreCase(s.substr(0, prefix.size()), prefix);
}

constexpr bool EndsWithIgnoreCase(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && EqualsIgnoreCase(s.substr(s.size() - suffix.size()), suffix);
}

}  // namespace sluice
