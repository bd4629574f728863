#pragma once

// Deterministic envelopes and bodies shared by the spool tests and the crash
// child program.

#include <cstdint>
#include <random>
#include <string>

#include "queue/envelope.h"

namespace sluice::queue::testing {

inline Envelope MakeEnvelope(uint64_t n) {
  Envelope e;
  e.sender = "sender" + std::to_string(n) + "@example.org";
  e.recipients.push_back(
      {"rcpt" + std::to_string(n) + "@example.com", 0, "", RecipientState::kPending, 0, ""});
  e.received_at_us = 1'700'000'000'000'000 + n;
  e.body_size = n;
  e.client_ip = "192.0.2.1";
  return e;
}

// Deterministic bytes (NULs and high bytes included).
inline std::string MakeBody(uint64_t seed, size_t size) {
  std::mt19937_64 rng(seed);
  std::string body(size, '\0');
  for (char& c : body)
    c = static_cast<char>(rng());
  return body;
}

}  // namespace sluice::queue::testing
