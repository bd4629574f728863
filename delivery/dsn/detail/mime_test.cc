#include "delivery/dsn/detail/mime.h"

#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

namespace sluice::delivery::detail {
namespace {

std::vector<std::string> Lines(std::string_view s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t eol = s.find("\r\n", pos);
    EXPECT_NE(eol, std::string_view::npos) << "unterminated line";
    if (eol == std::string_view::npos) {
      break;
    }
    out.emplace_back(s.substr(pos, eol - pos));
    pos = eol + 2;
  }
  return out;
}

// RFC 5322 §2.2.3 unfolding: remove every CRLF that is followed by WSP.
std::string Unfold(std::string_view field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field.substr(i, 2) == "\r\n") {
      ++i;
      continue;
    }
    out += field[i];
  }
  return out;
}

TEST(XtextTest, DecodesHexPairs) {
  EXPECT_EQ(DecodeXtext("rfc822;a+2Bb@x"), "rfc822;a+b@x");
  EXPECT_EQ(DecodeXtext("a+3Db+20c"), "a=b c");
  EXPECT_EQ(DecodeXtext("plain"), "plain");
  EXPECT_EQ(DecodeXtext(""), "");
}

TEST(XtextTest, KeepsMalformedEscapes) {
  EXPECT_EQ(DecodeXtext("a+"), "a+");
  EXPECT_EQ(DecodeXtext("a+2"), "a+2");
  EXPECT_EQ(DecodeXtext("a+ZZb"), "a+ZZb");
  EXPECT_EQ(DecodeXtext("+41"), "A");
}

TEST(SanitizeTest, ControlsAndLineBreaksBecomeSingleSpaces) {
  EXPECT_EQ(SanitizeFieldText("  550-first\r\n550 second\n\tthird  ", false),
            "550-first 550 second third");
  EXPECT_EQ(SanitizeFieldText(std::string("a\0b\x7f"
                                          "c",
                                          5),
                              false),
            "a b c");
}

TEST(SanitizeTest, Utf8KeptOrEscaped) {
  const std::string text = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80";
  EXPECT_EQ(SanitizeFieldText(text, true), text);
  EXPECT_EQ(SanitizeFieldText(text, false), "caf\\x{E9} \\x{20AC} \\x{1F600}");
}

TEST(SanitizeTest, InvalidUtf8BecomesQuestionMark) {
  // Lone continuation byte, truncated sequence, overlong "/" and a UTF-16 surrogate.
  EXPECT_EQ(SanitizeFieldText("a\x80z", true), "a?z");
  EXPECT_EQ(SanitizeFieldText("a\xC3", true), "a?");
  EXPECT_EQ(SanitizeFieldText("\xC0\xAF", true), "??");
  EXPECT_EQ(SanitizeFieldText("\xED\xA0\x80", false), "???");
}

TEST(Utf8AddrXtextTest, EncodesNonQcharAsEmbeddedUnicode) {
  EXPECT_EQ(EncodeUtf8AddrXtext("j\xC3\xB6rg+x=y@b\xC3\xA4r.example"),
            "j\\x{F6}rg\\x{2B}x\\x{3D}y@b\\x{E4}r.example");
  EXPECT_EQ(EncodeUtf8AddrXtext("a\\b c"), "a\\x{5C}b\\x{20}c");
}

TEST(FoldTest, ShortFieldIsOneLine) {
  std::string out;
  AppendFoldedField(&out, "Status", "5.1.1");
  EXPECT_EQ(out, "Status: 5.1.1\r\n");
}

TEST(FoldTest, EmptyValue) {
  std::string out;
  AppendFoldedField(&out, "X", "");
  EXPECT_EQ(out, "X:\r\n");
}

TEST(FoldTest, LongValueFoldsAtSpacesAndUnfoldsToTheSame) {
  std::string value = "smtp;";
  for (int i = 0; i < 40; ++i) {
    value += " word" + std::to_string(i);
  }
  std::string out;
  AppendFoldedField(&out, "Diagnostic-Code", value);
  const std::vector<std::string> lines = Lines(out);
  ASSERT_GT(lines.size(), 2u);
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_LE(lines[i].size(), kFoldWidth) << lines[i];
    if (i > 0) {
      EXPECT_EQ(lines[i][0], ' ');
      EXPECT_NE(lines[i].find_first_not_of(' '), std::string::npos);
    }
  }
  EXPECT_EQ(Unfold(out), "Diagnostic-Code: " + value);
}

TEST(FoldTest, UnbreakableWordIsSplitAtTheHardLimit) {
  const std::string value = "x" + std::string(3000, 'a');
  std::string out;
  AppendFoldedField(&out, "Diagnostic-Code", value);
  const std::vector<std::string> lines = Lines(out);
  ASSERT_EQ(lines.size(), 4u);
  std::string joined;
  for (const std::string& line : lines) {
    EXPECT_LE(line.size(), kMaxLineOctets);
    joined += line;
  }
  // Nothing lost: only the folding spaces were added.
  std::string without_spaces;
  for (const char c : joined) {
    if (c != ' ') {
      without_spaces += c;
    }
  }
  EXPECT_EQ(without_spaces, "Diagnostic-Code:" + value);
}

TEST(FoldTest, HardSplitNeverCutsAUtf8Sequence) {
  std::string value;
  for (int i = 0; i < 800; ++i) {
    value += "\xC3\xA9";  // 1600 octets, no space
  }
  std::string out;
  AppendFoldedField(&out, "F", value);
  for (const std::string& line : Lines(out)) {
    ASSERT_LE(line.size(), kMaxLineOctets);
    const auto last = static_cast<unsigned char>(line.back());
    EXPECT_NE(last, 0xC3) << "line ends inside a UTF-8 sequence";
  }
}

TEST(WrapTest, IndentsAndWraps) {
  std::string out;
  AppendWrapped(&out,
                std::string(30, 'a') + " " + std::string(30, 'b') + " " + std::string(30, 'c'),
                "    ", 70);
  EXPECT_EQ(out, "    " + std::string(30, 'a') + " " + std::string(30, 'b') + "\r\n    " +
                     std::string(30, 'c') + "\r\n");
}

TEST(RandomHexTest, LengthAndAlphabet) {
  const std::string a = RandomHex(24);
  const std::string b = RandomHex(24);
  EXPECT_EQ(a.size(), 24u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(a, b);
}

TEST(BoundaryTest, SkipsCandidatesThatOccurInTheContent) {
  const std::string original = "x\r\n--=_b1\r\nlooks like a part\r\n--=_b1--\r\n";
  const std::string text = "mentions =_b2 in passing";
  const std::vector<std::string_view> contents = {original, text};
  std::vector<std::string> candidates = {"=_b1", "=_b2", "=_b3"};
  size_t next = 0;
  const std::string chosen = ChooseBoundary(contents, [&] { return candidates[next++]; });
  EXPECT_EQ(chosen, "=_b3");
  EXPECT_EQ(next, 3u);
}

}  // namespace
}  // namespace sluice::delivery::detail
