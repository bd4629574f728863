#include "delivery/client/smtp_client.h"

#include <algorithm>
#include <utility>

#include "auth/base64.h"
#include "delivery/client/dot_stuffer.h"
#include "io/connection.h"
#include "tls/transform.h"

namespace sluice::delivery {

namespace {

using smtp::MakeReply;
using smtp::Reply;

// The phase names below are string literals: coroutines keep the
// string_views in their frames.
constexpr std::string_view kGreeting = "greeting";
constexpr std::string_view kRset = "RSET";
constexpr std::string_view kMail = "MAIL FROM";
constexpr std::string_view kRcpt = "RCPT TO";
constexpr std::string_view kData = "DATA";
constexpr std::string_view kBody = "message transfer";
constexpr std::string_view kDataDone = "end of DATA";
constexpr std::string_view kQuit = "QUIT";

// RFC 3463 X.4.2 "bad connection": the transient status for a transfer that
// broke off. The queue retries these.
Reply TimedOut(std::string_view phase) {
  return MakeReply(451, "4.4.2", std::string(phase) + " timed out");
}
Reply Lost(std::string_view phase) {
  return MakeReply(451, "4.4.2", "connection lost during " + std::string(phase));
}
// RFC 3463 X.5.0: other protocol status. Transient: a confused peer today
// may be a working one tomorrow.
Reply Unexpected(std::string_view phase, const Reply& r) {
  return MakeReply(451, "4.5.0",
                   "unexpected reply to " + std::string(phase) + ": " + std::to_string(r.code) +
                       (r.enhanced.empty() ? "" : " " + r.enhanced) + " " + r.text);
}

bool Is2xx(const Reply& r) {
  return r.code / 100 == 2;
}
bool IsFailure(const Reply& r) {
  return r.code / 100 == 4 || r.code / 100 == 5;
}

// code 0 marks a recipient without a final reply yet.
void FillUnanswered(std::vector<Reply>* replies, const Reply& r) {
  for (Reply& slot : *replies) {
    if (slot.code == 0) {
      slot = r;
    }
  }
}

bool HasLineBreak(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

// Envelope fields come from our own spool and were checked on the way in; a
// line break here would let one field inject an SMTP command. Refuse.
bool EnvelopeIsClean(const OutboundMessage& m) {
  if (HasLineBreak(m.sender) || HasLineBreak(m.envid)) {
    return false;
  }
  return std::none_of(m.recipients.begin(), m.recipients.end(), [](const OutboundRecipient& r) {
    return HasLineBreak(r.address) || HasLineBreak(r.orcpt);
  });
}

void AppendMail(std::string* out, const OutboundMessage& m, size_t body_size,
                const Capabilities& caps) {
  out->append("MAIL FROM:<").append(m.sender).append(">");
  if (caps.size_offered) {
    out->append(" SIZE=").append(std::to_string(body_size));  // RFC 1870
  }
  if (m.body_type == smtp::BodyType::k8BitMime && caps.eightbitmime) {
    out->append(" BODY=8BITMIME");  // RFC 6152
  }
  if (m.smtputf8) {
    out->append(" SMTPUTF8");  // RFC 6531 §3.4; checked against caps before
  }
  if (caps.dsn) {  // RFC 3461 §4.3, §4.4
    if (m.ret == smtp::Ret::kFull) {
      out->append(" RET=FULL");
    }
    if (m.ret == smtp::Ret::kHdrs) {
      out->append(" RET=HDRS");
    }
    if (!m.envid.empty()) {
      out->append(" ENVID=").append(m.envid);
    }
  }
  out->append("\r\n");
}

void AppendRcpt(std::string* out, const OutboundRecipient& r, const Capabilities& caps) {
  out->append("RCPT TO:<").append(r.address).append(">");
  if (caps.dsn) {  // RFC 3461 §4.1, §4.2
    if (r.notify & smtp::kNotifyNever) {
      out->append(" NOTIFY=NEVER");
    } else if (r.notify != 0) {
      const char* sep = " NOTIFY=";
      for (const auto& [flag, name] :
           {std::pair{smtp::kNotifySuccess, "SUCCESS"}, std::pair{smtp::kNotifyFailure, "FAILURE"},
            std::pair{smtp::kNotifyDelay, "DELAY"}}) {
        if (r.notify & flag) {
          out->append(sep).append(name);
          sep = ",";
        }
      }
    }
    if (!r.orcpt.empty()) {
      out->append(" ORCPT=").append(r.orcpt);
    }
  }
  out->append("\r\n");
}

}  // namespace

SmtpClient::SmtpClient(io::Connection& conn, ClientOptions options)
    : conn_(conn), options_(std::move(options)) {
  // We wait for replies with nothing to send meanwhile (a pipelined group, RFC 2920; a
  // multi-line reply), from servers that may write each reply, or each line, on its own with
  // Nagle on: without quick ACKs every second segment waits for our delayed ACK (40 ms).
  conn_.SetQuickAck(true);
}

io::Task<smtp::Reply> SmtpClient::ReadReply(Duration timeout, std::string_view phase) {
  io::Shard& shard = conn_.shard();
  const MonoTime deadline = shard.Now() + timeout;
  while (true) {
    ReplyParser::Next next = parser_.Take(conn_.inbox());
    conn_.Consume(next.consumed);
    if (next.status == ReplyParser::Status::kReply) {
      // RFC 5321 §3.8: 421 means the server is closing the channel.
      if (next.reply.code == 421) {
        broken_ = true;
      }
      co_return std::move(next.reply);
    }
    if (next.status == ReplyParser::Status::kError) {
      broken_ = true;
      co_return MakeReply(451, "4.5.0", "malformed reply during " + std::string(phase));
    }
    const Duration left = deadline - shard.Now();
    if (left <= Duration::zero()) {
      broken_ = true;
      co_return TimedOut(phase);
    }
    const io::ReadStatus status = co_await conn_.WaitForData(left, false);
    if (status == io::ReadStatus::kData) {
      continue;
    }
    broken_ = true;
    if (status == io::ReadStatus::kTimeout) {
      co_return TimedOut(phase);
    }
    co_return Lost(phase);
  }
}

io::Task<bool> SmtpClient::Write(std::string data, Duration timeout, std::string_view phase) {
  io::Shard& shard = conn_.shard();
  const MonoTime start = shard.Now();
  const bool sent = co_await conn_.SendAll(std::move(data), timeout);
  if (sent) {
    co_return true;
  }
  broken_ = true;
  // SendAll does not say why it failed; a send that ran to its deadline
  // timed out, anything earlier is a broken connection.
  failure_ = shard.Now() - start >= timeout ? TimedOut(phase) : Lost(phase);
  co_return false;
}

io::Task<bool> SmtpClient::WriteBody(std::shared_ptr<const std::string> body, std::string tail) {
  const std::string_view content = body ? std::string_view(*body) : std::string_view();
  DotStuffer stuffer;
  size_t pos = 0;
  do {
    const size_t n = std::min(kBodyChunk, content.size() - pos);
    std::string chunk;
    // Stuffing adds a byte per leading dot and per bare CR/LF; leave room
    // for a few so a typical chunk never reallocates.
    chunk.reserve(n + n / 64 + 8);
    stuffer.Append(&chunk, content.substr(pos, n));
    pos += n;
    if (pos == content.size()) {
      stuffer.Finish(&chunk);
      chunk.append(tail);
    }
    const bool sent = co_await Write(std::move(chunk), options_.data_block_timeout, kBody);
    if (!sent) {
      co_return false;
    }
  } while (pos < content.size());
  co_return true;
}

io::Task<smtp::Reply> SmtpClient::Handshake() {
  ready_ = false;
  Reply greeting = co_await ReadReply(options_.greeting_timeout, kGreeting);
  if (broken_) {
    co_return greeting;
  }
  if (!Is2xx(greeting)) {
    // RFC 5321 §3.1: a 554 greeting; the caller may still QUIT.
    co_return greeting;
  }
  Reply reply = co_await Ehlo();
  if (!ready_) {
    co_return reply;
  }
  if (options_.tls_policy != ClientOptions::TlsPolicy::kDisabled && caps_.esmtp) {
    Reply tls = co_await StartTls();
    if (!ready_) {
      co_return tls;
    }
    if (secure_) {
      reply = co_await Ehlo();  // RFC 3207 §4.2: the server forgot everything
      if (!ready_) {
        co_return reply;
      }
    }
  } else if (options_.tls_policy == ClientOptions::TlsPolicy::kRequired) {
    ready_ = false;
    co_return MakeReply(451, "4.7.4", "TLS required, but the server does not speak ESMTP");
  }
  if (!options_.auth_user.empty()) {
    Reply auth = co_await Authenticate();
    if (!ready_) {
      co_return auth;
    }
  }
  co_return reply;
}

io::Task<smtp::Reply> SmtpClient::Ehlo() {
  ready_ = false;
  const std::string_view hello = options_.lmtp ? "LHLO" : "EHLO";
  std::string command(hello);
  command.append(" ").append(options_.helo_name).append("\r\n");
  const bool sent = co_await Write(std::move(command), options_.helo_timeout, hello);
  if (!sent) {
    co_return failure_;
  }
  Reply reply = co_await ReadReply(options_.helo_timeout, hello);
  if (broken_) {
    co_return reply;
  }
  if (Is2xx(reply)) {
    caps_ = ParseEhlo(reply);
    ready_ = true;
    co_return reply;
  }
  // RFC 5321 §3.2: a server that does not know EHLO answers 5xx; HELO then.
  // LMTP has no HELO (RFC 2033 §4.1); after STARTTLS there is no going back.
  if (reply.code / 100 != 5 || options_.lmtp || secure_) {
    co_return reply;
  }

  std::string helo = "HELO " + options_.helo_name + "\r\n";
  const bool helo_sent = co_await Write(std::move(helo), options_.helo_timeout, "HELO");
  if (!helo_sent) {
    co_return failure_;
  }
  Reply helo_reply = co_await ReadReply(options_.helo_timeout, "HELO");
  if (!broken_ && Is2xx(helo_reply)) {
    caps_ = Capabilities{};  // plain SMTP: no extensions at all
    ready_ = true;
  }
  co_return helo_reply;
}

io::Task<smtp::Reply> SmtpClient::StartTls() {
  const bool required = options_.tls_policy == ClientOptions::TlsPolicy::kRequired;
  if (!caps_.starttls) {
    if (required) {
      ready_ = false;
      co_return MakeReply(451, "4.7.4", "TLS required, but STARTTLS is not offered");
    }
    co_return MakeReply(250, "2.0.0", "continuing without TLS");
  }
  if (!options_.tls_context) {
    if (required) {
      ready_ = false;
      co_return MakeReply(451, "4.7.0", "TLS required, but no TLS client context is configured");
    }
    co_return MakeReply(250, "2.0.0", "continuing without TLS");
  }
  const bool sent = co_await Write("STARTTLS\r\n", options_.helo_timeout, "STARTTLS");
  if (!sent) {
    co_return failure_;
  }
  Reply reply = co_await ReadReply(options_.helo_timeout, "STARTTLS");
  if (broken_) {
    co_return reply;
  }
  if (reply.code != 220) {
    if (required) {
      ready_ = false;
      co_return MakeReply(451, "4.7.4",
                          "TLS required, but STARTTLS was refused: " + std::to_string(reply.code) +
                              " " + reply.text);
    }
    co_return reply;  // opportunistic: carry on in plaintext on this connection
  }
  auto transform = std::make_unique<tls::TlsTransform>(
      tls::Stream::Client(options_.tls_context, options_.tls_server_name, required));
  tls::TlsTransform* t = transform.get();
  conn_.StartTransform(std::move(transform));
  const bool ok = co_await conn_.Handshake(options_.tls_timeout);
  if (!ok) {
    // The stream is in an unknown state: this connection is done. An
    // opportunistic caller reconnects without TLS (tls_failed()).
    tls_failed_ = true;
    broken_ = true;
    ready_ = false;
    std::string why = t->stream().error();
    if (why.empty())
      why = "TLS handshake timed out or the connection closed";
    co_return MakeReply(451, required ? "4.7.5" : "4.7.0", why);
  }
  secure_ = true;
  tls_verified_ = t->stream().peer_verified();
  tls_version_ = t->stream().version();
  co_return MakeReply(220, "2.0.0", "TLS up");
}

io::Task<smtp::Reply> SmtpClient::Authenticate() {
  if (!secure_) {
    ready_ = false;
    co_return MakeReply(451, "4.7.0", "refusing to send credentials without TLS");
  }
  const bool plain = std::find(caps_.auth.begin(), caps_.auth.end(), "PLAIN") != caps_.auth.end();
  const bool login = std::find(caps_.auth.begin(), caps_.auth.end(), "LOGIN") != caps_.auth.end();
  if (!plain && !login) {
    ready_ = false;
    co_return MakeReply(451, "4.7.0", "the smarthost offers neither AUTH PLAIN nor LOGIN");
  }
  Reply reply;
  if (plain) {
    std::string creds;
    creds.push_back('\0');
    creds += options_.auth_user;
    creds.push_back('\0');
    creds += options_.auth_password;
    const bool sent = co_await Write("AUTH PLAIN " + auth::EncodeBase64(creds) + "\r\n",
                                     options_.helo_timeout, "AUTH");
    if (!sent) {
      co_return failure_;
    }
    reply = co_await ReadReply(options_.helo_timeout, "AUTH");
  } else {
    const std::string steps[] = {"AUTH LOGIN", auth::EncodeBase64(options_.auth_user),
                                 auth::EncodeBase64(options_.auth_password)};
    for (const std::string& step : steps) {
      const bool sent = co_await Write(step + "\r\n", options_.helo_timeout, "AUTH");
      if (!sent) {
        co_return failure_;
      }
      reply = co_await ReadReply(options_.helo_timeout, "AUTH");
      if (broken_ || reply.code != 334) {
        break;
      }
    }
  }
  if (broken_) {
    co_return reply;
  }
  if (reply.code != 235) {
    // Wrong credentials are our configuration problem: keep the mail and retry.
    ready_ = false;
    co_return MakeReply(
        451, "4.7.8",
        "smarthost authentication failed: " + std::to_string(reply.code) + " " + reply.text);
  }
  co_return reply;
}

std::optional<Reply> SmtpClient::Precheck(const OutboundMessage& message) const {
  // Checks that need no round trip: the answer is the same on every attempt
  // with this peer, so these are permanent (RFC 3463 X.3.4, X.6.7, X.6.3).
  const size_t body_size = message.body ? message.body->size() : 0;
  if (caps_.size && body_size > *caps_.size) {  // RFC 1870 §6.1
    return MakeReply(552, "5.3.4",
                     "message size " + std::to_string(body_size) + " exceeds the remote limit of " +
                         std::to_string(*caps_.size));
  }
  if (message.smtputf8 && !caps_.smtputf8) {  // RFC 6531 §3.2
    return MakeReply(553, "5.6.7", "remote server does not support SMTPUTF8");
  }
  if (message.body_type == smtp::BodyType::kBinaryMime) {
    // RFC 3030 §3: BINARYMIME needs BDAT; this client sends DATA only (and
    // the gateway never accepts BINARYMIME).
    return MakeReply(554, "5.6.3", "BINARYMIME content cannot be sent with DATA");
  }
  if (!EnvelopeIsClean(message)) {
    return MakeReply(501, "5.5.2", "envelope contains a line break");
  }
  return std::nullopt;
}

void SmtpClient::BuildGroup(const OutboundMessage& message, bool rset, std::string* wire,
                            std::vector<Step>* steps) const {
  // The whole command group in one buffer; command i spans
  // [steps[i-1].end, steps[i].end). Pipelining sends it in one write,
  // lock-step one command at a time.
  const size_t base = wire->size();
  const size_t body_size = message.body ? message.body->size() : 0;
  steps->reserve(message.recipients.size() + 3);
  wire->reserve(base + 64 + message.sender.size() + message.envid.size() +
                message.recipients.size() * 48);
  if (rset) {
    wire->append("RSET\r\n");
    steps->push_back({Command::kRset, wire->size() - base});
  }
  AppendMail(wire, message, body_size, caps_);
  steps->push_back({Command::kMail, wire->size() - base});
  for (const OutboundRecipient& r : message.recipients) {
    AppendRcpt(wire, r, caps_);
    steps->push_back({Command::kRcpt, wire->size() - base});
  }
  wire->append("DATA\r\n");
  steps->push_back({Command::kData, wire->size() - base});
}

io::Task<TransactionResult> SmtpClient::Send(OutboundMessage message, const OutboundMessage* next) {
  const size_t n = message.recipients.size();
  TransactionResult result;
  result.recipients.resize(n);  // code 0 until answered

  if (!usable()) {
    FillUnanswered(&result.recipients, MakeReply(451, "4.4.2", "connection not usable"));
    co_return result;
  }
  result.connection_usable = true;

  std::vector<Step> steps;
  std::string wire;
  const bool already_sent = prepared_.has_value();
  if (already_sent) {
    // Our previous Send wrote this message's commands behind its final dot.
    steps = std::move(*prepared_);
    prepared_.reset();
  } else {
    if (n == 0) {
      co_return result;
    }
    if (std::optional<Reply> refused = Precheck(message)) {
      FillUnanswered(&result.recipients, *refused);
      co_return result;
    }
    // The last transaction may have ended before its final reply (MAIL accepted, then no
    // recipient or no 354): the server still holds its state. After a final reply there is
    // nothing to reset (RFC 5321 §4.1.1.4), so back-to-back messages need no RSET.
    BuildGroup(message, open_transaction_, &wire, &steps);
    ++transactions_;
  }

  const bool pipelined = caps_.pipelining;
  std::string lock_step_wire;  // lock-step: the commands are sent one by one from here
  if (!pipelined) {
    lock_step_wire = std::move(wire);
  } else if (!already_sent) {
    // RFC 2920 §3.1: DATA may end a group; the replies come back in order.
    const bool sent = co_await Write(std::move(wire), options_.mail_timeout, kMail);
    if (!sent) {
      FillUnanswered(&result.recipients, failure_);
      result.connection_usable = false;
      co_return result;
    }
  }

  bool mail_ok = false;
  size_t accepted = 0;
  size_t rcpt_index = 0;
  size_t begin = 0;
  Reply data_reply;
  for (const Step& step : steps) {
    const std::string_view phase = step.command == Command::kRset   ? kRset
                                   : step.command == Command::kMail ? kMail
                                   : step.command == Command::kRcpt ? kRcpt
                                                                    : kData;
    const Duration timeout = step.command == Command::kRcpt   ? options_.rcpt_timeout
                             : step.command == Command::kData ? options_.data_init_timeout
                                                              : options_.mail_timeout;
    if (!pipelined) {
      // Lock-step: nothing after a failed MAIL, no DATA without a recipient.
      if (step.command != Command::kRset && step.command != Command::kMail && !mail_ok) {
        break;
      }
      if (step.command == Command::kData && accepted == 0) {
        break;
      }
      const bool sent =
          co_await Write(lock_step_wire.substr(begin, step.end - begin), timeout, phase);
      begin = step.end;
      if (!sent) {
        FillUnanswered(&result.recipients, failure_);
        result.connection_usable = false;
        co_return result;
      }
    }
    Reply reply = co_await ReadReply(timeout, phase);
    if (broken_) {  // timeout, loss, malformed, 421
      FillUnanswered(&result.recipients, reply);
      result.connection_usable = false;
      co_return result;
    }
    switch (step.command) {
      case Command::kRset:
        if (!Is2xx(reply)) {
          broken_ = true;
          FillUnanswered(&result.recipients, Unexpected(phase, reply));
          result.connection_usable = false;
          co_return result;
        }
        open_transaction_ = false;
        break;
      case Command::kMail:
        if (Is2xx(reply)) {
          mail_ok = true;
          open_transaction_ = true;
        } else {
          // Pipelined: the server answers the RCPTs and DATA with 503 and
          // we read those replies to stay in step.
          FillUnanswered(&result.recipients, IsFailure(reply) ? reply : Unexpected(phase, reply));
        }
        break;
      case Command::kRcpt: {
        const size_t i = rcpt_index++;
        if (!mail_ok) {
          break;
        }
        if (Is2xx(reply)) {
          ++accepted;
        } else {
          result.recipients[i] = IsFailure(reply) ? reply : Unexpected(phase, reply);
        }
        break;
      }
      case Command::kData:
        data_reply = std::move(reply);
        break;
    }
  }

  if (!mail_ok || accepted == 0) {
    // Every recipient has its reply. If a pipelined DATA still got 354
    // (RFC 2920 §3.1 says it should not), end the empty message.
    if (data_reply.code == 354) {
      const bool sent = co_await Write(".\r\n", options_.data_done_timeout, kDataDone);
      if (sent) {
        Reply ignored = co_await ReadReply(options_.data_done_timeout, kDataDone);
        (void)ignored;
      }
    }
    result.connection_usable = !broken_;
    co_return result;
  }

  if (data_reply.code != 354) {
    if (!IsFailure(data_reply)) {
      broken_ = true;
      data_reply = Unexpected(kData, data_reply);
    }
    FillUnanswered(&result.recipients, data_reply);
    result.connection_usable = !broken_;
    co_return result;
  }

  // RFC 2920 §3.1: message content may start a group. With the next message at hand, its
  // MAIL/RCPT/DATA ride behind our final dot in the same write: one round trip per message
  // instead of two. Its replies come after our final reply(ies); its Send reads them.
  std::string tail;
  std::vector<Step> next_steps;
  if (next != nullptr && pipelined && !next->recipients.empty() && !Precheck(*next)) {
    BuildGroup(*next, false, &tail, &next_steps);
  }
  const bool body_sent = co_await WriteBody(std::move(message.body), std::move(tail));
  if (body_sent && !next_steps.empty()) {
    prepared_ = std::move(next_steps);
    ++transactions_;
  }
  if (!body_sent) {
    FillUnanswered(&result.recipients, failure_);
    result.connection_usable = false;
    co_return result;
  }

  // SMTP: one reply for all accepted recipients. LMTP (RFC 2033 §4.2): one
  // per accepted recipient, in RCPT order.
  const size_t final_replies = options_.lmtp ? accepted : 1;
  for (size_t k = 0; k < final_replies; ++k) {
    Reply reply = co_await ReadReply(options_.data_done_timeout, kDataDone);
    open_transaction_ = false;  // a final reply, whatever its code, ends the transaction
    if (!broken_ && !Is2xx(reply) && !IsFailure(reply)) {
      broken_ = true;
      reply = Unexpected(kDataDone, reply);
    }
    if (broken_ || !options_.lmtp) {
      FillUnanswered(&result.recipients, reply);
      break;
    }
    // The k-th accepted recipient is the first one still without a reply.
    for (Reply& slot : result.recipients) {
      if (slot.code == 0) {
        slot = std::move(reply);
        break;
      }
    }
  }
  result.connection_usable = !broken_;
  co_return result;
}

io::Task<void> SmtpClient::Quit() {
  if (broken_) {
    co_return;
  }
  if (prepared_) {
    // The server may be waiting for content after a 354 to the DATA we sent ahead: a QUIT now
    // would be taken as message text. Closing makes it drop the unfinished transaction.
    broken_ = true;
    ready_ = false;
    co_return;
  }
  broken_ = true;  // whatever happens next, the session is over
  ready_ = false;
  const bool sent = co_await Write("QUIT\r\n", options_.quit_timeout, kQuit);
  if (!sent) {
    co_return;
  }
  Reply ignored = co_await ReadReply(options_.quit_timeout, kQuit);
  (void)ignored;
}

}  // namespace sluice::delivery
