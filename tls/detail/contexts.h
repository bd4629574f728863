#pragma once

// The BoringSSL side of ServerContext and ClientContext. Only tls/*.cc include this.

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include <openssl/ssl.h>

#include "tls/context.h"

namespace sluice::tls {

namespace detail {

// The certificates for one name. This BoringSSL keeps one leaf certificate and key per SSL_CTX
// (no SSL_CREDENTIAL API, docs/design.md §7), so ECDSA and RSA each get their own SSL_CTX and
// the select-certificate callback moves the SSL to the right one with SSL_set_SSL_CTX.
struct CertificateSet {
  bssl::UniquePtr<SSL_CTX> ecdsa;  // null when the set has no ECDSA certificate
  bssl::UniquePtr<SSL_CTX> rsa;    // null when the set has no RSA certificate
  // The TLS 1.3 signature scheme that matches the ECDSA key's curve (RFC 8446 §4.2.3: in 1.3
  // ecdsa_secp256r1_sha256 means that curve), e.g. 0x0403 for P-256.
  uint16_t ecdsa_scheme = 0;

  SSL_CTX* preferred() const {
    return ecdsa != nullptr ? ecdsa.get() : rsa.get();
  }
};

// Lowercases and drops one trailing dot: the form names are compared in (RFC 4343, RFC 6066 §3).
std::string NormalizeHostName(std::string_view name);

// True when `name` is a host name worth sending as SNI: not empty, not an IP literal
// (RFC 6066 §3 forbids literal addresses in server_name).
bool IsDnsName(std::string_view name);
bool IsIpLiteral(std::string_view name);

// ClientHello parsing for certificate selection (inputs are extension bodies as BoringSSL hands
// them out, without type and outer length). All tolerate malformed input by returning false.
//
// signature_algorithms (RFC 8446 §4.2.3): uint16 length, then uint16 schemes.
bool SignatureAlgorithmsContain(const uint8_t* data, size_t len, uint16_t scheme);
// supported_versions in a ClientHello (RFC 8446 §4.2.1): uint8 length, then uint16 versions.
bool SupportedVersionsContain(const uint8_t* data, size_t len, uint16_t version);
// cipher_suites as in SSL_CLIENT_HELLO: a bare array of uint16 suites.
bool CipherSuitesContainAny(const uint8_t* data, size_t len, const uint16_t* suites, size_t n);

// Whether the client can take an ECDSA certificate whose key needs `ecdsa_scheme`: it offers
// that signature scheme (or, with no signature_algorithms extension, TLS 1.2's implied default,
// RFC 5246 §7.4.1.4.1), and it can negotiate a version and suite that uses it: TLS 1.3, or an
// ECDHE-ECDSA AEAD suite from our TLS 1.2 list.
bool ClientAcceptsEcdsa(const SSL_CLIENT_HELLO* hello, uint16_t ecdsa_scheme);

// Client session cache callback (SSL_CTX_sess_set_new_cb), defined in stream.cc where the SSL's
// Stream (and so its cache key) is known.
int StoreClientSession(SSL* ssl, SSL_SESSION* session);

}  // namespace detail

struct ServerContext::Impl {
  detail::CertificateSet default_set;
  std::unordered_map<std::string, detail::CertificateSet> exact;  // normalized name
  std::unordered_map<std::string, detail::CertificateSet>
      wildcard;  // "*.example.com" → "example.com"

  // The set for a requested server name ("" when the client sent none).
  const detail::CertificateSet& Select(std::string_view server_name) const;

  // Every SSL starts on this context (the default set's preferred one): it is the SSL's
  // session_ctx, so its ticket key and server-side session cache serve every name.
  SSL_CTX* initial() const {
    return default_set.preferred();
  }
};

struct ClientContext::Impl {
  bssl::UniquePtr<SSL_CTX> ctx;
  size_t cache_limit = 0;

  // Session cache, keyed by verify mode and destination host name. Guarded by a mutex because
  // one ClientContext serves every shard; the critical sections are a map lookup or insert.
  mutable std::mutex mu;
  struct Entry {
    bssl::UniquePtr<SSL_SESSION> session;
    uint64_t seq = 0;
  };
  std::unordered_map<std::string, Entry> sessions;  // guarded by mu
  std::map<uint64_t, std::string> by_age;           // guarded by mu: seq → key, oldest first
  uint64_t next_seq = 0;                            // guarded by mu

  void Store(const std::string& key, bssl::UniquePtr<SSL_SESSION> session);
  // The cached session for key, or null. A session that should be used once (TLS 1.3,
  // RFC 8446 §C.4) is removed from the cache; others stay.
  bssl::UniquePtr<SSL_SESSION> Lookup(const std::string& key);
};

}  // namespace sluice::tls
