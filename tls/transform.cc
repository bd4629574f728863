#include "tls/transform.h"

namespace sluice::tls {

void TlsTransform::Start() {
  // A client's first Process() writes the ClientHello; a server's does
  // nothing until the ClientHello arrives.
  std::string none;
  stream_->Process(&none);
}

bool TlsTransform::Receive(std::string_view cipher, std::string* plain) {
  if (!stream_->FeedCiphertext(cipher))
    return false;
  const Stream::State state = stream_->Process(plain);
  if (state == Stream::State::kOpen || state == Stream::State::kClosed)
    opened_ = true;
  return state != Stream::State::kFailed;
}

bool TlsTransform::Send(std::string_view plain, std::string* cipher) {
  if (!stream_->WritePlaintext(plain))
    return false;
  *cipher += stream_->TakeCiphertext();
  return true;
}

bool TlsTransform::handshake_done() const {
  const Stream::State s = stream_->state();
  return opened_ || s == Stream::State::kOpen || s == Stream::State::kClosed;
}

}  // namespace sluice::tls
