#include "smtp/reply.h"

#include <gtest/gtest.h>

namespace sluice::smtp {
namespace {

std::string Wire(int code, std::string_view enhanced, std::string_view text) {
  std::string out;
  AppendReply(&out, code, enhanced, text);
  return out;
}

TEST(AppendReply, SingleLine) {
  EXPECT_EQ(Wire(250, "2.0.0", "OK"), "250 2.0.0 OK\r\n");
  EXPECT_EQ(Wire(220, "", "mx.example ESMTP Sluice"), "220 mx.example ESMTP Sluice\r\n");
}

TEST(AppendReply, MultiLineWithoutEnhanced) {
  EXPECT_EQ(Wire(250, "", "mx.example\nPIPELINING\nSIZE 1000"),
            "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n");
}

TEST(AppendReply, EnhancedCodeOnEveryLine) {
  EXPECT_EQ(Wire(550, "5.7.1", "Relaying denied\nSee the docs"),
            "550-5.7.1 Relaying denied\r\n550 5.7.1 See the docs\r\n");
}

TEST(AppendReply, TrailingNewlineAndCrlfInText) {
  EXPECT_EQ(Wire(250, "", "a\r\nb\n"), "250-a\r\n250 b\r\n");
}

TEST(AppendReply, EmptyText) {
  EXPECT_EQ(Wire(354, "", ""), "354\r\n");
  EXPECT_EQ(Wire(250, "2.0.0", ""), "250 2.0.0\r\n");
  EXPECT_EQ(Wire(250, "", "a\n\nb"), "250-a\r\n250-\r\n250 b\r\n");
}

TEST(AppendReply, AppendsAndUsesReplyStruct) {
  std::string out = "prefix|";
  AppendReply(&out, Reply{501, "5.5.4", "Syntax error"});
  AppendReply(&out, MakeReply(221, "2.0.0", "Bye"));
  EXPECT_EQ(out, "prefix|501 5.5.4 Syntax error\r\n221 2.0.0 Bye\r\n");
}

TEST(ReplyOr, HoldsValueOrReply) {
  ReplyOr<int> v = 7;
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 7);
  ReplyOr<int> e = MakeReply(501, "5.5.4", "x");
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code, 501);
  EXPECT_EQ(e.error().enhanced, "5.5.4");
}

}  // namespace
}  // namespace sluice::smtp
