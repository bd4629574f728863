#pragma once

// What a server offers in its EHLO (or LHLO) reply: RFC 5321 §4.1.1.1 and
// the extensions Sluice uses when relaying.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "smtp/reply.h"

namespace sluice::delivery {

struct Capabilities {
  bool esmtp = false;                  // EHLO/LHLO succeeded (false after a HELO fallback)
  bool pipelining = false;             // RFC 2920
  bool eightbitmime = false;           // RFC 6152
  bool smtputf8 = false;               // RFC 6531
  bool chunking = false;               // RFC 3030
  bool dsn = false;                    // RFC 3461
  bool enhanced_status_codes = false;  // RFC 2034
  bool starttls = false;               // RFC 3207
  bool size_offered = false;           // RFC 1870: the SIZE= MAIL parameter may be used
  // RFC 1870 §4 fixed maximum message size; nullopt when SIZE came without a
  // value, with 0 ("no fixed maximum") or with a value we cannot read.
  std::optional<uint64_t> size;
  std::vector<std::string> auth;  // SASL mechanisms, upper case, in the server's order
};

// Reads the keywords of a 2xx EHLO/LHLO reply (one per line after the first,
// case-insensitive, RFC 5321 §4.1.1.1). A non-2xx reply offers nothing.
Capabilities ParseEhlo(const smtp::Reply& reply);

}  // namespace sluice::delivery
