#include "auth/user_db.h"

#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <cstdlib>
#include <unordered_map>
#include <utility>

#include "base/ascii.h"

namespace sluice::auth {
namespace {

constexpr std::string_view kWhitespace = " \t\r\n";

std::string_view Trim(std::string_view s) {
  const size_t b = s.find_first_not_of(kWhitespace);
  if (b == std::string_view::npos) {
    return {};
  }
  const size_t e = s.find_last_not_of(kWhitespace);
  return s.substr(b, e - b + 1);
}

std::string NormalizeDomain(std::string_view d) {
  if (!d.empty() && d.back() == '.') {
    d.remove_suffix(1);
  }
  return AsciiToLower(d);
}

bool IsCryptChar(char c) {
  return IsAsciiAlnum(c) || c == '.' || c == '/';
}
bool AllCryptChars(std::string_view s) {
  for (char c : s) {
    if (!IsCryptChar(c)) {
      return false;
    }
  }
  return !s.empty();
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    const size_t pos = s.find(sep, start);
    out.push_back(
        s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos) {
      return out;
    }
    start = pos + 1;
  }
}

// What one crypt method's strings look like: "$id$[params$]salt$checksum".
struct Method {
  std::string_view prefix;   // "$6$"
  std::string_view name;     // for error messages
  std::string_view dovecot;  // Dovecot scheme naming exactly this method
  size_t checksum_len;       // characters after the last '$'
};
constexpr Method kMethods[] = {
    {"$y$", "yescrypt", "", 43},
    {"$2b$", "bcrypt", "{BLF-CRYPT}", 0},  // bcrypt is checked by total length
    {"$2y$", "bcrypt", "{BLF-CRYPT}", 0},
    {"$6$", "sha512-crypt", "{SHA512-CRYPT}", 86},
    {"$5$", "sha256-crypt", "{SHA256-CRYPT}", 43},
};

// Checks `hash` is a complete string of a supported method; returns an error
// message or "". The point is to reject at load time what would otherwise
// only show up as "every password is wrong" for that user.
std::string CheckHash(std::string_view scheme, std::string_view hash) {
  const Method* method = nullptr;
  for (const Method& m : kMethods) {
    if (hash.starts_with(m.prefix)) {
      method = &m;
    }
  }
  if (method == nullptr) {
    return "unsupported password hash (want yescrypt $y$, bcrypt $2b$/$2y$, sha512-crypt $6$ "
           "or sha256-crypt $5$)";
  }
  if (!scheme.empty() && scheme != "{CRYPT}" && scheme != method->dovecot) {
    return "scheme " + std::string(scheme) + " does not match a " + std::string(method->name) +
           " hash";
  }
  std::string truncated = "malformed or truncated " + std::string(method->name) + " hash";
  if (method->name == "bcrypt") {
    // "$2b$" cost(2 digits) "$" salt(22) checksum(31): 60 characters.
    if (hash.size() != 60 || hash[6] != '$' || !IsAsciiDigit(hash[4]) || !IsAsciiDigit(hash[5]) ||
        !AllCryptChars(hash.substr(7))) {
      return truncated;
    }
  } else {
    const std::vector<std::string_view> parts = Split(hash.substr(method->prefix.size()), '$');
    // yescrypt: params$salt$checksum; sha-crypt: [rounds=N$]salt$checksum.
    const size_t min_parts = method->name == "yescrypt" ? 3 : 2;
    if (parts.size() < min_parts || parts.size() > 3) {
      return truncated;
    }
    if (parts.back().size() != method->checksum_len || !AllCryptChars(parts.back())) {
      return truncated;
    }
    if (method->name != "yescrypt" && parts.size() == 3 && !parts[0].starts_with("rounds=")) {
      return truncated;
    }
  }
  const std::string setting(hash);
  // The method list above is our policy; libxcrypt's only says what it can
  // compute. It calls sha256-crypt "legacy" (CRYPT_SALT_METHOD_LEGACY), which
  // we accept: Dovecot still produces it.
  const int check = crypt_checksalt(setting.c_str());
  if (check != CRYPT_SALT_OK && check != CRYPT_SALT_METHOD_LEGACY) {
    return std::string(method->name) + " hash rejected by libcrypt (" +
           (check == CRYPT_SALT_METHOD_DISABLED ? "method disabled" : "invalid setting") + ")";
  }
  return "";
}

// The method-and-cost part of a hash, without the salt: "$2y$05$", "$y$j9T$",
// "$6$rounds=9999$", "$6$".
std::string_view CostKey(std::string_view hash) {
  if (hash.starts_with("$2")) {
    return hash.substr(0, 7);
  }
  size_t dollars = 0;
  if (hash.starts_with("$y$")) {
    dollars = 3;
  } else if (hash.substr(3).starts_with("rounds=")) {
    dollars = 4;
  } else {
    return hash.substr(0, 3);
  }
  size_t pos = 0;
  for (size_t n = 0; n < dollars && pos != std::string_view::npos; ++n) {
    pos = hash.find('$', pos);
    if (pos != std::string_view::npos) {
      ++pos;
    }
  }
  return hash.substr(0, pos);
}

bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  // Every byte of `a` is looked at whatever the contents; a length mismatch
  // only reveals itself through the result.
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (size_t i = 0; i < a.size(); ++i) {
    const char other = i < b.size() ? b[i] : '\0';
    diff |= static_cast<unsigned char>(a[i] ^ other);
  }
  return diff == 0;
}

std::string FileError(const std::string& path, int line, const std::string& what) {
  return path + ":" + std::to_string(line) + ": " + what;
}

bool IsPrintableToken(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      return false;
    }
  }
  return !s.empty();
}

// One non-comment line, trimmed: "user:hash[:domains=a,b]".
Result<User> ParseUserLine(std::string_view line) {
  const std::vector<std::string_view> fields = Split(line, ':');
  if (fields.size() < 2 || fields.size() > 3) {
    return MakeError("expected user:hash[:domains=example.com,...]");
  }
  User user;
  user.name = std::string(fields[0]);
  if (!IsPrintableToken(user.name)) {
    return MakeError("empty user name or one with whitespace/control characters");
  }
  std::string_view hash = fields[1];
  std::string_view scheme;  // Dovecot "{SHA512-CRYPT}"
  if (hash.starts_with('{')) {
    const size_t close = hash.find('}');
    if (close == std::string_view::npos) {
      return MakeError("unterminated {SCHEME} prefix");
    }
    scheme = hash.substr(0, close + 1);
    hash.remove_prefix(close + 1);
  }
  if (std::string bad = CheckHash(scheme, hash); !bad.empty()) {
    return MakeError("user '" + user.name + "': " + bad);
  }
  user.hash = std::string(hash);
  if (fields.size() == 3) {
    constexpr std::string_view kDomains = "domains=";
    if (!fields[2].starts_with(kDomains)) {
      return MakeError("third field must be domains=example.com,...");
    }
    const std::string_view list = fields[2].substr(kDomains.size());
    if (Trim(list).empty()) {
      return user;  // "domains=": any
    }
    for (std::string_view d : Split(list, ',')) {
      d = Trim(d);
      if (!IsPrintableToken(d) || d == "." || d.find('@') != std::string_view::npos) {
        return MakeError("bad sender domain '" + std::string(d) + "'");
      }
      user.allowed_sender_domains.push_back(NormalizeDomain(d));
    }
  }
  return user;
}

}  // namespace

Result<std::shared_ptr<const UserDb>> UserDb::Load(const std::string& path) {
  FILE* f = fopen(path.c_str(), "re");
  if (f == nullptr) {
    const int err = errno;
    return MakeError(path + ": " + strerror(err), err);
  }
  std::shared_ptr<UserDb> db(new UserDb());
  std::unordered_map<std::string, int> first_line;
  std::vector<const User*> in_file_order;
  char* buf = nullptr;
  size_t cap = 0;
  ssize_t got = 0;
  int line_no = 0;
  std::string error;
  while (error.empty() && (got = getline(&buf, &cap, f)) >= 0) {
    ++line_no;
    const std::string_view line = Trim(std::string_view(buf, static_cast<size_t>(got)));
    if (line.empty() || line.front() == '#') {
      continue;
    }
    Result<User> user = ParseUserLine(line);
    if (!user.ok()) {
      error = FileError(path, line_no, user.error().message);
    } else if (const auto [it, inserted] = first_line.emplace(user->name, line_no); !inserted) {
      error = FileError(
          path, line_no,
          "duplicate user '" + user->name + "' (first on line " + std::to_string(it->second) + ")");
    } else {
      std::string name = user->name;
      in_file_order.push_back(&db->users_.emplace(std::move(name), std::move(*user)).first->second);
    }
  }
  const int read_errno = errno;
  const bool read_failed = ferror(f) != 0;
  free(buf);
  fclose(f);
  if (!error.empty()) {
    return MakeError(std::move(error));
  }
  if (read_failed) {
    return MakeError(path + ": " + strerror(read_errno), read_errno);
  }

  // Dummy setting for unknown users: the most common method and cost, so an
  // unknown name costs what most known names cost.
  std::unordered_map<std::string_view, size_t> counts;
  size_t best = 0;
  for (const User* u : in_file_order) {
    const size_t n = ++counts[CostKey(u->hash)];
    if (n > best) {
      best = n;
      db->dummy_setting_ = u->hash;
    }
  }
  if (db->dummy_setting_.empty()) {
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (crypt_gensalt_rn("$y$", 0, nullptr, 0, setting, sizeof(setting)) != nullptr) {
      db->dummy_setting_ = setting;
    }
  }
  return std::shared_ptr<const UserDb>(std::move(db));
}

const User* UserDb::Find(std::string_view name) const {
  const auto it = users_.find(name);
  return it == users_.end() ? nullptr : &it->second;
}

bool UserDb::Verify(std::string_view user, std::string_view password) const {
  const User* u = Find(user);
  const bool usable = u != nullptr && password.size() <= kMaxPasswordBytes &&
                      password.find('\0') == std::string_view::npos;
  // In the dummy case the (possibly truncated) password is still hashed, so
  // the work done is the same as for a real check.
  std::string phrase(password.substr(0, kMaxPasswordBytes));
  const std::string& setting = usable ? u->hash : dummy_setting_;
  auto data = std::make_unique<crypt_data>();  // zeroed: ~32 KiB, too big for a pool thread's stack
  const char* out = crypt_rn(phrase.c_str(), setting.c_str(), data.get(), sizeof(crypt_data));
  const bool match = usable && out != nullptr && ConstantTimeEqual(out, u->hash);
  // The work area and our copy hold the password or values derived from it.
  explicit_bzero(data.get(), sizeof(crypt_data));
  explicit_bzero(phrase.data(), phrase.size());
  return match;
}

bool UserDb::SenderAllowed(std::string_view user, std::string_view sender_domain) const {
  const User* u = Find(user);
  if (u == nullptr) {
    return false;
  }
  if (u->allowed_sender_domains.empty()) {
    return true;
  }
  const std::string domain = NormalizeDomain(sender_domain);
  if (domain.empty()) {
    return false;
  }
  for (const std::string& allowed : u->allowed_sender_domains) {
    if (allowed == domain) {
      return true;
    }
  }
  return false;
}

}  // namespace sluice::auth
