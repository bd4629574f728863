#include "smtp/data_reader.h"

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace sluice::smtp {
namespace {

struct Outcome {
  std::string body;
  size_t consumed = 0;
  bool done = false;
  bool bare_newline = false;
  bool line_too_long = false;
  bool too_big = false;
  uint64_t size = 0;

  bool operator==(const Outcome& o) const {
    return body == o.body && consumed == o.consumed && done == o.done &&
           bare_newline == o.bare_newline && line_too_long == o.line_too_long &&
           too_big == o.too_big && size == o.size;
  }
};

std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  std::string escaped;
  for (char c : o.body) {
    if (c == '\r') {
      escaped += "\\r";
    } else if (c == '\n') {
      escaped += "\\n";
    } else {
      escaped += c;
    }
  }
  return os << "{body=\"" << escaped << "\" consumed=" << o.consumed << " done=" << o.done
            << " bare=" << o.bare_newline << " long=" << o.line_too_long << " big=" << o.too_big
            << " size=" << o.size << "}";
}

// Feeds the chunks in order, as a session would, stopping at the end marker.
Outcome Drive(DataLimits limits, const std::vector<std::string_view>& chunks) {
  DataReader reader(limits);
  Outcome out;
  for (std::string_view chunk : chunks) {
    const size_t n = reader.Feed(chunk, &out.body);
    EXPECT_LE(n, chunk.size());
    out.consumed += n;
    if (reader.done())
      break;
    EXPECT_EQ(n, chunk.size()) << "a reader that is not done consumes everything";
  }
  if (reader.done()) {
    std::string ignored;
    EXPECT_EQ(reader.Feed("MAIL FROM:<>\r\n", &ignored), 0u);
    EXPECT_EQ(ignored, "");
  }
  out.done = reader.done();
  out.bare_newline = reader.bare_newline();
  out.line_too_long = reader.line_too_long();
  out.too_big = reader.too_big();
  out.size = reader.size();
  if (!out.too_big) {
    EXPECT_EQ(out.size, out.body.size());
  }
  EXPECT_LE(out.body.size(), limits.max_size);
  return out;
}

// Whole input, every two- and three-way split (for short inputs) and byte by
// byte must all give the same outcome; returns it.
Outcome CheckAllSplits(DataLimits limits, std::string_view input) {
  Outcome whole = Drive(limits, {input});
  for (size_t i = 0; i <= input.size(); ++i) {
    EXPECT_EQ(Drive(limits, {input.substr(0, i), input.substr(i)}), whole) << "split at " << i;
    if (input.size() > 48)
      continue;
    for (size_t j = i; j <= input.size(); ++j) {
      EXPECT_EQ(Drive(limits, {input.substr(0, i), input.substr(i, j - i), input.substr(j)}), whole)
          << "split at " << i << "," << j;
    }
  }
  std::vector<std::string_view> bytes;
  for (size_t i = 0; i < input.size(); ++i)
    bytes.push_back(input.substr(i, 1));
  EXPECT_EQ(Drive(limits, bytes), whole) << "byte by byte";
  return whole;
}

constexpr DataLimits kReject{1 << 20, 1000, BareNewline::kReject};
constexpr DataLimits kNormalize{1 << 20, 1000, BareNewline::kNormalize};

// An independent model of the rules, over a complete input: find the first
// CRLF.CRLF (the start counts as after CRLF), unstuff CRLF-delimited lines,
// then deal with bare CR/LF inside them.
Outcome Reference(DataLimits limits, std::string_view input) {
  Outcome out;
  const std::string padded = "\r\n" + std::string(input);
  const size_t pos = padded.find("\r\n.\r\n");
  if (pos == std::string::npos)
    return out;  // only complete inputs are modelled
  out.done = true;
  out.consumed = pos + 3;
  const std::string_view content = input.substr(0, pos);
  std::string full;
  size_t start = 0;
  while (start < content.size()) {
    size_t crlf = content.find("\r\n", start);
    std::string_view seg = content.substr(start, crlf - start);
    start = crlf + 2;
    if (seg.size() >= 2 && seg[0] == '.' && seg[1] != '\r' && seg[1] != '\n')
      seg.remove_prefix(1);
    for (char c : seg) {
      if (c == '\r' || c == '\n') {
        if (limits.bare_newline == BareNewline::kNormalize) {
          full += "\r\n";
          continue;
        }
        out.bare_newline = true;
      }
      full += c;
    }
    full += "\r\n";
  }
  size_t line_start = 0;
  for (size_t i = 0; i < full.size(); ++i) {
    if (full[i] == '\n') {
      if (i + 1 - line_start > limits.max_line)
        out.line_too_long = true;
      line_start = i + 1;
    }
  }
  out.size = full.size();
  out.too_big = full.size() > limits.max_size;
  out.body = full.substr(0, out.too_big ? limits.max_size : full.size());
  return out;
}

TEST(DataReader, SimpleMessage) {
  const std::string msg = "Subject: hi\r\n\r\nhello\r\n";
  const Outcome o = CheckAllSplits(kReject, msg + ".\r\n");
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.body, msg);
  EXPECT_EQ(o.consumed, msg.size() + 3);
  EXPECT_FALSE(o.bare_newline);
  EXPECT_FALSE(o.line_too_long);
  EXPECT_FALSE(o.too_big);
  EXPECT_EQ(o.size, msg.size());
}

TEST(DataReader, EmptyMessage) {
  const Outcome o = CheckAllSplits(kReject, ".\r\nQUIT\r\n");
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.body, "");
  EXPECT_EQ(o.consumed, 3u);
  const Outcome blank = CheckAllSplits(kReject, "\r\n.\r\n");
  EXPECT_EQ(blank.body, "\r\n");
  EXPECT_EQ(blank.consumed, 5u);
}

TEST(DataReader, PipelinedCommandsAfterEndAreNotConsumed) {
  const std::string input = "a\r\n.\r\nMAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\n";
  const Outcome o = CheckAllSplits(kReject, input);
  EXPECT_EQ(o.body, "a\r\n");
  EXPECT_EQ(input.substr(o.consumed), "MAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\n");
}

TEST(DataReader, DotUnstuffing) {
  const Outcome o = CheckAllSplits(kReject, "..x\r\n...\r\n..\r\n.y\r\na.b\r\n. \r\n.\r\n");
  EXPECT_EQ(o.body, ".x\r\n..\r\n.\r\ny\r\na.b\r\n \r\n");
  EXPECT_EQ(CheckAllSplits(kReject, "..\r\n.\r\n").body, ".\r\n");
}

TEST(DataReader, NotDoneWithoutEndMarker) {
  for (std::string_view s : {"abc\r\n", "abc\r\n.", "abc\r\n.\r", "abc\r\n..\r\n", ""}) {
    const Outcome o = CheckAllSplits(kReject, s);
    EXPECT_FALSE(o.done) << s;
    EXPECT_EQ(o.consumed, s.size());
  }
}

// CVE-2023-51764 family: none of these may end the data, in either mode.
TEST(DataReader, SmugglingSequencesNeverEndData) {
  struct Case {
    std::string input;
    std::string reject_body;
    std::string normalize_body;
  };
  const Case cases[] = {
      {"a\n.\nMAIL FROM:<e@vil>\r\n.\r\n", "a\n.\nMAIL FROM:<e@vil>\r\n",
       "a\r\n.\r\nMAIL FROM:<e@vil>\r\n"},
      {"a\r\n.\nMAIL FROM:<e@vil>\r\n.\r\n", "a\r\n.\nMAIL FROM:<e@vil>\r\n",
       "a\r\n.\r\nMAIL FROM:<e@vil>\r\n"},
      {"a\n.\r\nMAIL FROM:<e@vil>\r\n.\r\n", "a\n.\r\nMAIL FROM:<e@vil>\r\n",
       "a\r\n.\r\nMAIL FROM:<e@vil>\r\n"},
      {"a\r.\rMAIL FROM:<e@vil>\r\n.\r\n", "a\r.\rMAIL FROM:<e@vil>\r\n",
       "a\r\n.\r\nMAIL FROM:<e@vil>\r\n"},
      {"a\r\n.\rMAIL FROM:<e@vil>\r\n.\r\n", "a\r\n.\rMAIL FROM:<e@vil>\r\n",
       "a\r\n.\r\nMAIL FROM:<e@vil>\r\n"},
      {".\nx\r\n.\r\n", ".\nx\r\n", ".\r\nx\r\n"},
      {"a\r\r\n.\r\n", "a\r\r\n", "a\r\n\r\n"},
  };
  for (const Case& c : cases) {
    const Outcome rej = CheckAllSplits(kReject, c.input);
    EXPECT_TRUE(rej.done);
    EXPECT_EQ(rej.consumed, c.input.size()) << c.input;
    EXPECT_EQ(rej.body, c.reject_body);
    EXPECT_TRUE(rej.bare_newline);

    const Outcome norm = CheckAllSplits(kNormalize, c.input);
    EXPECT_TRUE(norm.done);
    EXPECT_EQ(norm.consumed, c.input.size());
    EXPECT_EQ(norm.body, c.normalize_body);
    EXPECT_FALSE(norm.bare_newline);
  }
  // Without the real marker nothing ends, whatever follows.
  for (std::string_view s :
       {"a\n.\nQUIT\n", "a\r\n.\nQUIT\r\n", "a\n.\r\nQUIT\r\n", "a\r.\rQUIT\r"}) {
    EXPECT_FALSE(CheckAllSplits(kReject, s).done) << s;
    EXPECT_FALSE(CheckAllSplits(kNormalize, s).done) << s;
  }
}

TEST(DataReader, LoneCrAtChunkEnd) {
  DataReader reader(kNormalize);
  std::string body;
  EXPECT_EQ(reader.Feed("line\r", &body), 5u);
  EXPECT_EQ(body, "line");  // the CR waits for its successor
  EXPECT_EQ(reader.Feed("\n.\r", &body), 3u);
  EXPECT_FALSE(reader.done());
  EXPECT_EQ(reader.Feed("\nNOOP\r\n", &body), 1u);
  EXPECT_TRUE(reader.done());
  EXPECT_EQ(body, "line\r\n");
  EXPECT_FALSE(reader.bare_newline());

  DataReader bare(kNormalize);
  body.clear();
  bare.Feed("line\r", &body);
  bare.Feed("x\r\n.\r\n", &body);
  EXPECT_EQ(body, "line\r\nx\r\n");
}

TEST(DataReader, LineLengthLimit) {
  const DataLimits limits{1 << 20, 10, BareNewline::kReject};
  EXPECT_FALSE(CheckAllSplits(limits, "12345678\r\n.\r\n").line_too_long);  // 10 octets
  EXPECT_TRUE(CheckAllSplits(limits, "123456789\r\n.\r\n").line_too_long);  // 11 octets
  EXPECT_FALSE(
      CheckAllSplits(limits, "..2345678\r\n.\r\n").line_too_long);  // stuffed dot not counted
  const Outcome o = CheckAllSplits(limits, std::string(50, 'x') + "\r\nok\r\n.\r\n");
  EXPECT_TRUE(o.line_too_long);
  EXPECT_TRUE(o.done);  // reading goes on to the real end
  EXPECT_EQ(o.body, std::string(50, 'x') + "\r\nok\r\n");
}

TEST(DataReader, TooBigStopsStoringButReadsToEnd) {
  const DataLimits limits{10, 1000, BareNewline::kReject};
  const std::string msg = "0123456789abcdef\r\nmore\r\n";
  const Outcome o = CheckAllSplits(limits, msg + ".\r\nQUIT\r\n");
  EXPECT_TRUE(o.too_big);
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.body, "0123456789");
  EXPECT_EQ(o.size, msg.size());
  EXPECT_EQ(o.consumed, msg.size() + 3);
  // Exactly max_size is not too big.
  const Outcome exact = CheckAllSplits(limits, "01234567\r\n.\r\n");
  EXPECT_FALSE(exact.too_big);
  EXPECT_EQ(exact.size, 10u);
}

TEST(DataReader, BoundedMemoryOnHugeMessage) {
  const DataLimits limits{1024, 1000, BareNewline::kReject};
  DataReader reader(limits);
  std::string body;
  const std::string line(78, 'x');
  std::string chunk;
  for (int i = 0; i < 1000; ++i)
    chunk += line + "\r\n";
  for (int i = 0; i < 100; ++i) {  // ~8 MB through the reader
    ASSERT_EQ(reader.Feed(chunk, &body), chunk.size());
    ASSERT_LE(body.size(), 1024u);
  }
  EXPECT_EQ(reader.Feed(".\r\n", &body), 3u);
  EXPECT_TRUE(reader.done());
  EXPECT_TRUE(reader.too_big());
  EXPECT_EQ(body.size(), 1024u);
  EXPECT_LE(body.capacity(), 4096u);
  EXPECT_EQ(reader.size(), 100u * chunk.size());
}

TEST(DataReader, NormalizeTurnsBareNewlinesIntoCrlf) {
  const Outcome o = CheckAllSplits(kNormalize, "a\nb\rc\r\nd\n\r\n.\r\n");
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.body, "a\r\nb\r\nc\r\nd\r\n\r\n");
  EXPECT_FALSE(o.bare_newline);
  EXPECT_EQ(o.size, o.body.size());
  // After a bare LF (even normalized) a "." line is content, never the end.
  const Outcome o2 = CheckAllSplits(kNormalize, "a\n.\r\n.\r\n");
  EXPECT_TRUE(o2.done);
  EXPECT_EQ(o2.body, "a\r\n.\r\n");
  const Outcome o3 = CheckAllSplits(kNormalize, "d\n\n.\r\n");
  EXPECT_FALSE(o3.done);
  EXPECT_EQ(o3.body, "d\r\n\r\n.\r\n");
}

TEST(DataReader, BinaryOctetsPassThrough) {
  std::string msg;
  for (int c = 0; c < 256; ++c) {
    if (c != '\r' && c != '\n')
      msg += static_cast<char>(c);
  }
  msg += "\r\n";
  const Outcome o = CheckAllSplits(kReject, msg + ".\r\n");
  EXPECT_EQ(o.body, msg);
  EXPECT_FALSE(o.bare_newline);
}

TEST(DataReader, MatchesReferenceOnRandomInput) {
  std::mt19937 rng(20240101);
  const char alphabet[] = {'a', 'b', '.', '.', '\r', '\r', '\n', '\n'};
  for (int iter = 0; iter < 20000; ++iter) {
    std::string input;
    const int len = static_cast<int>(rng() % 40);
    for (int i = 0; i < len; ++i)
      input += alphabet[rng() % sizeof(alphabet)];
    if (rng() % 2 == 0)
      input += "\r\n.\r\nQUIT\r\n";
    const DataLimits limits{rng() % 40, 3 + rng() % 10,
                            rng() % 2 == 0 ? BareNewline::kReject : BareNewline::kNormalize};
    const Outcome whole = Drive(limits, {input});
    const Outcome ref = Reference(limits, input);
    if (ref.done) {
      ASSERT_EQ(whole, ref) << "input #" << iter;
    } else {
      ASSERT_FALSE(whole.done);
    }
    // A random three-way split gives the same outcome.
    size_t i = rng() % (input.size() + 1);
    size_t j = rng() % (input.size() + 1);
    if (i > j)
      std::swap(i, j);
    const std::string_view v = input;
    ASSERT_EQ(Drive(limits, {v.substr(0, i), v.substr(i, j - i), v.substr(j)}), whole)
        << "input #" << iter << " split " << i << "," << j;
  }
}

TEST(DataReader, DropBodyReadsToTheEndAndStoresNothingMore) {
  // A session that runs out of memory mid-message drops the rest but stays in step: the end
  // marker is still found, and too_big and line lengths are still judged.
  DataReader reader(DataLimits{64, 1000, BareNewline::kReject});
  std::string body;
  EXPECT_EQ(reader.Feed("first\r\n", &body), 7u);
  reader.DropBody();
  const std::string rest = "second line\r\n" + std::string(80, 'x') + "\r\n.\r\nNOOP\r\n";
  const size_t n = reader.Feed(rest, &body);
  EXPECT_TRUE(reader.done());
  EXPECT_EQ(n, rest.size() - 6);  // the pipelined NOOP is not consumed
  EXPECT_EQ(body, "first\r\n");
  EXPECT_TRUE(reader.too_big());  // 7 + 13 + 82 octets against 64
  EXPECT_EQ(reader.size(), 7u + 13u + 82u);
}

}  // namespace
}  // namespace sluice::smtp
