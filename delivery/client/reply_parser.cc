#include "delivery/client/reply_parser.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "base/ascii.h"

namespace sluice::delivery {

namespace {

// 1..3 digits at text[pos]; returns how many, 0 if none or too many.
size_t CountDigits(std::string_view text, size_t pos) {
  size_t n = 0;
  while (pos + n < text.size() && IsAsciiDigit(text[pos + n])) {
    ++n;
  }
  return n <= 3 ? n : 0;
}

}  // namespace

size_t EnhancedCodeLength(std::string_view text) {
  if (text.size() < 5) {
    return 0;
  }
  if (text[0] != '2' && text[0] != '4' && text[0] != '5') {
    return 0;
  }
  if (text[1] != '.') {
    return 0;
  }
  const size_t subject = CountDigits(text, 2);
  if (subject == 0) {
    return 0;
  }
  size_t pos = 2 + subject;
  if (pos >= text.size() || text[pos] != '.') {
    return 0;
  }
  const size_t detail = CountDigits(text, pos + 1);
  if (detail == 0) {
    return 0;
  }
  pos += 1 + detail;
  if (pos < text.size() && text[pos] != ' ') {
    return 0;
  }
  return pos;
}

void ReplyParser::Reset() {
  code_ = 0;
  lines_ = 0;
  enhanced_.clear();
  text_.clear();
}

ReplyParser::Next ReplyParser::Take(std::string_view input) {
  size_t pos = 0;
  while (true) {
    const std::string_view rest = input.substr(pos);
    const void* lf = std::memchr(rest.data(), '\n', rest.size());
    if (lf == nullptr) {
      // Even with its LF still to come, this line is already too long.
      if (rest.size() >= kMaxLineLength) {
        break;
      }
      return Next{Status::kNeedMore, {}, pos};
    }
    const size_t line_length = static_cast<size_t>(static_cast<const char*>(lf) - rest.data()) + 1;
    if (line_length > kMaxLineLength) {
      break;
    }
    pos += line_length;
    std::string_view line = rest.substr(0, line_length - 1);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }

    // reply-line = code [ ("-" / SP) textstring ] CRLF (RFC 5321 §4.2);
    // the first digit is 2..5 (§4.2.1).
    if (line.size() < 3 || line[0] < '2' || line[0] > '5' || !IsAsciiDigit(line[1]) ||
        !IsAsciiDigit(line[2])) {
      break;
    }
    const char separator = line.size() == 3 ? ' ' : line[3];
    if (separator != ' ' && separator != '-') {
      break;
    }
    const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (code_ != 0 && code != code_) {
      break;  // RFC 5321 §4.2.1: one code per reply
    }
    if (++lines_ > kMaxLines) {
      break;
    }

    std::string_view text = line.size() > 4 ? line.substr(4) : std::string_view();
    if (code_ == 0) {
      code_ = code;
      enhanced_.assign(text.substr(0, EnhancedCodeLength(text)));
    } else {
      text_.push_back('\n');
    }
    if (!enhanced_.empty() && text.substr(0, enhanced_.size()) == enhanced_ &&
        (text.size() == enhanced_.size() || text[enhanced_.size()] == ' ')) {
      text.remove_prefix(std::min(text.size(), enhanced_.size() + 1));
    }
    text_.append(text);

    if (separator == ' ') {
      Next next{Status::kReply, smtp::Reply{code_, std::move(enhanced_), std::move(text_)}, pos};
      Reset();
      return next;
    }
  }
  Reset();
  return Next{Status::kError, {}, pos};
}

}  // namespace sluice::delivery
