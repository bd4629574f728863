#pragma once

// Session: one inbound SMTP connection, as one coroutine on its shard.
// RFC 5321 state machine with PIPELINING (RFC 2920), CHUNKING (RFC 3030),
// DSN parameters (RFC 3461), SIZE (RFC 1870), 8BITMIME, SMTPUTF8 (RFC 6531)
// and enhanced status codes (RFC 3463, RFC 2034).
//
// The message is in the spool and fsync'd before "250 ... queued as" is
// written (DESIGN.md promise 1).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gateway/config.h"
#include "gateway/telemetry.h"
#include "io/connection.h"
#include "io/net.h"
#include "io/task.h"
#include "queue/envelope.h"
#include "queue/message_id.h"
#include "smtp/command.h"
#include "smtp/line_reader.h"

namespace sluice::gateway {

class ShardContext;

class Session {
 public:
  Session(ShardContext& ctx, size_t listener_index, int fd, io::IpAddress peer);
  ~Session();

  io::Task<void> Run();
  // Shutdown: an idle session answers 421 4.3.2 and closes; one in DATA
  // finishes its transaction first.
  void Interrupt() { conn_.Interrupt(); }
  // Grace period over: fail every pending read and send.
  void Abort() { conn_.Abort(); }
  size_t listener_index() const { return listener_index_; }
  const io::IpAddress& peer() const { return peer_; }

 private:
  enum class Outcome { kContinue, kClose };

  io::Task<Outcome> Handle(std::string line);
  // TLS: upgrade the connection and run the handshake (STARTTLS or implicit).
  io::Task<bool> StartTls();
  io::Task<Outcome> OnStartTls(std::string arg);
  io::Task<Outcome> OnAuth(std::string arg);
  // One client line during an AUTH exchange; nullopt when the client is gone.
  io::Task<std::optional<std::string>> ReadAuthLine();
  Outcome OnEhlo(std::string_view arg, bool extended);
  Outcome OnMail(std::string_view arg);
  Outcome OnRcpt(std::string_view arg);
  io::Task<Outcome> OnData(std::string_view arg);
  io::Task<Outcome> OnBdat(std::string arg);
  io::Task<Outcome> Commit();
  // A new message: id, our Received header at the start of body_.
  void StartBody();
  // The client stopped sending mid-body: 421 on timeout, nothing otherwise.
  void AbandonBody(io::ReadStatus status);
  // Answers and ends the transaction if a body check failed.
  bool RejectBody(bool bare_newline, bool too_big, bool line_too_long);
  void ResetTransaction();
  std::string ReceivedHeader(const std::string& id) const;
  bool RelayAllowed(const smtp::Path& rcpt) const;

  // Replies are collected and flushed together once the client's pipelined
  // input is consumed (RFC 2920 §3.2).
  void Reply(int code, std::string_view enhanced, std::string_view text);
  void Reply(const smtp::Reply& r) { Reply(r.code, r.enhanced, r.text); }
  // Counts a refusal and writes a "rejected" event with the reply just queued.
  void Reject(Rejection kind, std::string_view stage, const std::string& recipient);
  io::Task<bool> Flush();
  // Counts 5xx replies; true once the client hit the error limit.
  bool TooManyErrors();

  ShardContext& ctx_;
  const ListenerConfig& listener_;
  const size_t listener_index_;
  Telemetry& tel_;
  const unsigned shard_index_;
  io::Connection conn_;
  io::IpAddress peer_;
  smtp::LineReader lines_;
  std::string out_;

  // Session state.
  bool secure_ = false;  // TLS is up
  std::string tls_version_, tls_cipher_;
  std::string auth_user_;  // after a successful AUTH
  std::string helo_;
  bool greeted_ = false;
  bool esmtp_ = false;
  size_t errors_ = 0;
  size_t junk_ = 0;

  // Transaction state.
  bool in_mail_ = false;
  MonoTime mail_started_{};
  smtp::MailFrom mail_;
  std::vector<queue::Recipient> rcpts_;
  size_t rcpt_attempts_ = 0;
  queue::MessageId id_;
  std::string body_;       // Received header + message as it arrives
  size_t header_len_ = 0;  // length of our Received header in body_
  bool bdat_active_ = false;
  bool bdat_failed_ = false;
  smtp::Reply bdat_error_;
  struct BdatState;
  std::unique_ptr<BdatState> bdat_;
};

}  // namespace sluice::gateway
