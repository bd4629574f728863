#include "queue/schedule.h"

#include <algorithm>

#include "base/ascii.h"

namespace sluice::queue {

namespace {

void PutBigEndian(char* out, uint64_t value, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) {
    out[i] = static_cast<char>(value & 0xff);
    value >>= 8;
  }
}

uint64_t GetBigEndian(std::string_view in) {
  uint64_t value = 0;
  for (char c : in)
    value = value << 8 | static_cast<unsigned char>(c);
  return value;
}

constexpr char kTotalTag = 't';
constexpr char kDomainTag = 'd';

}  // namespace

std::string DomainOf(std::string_view address) {
  const size_t at = address.rfind('@');
  if (at == std::string_view::npos)
    return "";
  return AsciiToLower(address.substr(at + 1));
}

Placement PlacementOf(const Envelope& envelope) {
  Placement p;
  p.due_us = envelope.next_due_us;
  p.received_us = envelope.received_at_us;
  p.deferred = envelope.attempts > 0;
  for (const Recipient& r : envelope.recipients) {
    if (r.state == RecipientState::kPending)
      p.domains.push_back(DomainOf(r.address));
  }
  std::sort(p.domains.begin(), p.domains.end());
  p.domains.erase(std::unique(p.domains.begin(), p.domains.end()), p.domains.end());
  return p;
}

ScheduleKey MakeScheduleKey(uint16_t prefix, uint64_t due_us, const MessageId& id) {
  ScheduleKey key{};
  PutBigEndian(key.data(), prefix, 2);
  PutBigEndian(key.data() + 2, due_us, 8);
  const auto id_key = id.Key();
  std::copy(id_key.begin(), id_key.end(), key.begin() + 10);
  return key;
}

std::optional<ScheduleEntry> ParseScheduleKey(std::string_view key) {
  if (key.size() != kScheduleKeySize)
    return std::nullopt;
  std::optional<MessageId> id = MessageId::FromKey(key.substr(10));
  if (!id)
    return std::nullopt;
  ScheduleEntry e;
  e.prefix = static_cast<uint16_t>(GetBigEndian(key.substr(0, 2)));
  e.due_us = GetBigEndian(key.substr(2, 8));
  e.id = *id;
  return e;
}

std::string EncodeCounterKey(const CounterKey& key) {
  std::string out;
  if (key.domain) {
    out.reserve(key.domain->size() + 7);
    out.push_back(kDomainTag);
    out.append(*key.domain);
    out.push_back('\0');
  } else {
    out.push_back(kTotalTag);
  }
  out.push_back(key.deferred ? '\1' : '\0');
  char minute[4];
  PutBigEndian(minute, key.minute, 4);
  out.append(minute, 4);
  return out;
}

std::optional<CounterKey> DecodeCounterKey(std::string_view key) {
  if (key.size() < 6)
    return std::nullopt;
  CounterKey k;
  if (key.front() == kDomainTag) {
    const size_t nul = key.find('\0', 1);
    if (nul == std::string_view::npos || key.size() != nul + 6)
      return std::nullopt;
    k.domain = std::string(key.substr(1, nul - 1));
    key.remove_prefix(nul + 1);
  } else if (key.front() == kTotalTag && key.size() == 6) {
    key.remove_prefix(1);
  } else {
    return std::nullopt;
  }
  if (key[0] != '\0' && key[0] != '\1')
    return std::nullopt;
  k.deferred = key[0] == '\1';
  k.minute = static_cast<uint32_t>(GetBigEndian(key.substr(1, 4)));
  return k;
}

std::string EncodeCount(uint64_t value) {
  std::string out(8, '\0');
  PutBigEndian(out.data(), value, 8);
  return out;
}

std::optional<uint64_t> DecodeCount(std::string_view value) {
  if (value.size() != 8)
    return std::nullopt;
  return GetBigEndian(value);
}

void AddCounts(const Placement& placement, int sign, std::map<CounterKey, int64_t>& delta) {
  CounterKey key;
  key.deferred = placement.deferred;
  key.minute = static_cast<uint32_t>(placement.received_us / kCountBucketMicros);
  delta[key] += sign;
  for (const std::string& domain : placement.domains) {
    key.domain = domain;
    delta[key] += sign;
  }
}

QueueCounts SumCounts(const std::map<CounterKey, uint64_t>& counters) {
  QueueCounts counts;
  for (const auto& [key, value] : counters) {
    if (value == 0)
      continue;
    const uint64_t start = uint64_t{key.minute} * kCountBucketMicros;
    uint64_t* oldest = nullptr;
    if (key.domain) {
      QueueCounts::Domain& d = counts.domains[*key.domain];
      d.messages += value;
      oldest = &d.oldest_received_us;
    } else {
      (key.deferred ? counts.deferred : counts.scheduled) += value;
      oldest = &counts.oldest_received_us;
    }
    if (*oldest == 0 || start < *oldest)
      *oldest = start;
  }
  return counts;
}

}  // namespace sluice::queue
