#include "base/ascii.h"

#include <string>

#include <gtest/gtest.h>

namespace sluice {
namespace {

// Every octet, as the char a network buffer holds it in.
char Octet(int i) {
  return static_cast<char>(static_cast<unsigned char>(i));
}

TEST(Ascii, ClassesCoverExactlyTheirAsciiRanges) {
  int alpha = 0, digit = 0, hex = 0, upper = 0, lower = 0;
  for (int i = 0; i < 256; ++i) {
    const char c = Octet(i);
    alpha += IsAsciiAlpha(c);
    digit += IsAsciiDigit(c);
    hex += IsAsciiHexDigit(c);
    upper += IsAsciiUpper(c);
    lower += IsAsciiLower(c);
    EXPECT_EQ(IsAsciiAlnum(c), IsAsciiAlpha(c) || IsAsciiDigit(c)) << i;
    if (i >= 0x80) {
      EXPECT_FALSE(IsAsciiAlnum(c) || IsAsciiHexDigit(c)) << i;
    }
  }
  EXPECT_EQ(alpha, 52);
  EXPECT_EQ(upper, 26);
  EXPECT_EQ(lower, 26);
  EXPECT_EQ(digit, 10);
  EXPECT_EQ(hex, 22);
  EXPECT_TRUE(IsAsciiAlpha('a') && IsAsciiAlpha('z') && IsAsciiAlpha('A') && IsAsciiAlpha('Z'));
  // The neighbours of the letter ranges.
  EXPECT_FALSE(IsAsciiAlpha('@') || IsAsciiAlpha('[') || IsAsciiAlpha('`') || IsAsciiAlpha('{'));
  EXPECT_FALSE(IsAsciiDigit('/') || IsAsciiDigit(':'));
  EXPECT_FALSE(IsAsciiHexDigit('g') || IsAsciiHexDigit('G'));
}

TEST(Ascii, HexDigitValue) {
  EXPECT_EQ(HexDigitValue('0'), 0);
  EXPECT_EQ(HexDigitValue('9'), 9);
  EXPECT_EQ(HexDigitValue('a'), 10);
  EXPECT_EQ(HexDigitValue('F'), 15);
  EXPECT_EQ(HexDigitValue('f'), 15);
  for (int i = 0; i < 256; ++i) {
    const char c = Octet(i);
    EXPECT_EQ(HexDigitValue(c) >= 0, IsAsciiHexDigit(c)) << i;
  }
}

TEST(Ascii, CaseMapsOnlyAsciiLetters) {
  for (int i = 0; i < 256; ++i) {
    const char c = Octet(i);
    if (IsAsciiUpper(c)) {
      EXPECT_EQ(AsciiLower(c), static_cast<char>(c + ('a' - 'A'))) << i;
      EXPECT_EQ(AsciiUpper(c), c) << i;
    } else if (IsAsciiLower(c)) {
      EXPECT_EQ(AsciiUpper(c), static_cast<char>(c - ('a' - 'A'))) << i;
      EXPECT_EQ(AsciiLower(c), c) << i;
    } else {
      EXPECT_EQ(AsciiLower(c), c) << i;
      EXPECT_EQ(AsciiUpper(c), c) << i;
    }
  }
}

TEST(Ascii, StringCaseMapping) {
  EXPECT_EQ(AsciiToLower("MAIL From:<A@Example.COM>"), "mail from:<a@example.com>");
  EXPECT_EQ(AsciiToUpper("auth plain"), "AUTH PLAIN");
  EXPECT_EQ(AsciiToLower(""), "");
  // UTF-8 (RFC 6531 addresses) passes through untouched: "ÄÖ" stays as it is.
  EXPECT_EQ(AsciiToLower("\xC3\x84\xC3\x96X"), "\xC3\x84\xC3\x96x");

  std::string s = "Example.ORG";
  AsciiLowerInPlace(&s);
  EXPECT_EQ(s, "example.org");
  AsciiUpperInPlace(&s);
  EXPECT_EQ(s, "EXAMPLE.ORG");
}

TEST(Ascii, IgnoreCaseComparisons) {
  EXPECT_TRUE(EqualsIgnoreCase("EHLO", "ehlo"));
  EXPECT_TRUE(EqualsIgnoreCase("", ""));
  EXPECT_FALSE(EqualsIgnoreCase("EHLO", "HELO"));
  EXPECT_FALSE(EqualsIgnoreCase("EHLO", "EHLO "));
  // Folding is per letter: '@' and '`' differ from 'A'/'a' by the same bit, and stay different.
  EXPECT_FALSE(EqualsIgnoreCase("@", "`"));
  EXPECT_FALSE(EqualsIgnoreCase("[", "{"));
  EXPECT_FALSE(EqualsIgnoreCase("\xC3\x84", "\xC3\xA4"));  // Ä and ä: not ASCII, not folded

  EXPECT_TRUE(StartsWithIgnoreCase("IPv6:2001:db8::1", "ipv6:"));
  EXPECT_TRUE(StartsWithIgnoreCase("x", ""));
  EXPECT_FALSE(StartsWithIgnoreCase("ipv", "ipv6:"));

  EXPECT_TRUE(EndsWithIgnoreCase("MX.Example.COM", ".example.com"));
  EXPECT_TRUE(EndsWithIgnoreCase("x", ""));
  EXPECT_FALSE(EndsWithIgnoreCase("com", ".com"));
}

// Usable where a constant is needed.
static_assert(AsciiLower('Q') == 'q');
static_assert(EqualsIgnoreCase("Smtputf8", "SMTPUTF8"));
static_assert(HexDigitValue('c') == 12);

}  // namespace
}  // namespace sluice
