#pragma once

// UserDb: the accounts allowed to authenticate (SMTP AUTH, RFC 4954), loaded
// from a users file:
//
//   # comment
//   alice:$y$j9T$...                              (mkpasswd -m yescrypt)
//   bob:$2y$05$...:domains=example.com,example.org (htpasswd -nbB bob pw)
//   carol:{SHA512-CRYPT}$6$...                    (doveadm pw -s SHA512-CRYPT)
//
// One "user:hash[:domains=d1,d2]" per line; '#' comment lines and blank lines
// are ignored, surrounding whitespace and a CR before the LF are stripped.
// The hash is a crypt(3) string: yescrypt "$y$", bcrypt "$2b$"/"$2y$",
// sha512-crypt "$6$", sha256-crypt "$5$"; a Dovecot scheme prefix naming the
// same method ({CRYPT}, {SHA512-CRYPT}, {SHA256-CRYPT}, {BLF-CRYPT}) is
// accepted and dropped. Any other method (DES, MD5, plain text, ...) is a load
// error, so a weak or mistyped entry never silently locks a user out or lets
// a cheap hash in. `domains=` lists the sender domains the user may put in
// MAIL FROM; absent or empty means any. User names are case-sensitive.
//
// Immutable once loaded: reload (SIGHUP) = Load() a new one and swap the
// shared_ptr; sessions holding the old one keep a consistent view.

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace sluice::auth {

struct User {
  std::string name;
  std::string hash;  // the crypt(3) string, Dovecot scheme prefix removed
  std::vector<std::string> allowed_sender_domains;  // lower case, no trailing '.'
};

class UserDb {
 public:
  // Errors are "path:line: what" (or "path: strerror" when unreadable). The
  // whole file is rejected on the first bad line: a half-loaded user list on
  // reload would lock people out without anyone noticing.
  static Result<std::shared_ptr<const UserDb>> Load(const std::string& path);

  const User* Find(std::string_view name) const;
  size_t size() const {
    return users_.size();
  }

  // BLOCKING and slow by design (tens of milliseconds for yescrypt): run it on
  // a thread pool, never on a shard thread. Thread-safe (crypt_rn with a
  // per-call work area). An unknown user, an over-long password or one with
  // a NUL byte still costs one hash computation of the users' most common
  // method and cost, so that timing does not tell which names exist; the
  // result is compared in constant time.
  bool Verify(std::string_view user, std::string_view password) const;

  // ASCII case-insensitive; a trailing '.' on `sender_domain` is ignored.
  // False for an unknown user. The null sender (empty domain) is allowed
  // only to users without a domain list.
  bool SenderAllowed(std::string_view user, std::string_view sender_domain) const;

  // Longer passwords are rejected without looking at the hash: sha-crypt's
  // cost grows with the password length (a CPU DoS), and bcrypt ignores
  // everything after 72 bytes anyway.
  static constexpr size_t kMaxPasswordBytes = 1024;

 private:
  UserDb() = default;

  std::map<std::string, User, std::less<>> users_;
  // A crypt setting ("$y$j9T$salt") of the most common method and cost among
  // the users, hashed for unknown users.
  std::string dummy_setting_;
};

}  // namespace sluice::auth
