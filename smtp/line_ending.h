#pragma once

// The scan behind the smuggling defence of DataReader and BdatReader. In SMTP a line ends with
// CR LF and nothing else (RFC 5321 §2.3.8); a CR or LF on its own is a "bare" one, which a
// server must not take for a line end (RFC 5321 §4.1.1.4). A receiver that lets
// "<LF>.<CR><LF>" end DATA takes a second message hidden in the first one's body for a message
// of its own (CVE-2023-51764). Both readers find their line ends with this one scanner, so they
// classify the octets the same way.

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

// Finds the line ends of one span of input, [begin, end), in order. It remembers where the next
// LF is, so a span that holds many bare CRs before its next LF is read once, and not once more
// after every CR: a peer cannot make a body cost time quadratic in its length.
class LineEndingScanner {
 public:
  explicit LineEndingScanner(const char* end) : end_(end) {
  }

  // The first line end in [begin, end). Whatever it is, [begin, at) holds neither CR nor LF.
  // Successive calls are cheapest with `begin` moving forward, as a reader does; any `begin`
  // within the span gives the right answer.
  LineEnding Next(const char* begin);

 private:
  const char* const end_;
  // The first LF at or after lf_from_ (end_ if none); lf_from_ is null until the first search.
  const char* lf_from_ = nullptr;
  const char* lf_ = nullptr;
};

// Inline: it runs once per line of every message body.
inline LineEnding LineEndingScanner::Next(const char* begin) {
  if (begin == end_) {
    return {LineEnding::Kind::kNone, end_};
  }
  // No LF lies in [lf_from_, lf_), so lf_ is also the first LF at or after any begin in between.
  if (lf_from_ == nullptr || begin < lf_from_ || begin > lf_) {
    const void* lf = std::memchr(begin, '\n', static_cast<size_t>(end_ - begin));
    lf_ = lf != nullptr ? static_cast<const char*>(lf) : end_;
    lf_from_ = begin;
  }
  const auto* cr =
      static_cast<const char*>(std::memchr(begin, '\r', static_cast<size_t>(lf_ - begin)));
  if (cr == nullptr) {
    return lf_ != end_ ? LineEnding{LineEnding::Kind::kBareLf, lf_}
                       : LineEnding{LineEnding::Kind::kNone, end_};
  }
  // cr is the first CR before the first LF, so only cr + 1 can be that LF.
  if (lf_ != end_ && cr + 1 == lf_) {
    return {LineEnding::Kind::kCrLf, cr};
  }
  return {LineEnding::Kind::kBareCr, cr};
}

}  // namespace sluice::smtp
