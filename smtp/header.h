#pragma once

// Small helpers over a stored message (CRLF lines, RFC 5322 header section).

#include <cstddef>
#include <ctime>
#include <string>
#include <string_view>

namespace sluice::smtp {

// Offset just past the empty line that ends the header section, or
// msg.size() when there is none.
size_t HeaderSectionEnd(std::string_view msg);

// Fields named `name` (case-insensitive) in the header section only. A field
// line is "name" [WSP] ":" (RFC 5322 §2.2, §4.5.3 obs-optional allows WSP
// before the colon); folded continuation lines are not field starts.
size_t CountHeaderFields(std::string_view msg, std::string_view name);
bool HasHeaderField(std::string_view msg, std::string_view name);

// RFC 5322 §3.3 date-time in UTC, locale-independent:
// "Thu, 26 Nov 2026 05:29:03 +0000".
std::string FormatRfc5322Date(std::time_t t);

}  // namespace sluice::smtp
