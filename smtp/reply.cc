#include "smtp/reply.h"

namespace sluice::smtp {

Reply MakeReply(int code, std::string_view enhanced, std::string_view text) {
  return Reply{code, std::string(enhanced), std::string(text)};
}

namespace {

void AppendCode(std::string* out, int code) {
  // Replies are built by our own code; keep the wire format valid whatever
  // the value (three digits), rather than asserting.
  if (code < 0 || code > 999)
    code = 0;
  const char digits[3] = {static_cast<char>('0' + code / 100),
                          static_cast<char>('0' + code / 10 % 10),
                          static_cast<char>('0' + code % 10)};
  out->append(digits, 3);
}

}  // namespace

void AppendReply(std::string* out, int code, std::string_view enhanced, std::string_view text) {
  if (!text.empty() && text.back() == '\n')
    text.remove_suffix(1);
  size_t start = 0;
  while (true) {
    const size_t nl = text.find('\n', start);
    const bool last = nl == std::string_view::npos;
    std::string_view line = text.substr(start, last ? std::string_view::npos : nl - start);
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    AppendCode(out, code);
    if (last && enhanced.empty() && line.empty()) {
      out->append("\r\n");
      return;
    }
    out->push_back(last ? ' ' : '-');
    if (!enhanced.empty()) {
      out->append(enhanced);
      if (!line.empty())
        out->push_back(' ');
    }
    out->append(line);
    out->append("\r\n");
    if (last)
      return;
    start = nl + 1;
  }
}

void AppendReply(std::string* out, const Reply& r) {
  AppendReply(out, r.code, r.enhanced, r.text);
}

}  // namespace sluice::smtp
