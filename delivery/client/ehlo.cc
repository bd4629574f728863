#include "delivery/client/ehlo.h"

#include <algorithm>
#include <string_view>

#include "base/ascii.h"

namespace sluice::delivery {

namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// Space-separated words of s, in order.
std::vector<std::string_view> Words(std::string_view s) {
  std::vector<std::string_view> words;
  size_t pos = 0;
  while (pos < s.size()) {
    while (pos < s.size() && s[pos] == ' ') {
      ++pos;
    }
    const size_t end = std::min(s.find(' ', pos), s.size());
    if (end > pos) {
      words.push_back(s.substr(pos, end - pos));
    }
    pos = end;
  }
  return words;
}

std::optional<uint64_t> ParseSize(std::string_view s) {
  if (s.empty() || s.size() > 20) {
    return std::nullopt;
  }
  uint64_t v = 0;
  for (const char c : s) {
    if (!IsAsciiDigit(c)) {
      return std::nullopt;
    }
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) {
      return std::nullopt;
    }
    v = v * 10 + d;
  }
  if (v == 0) {
    return std::nullopt;  // RFC 1870 §4: 0 means no fixed maximum
  }
  return v;
}

void AddAuth(Capabilities* caps, std::string_view mechanism) {
  std::string upper = AsciiToUpper(mechanism);
  if (std::find(caps->auth.begin(), caps->auth.end(), upper) == caps->auth.end()) {
    caps->auth.push_back(std::move(upper));
  }
}

}  // namespace

Capabilities ParseEhlo(const smtp::Reply& reply) {
  Capabilities caps;
  if (reply.code / 100 != 2) {
    return caps;
  }
  caps.esmtp = true;
  std::string_view text = reply.text;
  size_t nl = text.find('\n');  // the first line greets; keywords follow
  while (nl != std::string_view::npos) {
    text.remove_prefix(nl + 1);
    nl = text.find('\n');
    const std::string_view line = Trim(text.substr(0, nl));
    const std::vector<std::string_view> words = Words(line);
    if (words.empty()) {
      continue;
    }
    std::string_view keyword = words[0];
    // Pre-RFC 4954 servers write "AUTH=LOGIN PLAIN" (Postfix broken_sasl_auth_clients).
    if (keyword.size() > 5 && StartsWithIgnoreCase(keyword, "AUTH=")) {
      AddAuth(&caps, keyword.substr(5));
      for (size_t i = 1; i < words.size(); ++i) {
        AddAuth(&caps, words[i]);
      }
      continue;
    }
    if (EqualsIgnoreCase(keyword, "PIPELINING")) {
      caps.pipelining = true;
    } else if (EqualsIgnoreCase(keyword, "8BITMIME")) {
      caps.eightbitmime = true;
    } else if (EqualsIgnoreCase(keyword, "SMTPUTF8")) {
      caps.smtputf8 = true;
    } else if (EqualsIgnoreCase(keyword, "CHUNKING")) {
      caps.chunking = true;
    } else if (EqualsIgnoreCase(keyword, "DSN")) {
      caps.dsn = true;
    } else if (EqualsIgnoreCase(keyword, "ENHANCEDSTATUSCODES")) {
      caps.enhanced_status_codes = true;
    } else if (EqualsIgnoreCase(keyword, "STARTTLS")) {
      caps.starttls = true;
    } else if (EqualsIgnoreCase(keyword, "SIZE")) {
      caps.size_offered = true;
      caps.size = words.size() > 1 ? ParseSize(words[1]) : std::nullopt;
    } else if (EqualsIgnoreCase(keyword, "AUTH")) {
      for (size_t i = 1; i < words.size(); ++i) {
        AddAuth(&caps, words[i]);
      }
    }
  }
  return caps;
}

}  // namespace sluice::delivery
