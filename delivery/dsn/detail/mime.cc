#include "delivery/dsn/detail/mime.h"

#include <cstdint>
#include <cstdio>
#include <random>

#include "base/ascii.h"

namespace sluice::delivery::detail {
namespace {

// Length of the well-formed UTF-8 sequence (RFC 3629 §4) starting at s[i], 0 if there is none.
size_t Utf8Sequence(std::string_view s, size_t i, uint32_t* cp) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  size_t len = 0;
  uint32_t min = 0;
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    *cp = b0 & 0x1Fu;
    min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    *cp = b0 & 0x0Fu;
    min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    *cp = b0 & 0x07u;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > s.size()) {
    return 0;
  }
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) {
      return 0;
    }
    *cp = (*cp << 6) | (b & 0x3Fu);
  }
  if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF)) {
    return 0;
  }
  return len;
}

void AppendEmbeddedUnicode(std::string* out, uint32_t cp) {
  // RFC 6533 §3 HEXPOINT: uppercase, two digits below 0x100, no leading zero above.
  char buf[16];
  const int n = std::snprintf(buf, sizeof(buf), cp < 0x100 ? "\\x{%02X}" : "\\x{%X}", cp);
  out->append(buf, static_cast<size_t>(n > 0 ? n : 0));
}

bool IsContinuationByte(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

// Longest prefix of `word` of at most `max` octets that does not end inside a UTF-8 sequence
// (at least one octet, so that progress is guaranteed).
size_t SplitPoint(std::string_view word, size_t max) {
  if (word.size() <= max) {
    return word.size();
  }
  size_t cut = max;
  while (cut > 0 && IsContinuationByte(word[cut])) {
    --cut;
  }
  return cut == 0 ? (max > 0 ? max : 1) : cut;
}

// Lays out the space-separated words of `text` on lines: a line's first word is preceded by
// `lead`, later ones by a single space. `line` is the start of the first line.
void AppendWords(std::string* out, std::string line, std::string_view lead, std::string_view text,
                 size_t width, bool emit_empty_line) {
  bool has_word = false;
  auto flush = [&] {
    out->append(line);
    out->append("\r\n");
    line.clear();
    has_word = false;
  };
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(' ', pos);
    if (end == std::string_view::npos) {
      end = text.size();
    }
    std::string_view word = text.substr(pos, end - pos);
    pos = end + 1;
    if (word.empty()) {
      continue;
    }
    if (has_word && line.size() + 1 + word.size() > width) {
      flush();
    }
    if (has_word) {
      line += ' ';
      line.append(word);
      continue;
    }
    // First word on this line; hard-split it when even alone it would pass the line limit.
    while (line.size() + lead.size() + word.size() > kMaxLineOctets) {
      const size_t room = kMaxLineOctets - line.size() - lead.size();
      const size_t cut = SplitPoint(word, room);
      line.append(lead);
      line.append(word.substr(0, cut));
      word.remove_prefix(cut);
      flush();
    }
    if (word.empty()) {
      continue;
    }
    line.append(lead);
    line.append(word);
    has_word = true;
  }
  if (has_word || emit_empty_line) {
    flush();
  }
}

}  // namespace

std::string DecodeXtext(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+' && i + 2 < s.size() && HexDigitValue(s[i + 1]) >= 0 &&
        HexDigitValue(s[i + 2]) >= 0) {
      out += static_cast<char>(HexDigitValue(s[i + 1]) * 16 + HexDigitValue(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string SanitizeFieldText(std::string_view s, bool allow_utf8) {
  std::string out;
  out.reserve(s.size());
  bool pending_space = false;
  auto put = [&](std::string_view piece) {
    if (pending_space && !out.empty()) {
      out += ' ';
    }
    pending_space = false;
    out.append(piece);
  };
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c <= 0x20 || c == 0x7F) {  // CTLs (CR and LF included) and space
      pending_space = true;
      ++i;
      continue;
    }
    if (c < 0x80) {
      put(s.substr(i, 1));
      ++i;
      continue;
    }
    uint32_t cp = 0;
    const size_t len = Utf8Sequence(s, i, &cp);
    if (len == 0) {
      put("?");
      ++i;
    } else if (allow_utf8) {
      put(s.substr(i, len));
      i += len;
    } else {
      std::string escaped;
      AppendEmbeddedUnicode(&escaped, cp);
      put(escaped);
      i += len;
    }
  }
  return out;
}

std::string EncodeUtf8AddrXtext(std::string_view address) {
  std::string out;
  for (size_t i = 0; i < address.size();) {
    const auto c = static_cast<unsigned char>(address[i]);
    // QCHAR: %x21-2a / %x2c-3c / %x3e-5b / %x5d-7e
    if (c >= 0x21 && c <= 0x7E && c != '+' && c != '=' && c != '\\') {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    uint32_t cp = 0;
    const size_t len = Utf8Sequence(address, i, &cp);
    if (len == 0) {
      out += '?';
      ++i;
    } else {
      AppendEmbeddedUnicode(&out, cp);
      i += len;
    }
  }
  return out;
}

bool IsAscii(std::string_view s) {
  for (const char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      return false;
    }
  }
  return true;
}

void AppendFoldedField(std::string* out, std::string_view name, std::string_view value) {
  std::string line(name);
  line += ':';
  // RFC 5322 §2.2.3: the folding white space is the space before a word.
  AppendWords(out, std::move(line), " ", value, kFoldWidth, /*emit_empty_line=*/false);
  if (value.find_first_not_of(' ') == std::string_view::npos) {
    out->append(name);
    out->append(":\r\n");
  }
}

void AppendWrapped(std::string* out, std::string_view text, std::string_view indent, size_t width) {
  AppendWords(out, std::string(), indent, text, width, /*emit_empty_line=*/true);
}

std::string RandomHex(size_t hex_chars) {
  thread_local std::mt19937_64 rng([] {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }());
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(hex_chars);
  uint64_t bits = 0;
  for (size_t i = 0; i < hex_chars; ++i) {
    if (i % 16 == 0) {
      bits = rng();
    }
    out += kDigits[bits & 0xF];
    bits >>= 4;
  }
  return out;
}

std::string ChooseBoundary(std::span<const std::string_view> contents,
                           const std::function<std::string()>& next_candidate) {
  for (;;) {
    std::string candidate = next_candidate();
    bool clash = false;
    for (const std::string_view content : contents) {
      if (content.find(candidate) != std::string_view::npos) {
        clash = true;
        break;
      }
    }
    if (!clash) {
      return candidate;
    }
  }
}

}  // namespace sluice::delivery::detail
