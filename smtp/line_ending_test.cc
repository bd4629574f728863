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

Found Find(std::string_view s) {
  const LineEnding e = FindLineEnding(s.data(), s.data() + s.size());
  return {e.kind, static_cast<size_t>(e.at - s.data())};
}

TEST(FindLineEnding, ClassifiesTheFirstLineEnd) {
  EXPECT_EQ(Find("abc\r\ndef\r\n"), (Found{Kind::kCrLf, 3}));
  EXPECT_EQ(Find("\r\n"), (Found{Kind::kCrLf, 0}));
  EXPECT_EQ(Find("abc\ndef\r\n"), (Found{Kind::kBareLf, 3}));
  EXPECT_EQ(Find("\n"), (Found{Kind::kBareLf, 0}));
  EXPECT_EQ(Find("abc\rdef\r\n"), (Found{Kind::kBareCr, 3}));
  EXPECT_EQ(Find("abc"), (Found{Kind::kNone, 3}));
  EXPECT_EQ(Find(""), (Found{Kind::kNone, 0}));
}

TEST(FindLineEnding, TheSmugglingSequencesAreBare) {
  // "<LF>.<CR><LF>" (CVE-2023-51764) and its bare-CR twin: the first line end is a bare one, so
  // a reader never sees a line start before the dot.
  EXPECT_EQ(Find("x\n.\r\n"), (Found{Kind::kBareLf, 1}));
  EXPECT_EQ(Find("x\r.\r\n"), (Found{Kind::kBareCr, 1}));
  // LF CR is a bare LF followed by a CR, never a line end in either order.
  EXPECT_EQ(Find("x\n\r"), (Found{Kind::kBareLf, 1}));
  // CR CR LF: the first CR is bare, the second ends the line.
  EXPECT_EQ(Find("x\r\r\n"), (Found{Kind::kBareCr, 1}));
}

TEST(FindLineEnding, ACrAtTheEndIsLeftToTheNextInput) {
  // Reported as kBareCr at the last octet: the caller holds it until the next octet arrives.
  EXPECT_EQ(Find("abc\r"), (Found{Kind::kBareCr, 3}));
  EXPECT_EQ(Find("\r"), (Found{Kind::kBareCr, 0}));
}

TEST(FindLineEnding, LooksOnlyWithinTheSpan) {
  const std::string s = "abc\r\n";
  // The LF lies past the span's end: the CR is its last octet.
  const LineEnding e = FindLineEnding(s.data(), s.data() + 4);
  EXPECT_EQ(e.kind, Kind::kBareCr);
  EXPECT_EQ(e.at, s.data() + 3);
  const LineEnding none = FindLineEnding(s.data(), s.data() + 3);
  EXPECT_EQ(none.kind, Kind::kNone);
  EXPECT_EQ(none.at, s.data() + 3);
}

// Against a plain octet-by-octet reading of RFC 5321 §2.3.8, for every string of up to six
// octets over {a, CR, LF}.
TEST(FindLineEnding, AgreesWithAnOctetByOctetScanOnAllShortInputs) {
  const char alphabet[] = {'a', '\r', '\n'};
  for (size_t len = 0; len <= 6; ++len) {
    size_t combinations = 1;
    for (size_t i = 0; i < len; ++i)
      combinations *= 3;
    for (size_t n = 0; n < combinations; ++n) {
      std::string s;
      for (size_t i = 0, k = n; i < len; ++i, k /= 3)
        s += alphabet[k % 3];
      Found want{Kind::kNone, len};
      for (size_t i = 0; i < len; ++i) {
        if (s[i] == '\n') {
          want = {Kind::kBareLf, i};
          break;
        }
        if (s[i] == '\r') {
          want = {i + 1 < len && s[i + 1] == '\n' ? Kind::kCrLf : Kind::kBareCr, i};
          break;
        }
      }
      EXPECT_EQ(Find(s), want) << "input #" << n << " of length " << len;
    }
  }
}

}  // namespace
}  // namespace sluice::smtp
