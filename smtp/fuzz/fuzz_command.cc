// libFuzzer target: the command side of the codec. Splits the input into
// lines with LineReader (fed whole and in chunks, which must agree), parses
// each line with ParseCommand and every argument parser, and checks the
// invariants a session relies on. Every crash found becomes a unit test.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "base/ascii.h"
#include "smtp/address.h"
#include "smtp/command.h"
#include "smtp/line_reader.h"
#include "smtp/reply.h"

namespace sluice::smtp {
namespace {

void Check(bool ok) {
  if (!ok)
    std::abort();
}

bool HasNonAscii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80)
      return true;
  }
  return false;
}

void CheckReply(const Reply& r) {
  Check(r.code >= 500 && r.code <= 599);
  Check(r.enhanced.size() == 5 && r.enhanced[0] == '5');
  Check(r.text.find_first_of("\r\n") == std::string::npos);
  std::string wire;
  AppendReply(&wire, r);
  Check(wire.size() >= 5 && wire.compare(wire.size() - 2, 2, "\r\n") == 0);
  Check(wire.find('\n') == wire.size() - 1);  // one line, no injected ones
}

void CheckPath(const Path& p) {
  if (p.null) {
    Check(p.ToString().empty());
    return;
  }
  Check(!p.mailbox.local_part.empty());
  Check(p.mailbox.local_part.size() <= kMaxLocalPart);
  Check(p.mailbox.domain.size() <= kMaxDomain);
  Check(p.ToString().size() + 2 <= kMaxPath);
  const bool non_ascii = HasNonAscii(p.mailbox.local_part) || HasNonAscii(p.mailbox.domain);
  Check(p.utf8 == non_ascii);
  if (non_ascii)
    Check(IsValidUtf8(p.ToString()));
  Check(p.ToString().find_first_of("<> \r\n") == std::string::npos ||
        p.mailbox.local_part.front() == '"');
}

void ParseArgs(std::string_view arg) {
  if (auto m = ParseMailFrom(arg); m.ok()) {
    CheckPath(m->path);
    if (m->path.utf8)
      Check(m->params.smtputf8);
    Check(m->params.envid.size() <= kMaxEnvid);
  } else {
    CheckReply(m.error());
  }
  for (bool utf8 : {false, true}) {
    if (auto r = ParseRcptTo(arg, utf8); r.ok()) {
      Check(!r->path.null);
      CheckPath(r->path);
      if (r->path.utf8)
        Check(utf8);
      const uint8_t n = r->params.notify;
      Check((n & kNotifyNever) == 0 || n == kNotifyNever);
      Check(r->params.orcpt.size() <= kMaxOrcpt);
    } else {
      CheckReply(r.error());
    }
  }
  if (auto b = ParseBdat(arg); b.ok()) {
    Check(!arg.empty() && IsAsciiDigit(arg[0]));
  } else {
    CheckReply(b.error());
  }
  if (auto h = ParseHeloDomain(arg); h.ok()) {
    Check(*h == arg && !h->empty());
  } else {
    CheckReply(h.error());
  }
  if (auto a = ParseAuth(arg); a.ok()) {
    Check(!a->mechanism.empty() && a->mechanism.size() <= 20);
    if (a->initial_response)
      Check(a->initial_response->size() % 4 == 0);
  } else {
    CheckReply(a.error());
  }
}

struct Event {
  LineReader::Status status;
  std::string line;
  bool operator==(const Event& o) const {
    return status == o.status && line == o.line;
  }
};

std::vector<Event> Lines(size_t max_line, std::string_view input, size_t chunk) {
  LineReader reader(max_line);
  std::vector<Event> events;
  std::string buffer;
  size_t off = 0;
  while (off < input.size()) {
    buffer.append(input.substr(off, chunk));
    off += chunk;
    while (true) {
      const LineReader::Next next = reader.Take(buffer);
      Check(next.consumed <= buffer.size());
      if (next.status == LineReader::Status::kLine) {
        Check(next.line.find_first_of("\r\n") == std::string_view::npos);
        Check(next.line.size() + 2 <= reader.max_line());
        Check(next.consumed == next.line.size() + 2);
        const Command cmd = ParseCommand(next.line);
        if (!cmd.arg.empty()) {
          Check(cmd.arg.data() >= next.line.data() &&
                cmd.arg.data() + cmd.arg.size() <= next.line.data() + next.line.size());
          Check(cmd.arg.front() != ' ' && cmd.arg.back() != ' ');
        }
        if (chunk == input.size())
          ParseArgs(cmd.arg);
      }
      if (next.status != LineReader::Status::kNeedMore) {
        events.push_back({next.status, std::string(next.line)});
      }
      buffer.erase(0, next.consumed);
      if (next.status == LineReader::Status::kNeedMore && next.consumed == 0)
        break;
    }
    // Bounded memory: never more than max_line octets held back.
    Check(buffer.size() < reader.max_line());
  }
  return events;
}

}  // namespace
}  // namespace sluice::smtp

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sluice::smtp;
  if (size == 0)
    return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // The whole input as one argument reaches parser states that lines with
  // CR/LF stripped cannot.
  ParseArgs(input);
  const size_t max_line = 8 + data[0] % 120;
  const size_t chunk = 1 + data[size - 1] % 17;
  const auto whole = Lines(max_line, input, input.size());
  Check(Lines(max_line, input, chunk) == whole);
  return 0;
}
