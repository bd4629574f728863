#pragma once

// TLS contexts: the configuration half of tls/ (docs/design.md §7). A context is built once,
// from files, and is then immutable and shared read-only by every shard through a shared_ptr.
// Reload (SIGHUP) builds a new context and swaps the pointer: new connections use the new one,
// existing Streams keep the one they were made with (they hold a reference).
//
// BoringSSL types never appear in this header, so code that only passes contexts around does not
// need BoringSSL's include path (and cannot pick up OpenSSL 3's headers by accident).

#include <memory>
#include <string>
#include <vector>

#include "base/result.h"

namespace sluice::tls {

// Protocol versions, the TLS wire values (equal to BoringSSL's TLS1_2_VERSION / TLS1_3_VERSION).
inline constexpr int kTls12 = 0x0303;
inline constexpr int kTls13 = 0x0304;

struct ServerCertificate {
  std::string cert_chain_file;   // PEM: leaf first, then intermediates
  std::string private_key_file;  // PEM: ECDSA (P-256/P-384/P-521) or RSA (>= 2048 bits)
};

struct ServerOptions {
  // For the default name (no SNI, or an SNI that matches no entry): one ECDSA and/or one RSA
  // certificate. Required. With both, a client whose ClientHello accepts the ECDSA key (signature
  // algorithm for its curve, and TLS 1.3 or an ECDHE-ECDSA suite) gets ECDSA, others get RSA.
  std::vector<ServerCertificate> certificates;

  struct SniEntry {
    std::string name;  // exact host name, or "*.example.com" (matches exactly one more label)
    std::vector<ServerCertificate> certificates;  // same rules as the default set
  };
  // Exact names win over wildcards; names compare case-insensitively, a trailing dot ignored.
  std::vector<SniEntry> sni;

  // Lowest version accepted: kTls12 (default) or kTls13. Below 1.2 is refused at Create.
  int min_version = kTls12;

  // RFC 5077 / RFC 8446 §4.6.1 tickets, default on. The ticket key lives in this context (BoringSSL
  // rotates it every 48 h), so a reload or another process cannot resume these sessions.
  bool session_tickets = true;
};

class ServerContext {
 public:
  // Loads and checks every certificate and key. Errors name the file and the problem: file
  // missing or unreadable, no certificate / no key in it, key does not match the certificate,
  // unsupported key type, two certificates of the same type in one set, bad name or version.
  static Result<std::shared_ptr<ServerContext>> Create(const ServerOptions& options);

  ~ServerContext();
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  struct Impl;  // BoringSSL state, defined in tls/detail/contexts.h
  const Impl& impl() const {
    return *impl_;
  }

 private:
  explicit ServerContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct ClientOptions {
  // Trust anchors for verification. Loaded explicitly: BoringSSL's built-in default
  // (/etc/ssl/cert.pem) does not exist on Debian (docs/design.md §7).
  std::string ca_file = "/etc/ssl/certs/ca-certificates.crt";
  int min_version = kTls12;  // kTls12 (default) or kTls13
  int max_version = 0;       // 0 (default): the highest the library supports (TLS 1.3)
  // Upper bound on cached sessions (one per destination host and verify mode); when full, the
  // least recently stored one is dropped. 0 disables resumption.
  size_t session_cache_size = 10000;
};

class ClientContext {
 public:
  // Fails when ca_file is missing or holds no certificate, or on a bad version.
  static Result<std::shared_ptr<ClientContext>> Create(const ClientOptions& options);

  ~ClientContext();
  ClientContext(const ClientContext&) = delete;
  ClientContext& operator=(const ClientContext&) = delete;

  // Sessions currently cached (for tests and a gauge).
  size_t cached_sessions() const;

  struct Impl;  // BoringSSL state and the session cache, defined in tls/detail/contexts.h
  Impl& impl() const {
    return *impl_;
  }

 private:
  explicit ClientContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::tls
