#include "delivery/client/dot_stuffer.h"

#include <string>

#include <gtest/gtest.h>

namespace sluice::delivery {
namespace {

std::string Stuff(std::string_view body) {
  std::string out;
  AppendDotStuffed(&out, body);
  return out;
}

TEST(DotStufferTest, DoublesLeadingDots) {
  EXPECT_EQ(Stuff(".\r\n..a\r\nb.c\r\n.\r\n"), "..\r\n...a\r\nb.c\r\n..\r\n.\r\n");
  EXPECT_EQ(Stuff(".hidden"), "..hidden\r\n.\r\n");
}

TEST(DotStufferTest, NormalisesBareLineEndings) {
  EXPECT_EQ(Stuff("a\nb\rc\r\n"), "a\r\nb\r\nc\r\n.\r\n");
  EXPECT_EQ(Stuff("a\r\r\nb"), "a\r\n\r\nb\r\n.\r\n");
  EXPECT_EQ(Stuff("a\n\n"), "a\r\n\r\n.\r\n");
  // A dot after a normalised ending starts a line on the wire: stuffed.
  EXPECT_EQ(Stuff("a\n.b\r.c"), "a\r\n..b\r\n..c\r\n.\r\n");
  EXPECT_EQ(Stuff("\r\r\r"), "\r\n\r\n\r\n.\r\n");
}

TEST(DotStufferTest, AddsFinalCrlfAndHandlesEmptyBody) {
  EXPECT_EQ(Stuff("no end"), "no end\r\n.\r\n");
  EXPECT_EQ(Stuff("ends\r\n"), "ends\r\n.\r\n");
  EXPECT_EQ(Stuff(""), ".\r\n");
  EXPECT_EQ(Stuff("\r\n"), "\r\n.\r\n");
}

TEST(DotStufferTest, AppendsToExistingOutput) {
  std::string out = "DATA\r\n";
  AppendDotStuffed(&out, "x");
  EXPECT_EQ(out, "DATA\r\nx\r\n.\r\n");
}

TEST(DotStufferTest, PiecesGiveTheSameBytesAtEverySplit) {
  const std::string body = ".a\r\n..b\r\nc\nd\r.e\r\n\r\n.\r\nf\r\r\n\n.";
  const std::string whole = Stuff(body);
  for (size_t split = 0; split <= body.size(); ++split) {
    for (size_t split2 = split; split2 <= body.size(); ++split2) {
      DotStuffer stuffer;
      std::string out;
      stuffer.Append(&out, std::string_view(body).substr(0, split));
      stuffer.Append(&out, std::string_view(body).substr(split, split2 - split));
      stuffer.Append(&out, std::string_view(body).substr(split2));
      stuffer.Finish(&out);
      ASSERT_EQ(out, whole) << "splits " << split << "," << split2;
    }
  }
}

TEST(DotStufferTest, ManyBareCrsInOneLineStayLinear) {
  // 1 MiB of bare CRs then one LF: each CR becomes a line; must not rescan.
  std::string body(1 << 20, '\r');
  body += "x\n";
  const std::string out = Stuff(body);
  EXPECT_EQ(out.size(), (size_t{1} << 20) * 2 + 3 + 3);
}

}  // namespace
}  // namespace sluice::delivery
