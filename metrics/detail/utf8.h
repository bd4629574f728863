#pragma once

// UTF-8 validation for text we emit (Prometheus label values and help, JSON strings). Both formats
// require valid UTF-8; we replace every byte that does not start a well-formed sequence with
// U+FFFD instead of failing the whole line.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sluice::metrics::detail {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Length of the well-formed UTF-8 sequence starting at s[i] (RFC 3629 §4: no overlong forms, no
// surrogates, nothing above U+10FFFF), or 0 if s[i] does not start one.
inline size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t b0 = byte(i);
  if (b0 < 0x80) {
    return 1;
  }
  size_t len = 0;
  uint8_t lo = 0x80;
  uint8_t hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) {
      lo = 0xA0;  // overlong
    } else if (b0 == 0xED) {
      hi = 0x9F;  // surrogates
    }
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) {
      lo = 0x90;  // overlong
    } else if (b0 == 0xF4) {
      hi = 0x8F;  // above U+10FFFF
    }
  } else {
    return 0;
  }
  if (i + len > s.size()) {
    return 0;
  }
  if (byte(i + 1) < lo || byte(i + 1) > hi) {
    return 0;
  }
  for (size_t k = 2; k < len; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) {
      return 0;
    }
  }
  return len;
}

}  // namespace sluice::metrics::detail
