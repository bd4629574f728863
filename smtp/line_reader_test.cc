#include "smtp/line_reader.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace sluice::smtp {
namespace {

// Simulates a session: appends each chunk to its buffer and takes lines
// until the reader needs more. Returns the events ("L:<line>", "TOOLONG",
// "BARE") and the bytes left unconsumed.
struct LineRun {
  std::vector<std::string> events;
  std::string rest;
};

LineRun Drive(size_t max_line, const std::vector<std::string>& chunks) {
  LineReader reader(max_line);
  LineRun run;
  std::string buffer;
  for (const std::string& chunk : chunks) {
    buffer += chunk;
    while (true) {
      const LineReader::Next next = reader.Take(buffer);
      EXPECT_LE(next.consumed, buffer.size());
      switch (next.status) {
        case LineReader::Status::kLine:
          run.events.push_back("L:" + std::string(next.line));
          break;
        case LineReader::Status::kTooLong:
          run.events.push_back("TOOLONG");
          break;
        case LineReader::Status::kBareNewline:
          run.events.push_back("BARE");
          break;
        case LineReader::Status::kNeedMore:
          break;
      }
      buffer.erase(0, next.consumed);
      if (next.status == LineReader::Status::kNeedMore && next.consumed == 0)
        break;
    }
  }
  run.rest = buffer;
  return run;
}

// Runs `input` whole, split at every boundary into two and three pieces, and
// byte by byte; all must agree with the whole run, which is returned.
LineRun CheckAllSplits(size_t max_line, const std::string& input) {
  LineRun whole = Drive(max_line, {input});
  for (size_t i = 0; i <= input.size(); ++i) {
    const LineRun two = Drive(max_line, {input.substr(0, i), input.substr(i)});
    EXPECT_EQ(two.events, whole.events) << "split at " << i;
    EXPECT_EQ(two.rest, whole.rest) << "split at " << i;
    for (size_t j = i; j <= input.size() && input.size() <= 64; ++j) {
      const LineRun three =
          Drive(max_line, {input.substr(0, i), input.substr(i, j - i), input.substr(j)});
      EXPECT_EQ(three.events, whole.events) << "split at " << i << "," << j;
    }
  }
  std::vector<std::string> bytes;
  for (char c : input)
    bytes.emplace_back(1, c);
  const LineRun by_byte = Drive(max_line, bytes);
  EXPECT_EQ(by_byte.events, whole.events) << "byte by byte";
  EXPECT_EQ(by_byte.rest, whole.rest) << "byte by byte";
  return whole;
}

using Events = std::vector<std::string>;

TEST(LineReader, PipelinedLines) {
  const LineRun r = CheckAllSplits(512, "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
  EXPECT_EQ(r.events, (Events{"L:EHLO x", "L:MAIL FROM:<a@b>", "L:RCPT TO:<c@d>", "L:DATA"}));
  EXPECT_EQ(r.rest, "");
}

TEST(LineReader, PartialLineWaits) {
  LineReader reader(512);
  const auto next = reader.Take("MAIL FROM:<a@");
  EXPECT_EQ(next.status, LineReader::Status::kNeedMore);
  EXPECT_EQ(next.consumed, 0u);
  const auto cr_only = reader.Take("NOOP\r");
  EXPECT_EQ(cr_only.status, LineReader::Status::kNeedMore);
  EXPECT_EQ(cr_only.consumed, 0u);
  const auto empty = reader.Take("");
  EXPECT_EQ(empty.status, LineReader::Status::kNeedMore);
  EXPECT_EQ(empty.consumed, 0u);
}

TEST(LineReader, LineIsViewIntoInputAndConsumedCoversCrlf) {
  LineReader reader(512);
  const std::string input = "NOOP\r\nQUIT\r\n";
  const auto next = reader.Take(input);
  ASSERT_EQ(next.status, LineReader::Status::kLine);
  EXPECT_EQ(next.line, "NOOP");
  EXPECT_EQ(next.line.data(), input.data());
  EXPECT_EQ(next.consumed, 6u);
}

TEST(LineReader, EmptyLine) {
  const LineRun r = CheckAllSplits(512, "\r\nNOOP\r\n");
  EXPECT_EQ(r.events, (Events{"L:", "L:NOOP"}));
}

TEST(LineReader, ExactlyMaxLineIsAccepted) {
  // max 16 octets including CRLF: 14 characters fit, 15 do not.
  const std::string fits(14, 'a');
  const std::string over(15, 'b');
  const LineRun r = CheckAllSplits(16, fits + "\r\n" + over + "\r\nNOOP\r\n");
  EXPECT_EQ(r.events, (Events{"L:" + fits, "TOOLONG", "L:NOOP"}));
  EXPECT_EQ(r.rest, "");
}

TEST(LineReader, OverlongLineDiscardedAcrossChunks) {
  LineReader reader(16);
  std::string buffer(20, 'x');  // no LF yet, already too long
  auto next = reader.Take(buffer);
  EXPECT_EQ(next.status, LineReader::Status::kTooLong);
  EXPECT_EQ(next.consumed, 20u);
  EXPECT_TRUE(reader.discarding());
  next = reader.Take(std::string(100, 'y'));
  EXPECT_EQ(next.status, LineReader::Status::kNeedMore);  // reported once only
  EXPECT_EQ(next.consumed, 100u);
  next = reader.Take("zz\r\nNOOP\r\n");
  EXPECT_EQ(next.status, LineReader::Status::kNeedMore);
  EXPECT_EQ(next.consumed, 4u);  // through the LF
  EXPECT_FALSE(reader.discarding());
  next = reader.Take("NOOP\r\n");
  EXPECT_EQ(next.status, LineReader::Status::kLine);
  EXPECT_EQ(next.line, "NOOP");
}

TEST(LineReader, OverlongLineEveryBoundary) {
  const LineRun r = CheckAllSplits(12, "NOOP\r\n" + std::string(40, 'x') + "\r\nQUIT\r\nRS");
  EXPECT_EQ(r.events, (Events{"L:NOOP", "TOOLONG", "L:QUIT"}));
  EXPECT_EQ(r.rest, "RS");
}

TEST(LineReader, OverlongLineWithBareLfInsideIsStillOneEvent) {
  const LineRun r = CheckAllSplits(8, std::string(10, 'x') + "\nNOOP\r\n");
  EXPECT_EQ(r.events, (Events{"TOOLONG", "L:NOOP"}));
}

TEST(LineReader, BareLfIsRefused) {
  const LineRun r = CheckAllSplits(512, "NOOP\nMAIL FROM:<a@b>\r\nRSET\r\n");
  EXPECT_EQ(r.events, (Events{"BARE", "L:MAIL FROM:<a@b>", "L:RSET"}));
}

TEST(LineReader, BareCrInsideLineIsRefused) {
  // "\r" not followed by LF hides a second command for some parsers.
  const LineRun r = CheckAllSplits(512, "NOOP\rRSET\r\nQUIT\r\n");
  EXPECT_EQ(r.events, (Events{"BARE", "L:QUIT"}));
  const LineRun r2 = CheckAllSplits(512, "NOOP\r\r\nQUIT\r\n");
  EXPECT_EQ(r2.events, (Events{"BARE", "L:QUIT"}));
}

TEST(LineReader, BareLfAloneAndConsumed) {
  LineReader reader(512);
  const auto next = reader.Take("\nNOOP\r\n");
  EXPECT_EQ(next.status, LineReader::Status::kBareNewline);
  EXPECT_EQ(next.consumed, 1u);
}

TEST(LineReader, ResetStopsDiscarding) {
  LineReader reader(8);
  EXPECT_EQ(reader.Take(std::string(9, 'x')).status, LineReader::Status::kTooLong);
  ASSERT_TRUE(reader.discarding());
  reader.Reset();
  const auto next = reader.Take("NOOP\r\n");
  EXPECT_EQ(next.status, LineReader::Status::kLine);
}

TEST(LineReader, TinyLimitIsRaised) {
  LineReader reader(0);
  EXPECT_EQ(reader.max_line(), 3u);
  EXPECT_EQ(reader.Take("a\r\n").status, LineReader::Status::kLine);
}

}  // namespace
}  // namespace sluice::smtp
