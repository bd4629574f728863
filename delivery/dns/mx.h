#pragma once

// MX selection (RFC 5321 §5.1, RFC 7505) and the parts of a DNS answer the
// resolver needs. No I/O here: this is the unit-testable half of delivery/dns.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "io/net.h"

namespace sluice::delivery {

struct MxTarget {
  std::string host;  // lower case, no trailing dot
  uint16_t preference = 0;
  std::vector<io::IpAddress> addresses;  // A records first, then AAAA
};

struct MxLookup {
  enum class Status {
    kOk,            // targets has at least one host with addresses
    kNoSuchDomain,  // NXDOMAIN (or a name DNS cannot carry): permanent
    kNullMx,        // RFC 7505 null MX: the domain accepts no mail, permanent (5.1.10)
    kNoAddresses,   // no usable target has an address (or every target is us): temporary
    kTempFail,      // SERVFAIL, timeout, refused, shutdown: retry later, never cached
  };
  Status status = Status::kTempFail;
  // Ordered: preference ascending, equal preferences in random order. The
  // implicit MX (the domain's own A/AAAA at preference 0) appears only when the
  // domain has no MX records at all.
  std::vector<MxTarget> targets;
  // The destination ("site", as KumoMTA calls it) of the domain: "mx:" and its MX host names,
  // sorted, so domains that share MX hosts share one queue and one connection limit. Taken from
  // every MX record (not only the targets resolved), and of bounded length (SiteKey).
  std::string site;
  std::string error;  // human-readable reason for logs and DSN diagnostics
  bool permanent() const {
    return status == Status::kNoSuchDomain || status == Status::kNullMx;
  }
};

// Short names, also the `result` label of sluice_dns_lookups_total: "ok", "nxdomain", "nullmx",
// "noaddress", "tempfail". `error` says what happened in words.
const char* ToString(MxLookup::Status status);

// RFC 5321 §5.1: sorts by preference (lowest first) and randomizes the order
// of equal preferences. If one of `self_names` is among the targets, every
// record at that preference or above is discarded (an empty result then
// means the domain's mail would loop to us). A host listed twice keeps its
// lowest preference. Names compare case-insensitively, trailing dot ignored.
std::vector<MxTarget> OrderMxTargets(std::vector<MxTarget> records,
                                     const std::vector<std::string>& self_names, std::mt19937& rng);

// "mx:" and the host names joined in sorted order, without duplicates; past kMaxSiteKey octets,
// the first names and a hash of all of them (a domain may list thousands of MX hosts, and the
// key is copied into every job and used as a metric label).
inline constexpr size_t kMaxSiteKey = 256;
std::string SiteKey(std::vector<std::string> hosts);

// The address of an RFC 5321 §4.1.3 address literal: "[192.0.2.1]" or "[IPv6:2001:db8::1]"
// (the tag compared case-insensitively). nullopt for anything else, including a general address
// literal with another tag: such a recipient cannot be delivered. RFC 5321 §5.1: mail to an
// address literal goes to that address, without DNS.
std::optional<io::IpAddress> AddressLiteralIp(std::string_view domain);

// Lower case, without the trailing dot: the form used for cache keys and
// comparisons.
std::string NormalizeDnsName(std::string_view name);

// The MX records of a raw DNS answer (the answer of an MX query).
struct MxAnswer {
  // Targets without addresses. A zero-length target (the root, ".") is kept
  // as host "" so the caller can recognise a null MX.
  std::vector<MxTarget> records;
  // Smallest TTL among the MX and CNAME records of the answer section; 0 if
  // there are none. ares_parse_mx_reply (c-ares 1.18) does not report TTLs,
  // so this walks the answer section itself.
  uint32_t ttl = 0;
};

// kEmpty answers (NODATA, or a CNAME without MX records) give no records.
// Malformed answers are an Error (network input: never asserted on).
Result<MxAnswer> ParseMxAnswer(const unsigned char* data, size_t size);

// RFC 7505 §3: exactly one MX record whose target is the root. We accept any
// preference for the lone "." (the RFC says 0): no host can receive the mail.
bool IsNullMx(const MxAnswer& answer);

// Smallest TTL of the answer records of `type` (and of CNAMEs) in a raw DNS
// message, or -1 if there is none or the message is malformed.
int64_t MinAnswerTtl(const unsigned char* data, size_t size, uint16_t type);

}  // namespace sluice::delivery
