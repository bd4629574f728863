#pragma once

// ESMTP parameters of MAIL and RCPT (RFC 5321 §4.1.2 esmtp-param): SIZE
// (RFC 1870), BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531), RET/ENVID and
// NOTIFY/ORCPT (RFC 3461 DSN), AUTH (RFC 4954 §5).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "smtp/reply.h"

namespace sluice::smtp {

enum class BodyType : uint8_t { kUnspecified, k7Bit, k8BitMime, kBinaryMime };
enum class Ret : uint8_t { kUnspecified, kFull, kHdrs };
enum NotifyFlag : uint8_t {
  kNotifyNever = 1,
  kNotifySuccess = 2,
  kNotifyFailure = 4,
  kNotifyDelay = 8,
};

// RFC 3461 §4.4 and §4.2: longest ENVID and ORCPT values we accept.
inline constexpr size_t kMaxEnvid = 100;
inline constexpr size_t kMaxOrcpt = 500;

struct MailParams {
  // SIZE=n; a value too large for uint64_t is clamped to UINT64_MAX so that
  // the session answers 552 rather than a syntax error.
  std::optional<uint64_t> size;
  BodyType body = BodyType::kUnspecified;
  bool smtputf8 = false;
  Ret ret = Ret::kUnspecified;
  std::string envid;  // xtext as written (still encoded), empty when absent
  std::string auth;   // xtext as written, or "<>"; empty when absent
};

struct RcptParams {
  uint8_t notify = 0;  // NotifyFlag bits; 0 when absent
  std::string orcpt;   // "addr-type;xtext" as written, empty when absent
};

// Parses the text after the path ("SIZE=100 BODY=8BITMIME"; may be empty).
// Errors: 501 5.5.4 syntax or duplicate, 555 5.5.4 unknown keyword.
ReplyOr<MailParams> ParseMailParams(std::string_view text);
// `smtputf8`: the transaction's MAIL had SMTPUTF8, so ORCPT may carry UTF-8
// (RFC 6533 §3 utf-8-addr-unitext).
ReplyOr<RcptParams> ParseRcptParams(std::string_view text, bool smtputf8 = false);

// RFC 3461 §4 xtext: "!".."~" except "+" and "=", or "+" and two uppercase hex digits.
bool IsValidXtext(std::string_view s);

}  // namespace sluice::smtp
