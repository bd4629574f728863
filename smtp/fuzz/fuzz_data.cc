// libFuzzer target: the body readers. The first 4 octets choose the limits,
// the mode and how the rest is split; DataReader and BdatReader are fed the
// rest whole and in pieces, which must give identical results, and the
// invariants the session and the spool rely on are checked.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "smtp/bdat_reader.h"
#include "smtp/data_reader.h"

namespace sluice::smtp {
namespace {

void Check(bool ok) {
  if (!ok)
    std::abort();
}

// No CR without LF after it, no LF without CR before it.
bool OnlyCrlf(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && (i + 1 == s.size() || s[i + 1] != '\n'))
      return false;
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
      return false;
  }
  return true;
}

struct Outcome {
  std::string body;
  size_t consumed = 0;
  bool done = false, bare = false, too_long = false, too_big = false;
  uint64_t size = 0;
  bool operator==(const Outcome& o) const {
    return body == o.body && consumed == o.consumed && done == o.done && bare == o.bare &&
           too_long == o.too_long && too_big == o.too_big && size == o.size;
  }
};

Outcome RunData(DataLimits limits, std::string_view input, size_t step) {
  DataReader reader(limits);
  Outcome out;
  for (size_t off = 0; off < input.size() && !reader.done(); off += step) {
    const std::string_view piece = input.substr(off, step);
    const size_t n = reader.Feed(piece, &out.body);
    Check(n <= piece.size());
    Check(reader.done() || n == piece.size());
    out.consumed += n;
    Check(out.body.size() <= limits.max_size);
  }
  out.done = reader.done();
  out.bare = reader.bare_newline();
  out.too_long = reader.line_too_long();
  out.too_big = reader.too_big();
  out.size = reader.size();
  return out;
}

void CheckData(DataLimits limits, std::string_view input, const Outcome& o) {
  Check(o.too_big == (o.size > limits.max_size));
  if (!o.too_big)
    Check(o.size == o.body.size());
  if (!o.done) {
    Check(o.consumed == input.size());
    return;
  }
  // Only CRLF "." CRLF ends the data (the start counts as after CRLF).
  Check(o.consumed >= 3 && input.substr(o.consumed - 3, 3) == ".\r\n");
  Check(o.consumed == 3 || input.substr(o.consumed - 5, 2) == "\r\n");
  if (!o.too_big) {
    Check(o.body.empty() || o.body.substr(o.body.size() - 2) == "\r\n");
    if (limits.bare_newline == BareNewline::kNormalize || !o.bare)
      Check(OnlyCrlf(o.body));
  }
  if (limits.bare_newline == BareNewline::kNormalize)
    Check(!o.bare);
}

Outcome RunBdat(DataLimits limits, std::string_view input, size_t chunk, size_t step) {
  BdatReader reader(limits);
  Outcome out;
  size_t off = 0;
  while (true) {
    const size_t n = std::min(chunk, input.size() - off);
    const bool last = off + n == input.size();
    reader.StartChunk(n, last);
    const std::string_view data = input.substr(off, n);
    size_t pos = 0;
    while (!reader.chunk_done()) {
      // Pipelined bytes after the end of the chunk must never be taken.
      std::string wire(data.substr(pos, step));
      if (pos + wire.size() == data.size())
        wire += "BDAT";
      const size_t took = reader.Feed(wire, &out.body);
      Check(took == std::min(step, data.size() - pos));
      pos += took;
      Check(out.body.size() <= limits.max_size);
    }
    off += n;
    out.consumed += n;
    if (last)
      break;
  }
  Check(reader.message_done());
  out.done = true;
  out.bare = reader.bare_newline();
  out.too_long = reader.line_too_long();
  out.too_big = reader.too_big();
  out.size = reader.size();
  Check(out.too_big == (out.size > limits.max_size));
  if (!out.too_big) {
    Check(out.size == out.body.size());
    if (limits.bare_newline == BareNewline::kNormalize || !out.bare)
      Check(OnlyCrlf(out.body));
    if (limits.bare_newline == BareNewline::kReject)
      Check(out.body == input);
  }
  return out;
}

}  // namespace
}  // namespace sluice::smtp

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sluice::smtp;
  if (size < 4)
    return 0;
  const DataLimits limits{uint64_t{data[0]} * 8, size_t{3} + data[1] % 80,
                          (data[2] & 1) != 0 ? BareNewline::kNormalize : BareNewline::kReject};
  const size_t step = 1 + data[3] % 13;
  const size_t chunk = 1 + data[2] / 2;
  const std::string_view input(reinterpret_cast<const char*>(data) + 4, size - 4);

  const Outcome whole = RunData(limits, input, input.size() + 1);
  CheckData(limits, input, whole);
  Check(RunData(limits, input, step) == whole);
  Check(RunData(limits, input, 1) == whole);

  const Outcome bdat_whole = RunBdat(limits, input, input.size() + 1, input.size() + 1);
  Check(RunBdat(limits, input, chunk, step) == bdat_whole);
  return 0;
}
