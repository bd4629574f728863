#pragma once

// The outbound SMTP (RFC 5321) and LMTP (RFC 2033) client: one object per
// connection, driven by one delivery coroutine on the connection's shard.
//
//   io::Connection conn(shard, fd);  conn.Start();
//   SmtpClient client(conn, options);
//   smtp::Reply hello = co_await client.Handshake();
//   if (client.usable()) { TransactionResult r = co_await client.Send(std::move(msg)); ... }
//   co_await client.Quit();  co_await conn.Close();
//
// Every outcome is a per-recipient smtp::Reply: the server's own, or a
// synthetic one ("451 4.4.2 ...") when the server could not give one
// (timeout, connection lost). Nothing here throws or asserts on what the
// server sends.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/clock.h"
#include "delivery/client/ehlo.h"
#include "delivery/client/reply_parser.h"
#include "io/task.h"
#include "smtp/params.h"
#include "smtp/reply.h"
#include "tls/context.h"

namespace sluice::io {
class Connection;
}  // namespace sluice::io

namespace sluice::delivery {

struct ClientOptions {
  std::string helo_name;  // our name in EHLO/LHLO/HELO
  // RFC 2033: LHLO instead of EHLO (no HELO fallback), and one reply per
  // accepted recipient after the final dot.
  bool lmtp = false;
  // Reply timeouts, Postfix defaults (smtp_*_timeout; RFC 5321 §4.5.3.2
  // gives the same minimums). Each bounds one wait for one reply; the send
  // of the commands before it gets the same bound.
  Duration greeting_timeout = std::chrono::seconds(300);
  Duration helo_timeout = std::chrono::seconds(300);
  Duration mail_timeout = std::chrono::seconds(300);  // also RSET
  Duration rcpt_timeout = std::chrono::seconds(300);
  Duration data_init_timeout = std::chrono::seconds(120);  // the 354 after DATA
  // Per body chunk sent (kBodyChunk bytes): a slow but moving peer is fine.
  Duration data_block_timeout = std::chrono::seconds(180);
  Duration data_done_timeout = std::chrono::seconds(600);  // reply(ies) after the final dot
  // QUIT is a courtesy; do not hold a delivery slot for it.
  Duration quit_timeout = std::chrono::seconds(10);

  // Outbound TLS (RFC 3207). Opportunistic (RFC 7435): STARTTLS when
  // offered, unverified; a failed handshake leaves the connection unusable
  // and tls_failed() true, so the caller reconnects in plaintext. Required:
  // STARTTLS must be offered and the certificate must verify for
  // tls_server_name, else the handshake answers 4xx (the message waits).
  enum class TlsPolicy { kDisabled, kOpportunistic, kRequired };
  TlsPolicy tls_policy = TlsPolicy::kDisabled;
  std::shared_ptr<::sluice::tls::ClientContext> tls_context;
  std::string tls_server_name;  // SNI and the name the certificate must match
  Duration tls_timeout = std::chrono::seconds(30);
  // Smarthost AUTH (RFC 4954), PLAIN when offered, else LOGIN; only over TLS.
  std::string auth_user, auth_password;
};

struct OutboundRecipient {
  std::string address;  // without angle brackets
  uint8_t notify = 0;   // smtp::NotifyFlag bits; 0 = no NOTIFY parameter
  std::string orcpt;    // "addr-type;xtext" as received, empty = none
};

struct OutboundMessage {
  std::string sender;  // "" = null sender (MAIL FROM:<>)
  std::vector<OutboundRecipient> recipients;
  smtp::BodyType body_type = smtp::BodyType::kUnspecified;
  bool smtputf8 = false;  // the envelope or headers need SMTPUTF8 (RFC 6531)
  smtp::Ret ret = smtp::Ret::kUnspecified;
  std::string envid;  // xtext as received, empty = none
  // The message as stored: CRLF lines, not dot-stuffed. Shared so that many
  // destinations can send one body without copies. May be null (empty body).
  std::shared_ptr<const std::string> body;
};

struct TransactionResult {
  // Exactly one per recipient, in order: the RCPT reply if RCPT failed, else
  // the final reply (end of DATA, or that recipient's LMTP reply).
  std::vector<smtp::Reply> recipients;
  // False after a timeout, a protocol error, a 421 or connection loss: the
  // caller closes the connection instead of reusing it.
  bool connection_usable = false;
};

class SmtpClient {
 public:
  // The body is sent in chunks of this size, each dot-stuffed into its own
  // buffer and handed to one SendAll: memory stays bounded for big messages
  // and data_block_timeout applies per chunk.
  static constexpr size_t kBodyChunk = 1 << 20;

  // conn must be started (Connection::Start) and outlive the client.
  SmtpClient(io::Connection& conn, ClientOptions options);
  SmtpClient(const SmtpClient&) = delete;
  SmtpClient& operator=(const SmtpClient&) = delete;

  // Reads the greeting and sends EHLO (LHLO for LMTP); a 5xx to EHLO falls
  // back to HELO (RFC 5321 §3.2; not for LMTP). Returns the 2xx EHLO/HELO
  // reply on success; otherwise the failing greeting/EHLO/HELO reply or a
  // synthetic 451, and usable() is false.
  io::Task<smtp::Reply> Handshake();

  const Capabilities& capabilities() const {
    return caps_;
  }
  // Handshake done and nothing went wrong since: Send may be called.
  bool tls_failed() const {
    return tls_failed_;
  }
  bool secure() const {
    return secure_;
  }
  bool tls_verified() const {
    return tls_verified_;
  }
  const std::string& tls_version() const {
    return tls_version_;
  }
  bool usable() const {
    return ready_ && !broken_;
  }
  // Transactions started on this connection.
  uint64_t transactions() const {
    return transactions_;
  }

  // One mail transaction (see TransactionResult). RSET first only if the
  // previous one was left open (MAIL accepted, no final reply). With
  // PIPELINING (RFC 2920) RSET, MAIL, every RCPT and DATA go out in one write;
  // otherwise lock-step.
  //
  // `next`, with PIPELINING: the message the caller sends next on this
  // connection. Its MAIL/RCPT/DATA go out right behind this message's final
  // dot (RFC 2920 §3.1), so the next Send only reads their replies. The
  // caller must then make that Send its next call (or Quit, which closes
  // without QUIT since the server may be waiting for content).
  io::Task<TransactionResult> Send(OutboundMessage message, const OutboundMessage* next = nullptr);

  // QUIT and wait briefly for 221 (RFC 5321 §4.1.1.10). Skipped when the
  // connection is broken. Never fails; the caller closes the connection.
  io::Task<void> Quit();

 private:
  // Reads one reply. A timeout, lost connection or malformed reply comes
  // back as a synthetic 451 and marks the connection broken; so does 421.
  io::Task<smtp::Reply> ReadReply(Duration timeout, std::string_view phase);
  // Sends data; on failure marks the connection broken, sets failure_ and
  // returns false.
  io::Task<bool> Write(std::string data, Duration timeout, std::string_view phase);
  // Dot-stuffs and sends the body and the final dot, then `tail` in the same write.
  io::Task<bool> WriteBody(std::shared_ptr<const std::string> body, std::string tail);

  enum class Command : uint8_t { kRset, kMail, kRcpt, kData };
  struct Step {
    Command command;
    size_t end;  // offset in the group's wire text after this command
  };
  // A refusal that needs no round trip (size, SMTPUTF8, BINARYMIME, CR/LF in
  // the envelope), or nothing.
  std::optional<smtp::Reply> Precheck(const OutboundMessage& message) const;
  // Appends [RSET] MAIL RCPT... DATA for message to *wire.
  void BuildGroup(const OutboundMessage& message, bool rset, std::string* wire,
                  std::vector<Step>* steps) const;

  io::Connection& conn_;
  const ClientOptions options_;
  ReplyParser parser_;
  Capabilities caps_;
  bool ready_ = false;   // handshake succeeded
  bool broken_ = false;  // timeout, protocol error, 421, loss or QUIT: never reuse
  bool tls_failed_ = false;
  bool secure_ = false;
  bool tls_verified_ = false;
  std::string tls_version_;
  io::Task<smtp::Reply> Ehlo();
  io::Task<smtp::Reply> StartTls();
  io::Task<smtp::Reply> Authenticate();
  uint64_t transactions_ = 0;
  std::optional<std::vector<Step>> prepared_;  // the next message's group, already written
  bool open_transaction_ = false;  // MAIL accepted and no final reply yet: RSET before the next
  smtp::Reply failure_;            // why the last Write failed
};

}  // namespace sluice::delivery
