#include "delivery/client/reply_parser.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace sluice::delivery {
namespace {

using smtp::Reply;

struct Parsed {
  std::vector<Reply> replies;
  bool error = false;
  std::string rest;  // bytes left unconsumed at the end
};

// Feeds `chunks` the way a connection would: append to a buffer, take
// replies, drop what was consumed.
Parsed Feed(const std::vector<std::string>& chunks) {
  Parsed out;
  ReplyParser parser;
  std::string buffer;
  for (const std::string& chunk : chunks) {
    buffer += chunk;
    while (true) {
      ReplyParser::Next next = parser.Take(buffer);
      if (next.status == ReplyParser::Status::kError) {
        out.error = true;
        return out;
      }
      EXPECT_LE(next.consumed, buffer.size());
      buffer.erase(0, next.consumed);
      if (next.status == ReplyParser::Status::kNeedMore) {
        break;
      }
      out.replies.push_back(std::move(next.reply));
    }
  }
  out.rest = buffer;
  return out;
}

// Every two-way split and the byte-at-a-time feed give the same result as
// the whole input.
Parsed FeedEverySplit(const std::string& wire) {
  Parsed whole = Feed({wire});
  for (size_t split = 0; split <= wire.size(); ++split) {
    const Parsed p = Feed({wire.substr(0, split), wire.substr(split)});
    EXPECT_EQ(p.error, whole.error) << "split at " << split;
    EXPECT_EQ(p.replies, whole.replies) << "split at " << split;
    EXPECT_EQ(p.rest, whole.rest) << "split at " << split;
  }
  std::vector<std::string> bytes;
  for (const char c : wire) {
    bytes.emplace_back(1, c);
  }
  const Parsed p = Feed(bytes);
  EXPECT_EQ(p.error, whole.error);
  EXPECT_EQ(p.replies, whole.replies);
  return whole;
}

TEST(ReplyParserTest, SingleLineWithEnhancedCode) {
  const Parsed p = FeedEverySplit("250 2.1.0 Ok\r\n");
  ASSERT_FALSE(p.error);
  ASSERT_EQ(p.replies.size(), 1u);
  EXPECT_EQ(p.replies[0], (Reply{250, "2.1.0", "Ok"}));
  EXPECT_EQ(p.rest, "");
}

TEST(ReplyParserTest, MultiLineStripsRepeatedEnhancedCode) {
  const Parsed p = FeedEverySplit(
      "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
      "550-5.1.1 Please try\r\n"
      "550 5.1.1 again.\r\n");
  ASSERT_FALSE(p.error);
  ASSERT_EQ(p.replies.size(), 1u);
  EXPECT_EQ(p.replies[0].code, 550);
  EXPECT_EQ(p.replies[0].enhanced, "5.1.1");
  EXPECT_EQ(p.replies[0].text,
            "The email account that you tried to reach does not exist.\nPlease try\nagain.");
}

TEST(ReplyParserTest, EhloReplyWithoutEnhancedCode) {
  const Parsed p = FeedEverySplit(
      "250-mx.example.com Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n");
  ASSERT_EQ(p.replies.size(), 1u);
  EXPECT_EQ(p.replies[0],
            (Reply{250, "", "mx.example.com Hello\nPIPELINING\nSIZE 1000\n8BITMIME"}));
}

TEST(ReplyParserTest, PipelinedRepliesComeOneAtATime) {
  const Parsed p = FeedEverySplit(
      "250 2.1.0 Ok\r\n550 5.1.1 No\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0");
  ASSERT_FALSE(p.error);
  ASSERT_EQ(p.replies.size(), 3u);
  EXPECT_EQ(p.replies[0].code, 250);
  EXPECT_EQ(p.replies[1], (Reply{550, "5.1.1", "No"}));
  EXPECT_EQ(p.replies[2], (Reply{354, "", "End data with <CR><LF>.<CR><LF>"}));
  EXPECT_EQ(p.rest, "250 2.0");  // incomplete: stays in the input
}

TEST(ReplyParserTest, EnhancedCodeShapes) {
  EXPECT_EQ(Feed({"250 2.0.0\r\n"}).replies[0], (Reply{250, "2.0.0", ""}));
  EXPECT_EQ(Feed({"451 4.123.456 x\r\n"}).replies[0], (Reply{451, "4.123.456", "x"}));
  // Not RFC 3463 codes: class 3, four-digit detail, no space after, missing part.
  EXPECT_EQ(Feed({"354 3.0.0 go\r\n"}).replies[0], (Reply{354, "", "3.0.0 go"}));
  EXPECT_EQ(Feed({"250 2.0.1234 x\r\n"}).replies[0], (Reply{250, "", "2.0.1234 x"}));
  EXPECT_EQ(Feed({"250 2.0.0x\r\n"}).replies[0], (Reply{250, "", "2.0.0x"}));
  EXPECT_EQ(Feed({"250 2.0 ok\r\n"}).replies[0], (Reply{250, "", "2.0 ok"}));
  EXPECT_EQ(Feed({"250 mx.example.com\r\n"}).replies[0], (Reply{250, "", "mx.example.com"}));
  // Only lines repeating the first line's code lose it.
  EXPECT_EQ(Feed({"250-2.0.0 a\r\n250 b 2.0.0\r\n"}).replies[0],
            (Reply{250, "2.0.0", "a\nb 2.0.0"}));
}

TEST(ReplyParserTest, BareCodeAndBareLfAreAccepted) {
  EXPECT_EQ(Feed({"250\r\n"}).replies[0], (Reply{250, "", ""}));
  EXPECT_EQ(Feed({"220 hi\n"}).replies[0], (Reply{220, "", "hi"}));
  EXPECT_EQ(Feed({"250-\r\n250 x\r\n"}).replies[0], (Reply{250, "", "\nx"}));
}

TEST(ReplyParserTest, Errors) {
  EXPECT_TRUE(FeedEverySplit("hello\r\n").error);
  EXPECT_TRUE(FeedEverySplit("25\r\n").error);
  EXPECT_TRUE(FeedEverySplit("2500 x\r\n").error);
  EXPECT_TRUE(FeedEverySplit("150 x\r\n").error);  // first digit must be 2..5
  EXPECT_TRUE(FeedEverySplit("650 x\r\n").error);
  EXPECT_TRUE(FeedEverySplit("25a x\r\n").error);
  EXPECT_TRUE(FeedEverySplit("250_x\r\n").error);
  EXPECT_TRUE(FeedEverySplit("250-a\r\n251 b\r\n").error);  // inconsistent codes
  EXPECT_TRUE(FeedEverySplit("\r\n").error);
}

TEST(ReplyParserTest, ErrorAfterGoodReplyKeepsTheGoodOne) {
  const Parsed p = Feed({"250 ok\r\nbogus\r\n"});
  EXPECT_TRUE(p.error);
  ASSERT_EQ(p.replies.size(), 1u);
  EXPECT_EQ(p.replies[0], (Reply{250, "", "ok"}));
}

TEST(ReplyParserTest, LineLengthIsBounded) {
  // 4096 octets with CRLF is the longest line accepted.
  std::string ok = "250 " + std::string(ReplyParser::kMaxLineLength - 6, 'a') + "\r\n";
  ASSERT_EQ(ok.size(), ReplyParser::kMaxLineLength);
  EXPECT_FALSE(Feed({ok}).error);
  std::string too_long = "250 " + std::string(ReplyParser::kMaxLineLength - 5, 'a') + "\r\n";
  EXPECT_TRUE(Feed({too_long}).error);
  // An endless line is refused before its end arrives: no unbounded buffering.
  ReplyParser parser;
  const std::string partial = "250 " + std::string(ReplyParser::kMaxLineLength, 'a');
  EXPECT_EQ(parser.Take(partial).status, ReplyParser::Status::kError);
  EXPECT_EQ(parser.Take(partial.substr(0, ReplyParser::kMaxLineLength - 1)).status,
            ReplyParser::Status::kNeedMore);
}

TEST(ReplyParserTest, LineCountIsBounded) {
  std::string ok;
  for (size_t i = 0; i + 1 < ReplyParser::kMaxLines; ++i) {
    ok += "250-x\r\n";
  }
  ok += "250 end\r\n";
  const Parsed p = Feed({ok});
  ASSERT_FALSE(p.error);
  ASSERT_EQ(p.replies.size(), 1u);
  std::string too_many;
  for (size_t i = 0; i < ReplyParser::kMaxLines; ++i) {
    too_many += "250-x\r\n";
  }
  too_many += "250 end\r\n";
  EXPECT_TRUE(Feed({too_many}).error);
}

TEST(ReplyParserTest, ResetDropsAPartialReply) {
  ReplyParser parser;
  ReplyParser::Next next = parser.Take("250-first\r\n");
  EXPECT_EQ(next.status, ReplyParser::Status::kNeedMore);
  EXPECT_EQ(next.consumed, 11u);
  parser.Reset();
  next = parser.Take("221 bye\r\n");
  ASSERT_EQ(next.status, ReplyParser::Status::kReply);
  EXPECT_EQ(next.reply, (Reply{221, "", "bye"}));
}

}  // namespace
}  // namespace sluice::delivery
