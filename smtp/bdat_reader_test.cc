#include "smtp/bdat_reader.h"

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace sluice::smtp {
namespace {

struct Outcome {
  std::string body;
  bool bare_newline = false;
  bool line_too_long = false;
  bool too_big = false;
  uint64_t size = 0;
  bool operator==(const Outcome& o) const {
    return body == o.body && bare_newline == o.bare_newline && line_too_long == o.line_too_long &&
           too_big == o.too_big && size == o.size;
  }
};

std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  std::string escaped;
  for (char c : o.body) {
    escaped += c == '\r' ? std::string("\\r") : c == '\n' ? std::string("\\n") : std::string(1, c);
  }
  return os << "{body=\"" << escaped << "\" bare=" << o.bare_newline << " long=" << o.line_too_long
            << " big=" << o.too_big << " size=" << o.size << "}";
}

// Sends `message` as BDAT chunks of the given sizes (the last one LAST), each
// chunk's octets arriving in pieces of at most `piece` octets, with a
// pipelined command after every chunk that must not be consumed.
Outcome Drive(DataLimits limits, std::string_view message, const std::vector<size_t>& chunk_sizes,
              size_t piece) {
  BdatReader reader(limits);
  Outcome out;
  size_t offset = 0;
  for (size_t c = 0; c < chunk_sizes.size(); ++c) {
    const bool last = c + 1 == chunk_sizes.size();
    reader.StartChunk(chunk_sizes[c], last);
    std::string wire(message.substr(offset, chunk_sizes[c]));
    offset += chunk_sizes[c];
    wire += "BDAT 1\r\n";
    size_t pos = 0;
    while (!reader.chunk_done()) {
      const std::string_view input = std::string_view(wire).substr(pos, piece);
      const size_t n = reader.Feed(input, &out.body);
      EXPECT_LE(n, input.size());
      pos += n;
    }
    EXPECT_EQ(wire.substr(pos), "BDAT 1\r\n");
    EXPECT_EQ(reader.message_done(), last);
  }
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

Outcome Whole(DataLimits limits, std::string_view message) {
  return Drive(limits, message, {message.size()}, message.size() + 8);
}

// Every way of cutting the message into two chunks, and into chunks of
// every fixed size, fed in pieces of every size up to 4, must agree.
Outcome CheckAllSplits(DataLimits limits, std::string_view message) {
  Outcome whole = Whole(limits, message);
  for (size_t i = 0; i <= message.size(); ++i) {
    for (size_t piece = 1; piece <= 4; ++piece) {
      EXPECT_EQ(Drive(limits, message, {i, message.size() - i}, piece), whole)
          << "chunks " << i << "+" << message.size() - i << " piece " << piece;
    }
    EXPECT_EQ(Drive(limits, message, {i, message.size() - i, 0}, 1000), whole)
        << "chunks " << i << "+rest+0 LAST";
  }
  for (size_t size = 1; size <= message.size(); ++size) {
    std::vector<size_t> sizes(message.size() / size, size);
    if (message.size() % size != 0)
      sizes.push_back(message.size() % size);
    EXPECT_EQ(Drive(limits, message, sizes, 1000), whole) << "chunk size " << size;
  }
  return whole;
}

constexpr DataLimits kReject{1 << 20, 1000, BareNewline::kReject};
constexpr DataLimits kNormalize{1 << 20, 1000, BareNewline::kNormalize};

Outcome Reference(DataLimits limits, std::string_view message) {
  Outcome out;
  std::string full;
  for (size_t i = 0; i < message.size(); ++i) {
    const char c = message[i];
    const bool crlf = c == '\r' && i + 1 < message.size() && message[i + 1] == '\n';
    const bool bare = (c == '\r' && !crlf) || (c == '\n' && (i == 0 || message[i - 1] != '\r'));
    if (crlf) {
      full += "\r\n";
      ++i;
    } else if (bare && limits.bare_newline == BareNewline::kNormalize) {
      full += "\r\n";
    } else {
      out.bare_newline |= bare;
      full += c;
    }
  }
  size_t line_start = 0;
  for (size_t i = 0; i < full.size(); ++i) {
    if (full[i] == '\n') {
      if (i + 1 - line_start > limits.max_line)
        out.line_too_long = true;
      line_start = i + 1;
    }
  }
  if (full.size() - line_start > limits.max_line)
    out.line_too_long = true;
  out.size = full.size();
  out.too_big = full.size() > limits.max_size;
  out.body = full.substr(0, out.too_big ? limits.max_size : full.size());
  return out;
}

TEST(BdatReader, StoresChunkVerbatimWithoutUnstuffing) {
  const std::string msg = "Subject: x\r\n\r\n..not stuffed\r\n.\r\n";
  const Outcome o = CheckAllSplits(kReject, msg);
  EXPECT_EQ(o.body, msg);
  EXPECT_FALSE(o.bare_newline);
  EXPECT_EQ(o.size, msg.size());
}

TEST(BdatReader, ConsumesAtMostTheChunk) {
  BdatReader reader(kReject);
  std::string body;
  EXPECT_TRUE(reader.chunk_done());
  reader.StartChunk(5);
  EXPECT_FALSE(reader.chunk_done());
  EXPECT_EQ(reader.Feed("hel", &body), 3u);
  EXPECT_EQ(reader.remaining(), 2u);
  EXPECT_EQ(reader.Feed("lo world", &body), 2u);
  EXPECT_TRUE(reader.chunk_done());
  EXPECT_FALSE(reader.message_done());
  EXPECT_EQ(reader.Feed("more", &body), 0u);
  EXPECT_EQ(body, "hello");
  reader.StartChunk(0, /*last=*/true);
  EXPECT_TRUE(reader.chunk_done());
  EXPECT_TRUE(reader.message_done());
}

TEST(BdatReader, CrlfAcrossChunksIsClean) {
  BdatReader reader(kReject);
  std::string body;
  reader.StartChunk(2);
  EXPECT_EQ(reader.Feed("a\r", &body), 2u);
  reader.StartChunk(3, true);
  EXPECT_EQ(reader.Feed("\nb\n", &body), 3u);
  EXPECT_EQ(body, "a\r\nb\n");
  EXPECT_TRUE(reader.bare_newline());  // the final LF is bare
}

TEST(BdatReader, CrEndingTheMessageIsBare) {
  const Outcome rej = CheckAllSplits(kReject, "a\r\nb\r");
  EXPECT_TRUE(rej.bare_newline);
  EXPECT_EQ(rej.body, "a\r\nb\r");
  const Outcome norm = CheckAllSplits(kNormalize, "a\r\nb\r");
  EXPECT_FALSE(norm.bare_newline);
  EXPECT_EQ(norm.body, "a\r\nb\r\n");
  EXPECT_EQ(norm.size, 6u);

  // The trailing CR is settled by "BDAT 0 LAST" too.
  BdatReader reader(kReject);
  std::string body;
  reader.StartChunk(2);
  ASSERT_EQ(reader.Feed("a\r", &body), 2u);
  EXPECT_FALSE(reader.bare_newline());
  reader.StartChunk(0, true);
  EXPECT_TRUE(reader.bare_newline());
  EXPECT_TRUE(reader.message_done());
}

TEST(BdatReader, NormalizeBareNewlines) {
  const Outcome o = CheckAllSplits(kNormalize, "a\nb\rc\r\n\n\r\r\n");
  EXPECT_EQ(o.body, "a\r\nb\r\nc\r\n\r\n\r\n\r\n");
  EXPECT_FALSE(o.bare_newline);
}

TEST(BdatReader, RejectFlagsBareNewlinesAndKeepsOctets) {
  for (std::string_view s : {"a\nb", "a\rb", "\n", "a\r\r\n", "x\r\n.\n"}) {
    const Outcome o = CheckAllSplits(kReject, s);
    EXPECT_TRUE(o.bare_newline) << s;
    EXPECT_EQ(o.body, s);
  }
}

TEST(BdatReader, LineLengthAcrossChunks) {
  const DataLimits limits{1 << 20, 10, BareNewline::kReject};
  EXPECT_FALSE(CheckAllSplits(limits, "12345678\r\n12345678\r\n").line_too_long);
  EXPECT_TRUE(CheckAllSplits(limits, "123456789\r\n").line_too_long);
  EXPECT_TRUE(CheckAllSplits(limits, "12345678901").line_too_long);  // no CRLF at all
}

TEST(BdatReader, TooBigBoundsMemory) {
  const DataLimits limits{100, 1000, BareNewline::kReject};
  BdatReader reader(limits);
  std::string body;
  const std::string chunk(64 * 1024, 'x');
  for (int i = 0; i < 16; ++i) {
    reader.StartChunk(chunk.size(), i == 15);
    ASSERT_EQ(reader.Feed(chunk, &body), chunk.size());
    ASSERT_LE(body.size(), 100u);
  }
  EXPECT_TRUE(reader.too_big());
  EXPECT_EQ(reader.size(), 16u * chunk.size());
  EXPECT_EQ(body, std::string(100, 'x'));
  EXPECT_TRUE(reader.line_too_long());
}

TEST(BdatReader, MatchesReferenceOnRandomInput) {
  std::mt19937 rng(4242);
  const char alphabet[] = {'a', '.', '\r', '\r', '\n', '\n'};
  for (int iter = 0; iter < 20000; ++iter) {
    std::string msg;
    const int len = static_cast<int>(rng() % 40);
    for (int i = 0; i < len; ++i)
      msg += alphabet[rng() % sizeof(alphabet)];
    const DataLimits limits{rng() % 40, 3 + rng() % 10,
                            rng() % 2 == 0 ? BareNewline::kReject : BareNewline::kNormalize};
    std::vector<size_t> sizes;
    size_t left = msg.size();
    while (left > 0) {
      const size_t n = std::min<size_t>(left, rng() % 8);
      sizes.push_back(n);
      left -= n;
    }
    sizes.push_back(0);
    const Outcome got = Drive(limits, msg, sizes, 1 + rng() % 5);
    ASSERT_EQ(got, Reference(limits, msg)) << "input #" << iter;
  }
}

TEST(BdatReader, DropBodyConsumesTheChunkWithoutStoring) {
  BdatReader reader(DataLimits{1 << 20, 1000, BareNewline::kReject});
  std::string body;
  reader.StartChunk(10, false);
  EXPECT_EQ(reader.Feed("0123456789BDAT", &body), 10u);
  EXPECT_TRUE(reader.chunk_done());
  reader.DropBody();
  reader.StartChunk(5, true);
  EXPECT_EQ(reader.Feed("abcdeQUIT", &body), 5u);
  EXPECT_TRUE(reader.chunk_done());
  EXPECT_EQ(body, "0123456789");
  EXPECT_EQ(reader.size(), 15u);
  EXPECT_FALSE(reader.too_big());
}

}  // namespace
}  // namespace sluice::smtp
