#include "queue/quarantine.h"

#include <cerrno>

#include "base/ascii.h"

namespace sluice::queue {
namespace {

constexpr uint8_t kVersion = 1;
constexpr char kHex[] = "0123456789abcdef";

void PutU32(std::string* out, uint32_t v) {
  for (int i = 3; i >= 0; --i)
    out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void PutU64(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; --i)
    out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

bool GetU64(std::string_view* in, uint64_t* v) {
  if (in->size() < 8)
    return false;
  *v = 0;
  for (int i = 0; i < 8; ++i)
    *v = *v << 8 | static_cast<unsigned char>((*in)[i]);
  in->remove_prefix(8);
  return true;
}

bool GetString(std::string_view* in, std::string* s) {
  if (in->size() < 4)
    return false;
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i)
    n = n << 8 | static_cast<unsigned char>((*in)[i]);
  in->remove_prefix(4);
  if (in->size() < n)
    return false;
  s->assign(in->substr(0, n));
  in->remove_prefix(n);
  return true;
}

}  // namespace

std::string QuarantinedRecord::Name() const {
  if (std::optional<MessageId> mid = id())
    return mid->ToString();
  std::string out = "x";
  for (char ch : key) {
    const auto c = static_cast<unsigned char>(ch);
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

std::optional<std::string> QuarantineKeyFromName(std::string_view name) {
  if (std::optional<MessageId> id = MessageId::Parse(name)) {
    const auto key = id->Key();
    return std::string(key.data(), key.size());
  }
  if (name.size() < 3 || name.front() != 'x' || name.size() % 2 != 1)
    return std::nullopt;
  std::string key;
  for (size_t i = 1; i < name.size(); i += 2) {
    const int hi = HexDigitValue(name[i]);
    const int lo = HexDigitValue(name[i + 1]);
    if (hi < 0 || lo < 0)
      return std::nullopt;
    key.push_back(static_cast<char>(hi << 4 | lo));
  }
  return key;
}

std::string EncodeQuarantined(const QuarantinedRecord& record) {
  std::string out;
  out.reserve(1 + 8 + 4 + record.reason.size() + 4 + record.meta.size() + 1 + 4 +
              record.body.size());
  out.push_back(static_cast<char>(kVersion));
  PutU64(&out, record.quarantined_at_us);
  PutU32(&out, static_cast<uint32_t>(record.reason.size()));
  out += record.reason;
  PutU32(&out, static_cast<uint32_t>(record.meta.size()));
  out += record.meta;
  out.push_back(record.has_body ? 1 : 0);
  PutU32(&out, static_cast<uint32_t>(record.body.size()));
  out += record.body;
  return out;
}

Result<QuarantinedRecord> DecodeQuarantined(std::string_view key, std::string_view value) {
  QuarantinedRecord r;
  r.key.assign(key);
  if (value.empty() || static_cast<uint8_t>(value[0]) != kVersion) {
    return MakeError("quarantine record of an unknown version", EINVAL);
  }
  value.remove_prefix(1);
  if (!GetU64(&value, &r.quarantined_at_us) || !GetString(&value, &r.reason) ||
      !GetString(&value, &r.meta) || value.empty()) {
    return MakeError("truncated quarantine record", EINVAL);
  }
  r.has_body = value[0] != 0;
  value.remove_prefix(1);
  if (!GetString(&value, &r.body) || !value.empty()) {
    return MakeError("malformed quarantine record", EINVAL);
  }
  return r;
}

}  // namespace sluice::queue
