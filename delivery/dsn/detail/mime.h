#pragma once

// Text helpers for building RFC 3464 reports: xtext decoding, making untrusted text safe for a
// header field, folding, and choosing a MIME boundary. No I/O; exposed for tests.

#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <string_view>

namespace sluice::delivery::detail {

// RFC 5322 §2.1.1: a line is at most 998 octets without its CRLF.
inline constexpr size_t kMaxLineOctets = 998;
// Where folding and wrapping aim (RFC 5322 §2.1.1 "SHOULD be no more than 78").
inline constexpr size_t kFoldWidth = 78;

// RFC 3461 §4: "+" followed by two uppercase hex digits stands for that octet. A "+" not followed
// by two hex digits is kept as is (the codec already rejects such input; never crash on it).
std::string DecodeXtext(std::string_view s);

// Makes untrusted text (a remote reply, a decoded ENVID) safe for one header field body: CR/LF and
// other controls become spaces, runs of white space collapse to one space, leading and trailing
// space is dropped. Valid UTF-8 is kept when `allow_utf8` (RFC 6532), else written as RFC 6533 §3
// EmbeddedUnicodeChar "\x{HEX}"; octets that are not valid UTF-8 become '?'.
std::string SanitizeFieldText(std::string_view s, bool allow_utf8);

// RFC 6533 §3 utf-8-addr-xtext: QCHAR as is, everything else (including '+', '=', '\\', space and
// any non-ASCII code point) as "\x{HEX}". For a non-ASCII address in message/delivery-status.
std::string EncodeUtf8AddrXtext(std::string_view address);

bool IsAscii(std::string_view s);

// Appends "name: value" CRLF, folded (RFC 5322 §2.2.3) before a space so that lines stay within
// kFoldWidth where the words allow it. A word too long for one line (> kMaxLineOctets - 1) is split
// across continuation lines, which adds a space when the field is unfolded: the hard limit wins.
// Never splits inside a UTF-8 sequence. `value` should come from SanitizeFieldText (no CR/LF).
void AppendFoldedField(std::string* out, std::string_view name, std::string_view value);

// Appends `text` as CRLF lines of at most `width` octets where possible, each starting with
// `indent`; same splitting rules as AppendFoldedField. For the human-readable part.
void AppendWrapped(std::string* out, std::string_view text, std::string_view indent,
                   size_t width = kFoldWidth);

// `hex_chars` random lowercase hex digits (not for secrets: uniqueness only).
std::string RandomHex(size_t hex_chars);

// Returns the first candidate from `next_candidate` that occurs in none of `contents`, so a
// delimiter line can never appear inside a part (RFC 2046 §5.1.1). `next_candidate` must
// eventually produce a fresh value (random candidates do).
std::string ChooseBoundary(std::span<const std::string_view> contents,
                           const std::function<std::string()>& next_candidate);

}  // namespace sluice::delivery::detail
