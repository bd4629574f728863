#pragma once

// Listener: one SO_REUSEPORT socket on one shard with a multishot accept
// (kernel 5.19). The accept is re-armed whenever the kernel ends it (a CQE
// without IORING_CQE_F_MORE, e.g. after EMFILE), after a short pause on
// errors so fd exhaustion cannot spin the loop.

#include <functional>

#include "io/shard.h"
#include "io/timer_wheel.h"

namespace sluice::io {

class Listener final : private CompletionHandler, private TimerHandler {
 public:
  using AcceptFn = std::function<void(int fd)>;

  // Takes ownership of listen_fd.
  Listener(Shard& shard, int listen_fd, AcceptFn on_accept);
  ~Listener() override;

  void Start();
  // Stops accepting and closes the socket once the accept request is gone.
  void Stop();
  bool stopped() const {
    return stopping_ && !armed_;
  }
  uint64_t accept_errors() const {
    return accept_errors_;
  }

 private:
  void Arm();
  void OnCompletion(int32_t res, uint32_t flags) override;
  void OnTimer() override;

  Shard& shard_;
  int fd_;
  AcceptFn on_accept_;
  uint64_t user_data_ = 0;
  bool armed_ = false;
  bool stopping_ = false;
  TimerWheel::Id retry_timer_;
  uint64_t accept_errors_ = 0;
};

}  // namespace sluice::io
