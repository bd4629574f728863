#include "smtp/header.h"

#include <cstdio>

#include "base/ascii.h"

namespace sluice::smtp {

size_t HeaderSectionEnd(std::string_view msg) {
  if (msg.substr(0, 2) == "\r\n")
    return 2;
  const size_t pos = msg.find("\r\n\r\n");
  return pos == std::string_view::npos ? msg.size() : pos + 4;
}

size_t CountHeaderFields(std::string_view msg, std::string_view name) {
  const std::string_view header = msg.substr(0, HeaderSectionEnd(msg));
  size_t count = 0;
  size_t pos = 0;
  while (pos < header.size()) {
    size_t eol = header.find("\r\n", pos);
    if (eol == std::string_view::npos)
      eol = header.size();
    const std::string_view line = header.substr(pos, eol - pos);
    pos = eol + 2;
    if (line.size() <= name.size() || !StartsWithIgnoreCase(line, name))
      continue;
    size_t i = name.size();
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t'))
      ++i;
    if (i < line.size() && line[i] == ':')
      ++count;
  }
  return count;
}

bool HasHeaderField(std::string_view msg, std::string_view name) {
  return CountHeaderFields(msg, name) > 0;
}

std::string FormatRfc5322Date(std::time_t t) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr)
    return {};
  char buf[64];
  const int n = std::snprintf(buf, sizeof(buf), "%s, %02d %s %04d %02d:%02d:%02d +0000",
                              kDays[tm.tm_wday % 7], tm.tm_mday, kMonths[tm.tm_mon % 12],
                              tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  if (n <= 0)
    return {};
  return std::string(buf, static_cast<size_t>(n) < sizeof(buf) ? static_cast<size_t>(n) : 0);
}

}  // namespace sluice::smtp
