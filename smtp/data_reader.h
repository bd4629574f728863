#pragma once

// The DATA body reader (RFC 5321 §4.1.1.4, §4.5.2): finds the end marker,
// removes dot-stuffing, enforces limits. Sans-I/O and stateful across chunks:
// any split of the input gives the same result.
//
// Smuggling defence (CVE-2023-51764 family; RFC 5321 §2.3.8, §4.1.1.4): only
// the exact octets CR LF "." CR LF end the data. A bare LF or a CR not
// followed by LF never starts or ends a line for framing purposes, in either
// mode (docs/configuration.md `bare_newline`).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "smtp/detail/body_sink.h"

namespace sluice::smtp {

enum class BareNewline {
  kReject,     // record it (bare_newline()); the session answers 5xx after the end marker
  kNormalize,  // turn a bare LF or bare CR into CRLF in the stored message
};

struct DataLimits {
  uint64_t max_size = 0;   // octets of the stored message; more sets too_big()
  size_t max_line = 1000;  // RFC 5321 §4.5.3.1.6, including CRLF, excluding a stuffed dot
  BareNewline bare_newline = BareNewline::kReject;
};

class DataReader {
 public:
  explicit DataReader(DataLimits limits);

  // Consumes input, appends the unstuffed message to *body and returns the
  // octets consumed. Stops right after the terminating CRLF.CRLF; bytes after
  // it (pipelined commands) are not consumed. The stored message has CRLF
  // line ends and ends with CRLF (the CRLF before ".CRLF" belongs to it);
  // ".\r\n" right at the start gives an empty body. Returns 0 once done().
  size_t Feed(std::string_view input, std::string* body);
  bool done() const {
    return state_ == State::kDone;
  }

  // Sticky findings; reading always goes on to the real end marker so that
  // the session stays in step with the client.
  bool bare_newline() const {
    return bare_newline_;
  }  // only with kReject
  bool line_too_long() const {
    return line_too_long_;
  }
  bool too_big() const {
    return sink_.too_big();
  }
  // Reads on to the end without storing anything more (the caller ran out of room): the body
  // is left as it is, every other finding is still made.
  void DropBody() {
    sink_.Drop();
  }
  // Octets of the stored (unstuffed, normalized) message so far, counted even
  // past max_size. Equals body->size() as long as !too_big().
  uint64_t size() const {
    return sink_.size();
  }

 private:
  enum class State : uint8_t {
    kLineStart,  // after CRLF (or at the start): a '.' here is special
    kMid,        // inside a line
    kCr,         // inside a line, a CR is pending (not yet stored)
    kDot,        // a line started with '.', pending
    kDotCr,      // ".", CR pending
    kDone,
  };

  void Count(size_t n) {
    line_len_ += n;
    if (line_len_ > limits_.max_line)
      line_too_long_ = true;
  }
  void EndLine() {
    line_len_ = 0;
  }

  DataLimits limits_;
  detail::BodySink sink_;
  State state_ = State::kLineStart;
  uint64_t line_len_ = 0;
  bool bare_newline_ = false;
  bool line_too_long_ = false;
};

}  // namespace sluice::smtp
