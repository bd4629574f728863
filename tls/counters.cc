#include "tls/counters.h"

namespace sluice::tls {

HandshakeCounters& handshake_counters() {
  static HandshakeCounters counters;
  return counters;
}

}  // namespace sluice::tls
