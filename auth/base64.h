#pragma once

// Base64 (RFC 4648 §4, standard alphabet, padded) for SASL exchanges
// (RFC 4954 §4). The decoder is strict: no whitespace, no line breaks, length
// a multiple of 4, at most two '=' and only at the end, and the unused bits of
// the last group zero (RFC 4648 §3.5 canonical encoding). Anything else is
// nullopt, which the SMTP session answers with 501 5.5.2.

#include <optional>
#include <string>
#include <string_view>

namespace sluice::auth {

std::optional<std::string> DecodeBase64(std::string_view in);
std::string EncodeBase64(std::string_view in);

}  // namespace sluice::auth
