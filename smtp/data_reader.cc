#include "smtp/data_reader.h"

#include "smtp/line_ending.h"

namespace sluice::smtp {

DataReader::DataReader(DataLimits limits) : limits_(limits), sink_(limits.max_size) {
}

// The common case (CRLF lines, no leading dot) stays in kMid/kLineStart and
// only extends `run`, the span of input stored verbatim; it is appended in one
// piece when a dot must be dropped, octets must be inserted, or the input ends.
size_t DataReader::Feed(std::string_view input, std::string* body) {
  const char* const begin = input.data();
  const char* const end = begin + input.size();
  const char* p = begin;
  const char* run = p;
  const bool normalize = limits_.bare_newline == BareNewline::kNormalize;
  LineEndingScanner lines(end);
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
        const LineEnding eol = lines.Next(p);
        const char* const at = eol.at;
        switch (eol.kind) {
          case LineEnding::Kind::kCrLf:
            // A clean CRLF line.
            Count(static_cast<size_t>(at + 2 - p));
            p = at + 2;
            EndLine();
            state_ = State::kLineStart;
            break;
          case LineEnding::Kind::kBareCr:
            Count(static_cast<size_t>(at - p));
            if (at + 1 == end) {
              // Decide when the next octet arrives.
              flush(at);
              p = end;
              run = end;
              state_ = State::kCr;
            } else if (normalize) {
              flush(at);
              p = at + 1;
              run = p;
              put("\r\n");
              Count(2);
              EndLine();
            } else {
              bare_newline_ = true;
              p = at + 1;  // stored verbatim
              Count(1);
            }
            break;
          case LineEnding::Kind::kBareLf:
            Count(static_cast<size_t>(at - p));
            if (normalize) {
              flush(at);
              p = at + 1;
              run = p;
              put("\r\n");
              Count(2);
            } else {
              bare_newline_ = true;
              p = at + 1;
              Count(1);
            }
            EndLine();
            break;
          case LineEnding::Kind::kNone:
            Count(static_cast<size_t>(end - p));
            p = end;
            break;
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
