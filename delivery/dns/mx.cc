#include "delivery/dns/mx.h"

#include <ares.h>

#include <algorithm>
#include <cstdio>
#include <limits>

#include "base/ascii.h"

namespace sluice::delivery {
namespace {

constexpr uint16_t kTypeCname = 5;
constexpr uint16_t kTypeMx = 15;
constexpr uint16_t kClassIn = 1;
constexpr size_t kHeaderSize = 12;

uint16_t Read16(const unsigned char* p) {
  return static_cast<uint16_t>((p[0] << 8) | p[1]);
}

uint32_t Read32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Advances *pos past an encoded name (labels, ending in a root label or a
// compression pointer). false if the name runs off the end of the message.
bool SkipName(const unsigned char* data, size_t size, size_t* pos) {
  size_t p = *pos;
  while (true) {
    if (p >= size) {
      return false;
    }
    const unsigned char len = data[p];
    if (len == 0) {
      *pos = p + 1;
      return true;
    }
    if ((len & 0xC0) == 0xC0) {  // RFC 1035 §4.1.4 compression pointer: ends the name
      if (p + 2 > size) {
        return false;
      }
      *pos = p + 2;
      return true;
    }
    if ((len & 0xC0) != 0) {
      return false;  // RFC 6891 extended label types: not in answers we ask for
    }
    p += 1 + len;
  }
}

bool SameName(std::string_view a, std::string_view b) {
  if (!a.empty() && a.back() == '.') {
    a.remove_suffix(1);
  }
  if (!b.empty() && b.back() == '.') {
    b.remove_suffix(1);
  }
  return EqualsIgnoreCase(a, b);
}

}  // namespace

const char* ToString(MxLookup::Status status) {
  switch (status) {
    case MxLookup::Status::kOk:
      return "ok";
    case MxLookup::Status::kNoSuchDomain:
      return "nxdomain";
    case MxLookup::Status::kNullMx:
      return "nullmx";
    case MxLookup::Status::kNoAddresses:
      return "noaddress";
    case MxLookup::Status::kTempFail:
      return "tempfail";
  }
  return "tempfail";
}

std::string SiteKey(std::vector<std::string> hosts) {
  std::sort(hosts.begin(), hosts.end());
  hosts.erase(std::unique(hosts.begin(), hosts.end()), hosts.end());
  std::string key = "mx:";
  for (const std::string& h : hosts)
    key += h + ",";
  if (key.size() <= kMaxSiteKey)
    return key;
  // FNV-1a over the full key: stable across processes and restarts (std::hash is not promised
  // to be), so the same MX set always gives the same destination.
  uint64_t hash = 1469598103934665603ull;
  for (const char c : key) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ull;
  }
  char digest[17];
  std::snprintf(digest, sizeof(digest), "%016llx", static_cast<unsigned long long>(hash));
  std::string bounded = key.substr(0, kMaxSiteKey - 48);
  bounded += "...(" + std::to_string(hosts.size()) + " hosts)#" + digest;
  return bounded;
}

std::optional<io::IpAddress> AddressLiteralIp(std::string_view domain) {
  if (domain.size() < 3 || domain.front() != '[' || domain.back() != ']')
    return std::nullopt;
  std::string_view inner = domain.substr(1, domain.size() - 2);
  constexpr std::string_view kTag = "ipv6:";
  const bool v6 = inner.size() > kTag.size() && StartsWithIgnoreCase(inner, kTag);
  if (v6)
    inner.remove_prefix(kTag.size());
  std::optional<io::IpAddress> ip = io::IpAddress::Parse(inner);
  // "[::1]" without the tag is not an address literal, nor is "[IPv6:192.0.2.1]".
  if (!ip || v6 != (inner.find(':') != std::string_view::npos))
    return std::nullopt;
  return ip;
}

std::string NormalizeDnsName(std::string_view name) {
  if (!name.empty() && name.back() == '.') {
    name.remove_suffix(1);
  }
  return AsciiToLower(name);
}

std::vector<MxTarget> OrderMxTargets(std::vector<MxTarget> records,
                                     const std::vector<std::string>& self_names,
                                     std::mt19937& rng) {
  std::stable_sort(records.begin(), records.end(), [](const MxTarget& a, const MxTarget& b) {
    return a.preference < b.preference;
  });
  // A host listed at several preferences keeps the lowest (the first after sorting).
  std::vector<MxTarget> unique;
  unique.reserve(records.size());
  for (MxTarget& r : records) {
    const bool seen = std::any_of(unique.begin(), unique.end(),
                                  [&](const MxTarget& u) { return SameName(u.host, r.host); });
    if (!seen) {
      unique.push_back(std::move(r));
    }
  }
  // RFC 5321 §5.1: "if the domain name list contains the local host ... discard
  // all MX records with preference at or above that of the local host". The
  // list is sorted, so the first match is our lowest preference.
  for (size_t i = 0; i < unique.size(); ++i) {
    const bool self = std::any_of(self_names.begin(), self_names.end(), [&](const std::string& s) {
      return SameName(s, unique[i].host);
    });
    if (!self) {
      continue;
    }
    const uint16_t ours = unique[i].preference;
    size_t keep = i;
    while (keep > 0 && unique[keep - 1].preference >= ours) {
      --keep;
    }
    unique.resize(keep);
    break;
  }
  // RFC 5321 §5.1: equal preferences MUST be tried in random order.
  for (size_t begin = 0; begin < unique.size();) {
    size_t end = begin + 1;
    while (end < unique.size() && unique[end].preference == unique[begin].preference) {
      ++end;
    }
    std::shuffle(unique.begin() + static_cast<std::ptrdiff_t>(begin),
                 unique.begin() + static_cast<std::ptrdiff_t>(end), rng);
    begin = end;
  }
  return unique;
}

int64_t MinAnswerTtl(const unsigned char* data, size_t size, uint16_t type) {
  if (size < kHeaderSize) {
    return -1;
  }
  const uint16_t qdcount = Read16(data + 4);
  const uint16_t ancount = Read16(data + 6);
  size_t pos = kHeaderSize;
  for (uint16_t i = 0; i < qdcount; ++i) {
    if (!SkipName(data, size, &pos) || pos + 4 > size) {
      return -1;
    }
    pos += 4;  // QTYPE, QCLASS
  }
  int64_t min_ttl = -1;
  for (uint16_t i = 0; i < ancount; ++i) {
    if (!SkipName(data, size, &pos) || pos + 10 > size) {
      return -1;
    }
    const uint16_t rr_type = Read16(data + pos);
    const uint16_t rr_class = Read16(data + pos + 2);
    // RFC 2181 §8: a TTL with the top bit set is treated as zero.
    uint32_t ttl = Read32(data + pos + 4);
    if (ttl > uint32_t{std::numeric_limits<int32_t>::max()}) {
      ttl = 0;
    }
    const uint16_t rdlength = Read16(data + pos + 8);
    pos += 10;
    if (pos + rdlength > size) {
      return -1;
    }
    pos += rdlength;
    if (rr_class != kClassIn || (rr_type != type && rr_type != kTypeCname)) {
      continue;
    }
    if (min_ttl < 0 || ttl < min_ttl) {
      min_ttl = ttl;
    }
  }
  return min_ttl;
}

Result<MxAnswer> ParseMxAnswer(const unsigned char* data, size_t size) {
  if (size > size_t{std::numeric_limits<int>::max()}) {
    return MakeError("DNS answer too large");
  }
  MxAnswer answer;
  ares_mx_reply* head = nullptr;
  const int status = ares_parse_mx_reply(data, static_cast<int>(size), &head);
  if (status == ARES_ENODATA) {
    return answer;  // NODATA, or a CNAME without MX records
  }
  if (status != ARES_SUCCESS) {
    return MakeError(std::string("malformed MX answer: ") + ares_strerror(status));
  }
  for (const ares_mx_reply* mx = head; mx != nullptr; mx = mx->next) {
    // c-ares 1.18 expands the root target to "" (its names carry no trailing dot).
    answer.records.push_back(
        MxTarget{NormalizeDnsName(mx->host != nullptr ? mx->host : ""), mx->priority, {}});
  }
  ares_free_data(head);
  const int64_t ttl = MinAnswerTtl(data, size, kTypeMx);
  answer.ttl = ttl < 0 ? 0 : static_cast<uint32_t>(ttl);
  return answer;
}

bool IsNullMx(const MxAnswer& answer) {
  return answer.records.size() == 1 && answer.records[0].host.empty();
}

}  // namespace sluice::delivery
