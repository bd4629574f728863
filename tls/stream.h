#pragma once

// Stream: one TLS connection, sans I/O. The reactor feeds received ciphertext in, calls
// Process, sends whatever TakeCiphertext returns, and hands plaintext to the SMTP session.
// Nothing here touches a socket, a clock or another thread: a Stream belongs to the shard that
// made it. Internally it is a BoringSSL SSL over two memory BIOs (docs/design.md §7).
//
// Typical loop on the reactor:
//   stream->FeedCiphertext(received);
//   State s = stream->Process(&plaintext);
//   if (stream->HasCiphertext()) send(stream->TakeCiphertext());   // also after kFailed: alert
//   if (s == kFailed) { log(stream->error()); close; }
//
// STARTTLS (RFC 3207 §4.2): plaintext the peer pipelined after the STARTTLS command belongs to the
// caller, which must discard it before creating the Stream (Connection::DiscardInbox).

#include <memory>
#include <string>
#include <string_view>

#include "tls/context.h"

struct ssl_st;
struct bio_st;

namespace sluice::tls {

class Stream {
 public:
  // A server-side stream (implicit TLS on 465, or STARTTLS on 25/587).
  static std::unique_ptr<Stream> Server(std::shared_ptr<ServerContext> ctx);

  // A client-side stream. SNI is server_name when it is a DNS name (not an IP literal). The
  // certificate is always checked against ctx's CA file and server_name (host name, or IP address
  // for a literal) and the result recorded (peer_verified, verify_error). With verify the
  // handshake fails on a bad certificate; without it (opportunistic TLS, RFC 7435 §3) it goes on.
  // A session cached for the same server_name and verify mode is offered for resumption.
  static std::unique_ptr<Stream> Client(std::shared_ptr<ClientContext> ctx, std::string server_name,
                                        bool verify);

  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Buffers received ciphertext. Returns false when the stream has already failed (error()).
  // Nothing is parsed here: call Process next.
  bool FeedCiphertext(std::string_view data);

  enum class State {
    kHandshaking,
    kOpen,
    kClosed,  // the peer sent close_notify; no more plaintext will come
    kFailed,  // fatal error (error()); send any pending ciphertext (the alert), then close
  };

  // Drives the handshake and decrypts everything buffered, appending plaintext to *plaintext_out
  // (which must not be null). Call after every FeedCiphertext. kClosed and kFailed are final.
  State Process(std::string* plaintext_out);

  // Encrypts application data; allowed only in kOpen before Shutdown. False (and kFailed on a TLS
  // error) otherwise.
  bool WritePlaintext(std::string_view data);

  // Ciphertext to send: handshake records, encrypted data, alerts. Moves it out.
  std::string TakeCiphertext();
  bool HasCiphertext() const;

  // Queues close_notify (RFC 8446 §6.1) when the handshake has completed; no-op otherwise or when
  // already sent. Reading stays possible until the peer's close_notify.
  void Shutdown();

  State state() const {
    return state_;
  }
  bool is_server() const {
    return is_server_;
  }
  // Last fatal error, for humans: the BoringSSL error queue (ERR_error_string_n), plus the
  // certificate verify result when that was the cause. "" while nothing failed.
  const std::string& error() const {
    return error_;
  }
  // Negotiated protocol version ("TLSv1.3") and cipher ("TLS_AES_128_GCM_SHA256"); "" before the
  // handshake completes.
  std::string version() const;
  std::string cipher() const;
  // Whether the handshake resumed a session (ticket or session ID).
  bool resumed() const;
  // Client side: the server's chain verified against the CA file and matched server_name. Also
  // true after a resumption of a session that was verified. False on the server side.
  bool peer_verified() const;
  // Client side: X509_verify_cert_error_string of the verify result ("ok", "Hostname mismatch",
  // "self signed certificate", ...); "" before a certificate was seen and on the server side.
  std::string verify_error() const;
  // Server side: the name the client asked for with SNI; "" when none (or on the client side).
  std::string sni() const;

  // The underlying SSL for diagnostics and tests (peer certificate, signature algorithm
  // preferences). Do not drive I/O on it.
  ssl_st* native_handle() const {
    return ssl_;
  }

  // For the client session cache callback (tls/detail): this stream's context and cache key.
  ClientContext* client_context() const {
    return client_ctx_.get();
  }
  const std::string& session_key() const {
    return session_key_;
  }

 private:
  Stream(ssl_st* ssl, bool is_server);
  void Fail(int ssl_error, std::string_view during);
  void OnHandshakeDone();

  // Immutable after construction.
  ssl_st* ssl_ = nullptr;
  bio_st* rbio_ = nullptr;  // owned by ssl_: ciphertext received, read by BoringSSL
  bio_st* wbio_ = nullptr;  // owned by ssl_: ciphertext BoringSSL produced, taken by the caller
  bool is_server_ = false;
  std::shared_ptr<ServerContext> server_ctx_;  // keeps the SSL_CTXs alive (SIGHUP swap)
  std::shared_ptr<ClientContext> client_ctx_;
  std::string session_key_;  // client: session cache key (verify mode + host name)

  // Mutable state.
  State state_ = State::kHandshaking;
  bool shutdown_sent_ = false;
  std::string error_;
};

}  // namespace sluice::tls
