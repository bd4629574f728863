#pragma once

// SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 2034, RFC 3463),
// and ReplyOr<T>: what every argument parser in smtp/ returns. A parse error
// is never an exception or a bare string: it is the exact reply the session
// sends back.

#include <string>
#include <string_view>

#include "base/result.h"

namespace sluice::smtp {

struct Reply {
  int code = 0;          // 3 digits, 200..599
  std::string enhanced;  // "5.5.4"; empty when none
  std::string text;      // may contain '\n' for a multi-line reply
};

inline bool operator==(const Reply& a, const Reply& b) {
  return a.code == b.code && a.enhanced == b.enhanced && a.text == b.text;
}

Reply MakeReply(int code, std::string_view enhanced, std::string_view text);

// Appends the wire form of a reply: "250-line1\r\n250 line2\r\n". The enhanced
// code (RFC 2034 §4: on every line) is prefixed to every line when non-empty.
// Lines are split on '\n' (a '\r' before it is dropped); one trailing '\n' is
// ignored. A line with neither enhanced code nor text is "250\r\n" (last) or
// "250-\r\n" (continuation), both valid per RFC 5321 §4.2.
void AppendReply(std::string* out, int code, std::string_view enhanced, std::string_view text);
void AppendReply(std::string* out, const Reply& r);

// Either a value or the reply explaining why the input was refused.
template <typename T>
using ReplyOr = Result<T, Reply>;

}  // namespace sluice::smtp
