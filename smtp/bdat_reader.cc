#include "smtp/bdat_reader.h"

#include <algorithm>

#include "smtp/line_ending.h"

namespace sluice::smtp {

BdatReader::BdatReader(DataLimits limits) : limits_(limits), sink_(limits.max_size) {
}

void BdatReader::StartChunk(uint64_t size, bool last) {
  remaining_ = size;
  last_ = last;
  if (remaining_ == 0 && last_)
    Finish();
}

void BdatReader::Finish() {
  if (cr_pending_)
    bare_newline_ = true;
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
  LineEndingScanner lines(end);
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
    const LineEnding eol = lines.Next(p);
    const char* const at = eol.at;
    switch (eol.kind) {
      case LineEnding::Kind::kCrLf:
        // A clean CRLF line.
        Count(static_cast<size_t>(at + 2 - p));
        p = at + 2;
        line_len_ = 0;
        break;
      case LineEnding::Kind::kBareCr:
        // Either the last octet of this input, or followed by something other than LF.
        if (normalize) {
          Count(static_cast<size_t>(at - p));
          flush(at);
          sink_.Append(body, "\r\n", 2);
          Count(2);
          line_len_ = 0;
          p = at + 1;
          run = p;
          skip_lf_ = p == end;
        } else {
          Count(static_cast<size_t>(at + 1 - p));
          p = at + 1;
          if (p == end) {
            cr_pending_ = true;
          } else {
            bare_newline_ = true;
          }
        }
        break;
      case LineEnding::Kind::kBareLf:
        Count(static_cast<size_t>(at - p));
        if (normalize) {
          flush(at);
          p = at + 1;
          run = p;
          sink_.Append(body, "\r\n", 2);
          Count(2);
        } else {
          bare_newline_ = true;
          p = at + 1;
          Count(1);
        }
        line_len_ = 0;
        break;
      case LineEnding::Kind::kNone:
        Count(static_cast<size_t>(end - p));
        p = end;
        break;
    }
  }
  flush(p);
  remaining_ -= take;
  if (remaining_ == 0 && last_ && !message_done_)
    Finish();
  return take;
}

}  // namespace sluice::smtp
