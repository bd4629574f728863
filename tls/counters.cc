#include "tls/counters.h"

namespace sluice::tls {

HandshakeCounters& ProcessHandshakeCounters() {
  static HandshakeCounters counters;
  return counters;
}

}  // namespace sluice::tls
