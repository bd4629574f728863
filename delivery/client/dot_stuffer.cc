#include "delivery/client/dot_stuffer.h"

#include <cstring>

namespace sluice::delivery {

void DotStuffer::Append(std::string* out, std::string_view piece) {
  const char* const data = piece.data();
  const size_t n = piece.size();
  size_t pos = 0;
  if (after_cr_ && n > 0) {
    after_cr_ = false;
    if (data[0] == '\n') {
      pos = 1;  // the LF of a CRLF whose CR ended the last piece
    }
  }
  // Position of the next LF at or after pos (n when none). Cached so that
  // many bare CRs in one long line do not rescan it (no quadratic case).
  size_t next_lf = 0;
  bool lf_known = false;
  while (pos < n) {
    if (line_start_ && data[pos] == '.') {
      out->push_back('.');
    }
    line_start_ = false;
    if (!lf_known || next_lf < pos) {
      const void* lf = std::memchr(data + pos, '\n', n - pos);
      next_lf = lf != nullptr ? static_cast<size_t>(static_cast<const char*>(lf) - data) : n;
      lf_known = true;
    }
    const void* cr = std::memchr(data + pos, '\r', next_lf - pos);
    const size_t stop =
        cr != nullptr ? static_cast<size_t>(static_cast<const char*>(cr) - data) : next_lf;
    out->append(data + pos, stop - pos);
    if (stop == n) {
      return;  // the line goes on in the next piece
    }
    out->append("\r\n", 2);
    line_start_ = true;
    if (data[stop] == '\r') {
      if (stop + 1 == n) {
        after_cr_ = true;
        return;
      }
      pos = data[stop + 1] == '\n' ? stop + 2 : stop + 1;
    } else {
      pos = stop + 1;
    }
  }
}

void DotStuffer::Finish(std::string* out) {
  if (!line_start_) {
    out->append("\r\n", 2);
  }
  out->append(".\r\n", 3);
  line_start_ = true;
  after_cr_ = false;
}

void AppendDotStuffed(std::string* out, std::string_view body) {
  out->reserve(out->size() + body.size() + body.size() / 64 + 5);
  DotStuffer stuffer;
  stuffer.Append(out, body);
  stuffer.Finish(out);
}

}  // namespace sluice::delivery
