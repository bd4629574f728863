#pragma once

// DATA content encoding (RFC 5321 §4.5.2 transparency, §4.1.1.4 end of data).

#include <string>
#include <string_view>

namespace sluice::delivery {

// Encodes a body for DATA piece by piece, so a large body can be sent in
// chunks without a second full-size copy. Per piece it
//  - doubles a '.' at the start of every line (RFC 5321 §4.5.2);
//  - writes every line ending as CRLF: a bare LF or bare CR becomes CRLF,
//    because we never emit a bare CR or LF (RFC 5321 §2.3.8; docs/design.md §1);
// and Finish() ends the last line with CRLF if needed and appends ".\r\n".
// A CRLF split across two pieces is still one line ending.
class DotStuffer {
 public:
  void Append(std::string* out, std::string_view piece);
  void Finish(std::string* out);

 private:
  bool line_start_ = true;
  bool after_cr_ = false;  // the last byte seen was a CR (already written as CRLF)
};

// The whole body in one go: DotStuffer::Append + Finish.
void AppendDotStuffed(std::string* out, std::string_view body);

}  // namespace sluice::delivery
