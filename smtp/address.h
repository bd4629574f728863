#pragma once

// RFC 5321 §4.1.2 paths and mailboxes, with the RFC 6531 (SMTPUTF8)
// extensions: UTF-8 in local parts and U-labels in domains.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sluice::smtp {

// RFC 5321 §4.5.3.1.1-3 size limits, in octets.
inline constexpr size_t kMaxLocalPart = 64;
inline constexpr size_t kMaxDomain = 255;
inline constexpr size_t kMaxPath = 256;  // "<...>" including the angle brackets

struct Mailbox {
  std::string local_part;  // as written: a quoted form keeps its quotes and backslashes
  std::string domain;      // as written: "[1.2.3.4]" keeps its brackets; empty for <Postmaster>
};

struct Path {
  bool null = false;  // "<>" (only as a reverse-path)
  Mailbox mailbox;
  // "local@domain", "Postmaster" for the domainless postmaster, "" for null.
  std::string ToString() const;
  bool utf8 = false;  // local part or domain has non-ASCII (needs SMTPUTF8)
};

enum class PathRole : uint8_t {
  kReverse,  // MAIL FROM: "<>" allowed
  kForward,  // RCPT TO: "<Postmaster>" without domain allowed (RFC 5321 §4.1.1.3)
};

enum class AddressError : uint8_t {
  kNone,
  kSyntax,  // includes invalid UTF-8 and "<>" where not allowed
  kLocalPartTooLong,
  kDomainTooLong,
  kPathTooLong,
};

struct PathParse {
  Path path;
  size_t consumed = 0;  // octets of text up to and including '>'
  AddressError error = AddressError::kNone;
};

// Parses the "<...>" path at the start of `text`; text after '>' is ignored.
// A source route ("<@a,@b:user@c>") is accepted and dropped (RFC 5321 §4.1.2,
// Appendix C).
PathParse ParsePath(std::string_view text, PathRole role);

// RFC 5321 Domain (sub-domain *("." sub-domain)), with U-labels allowed when
// valid UTF-8. Sets *utf8 when non-ASCII was present.
bool IsValidDomain(std::string_view domain, bool* utf8);
// RFC 5321 §4.1.3 address-literal including brackets: "[1.2.3.4]", "[IPv6:...]".
bool IsValidAddressLiteral(std::string_view literal);
// Well-formed UTF-8 (no overlong forms, no surrogates, at most U+10FFFF).
bool IsValidUtf8(std::string_view s);

}  // namespace sluice::smtp
