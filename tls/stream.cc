#include "tls/stream.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "base/log.h"
#include "tls/counters.h"
#include "tls/detail/contexts.h"
#include "tls/detail/errors.h"

namespace sluice::tls {

namespace {

// Plaintext is decrypted straight into the caller's string in steps of one maximum record.
constexpr size_t kReadChunk = 16384;
// Plaintext is handed to SSL_write in pieces of at most this much (SSL_write takes an int).
constexpr size_t kWriteChunk = 1 << 20;

Stream* StreamOf(const SSL* ssl) {
  return static_cast<Stream*>(SSL_get_ex_data(ssl, 0));  // slot 0: BoringSSL's app_data
}

}  // namespace

namespace detail {

std::string DrainErrors() {
  std::string out;
  while (uint32_t code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    if (!out.empty()) {
      out += "; ";
    }
    out += buf;
  }
  return out;
}

int StoreClientSession(SSL* ssl, SSL_SESSION* session) {
  Stream* stream = StreamOf(ssl);
  if (stream == nullptr || stream->client_context() == nullptr || stream->session_key().empty()) {
    return 0;  // not taken: BoringSSL keeps its reference
  }
  // Returning 1 hands us the reference BoringSSL passed in.
  stream->client_context()->impl().Store(stream->session_key(),
                                         bssl::UniquePtr<SSL_SESSION>(session));
  return 1;
}

}  // namespace detail

Stream::Stream(SSL* ssl, bool is_server) : ssl_(ssl), is_server_(is_server) {
  rbio_ = BIO_new(BIO_s_mem());
  wbio_ = BIO_new(BIO_s_mem());
  SLUICE_CHECK(rbio_ != nullptr && wbio_ != nullptr);
  // An empty read BIO means "no more data yet" (retry), not end of stream.
  BIO_set_mem_eof_return(rbio_, -1);
  SSL_set_bio(ssl_, rbio_, wbio_);  // ssl_ owns both from here
  SSL_set_ex_data(ssl_, 0, this);
}

Stream::~Stream() {
  SSL_free(ssl_);
}

std::unique_ptr<Stream> Stream::Server(std::shared_ptr<ServerContext> ctx) {
  SSL* ssl = SSL_new(ctx->impl().initial());
  SLUICE_CHECK(ssl != nullptr);  // allocation only
  std::unique_ptr<Stream> stream(new Stream(ssl, /*is_server=*/true));
  stream->server_ctx_ = std::move(ctx);
  SSL_set_accept_state(ssl);
  return stream;
}

std::unique_ptr<Stream> Stream::Client(std::shared_ptr<ClientContext> ctx, std::string server_name,
                                       bool verify) {
  SSL* ssl = SSL_new(ctx->impl().ctx.get());
  SLUICE_CHECK(ssl != nullptr);  // allocation only
  std::unique_ptr<Stream> stream(new Stream(ssl, /*is_server=*/false));
  SSL_set_connect_state(ssl);

  if (!server_name.empty() && server_name.back() == '.') {
    server_name.pop_back();
  }
  bool literal = detail::IsIpLiteral(server_name);
  if (detail::IsDnsName(server_name)) {
    // RFC 6066 §3: SNI carries host names only.
    SSL_set_tlsext_host_name(ssl, server_name.c_str());
  }
  // The name is checked in both modes so the outcome is known; only verify makes it fatal.
  // Without a server_name only the chain is checked.
  // BoringSSL's SSL_VERIFY_NONE on a client still runs X509_verify_cert and records the result
  // (SSL_get_verify_result) without failing the handshake: exactly opportunistic TLS.
  if (!server_name.empty()) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    if (literal) {
      X509_VERIFY_PARAM_set1_ip_asc(param, server_name.c_str());
    } else {
      SSL_set1_host(ssl, server_name.c_str());
    }
  }
  SSL_set_verify(ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);

  // Sessions are cached per verify mode: an opportunistic session (its certificate perhaps
  // never verified) must not be resumed where verification is required, since resumption skips
  // the certificate check.
  if (!server_name.empty()) {
    stream->session_key_ =
        std::string(verify ? "verify:" : "opportunistic:") + detail::NormalizeHostName(server_name);
    if (bssl::UniquePtr<SSL_SESSION> session = ctx->impl().Lookup(stream->session_key_)) {
      SSL_set_session(ssl, session.get());  // takes its own reference
    }
  }
  stream->client_ctx_ = std::move(ctx);
  return stream;
}

bool Stream::FeedCiphertext(std::string_view data) {
  if (state_ == State::kFailed) {
    return false;
  }
  if (data.empty()) {
    return true;
  }
  // A memory BIO write only fails when allocation fails.
  SLUICE_CHECK(BIO_write(rbio_, data.data(), static_cast<int>(data.size())) ==
               static_cast<int>(data.size()));
  return true;
}

Stream::State Stream::Process(std::string* plaintext_out) {
  SLUICE_CHECK(plaintext_out != nullptr);
  if (state_ == State::kFailed || state_ == State::kClosed) {
    return state_;
  }
  ERR_clear_error();
  if (state_ == State::kHandshaking) {
    int rc = SSL_do_handshake(ssl_);
    if (rc != 1) {
      int err = SSL_get_error(ssl_, rc);
      if (err != SSL_ERROR_WANT_READ) {
        Fail(err, "handshake");
      }
      return state_;
    }
    OnHandshakeDone();
  }
  // Decrypt everything buffered. Post-handshake messages (TLS 1.3 NewSessionTicket, KeyUpdate)
  // are handled inside SSL_read too.
  for (;;) {
    size_t old = plaintext_out->size();
    plaintext_out->resize(old + kReadChunk);
    int n = SSL_read(ssl_, plaintext_out->data() + old, static_cast<int>(kReadChunk));
    plaintext_out->resize(old + static_cast<size_t>(std::max(n, 0)));
    if (n > 0) {
      continue;
    }
    int err = SSL_get_error(ssl_, n);
    if (err == SSL_ERROR_WANT_READ) {
      break;
    }
    if (err == SSL_ERROR_ZERO_RETURN) {
      state_ = State::kClosed;
      break;
    }
    Fail(err, "read");
    break;
  }
  return state_;
}

bool Stream::WritePlaintext(std::string_view data) {
  if (state_ != State::kOpen || shutdown_sent_) {
    return false;
  }
  ERR_clear_error();
  while (!data.empty()) {
    int len = static_cast<int>(std::min(data.size(), kWriteChunk));
    // Memory BIOs never block, so SSL_write either takes everything or fails.
    int n = SSL_write(ssl_, data.data(), len);
    if (n <= 0) {
      Fail(SSL_get_error(ssl_, n), "write");
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string Stream::TakeCiphertext() {
  const uint8_t* contents = nullptr;
  size_t len = 0;
  if (!BIO_mem_contents(wbio_, &contents, &len) || len == 0) {
    return {};
  }
  std::string out(reinterpret_cast<const char*>(contents), len);
  BIO_reset(wbio_);
  return out;
}

bool Stream::HasCiphertext() const {
  return BIO_pending(wbio_) > 0;
}

void Stream::Shutdown() {
  if (shutdown_sent_ || (state_ != State::kOpen && state_ != State::kClosed)) {
    return;
  }
  shutdown_sent_ = true;
  ERR_clear_error();
  // Returns 0 ("sent, peer's not seen yet") or 1; the close_notify is in wbio_ either way.
  if (SSL_shutdown(ssl_) < 0) {
    spdlog::debug("tls: SSL_shutdown: {}", detail::DrainErrors());
  }
}

std::string Stream::version() const {
  if (state_ == State::kHandshaking || SSL_in_init(ssl_)) {
    return {};
  }
  return SSL_get_version(ssl_);
}

std::string Stream::cipher() const {
  const SSL_CIPHER* c = SSL_get_current_cipher(ssl_);
  return c != nullptr ? SSL_CIPHER_standard_name(c) : "";
}

bool Stream::resumed() const {
  return SSL_session_reused(ssl_) == 1;
}

bool Stream::peer_verified() const {
  if (is_server_ || state_ == State::kHandshaking || state_ == State::kFailed) {
    return false;
  }
  return SSL_get_verify_result(ssl_) == X509_V_OK && SSL_get0_peer_certificates(ssl_) != nullptr;
}

std::string Stream::verify_error() const {
  if (is_server_ || SSL_get0_peer_certificates(ssl_) == nullptr) {
    return {};
  }
  return X509_verify_cert_error_string(SSL_get_verify_result(ssl_));
}

std::string Stream::sni() const {
  if (!is_server_) {
    return {};
  }
  const char* name = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
  return name != nullptr ? name : "";
}

void Stream::OnHandshakeDone() {
  state_ = State::kOpen;
  HandshakeCounters& counters = ProcessHandshakeCounters();
  bool reused = resumed();
  if (is_server_) {
    counters.server_ok.fetch_add(1, std::memory_order_relaxed);
    if (reused) {
      counters.server_resumed.fetch_add(1, std::memory_order_relaxed);
    }
  } else {
    counters.client_ok.fetch_add(1, std::memory_order_relaxed);
    if (reused) {
      counters.client_resumed.fetch_add(1, std::memory_order_relaxed);
    }
    if (!peer_verified()) {
      counters.client_unverified.fetch_add(1, std::memory_order_relaxed);
    }
  }
  (SSL_version(ssl_) == TLS1_3_VERSION ? counters.tls13 : counters.tls12)
      .fetch_add(1, std::memory_order_relaxed);
}

void Stream::Fail(int ssl_error, std::string_view during) {
  bool in_handshake = state_ == State::kHandshaking;
  state_ = State::kFailed;
  error_ = "TLS ";
  error_ += during;
  error_ += " failed: ";
  std::string queue = detail::DrainErrors();
  if (!queue.empty()) {
    error_ += queue;
  } else {
    error_ += SSL_error_description(ssl_error);
  }
  if (!is_server_ && SSL_get0_peer_certificates(ssl_) != nullptr) {
    long result = SSL_get_verify_result(ssl_);
    if (result != X509_V_OK) {
      error_ += " (certificate: ";
      error_ += X509_verify_cert_error_string(result);
      error_ += ")";
    }
  }
  if (in_handshake) {
    HandshakeCounters& counters = ProcessHandshakeCounters();
    (is_server_ ? counters.server_failed : counters.client_failed)
        .fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace sluice::tls
