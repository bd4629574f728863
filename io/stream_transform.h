#pragma once

// StreamTransform: what a Connection runs its bytes through once it carries
// TLS (STARTTLS or implicit). The reactor moves ciphertext; the transform
// (tls/, over memory BIOs) turns it into plaintext and back. Kept abstract
// so io/ does not depend on the TLS library (docs/design.md §4).

#include <string>
#include <string_view>

namespace sluice::io {

class StreamTransform {
 public:
  virtual ~StreamTransform() = default;

  // Called once when the transform is installed: a TLS client speaks first
  // (its ClientHello then waits in TakeOutput()).
  virtual void Start() {
  }

  // Received ciphertext: advances the handshake or decrypts, appending
  // plaintext to *plain. false on a fatal protocol error.
  virtual bool Receive(std::string_view cipher, std::string* plain) = 0;
  // Application data to send: appends its ciphertext to *cipher.
  virtual bool Send(std::string_view plain, std::string* cipher) = 0;
  // Ciphertext produced on its own (handshake flights, tickets, alerts).
  virtual std::string TakeOutput() = 0;
  virtual bool handshake_done() const = 0;
  virtual bool failed() const = 0;
  virtual bool peer_closed() const = 0;  // close_notify received
  // Queues close_notify (TakeOutput() returns it).
  virtual void Close() = 0;
  virtual std::string error() const = 0;
};

}  // namespace sluice::io
