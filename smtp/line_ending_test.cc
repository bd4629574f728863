#include "smtp/line_ending.h"

#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace sluice::smtp {
namespace {

using Kind = LineEnding::Kind;

struct Found {
  Kind kind;
  size_t offset;  // of `at` from the start of the input

  bool operator==(const Found& o) const {
    return kind == o.kind && offset == o.offset;
  }
};

std::ostream& operator<<(std::ostream& os, const Found& f) {
  const char* const names[] = {"kNone", "kCrLf", "kBareCr", "kBareLf"};
  return os << names[static_cast<int>(f.kind)] << "@" << f.offset;
}

// The first line end of s, from a fresh scanner.
Found Find(std::string_view s) {
  const LineEnding e = LineEndingScanner(s.data() + s.size()).Next(s.data());
  return {e.kind, static_cast<size_t>(e.at - s.data())};
}

// The first line end of s from `from` on, octet by octet (RFC 5321 §2.3.8).
Found Reference(std::string_view s, size_t from) {
  for (size_t i = from; i < s.size(); ++i) {
    if (s[i] == '\n') {
      return {Kind::kBareLf, i};
    }
    if (s[i] == '\r') {
      return {i + 1 < s.size() && s[i + 1] == '\n' ? Kind::kCrLf : Kind::kBareCr, i};
    }
  }
  return {Kind::kNone, s.size()};
}

TEST(LineEndingScanner, ClassifiesTheFirstLineEnd) {
  EXPECT_EQ(Find("abc\r\ndef\r\n"), (Found{Kind::kCrLf, 3}));
  EXPECT_EQ(Find("\r\n"), (Found{Kind::kCrLf, 0}));
  EXPECT_EQ(Find("abc\ndef\r\n"), (Found{Kind::kBareLf, 3}));
  EXPECT_EQ(Find("\n"), (Found{Kind::kBareLf, 0}));
  EXPECT_EQ(Find("abc\rdef\r\n"), (Found{Kind::kBareCr, 3}));
  EXPECT_EQ(Find("abc"), (Found{Kind::kNone, 3}));
  EXPECT_EQ(Find(""), (Found{Kind::kNone, 0}));
}

TEST(LineEndingScanner, TheSmugglingSequencesAreBare) {
  // "<LF>.<CR><LF>" (CVE-2023-51764) and its bare-CR twin: the first line end is a bare one, so
  // a reader never sees a line start before the dot.
  EXPECT_EQ(Find("x\n.\r\n"), (Found{Kind::kBareLf, 1}));
  EXPECT_EQ(Find("x\r.\r\n"), (Found{Kind::kBareCr, 1}));
  // LF CR is a bare LF followed by a CR, never a line end in either order.
  EXPECT_EQ(Find("x\n\r"), (Found{Kind::kBareLf, 1}));
  // CR CR LF: the first CR is bare, the second ends the line.
  EXPECT_EQ(Find("x\r\r\n"), (Found{Kind::kBareCr, 1}));
}

TEST(LineEndingScanner, ACrAtTheEndIsLeftToTheNextInput) {
  // Reported as kBareCr at the last octet: the caller holds it until the next octet arrives.
  EXPECT_EQ(Find("abc\r"), (Found{Kind::kBareCr, 3}));
  EXPECT_EQ(Find("\r"), (Found{Kind::kBareCr, 0}));
}

TEST(LineEndingScanner, LooksOnlyWithinTheSpan) {
  const std::string s = "abc\r\n";
  // The LF lies past the span's end: the CR is its last octet.
  const LineEnding e = LineEndingScanner(s.data() + 4).Next(s.data());
  EXPECT_EQ(e.kind, Kind::kBareCr);
  EXPECT_EQ(e.at, s.data() + 3);
  const LineEnding none = LineEndingScanner(s.data() + 3).Next(s.data());
  EXPECT_EQ(none.kind, Kind::kNone);
  EXPECT_EQ(none.at, s.data() + 3);
}

// Every string of up to seven octets over {a, CR, LF}, read as a reader does: one scanner per
// span, each call starting right after the previous line end. And from every start position in
// turn, as a reader that moves on by other means (a dot at a line start) may ask.
TEST(LineEndingScanner, AgreesWithAnOctetByOctetReadingOnAllShortInputs) {
  const char alphabet[] = {'a', '\r', '\n'};
  for (size_t len = 0; len <= 7; ++len) {
    size_t combinations = 1;
    for (size_t i = 0; i < len; ++i) {
      combinations *= 3;
    }
    for (size_t n = 0; n < combinations; ++n) {
      std::string s;
      for (size_t i = 0, k = n; i < len; ++i, k /= 3) {
        s += alphabet[k % 3];
      }
      const char* const end = s.data() + s.size();

      LineEndingScanner lines(end);
      size_t pos = 0;
      while (true) {
        const LineEnding e = lines.Next(s.data() + pos);
        const Found got{e.kind, static_cast<size_t>(e.at - s.data())};
        ASSERT_EQ(got, Reference(s, pos)) << "input #" << n << " of length " << len;
        if (e.kind == Kind::kNone) {
          break;
        }
        pos = got.offset + (e.kind == Kind::kCrLf ? 2 : 1);
      }

      LineEndingScanner each(end);
      for (size_t from = 0; from <= len; ++from) {
        const LineEnding e = each.Next(s.data() + from);
        const Found got{e.kind, static_cast<size_t>(e.at - s.data())};
        ASSERT_EQ(got, Reference(s, from)) << "input #" << n << " from " << from;
      }
    }
  }
}

// A scanner asked about an earlier position than before still answers for that position.
TEST(LineEndingScanner, AnswersForAnEarlierStartToo) {
  const std::string s = "a\nb\rc\n";
  LineEndingScanner lines(s.data() + s.size());
  EXPECT_EQ(lines.Next(s.data() + 2).at, s.data() + 3);  // the bare CR
  EXPECT_EQ(lines.Next(s.data()).at, s.data() + 1);      // back to the bare LF
  EXPECT_EQ(lines.Next(s.data() + 4).at, s.data() + 5);  // on to the last LF
}

}  // namespace
}  // namespace sluice::smtp
