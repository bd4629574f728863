#pragma once

// Splits the command stream into CRLF-terminated lines. Sans-I/O: the session
// owns the buffer, passes its unconsumed bytes to Take() and drops `consumed`
// bytes afterwards. The only state kept across calls is whether an overlong
// line is being discarded.

#include <cstddef>
#include <string_view>

namespace sluice::smtp {

class LineReader {
 public:
  // Maximum line length in octets including CRLF. RFC 5321 §4.5.3.1.4 says
  // 512 at least; values below 3 are raised to 3 so that a line always fits.
  explicit LineReader(size_t max_line);

  enum class Status {
    kLine,         // `line` is a complete command line (CRLF excluded)
    kNeedMore,     // wait for more input (consumed > 0 only while discarding)
    kTooLong,      // the line exceeded max_line; answer 500 5.5.2 (RFC 5321 §4.5.3.1.10)
    kBareNewline,  // bare LF, or CR not followed by LF, in the line: answer 5xx
  };
  struct Next {
    Status status;
    std::string_view line;  // view into the input; only set for kLine
    size_t consumed;        // bytes of input the caller must drop
  };

  // kTooLong is reported once per overlong line; the rest of that line, up to
  // and including its LF, is then dropped (perhaps over several calls that
  // return kNeedMore with consumed > 0). kBareNewline consumes the offending
  // line through its LF. A caller loops until kNeedMore with consumed == 0.
  Next Take(std::string_view input);

  // Forget any partial discard (e.g. after STARTTLS, where the buffer is
  // thrown away). RFC 3207 §4.2.
  void Reset() {
    discarding_ = false;
  }

  bool discarding() const {
    return discarding_;
  }
  size_t max_line() const {
    return max_line_;
  }

 private:
  size_t max_line_;
  bool discarding_ = false;
};

}  // namespace sluice::smtp
