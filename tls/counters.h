#pragma once

// Process-wide TLS counters for metrics (exported by the metrics wiring; tls/ does not depend on
// metrics/). Relaxed atomics: several shards add to them, a scrape reads them, and no other memory
// is ordered by them. A handshake counts once, when it completes or fails.

#include <atomic>
#include <cstdint>

namespace sluice::tls {

struct HandshakeCounters {
  std::atomic<uint64_t> server_ok{0};
  std::atomic<uint64_t> server_failed{0};
  std::atomic<uint64_t> server_resumed{0};  // subset of server_ok
  std::atomic<uint64_t> client_ok{0};
  std::atomic<uint64_t> client_failed{0};
  std::atomic<uint64_t> client_resumed{0};     // subset of client_ok
  std::atomic<uint64_t> client_unverified{0};  // subset of client_ok: chain or name not verified
  std::atomic<uint64_t> tls12{0};              // completed handshakes (both sides) by version
  std::atomic<uint64_t> tls13{0};
};

// The one instance for the process.
HandshakeCounters& ProcessHandshakeCounters();

}  // namespace sluice::tls
