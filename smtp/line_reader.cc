#include "smtp/line_reader.h"

#include <algorithm>
#include <cstring>

namespace sluice::smtp {

LineReader::LineReader(size_t max_line) : max_line_(std::max<size_t>(max_line, 3)) {
}

LineReader::Next LineReader::Take(std::string_view input) {
  if (discarding_) {
    const size_t lf = input.find('\n');
    if (lf == std::string_view::npos)
      return {Status::kNeedMore, {}, input.size()};
    discarding_ = false;
    return {Status::kNeedMore, {}, lf + 1};
  }

  // Look no further than max_line octets: a longer line is refused anyway and
  // the scan cost stays bounded by the limit, not by the buffer size.
  const size_t window = std::min(input.size(), max_line_);
  const void* hit = window == 0 ? nullptr : std::memchr(input.data(), '\n', window);
  if (hit == nullptr) {
    if (input.size() < max_line_)
      return {Status::kNeedMore, {}, 0};
    // No LF within max_line octets: even with the LF as the very next byte
    // the line would be max_line + 1 octets long.
    const size_t lf = input.find('\n', max_line_);
    if (lf == std::string_view::npos) {
      discarding_ = true;
      return {Status::kTooLong, {}, input.size()};
    }
    return {Status::kTooLong, {}, lf + 1};
  }

  const size_t lf = static_cast<size_t>(static_cast<const char*>(hit) - input.data());
  // Smuggling defence: the line must end in CRLF and hold no other CR.
  if (lf == 0 || input[lf - 1] != '\r')
    return {Status::kBareNewline, {}, lf + 1};
  const std::string_view line = input.substr(0, lf - 1);
  if (line.find('\r') != std::string_view::npos)
    return {Status::kBareNewline, {}, lf + 1};
  return {Status::kLine, line, lf + 1};
}

}  // namespace sluice::smtp
