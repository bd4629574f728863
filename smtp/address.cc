#include "smtp/address.h"

#include <cstring>

#include <arpa/inet.h>

#include "base/ascii.h"

namespace sluice::smtp {

std::string Path::ToString() const {
  if (null)
    return {};
  if (mailbox.domain.empty())
    return mailbox.local_part;
  std::string s;
  s.reserve(mailbox.local_part.size() + 1 + mailbox.domain.size());
  s += mailbox.local_part;
  s += '@';
  s += mailbox.domain;
  return s;
}

bool IsValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    // RFC 3629 §4 table of well-formed sequences.
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0)
        lo = 0xA0;  // no overlong
      if (c == 0xED)
        hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0)
        lo = 0x90;  // no overlong
      if (c == 0xF4)
        hi = 0x8F;  // <= U+10FFFF
    } else {
      return false;
    }
    if (static_cast<size_t>(end - p) < len)
      return false;
    if (p[1] < lo || p[1] > hi)
      return false;
    for (size_t i = 2; i < len; ++i) {
      if (p[i] < 0x80 || p[i] > 0xBF)
        return false;
    }
    p += len;
  }
  return true;
}

namespace {

bool IsNonAscii(char c) {
  return static_cast<unsigned char>(c) >= 0x80;
}

// RFC 5322 atext, plus UTF8-non-ascii (RFC 6531 §3.3).
bool IsAtext(char c) {
  if (IsAsciiAlnum(c) || IsNonAscii(c))
    return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '/':
    case '=':
    case '?':
    case '^':
    case '_':
    case '`':
    case '{':
    case '|':
    case '}':
    case '~':
      return true;
    default:
      return false;
  }
}

// RFC 5321 §4.1.3 IPv4-address-literal: Snum 3("." Snum), Snum = 1*3DIGIT <= 255.
bool IsIpv4Literal(std::string_view s) {
  int parts = 0;
  size_t i = 0;
  while (true) {
    size_t digits = 0;
    int value = 0;
    while (i < s.size() && IsAsciiDigit(s[i]) && digits < 3) {
      value = value * 10 + (s[i] - '0');
      ++i;
      ++digits;
    }
    if (digits == 0 || value > 255)
      return false;
    ++parts;
    if (i == s.size())
      return parts == 4;
    if (s[i] != '.' || parts == 4)
      return false;
    ++i;
  }
}

// Scans a Domain starting at text[i]; stops at the first octet that cannot
// continue it. Returns the end offset, or npos on a malformed label.
size_t ScanDomain(std::string_view text, size_t i) {
  const size_t start = i;
  while (true) {
    const size_t label = i;
    while (i < text.size() && (IsAsciiAlnum(text[i]) || text[i] == '-' || IsNonAscii(text[i])))
      ++i;
    const size_t len = i - label;
    // RFC 5321 sub-domain = Let-dig [Ldh-str]: no hyphen first or last;
    // RFC 1035 §2.3.4: labels of 63 octets at most.
    if (len == 0 || len > 63 || text[label] == '-' || text[i - 1] == '-') {
      return std::string_view::npos;
    }
    if (i < text.size() && text[i] == '.') {
      ++i;
      continue;
    }
    return i == start ? std::string_view::npos : i;
  }
}

}  // namespace

bool IsValidDomain(std::string_view domain, bool* utf8) {
  if (domain.empty() || ScanDomain(domain, 0) != domain.size())
    return false;
  bool non_ascii = false;
  for (char c : domain)
    non_ascii |= IsNonAscii(c);
  if (non_ascii && !IsValidUtf8(domain))
    return false;
  if (utf8 != nullptr)
    *utf8 = non_ascii;
  return true;
}

bool IsValidAddressLiteral(std::string_view literal) {
  if (literal.size() < 3 || literal.front() != '[' || literal.back() != ']')
    return false;
  const std::string_view body = literal.substr(1, literal.size() - 2);
  if (IsIpv4Literal(body))
    return true;
  constexpr std::string_view kIpv6Tag = "IPv6:";
  if (body.size() > kIpv6Tag.size() && StartsWithIgnoreCase(body, kIpv6Tag)) {
    const std::string_view addr = body.substr(kIpv6Tag.size());
    char buf[64];
    if (addr.size() >= sizeof(buf))
      return false;
    for (char c : addr) {
      if (!(IsAsciiHexDigit(c) || c == ':' || c == '.'))
        return false;
    }
    std::memcpy(buf, addr.data(), addr.size());
    buf[addr.size()] = '\0';
    unsigned char out[16];
    return inet_pton(AF_INET6, buf, out) == 1;
  }
  // General-address-literal needs a tag registered with IANA (RFC 5321
  // §4.1.3); none exist besides IPv6, so anything else is refused.
  return false;
}

PathParse ParsePath(std::string_view text, PathRole role) {
  PathParse r;
  r.error = AddressError::kSyntax;
  size_t i = 0;
  if (text.empty() || text[0] != '<')
    return r;
  i = 1;

  if (i < text.size() && text[i] == '>') {
    if (role != PathRole::kReverse)
      return r;
    r.path.null = true;
    r.consumed = 2;
    r.error = AddressError::kNone;
    return r;
  }

  // A-d-l ":" — source route, accepted and ignored (RFC 5321 Appendix C).
  if (i < text.size() && text[i] == '@') {
    while (true) {
      if (i >= text.size() || text[i] != '@')
        return r;
      const size_t end = ScanDomain(text, i + 1);
      if (end == std::string_view::npos)
        return r;
      i = end;
      if (i < text.size() && text[i] == ',') {
        ++i;
        continue;
      }
      if (i < text.size() && text[i] == ':') {
        ++i;
        break;
      }
      return r;
    }
  }

  // Local-part = Dot-string / Quoted-string.
  const size_t local_start = i;
  bool quoted = false;
  if (i < text.size() && text[i] == '"') {
    quoted = true;
    ++i;
    while (true) {
      if (i >= text.size())
        return r;
      const char c = text[i];
      if (c == '"') {
        ++i;
        break;
      }
      if (c == '\\') {
        // quoted-pairSMTP = %d92 %d32-126
        if (i + 1 >= text.size() || text[i + 1] < 32 || text[i + 1] > 126)
          return r;
        i += 2;
        continue;
      }
      // qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF8-non-ascii.
      if (!((c >= 32 && c <= 126) || IsNonAscii(c)))
        return r;
      ++i;
    }
  } else {
    while (true) {
      const size_t atom = i;
      while (i < text.size() && IsAtext(text[i]))
        ++i;
      if (i == atom)
        return r;
      if (i < text.size() && text[i] == '.') {
        ++i;
        continue;
      }
      break;
    }
  }
  const std::string_view local = text.substr(local_start, i - local_start);

  std::string_view domain;
  if (i < text.size() && text[i] == '>' && role == PathRole::kForward && !quoted &&
      EqualsIgnoreCase(local, "postmaster")) {
    // RFC 5321 §4.1.1.3: "<Postmaster>" with no domain.
  } else {
    if (i >= text.size() || text[i] != '@')
      return r;
    ++i;
    const size_t domain_start = i;
    if (i < text.size() && text[i] == '[') {
      const size_t close = text.find(']', i);
      if (close == std::string_view::npos)
        return r;
      i = close + 1;
      domain = text.substr(domain_start, i - domain_start);
      if (!IsValidAddressLiteral(domain))
        return r;
    } else {
      const size_t end = ScanDomain(text, i);
      if (end == std::string_view::npos)
        return r;
      i = end;
      domain = text.substr(domain_start, i - domain_start);
    }
  }
  if (i >= text.size() || text[i] != '>')
    return r;
  ++i;

  bool non_ascii = false;
  for (char c : local)
    non_ascii |= IsNonAscii(c);
  for (char c : domain)
    non_ascii |= IsNonAscii(c);
  if (non_ascii && (!IsValidUtf8(local) || !IsValidUtf8(domain)))
    return r;

  if (local.size() > kMaxLocalPart) {
    r.error = AddressError::kLocalPartTooLong;
    return r;
  }
  if (domain.size() > kMaxDomain) {
    r.error = AddressError::kDomainTooLong;
    return r;
  }
  if (i > kMaxPath) {
    r.error = AddressError::kPathTooLong;
    return r;
  }

  r.path.mailbox.local_part.assign(local);
  r.path.mailbox.domain.assign(domain);
  r.path.utf8 = non_ascii;
  r.consumed = i;
  r.error = AddressError::kNone;
  return r;
}

}  // namespace sluice::smtp
