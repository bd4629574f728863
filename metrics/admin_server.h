#pragma once

// AdminServer: the admin HTTP port (docs/design.md §9.3), served by civetweb with two
// worker threads.
//
//   GET /metrics  200, Content-Type: text/plain; version=0.0.4; charset=utf-8, Registry::Scrape()
//   GET /healthz  200 "ok": the process is up and serving
//   GET /readyz   200 "ready" when ready() says so, else 503 with ready()'s reason
//   anything else 404; methods other than GET and HEAD on these paths 405
//
// TLS: civetweb is initialised WITHOUT TLS (mg_init_library(0), no ssl options, plain listening
// port), so it never dlopens libssl/libcrypto. That matters: the daemon uses BoringSSL, and
// OpenSSL 3 loaded into the same process crashes it (docs/design.md §7). Put a TLS-terminating
// proxy in front if the admin port must leave the host.
//
// Threads: handlers run on civetweb's worker threads; they call Registry::Scrape() (lock-free)
// and ready(), which must be thread-safe and quick. Connections are not kept alive, so a slow
// client holds a worker for at most the request timeout (10 s).

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "base/result.h"

struct mg_connection;
struct mg_context;

namespace sluice::metrics {

class Registry;

class AdminServer {
 public:
  // ready() returns {true, ""} when ready, or {false, reason}.
  using ReadyFn = std::function<std::pair<bool, std::string>()>;

  AdminServer(Registry& registry, ReadyFn ready);
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;
  ~AdminServer();  // Stop()

  // Listens on `address` (an IPv4 or IPv6 literal, e.g. "127.0.0.1", "0.0.0.0", "::1", "::")
  // and `port` (0 = an ephemeral port; see port()). Errors: not an address literal, an IPv6
  // address when civetweb lacks IPv6 (see SupportsIpv6), the port in use (the message carries
  // civetweb's bind error), or already started. Not thread-safe against Stop().
  Result<void> Start(const std::string& address, uint16_t port);
  // Whether the civetweb library was built with IPv6 (USE_IPV6). Debian 12's libcivetweb1 1.15
  // is not, so there the admin port is IPv4 only.
  static bool SupportsIpv6();
  // The port actually bound; 0 when not started.
  uint16_t port() const {
    return port_;
  }
  // Stops accepting, finishes the requests in progress and joins civetweb's threads. Idempotent.
  void Stop();

 private:
  static int HandleRequest(mg_connection* conn);
  int Handle(mg_connection* conn);

  Registry& registry_;
  const ReadyFn ready_;
  mg_context* ctx_ = nullptr;
  uint16_t port_ = 0;
  std::string address_;
};

}  // namespace sluice::metrics
