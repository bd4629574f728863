#include "smtp/data_reader.h"

#include <cstring>

namespace sluice::smtp {

DataReader::DataReader(DataLimits limits) : limits_(limits), sink_(limits.max_size) {}

// The common case (CRLF lines, no leading dot) stays in kMid/kLineStart and
// only extends `run`, the span of input stored verbatim; it is appended in one
// piece when a dot must be dropped, octets must be inserted, or the input ends.
size_t DataReader::Feed(std::string_view input, std::string* body) {
  const char* const begin = input.data();
  const char* const end = begin + input.size();
  const char* p = begin;
  const char* run = p;
  const bool normalize = limits_.bare_newline == BareNewline::kNormalize;
  auto flush = [&](const char* upto) {
    sink_.Append(body, run, static_cast<size_t>(upto - run));
    run = upto;
  };
  auto put = [&](std::string_view s) { sink_.Append(body, s.data(), s.size()); };

  while (p < end && state_ != State::kDone) {
    switch (state_) {
      case State::kLineStart:
        if (*p == '.') {
          flush(p);
          ++p;
          run = p;  // the dot is held back until the next octet decides
          state_ = State::kDot;
        } else {
          state_ = State::kMid;
        }
        break;

      case State::kDot:
        if (*p == '\r') {
          ++p;
          run = p;
          state_ = State::kDotCr;
        } else if (*p == '\n') {
          // "." ended by a bare LF is content, never the end marker.
          ++p;
          run = p;
          if (normalize) {
            put(".\r\n");
            Count(3);
          } else {
            bare_newline_ = true;
            put(".\n");
            Count(2);
          }
          EndLine();
          state_ = State::kMid;  // a bare LF does not start a line
        } else {
          // RFC 5321 §4.5.2: the first '.' of a line with more on it is dropped.
          state_ = State::kMid;
        }
        break;

      case State::kDotCr:
        if (*p == '\n') {
          ++p;
          state_ = State::kDone;
          return static_cast<size_t>(p - begin);
        }
        // ".", CR, then not LF: a bare CR, content either way.
        run = p;
        if (normalize) {
          put(".\r\n");
          Count(3);
          EndLine();
        } else {
          bare_newline_ = true;
          put(".\r");
          Count(2);
        }
        state_ = State::kMid;
        break;

      case State::kCr:
        // The CR ended the previous chunk and was not stored yet.
        if (*p == '\n') {
          ++p;
          run = p;
          put("\r\n");
          Count(2);
          EndLine();
          state_ = State::kLineStart;
        } else {
          run = p;
          if (normalize) {
            put("\r\n");
            Count(2);
            EndLine();
          } else {
            bare_newline_ = true;
            put("\r");
            Count(1);
          }
          state_ = State::kMid;
        }
        break;

      case State::kMid: {
        const size_t left = static_cast<size_t>(end - p);
        const auto* lf = static_cast<const char*>(std::memchr(p, '\n', left));
        const char* seg_end = lf != nullptr ? lf : end;
        const auto* cr =
            static_cast<const char*>(std::memchr(p, '\r', static_cast<size_t>(seg_end - p)));
        if (lf != nullptr && cr == lf - 1) {
          // A clean CRLF line; cr is the first CR, so there is no other.
          Count(static_cast<size_t>(lf + 1 - p));
          p = lf + 1;
          EndLine();
          state_ = State::kLineStart;
        } else if (cr != nullptr) {
          Count(static_cast<size_t>(cr - p));
          if (cr + 1 == end) {
            // Decide when the next octet arrives.
            flush(cr);
            p = end;
            run = end;
            state_ = State::kCr;
          } else if (normalize) {
            // cr[1] is not LF (else lf would be cr + 1).
            flush(cr);
            p = cr + 1;
            run = p;
            put("\r\n");
            Count(2);
            EndLine();
          } else {
            bare_newline_ = true;
            p = cr + 1;  // stored verbatim
            Count(1);
          }
        } else if (lf != nullptr) {
          // LF with no CR before it: a bare LF.
          Count(static_cast<size_t>(lf - p));
          if (normalize) {
            flush(lf);
            p = lf + 1;
            run = p;
            put("\r\n");
            Count(2);
          } else {
            bare_newline_ = true;
            p = lf + 1;
            Count(1);
          }
          EndLine();
        } else {
          Count(left);
          p = end;
        }
        break;
      }

      case State::kDone:
        break;
    }
  }
  flush(p);
  return static_cast<size_t>(p - begin);
}

}  // namespace sluice::smtp
