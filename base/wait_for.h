#pragma once

// WaitFor: for tests that must wait on another thread. Polls `done` every
// millisecond until it holds or `timeout` passes; returns whether it held.
// Bounded by construction (docs/design.md §10.2: poll with a deadline, never sleep blind).

#include <chrono>
#include <thread>

namespace sluice {

template <typename Pred>
bool WaitFor(Pred done, std::chrono::steady_clock::duration timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace sluice
