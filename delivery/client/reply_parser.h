#pragma once

// Client side of RFC 5321 §4.2: turns the bytes a server sends into replies,
// without I/O. Multi-line replies ("250-a\r\n250 b\r\n") are folded into one
// smtp::Reply; an RFC 3463 enhanced status code on the first line is split
// off into Reply::enhanced (RFC 2034 §4 puts it on every line; it is removed
// from every line that repeats it).
//
// Input comes from the network, so nothing is asserted: a malformed or
// oversized reply is kError, and the caller drops the connection.

#include <cstddef>
#include <string>
#include <string_view>

#include "smtp/reply.h"

namespace sluice::delivery {

class ReplyParser {
 public:
  // RFC 5321 §4.5.3.1.5 allows 512-octet reply lines; real servers send
  // longer ones (EHLO AUTH lists, long diagnostics). Bounded well above.
  static constexpr size_t kMaxLineLength = 4096;  // octets, line terminator included
  static constexpr size_t kMaxLines = 100;

  enum class Status { kReply, kNeedMore, kError };
  struct Next {
    Status status = Status::kNeedMore;
    smtp::Reply reply;    // valid for kReply
    size_t consumed = 0;  // bytes of input used; drop them before the next call
  };

  // Feeds the unconsumed input (the connection inbox). Complete lines are
  // consumed even when the reply is not finished yet (kNeedMore): the parser
  // keeps them, so each byte is scanned about once. Stops after the first
  // complete reply; pipelined replies behind it stay in the input. Lines end
  // in CRLF; a bare LF is accepted too (we are the lenient side here).
  // After kError the stream is out of sync; the parser resets itself.
  Next Take(std::string_view input);

  // Forgets a partly parsed reply.
  void Reset();

 private:
  int code_ = 0;  // code of the reply being parsed; 0 before its first line
  size_t lines_ = 0;
  std::string enhanced_;
  std::string text_;
};

// "x.y.z" with x in {2,4,5}, y and z 1..3 digits (RFC 3463 §2), at the start
// of text and followed by a space or the end. Returns its length, or 0.
size_t EnhancedCodeLength(std::string_view text);

}  // namespace sluice::delivery
