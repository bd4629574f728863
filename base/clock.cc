#include "base/clock.h"

namespace sluice {

SystemClock& SystemClock::Instance() {
  static SystemClock clock;
  return clock;
}

uint64_t UnixMicros() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace sluice
