#include "admin/json.h"

namespace sluice::admin {
namespace {

constexpr char kHex[] = "0123456789abcdef";

// Length of the valid UTF-8 sequence starting at s[i] (RFC 3629: no overlongs, no surrogates,
// nothing above U+10FFFF), or 0 if it is not one.
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  size_t len = 0;
  uint8_t lo = 0x80;
  uint8_t hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0)
      lo = 0xA0;  // overlong
    if (b0 == 0xED)
      hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0)
      lo = 0x90;  // overlong
    if (b0 == 0xF4)
      hi = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (i + len > s.size())
    return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<uint8_t>(s[i + k]);
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
      return 0;
  }
  return len;
}

void AppendKey(std::string& out, const char* key) {
  out += '"';
  out += key;
  out += "\":";
}

void AppendStringField(std::string& out, const char* key, std::string_view value) {
  AppendKey(out, key);
  AppendJsonString(out, value);
  out += ',';
}

void AppendNumberField(std::string& out, const char* key, uint64_t value) {
  AppendKey(out, key);
  out += std::to_string(value);
  out += ',';
}

void AppendBoolField(std::string& out, const char* key, bool value) {
  AppendKey(out, key);
  out += value ? "true" : "false";
  out += ',';
}

}  // namespace

void AppendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      if (c == '"' || c == '\\') {
        out += '\\';
        out += static_cast<char>(c);
      } else if (c < 0x20 || c == 0x7f) {
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 15];
      } else {
        out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    const size_t len = Utf8SequenceLength(s, i);
    if (len == 0) {
      out += "\\ufffd";
      ++i;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  out += '"';
}

std::string EnvelopeToJson(const queue::MessageId& id, const queue::Envelope& e) {
  std::string out = "{";
  AppendStringField(out, "id", id.ToString());
  AppendStringField(out, "sender", e.sender);
  AppendNumberField(out, "body_type", e.body_type);
  AppendBoolField(out, "smtputf8", e.smtputf8);
  AppendNumberField(out, "ret", e.ret);
  AppendStringField(out, "envid", e.envid);
  AppendStringField(out, "auth_param", e.auth_param);
  AppendKey(out, "recipients");
  out += '[';
  for (size_t i = 0; i < e.recipients.size(); ++i) {
    const queue::Recipient& r = e.recipients[i];
    if (i > 0)
      out += ',';
    out += '{';
    AppendStringField(out, "address", r.address);
    AppendNumberField(out, "notify", r.notify);
    AppendStringField(out, "orcpt", r.orcpt);
    AppendStringField(out, "state", queue::ToString(r.state));
    AppendNumberField(out, "attempts", r.attempts);
    AppendKey(out, "last_reply");
    AppendJsonString(out, r.last_reply);
    out += '}';
  }
  out += "],";
  AppendNumberField(out, "received_at_us", e.received_at_us);
  AppendNumberField(out, "next_due_us", e.next_due_us);
  AppendNumberField(out, "expires_at_us", e.expires_at_us);
  AppendNumberField(out, "body_size", e.body_size);
  AppendStringField(out, "client_ip", e.client_ip);
  AppendStringField(out, "helo", e.helo);
  AppendStringField(out, "auth_user", e.auth_user);
  AppendStringField(out, "listener", e.listener);
  AppendBoolField(out, "tls", e.tls);
  AppendKey(out, "attempts");
  out += std::to_string(e.attempts);
  out += '}';
  return out;
}

std::string ListEntryToJson(const queue::MessageId& id, const queue::Envelope& e, uint64_t now_us) {
  std::string out = "{";
  AppendStringField(out, "id", id.ToString());
  AppendStringField(out, "sender", e.sender);
  AppendKey(out, "recipients");
  out += '[';
  for (size_t i = 0; i < e.recipients.size(); ++i) {
    if (i > 0)
      out += ',';
    AppendJsonString(out, e.recipients[i].address);
  }
  out += "],";
  AppendNumberField(out, "size", e.body_size);
  AppendKey(out, "age");
  out += std::to_string(now_us > e.received_at_us ? (now_us - e.received_at_us) / 1'000'000 : 0);
  out += '}';
  return out;
}

}  // namespace sluice::admin
