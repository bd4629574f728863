#include "smtp/bdat_reader.h"

#include <algorithm>
#include <cstring>

namespace sluice::smtp {

BdatReader::BdatReader(DataLimits limits) : limits_(limits), sink_(limits.max_size) {}

void BdatReader::StartChunk(uint64_t size, bool last) {
  remaining_ = size;
  last_ = last;
  if (remaining_ == 0 && last_) Finish();
}

void BdatReader::Finish() {
  if (cr_pending_) bare_newline_ = true;
  cr_pending_ = false;
  skip_lf_ = false;
  message_done_ = true;
}

size_t BdatReader::Feed(std::string_view input, std::string* body) {
  const size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, input.size()));
  const char* const begin = input.data();
  const char* const end = begin + take;
  const char* p = begin;
  const char* run = p;
  const bool normalize = limits_.bare_newline == BareNewline::kNormalize;
  auto flush = [&](const char* upto) {
    sink_.Append(body, run, static_cast<size_t>(upto - run));
    run = upto;
  };

  while (p < end) {
    if (skip_lf_) {
      skip_lf_ = false;
      if (*p == '\n') {
        flush(p);
        ++p;
        run = p;
      }
      continue;
    }
    if (cr_pending_) {
      cr_pending_ = false;
      if (*p == '\n') {
        ++p;
        Count(1);
        line_len_ = 0;
      } else {
        bare_newline_ = true;
      }
      continue;
    }
    const size_t left = static_cast<size_t>(end - p);
    const auto* lf = static_cast<const char*>(std::memchr(p, '\n', left));
    const char* seg_end = lf != nullptr ? lf : end;
    const auto* cr =
        static_cast<const char*>(std::memchr(p, '\r', static_cast<size_t>(seg_end - p)));
    if (lf != nullptr && cr == lf - 1) {
      // A clean CRLF line; cr is the first CR, so there is no other.
      Count(static_cast<size_t>(lf + 1 - p));
      p = lf + 1;
      line_len_ = 0;
    } else if (cr != nullptr) {
      // Either the last octet of this input, or followed by something other
      // than LF (else lf would be cr + 1).
      if (normalize) {
        Count(static_cast<size_t>(cr - p));
        flush(cr);
        sink_.Append(body, "\r\n", 2);
        Count(2);
        line_len_ = 0;
        p = cr + 1;
        run = p;
        skip_lf_ = p == end;
      } else {
        Count(static_cast<size_t>(cr + 1 - p));
        p = cr + 1;
        if (p == end) {
          cr_pending_ = true;
        } else {
          bare_newline_ = true;
        }
      }
    } else if (lf != nullptr) {
      // LF with no CR before it: a bare LF.
      Count(static_cast<size_t>(lf - p));
      if (normalize) {
        flush(lf);
        p = lf + 1;
        run = p;
        sink_.Append(body, "\r\n", 2);
        Count(2);
      } else {
        bare_newline_ = true;
        p = lf + 1;
        Count(1);
      }
      line_len_ = 0;
    } else {
      Count(left);
      p = end;
    }
  }
  flush(p);
  remaining_ -= take;
  if (remaining_ == 0 && last_ && !message_done_) Finish();
  return take;
}

}  // namespace sluice::smtp
