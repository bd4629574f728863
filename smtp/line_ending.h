#pragma once

// The scan behind the smuggling defence of DataReader and BdatReader. In SMTP a line ends with
// CR LF and nothing else (RFC 5321 §2.3.8); a CR or LF on its own is a "bare" one, which a
// server must not take for a line end (RFC 5321 §4.1.1.4). A receiver that lets
// "<LF>.<CR><LF>" end DATA takes a second message hidden in the first one's body for a message
// of its own (CVE-2023-51764). Both readers find the next line end with this one function, so
// they classify the octets the same way.

#include <cstddef>
#include <cstring>

namespace sluice::smtp {

struct LineEnding {
  enum class Kind {
    kNone,    // no CR and no LF: the whole span is line content; `at` is its end
    kCrLf,    // a CR LF pair; `at` is the CR
    kBareCr,  // a CR that no LF follows within the span: a bare CR, or the span's last octet
              // (at + 1 == end), which the next input decides
    kBareLf,  // an LF that no CR precedes
  };
  Kind kind;
  const char* at;  // the first octet of the line end; the content before it is [begin, at)
};

// The first line end in [begin, end). Whatever it is, [begin, at) holds neither CR nor LF.
// Inline: it runs once per line of every message body.
inline LineEnding FindLineEnding(const char* begin, const char* end) {
  if (begin == end) {
    return {LineEnding::Kind::kNone, end};
  }
  const auto* lf =
      static_cast<const char*>(std::memchr(begin, '\n', static_cast<size_t>(end - begin)));
  const char* const content_end = lf != nullptr ? lf : end;
  const auto* cr =
      static_cast<const char*>(std::memchr(begin, '\r', static_cast<size_t>(content_end - begin)));
  if (cr == nullptr) {
    return lf != nullptr ? LineEnding{LineEnding::Kind::kBareLf, lf}
                         : LineEnding{LineEnding::Kind::kNone, end};
  }
  // cr is the first CR before the first LF, so only cr + 1 can be that LF.
  if (cr + 1 == lf) {
    return {LineEnding::Kind::kCrLf, cr};
  }
  return {LineEnding::Kind::kBareCr, cr};
}

}  // namespace sluice::smtp
