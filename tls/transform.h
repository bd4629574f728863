#pragma once

// TlsTransform: a tls::Stream as the io::StreamTransform of a Connection, so
// the shard's ring moves ciphertext and the session reads and writes
// plaintext (STARTTLS, implicit TLS, outbound TLS).

#include <memory>
#include <string>

#include "io/stream_transform.h"
#include "tls/stream.h"

namespace sluice::tls {

class TlsTransform final : public io::StreamTransform {
 public:
  explicit TlsTransform(std::unique_ptr<Stream> stream) : stream_(std::move(stream)) {
  }

  void Start() override;
  bool Receive(std::string_view cipher, std::string* plain) override;
  bool Send(std::string_view plain, std::string* cipher) override;
  std::string TakeOutput() override {
    return stream_->TakeCiphertext();
  }
  bool handshake_done() const override;
  bool failed() const override {
    return stream_->state() == Stream::State::kFailed;
  }
  bool peer_closed() const override {
    return stream_->state() == Stream::State::kClosed;
  }
  void Close() override {
    stream_->Shutdown();
  }
  std::string error() const override {
    return stream_->error();
  }

  Stream& stream() {
    return *stream_;
  }

 private:
  std::unique_ptr<Stream> stream_;
  bool opened_ = false;  // the handshake finished at some point
};

}  // namespace sluice::tls
