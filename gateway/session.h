#pragma once

// Session: one inbound SMTP connection, as one coroutine on its shard.
// RFC 5321 state machine with PIPELINING (RFC 2920), CHUNKING (RFC 3030),
// DSN parameters (RFC 3461), SIZE (RFC 1870), 8BITMIME, SMTPUTF8 (RFC 6531)
// and enhanced status codes (RFC 3463, RFC 2034).
//
// The message is in the spool and fsync'd before "250 ... queued as" is
// written (docs/design.md §1, promise 1).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gateway/body_budget.h"
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
  // `client`: the peer's key for per-client accounting (Server::ClientKey); the session holds
  // one connection slot for it (Server::AdmitConnection) until ReleaseSlot().
  Session(ShardContext& ctx, size_t listener_index, int fd, io::IpAddress peer, std::string client);
  ~Session();

  io::Task<void> Run();
  // Shutdown: an idle session answers 421 4.3.2 and closes; one in DATA
  // finishes its transaction first.
  void Interrupt() {
    conn_.Interrupt();
  }
  // Grace period over: fail every pending read and send.
  void Abort() {
    conn_.Abort();
  }
  size_t listener_index() const {
    return listener_index_;
  }
  const io::IpAddress& peer() const {
    return peer_;
  }
  // Gives the connection slot back (once): when the session has ended, before its socket is
  // torn down, so the client's next connection is judged without it.
  void ReleaseSlot();

 private:
  enum class Outcome { kContinue, kClose };

  // The command loop, from the greeting to the end of the session.
  io::Task<void> Converse();
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
  void Reply(const smtp::Reply& r) {
    Reply(r.code, r.enhanced, r.text);
  }
  // Counts a refusal and writes a "rejected" event with the reply just queued.
  void Reject(Rejection kind, std::string_view stage, const std::string& recipient);
  // Sends the replies queued so far; false if the client did not take them within `timeout`
  // or is gone.
  io::Task<bool> Flush(Duration timeout);
  io::Task<bool> Flush() {
    return Flush(listener_.command_timeout);
  }
  // After every command: the hard error and junk limits (false: 421 queued, close), the soft
  // error limit's slowdown, and the bound on replies the client has not read yet.
  io::Task<bool> AfterCommand();
  bool TooManyErrors() const {
    return errors_ >= listener_.hard_error_limit;
  }
  // Room in body_ (and in the process-wide body budget) for `incoming` more octets of the
  // message, up to its size limit; false when the budget has none.
  bool MakeRoomForBody(uint64_t incoming);
  // body_ with exactly `capacity` (if it has less), taken from the budget first; without room,
  // false, unless over_budget_ok (a few octets that must not fail a complete message).
  bool ReserveBody(uint64_t capacity, bool over_budget_ok = false);
  // 452 4.3.1 for a message that found no room in the body budget.
  void NoRoomForBody(std::string_view stage);
  // Sender-specified routing in a local part ('%', '!', a quoted '@'), refused from untrusted
  // clients unless the listener allows it.
  bool UntrustedRouting(const smtp::Path& rcpt) const;
  bool Trusted() const;

  ShardContext& ctx_;
  const ListenerConfig& listener_;
  const size_t listener_index_;
  Telemetry& tel_;
  const unsigned shard_index_;
  io::Connection conn_;
  io::IpAddress peer_;
  const std::string client_;  // Server::ClientKey of peer_
  bool slot_released_ = false;
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
  // envelope_bytes_ + body_.capacity(), taken from the process-wide budget.
  BodyBudget::Lease body_lease_;
  uint64_t envelope_bytes_ = 0;  // what rcpts_ holds, roughly
  bool body_no_room_ = false;    // the budget ran out mid-body: read to the end, then 452
  bool bdat_active_ = false;
  bool bdat_failed_ = false;
  smtp::Reply bdat_error_;
  struct BdatState;
  std::unique_ptr<BdatState> bdat_;
};

}  // namespace sluice::gateway
