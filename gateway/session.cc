#include "gateway/session.h"

#include <algorithm>
#include <ctime>

#include "auth/base64.h"
#include "auth/sasl.h"
#include "base/ascii.h"
#include "base/clock.h"
#include "base/log.h"
#include "gateway/server.h"
#include "gateway/shard_context.h"
#include "smtp/bdat_reader.h"
#include "smtp/data_reader.h"
#include "smtp/header.h"
#include "smtp/reply.h"
#include "tls/transform.h"

namespace sluice::gateway {

using io::ReadStatus;
using smtp::Verb;

struct Session::BdatState {
  explicit BdatState(smtp::DataLimits limits) : reader(limits) {
  }
  smtp::BdatReader reader;
};

namespace {

// Replies not yet sent. A client that pipelines without reading its replies (RFC 2920 §3.1 lets
// the server stop reading) gets no more of its input consumed past this: the session waits until
// the client takes them, up to the command timeout, and closes the connection if it does not.
constexpr size_t kMaxUnsentReplies = 8 * 1024;
// While a session is at the command level, the input it buffers: a pipelined group larger than
// this waits in the kernel (TCP flow control) until the session has answered what it has.
constexpr size_t kCommandInboxHighWater = 16 * 1024;
// The last reply of a session (221, 421) to a client that does not read it.
constexpr auto kFinalReplyTimeout = std::chrono::seconds(10);
// A message body's buffer grows by half of itself, never by less than this.
constexpr size_t kMinBodyGrowth = 16 * 1024;

}  // namespace

Session::Session(ShardContext& ctx, size_t listener_index, int fd, io::IpAddress peer,
                 std::string client)
    : ctx_(ctx),
      listener_(ctx.server().config().listeners[listener_index]),
      listener_index_(listener_index),
      tel_(ctx.server().telemetry()),
      shard_index_(ctx.shard().id()),
      conn_(ctx.shard(), fd),
      peer_(peer),
      client_(std::move(client)),
      lines_(listener_.max_line_length),
      body_lease_(ctx.server().body_budget(), client_) {
}

Session::~Session() {
  ReleaseSlot();
}

void Session::ReleaseSlot() {
  if (slot_released_)
    return;
  slot_released_ = true;
  ctx_.server().ReleaseConnection(listener_index_, client_);
}

void Session::Reply(int code, std::string_view enhanced, std::string_view text) {
  smtp::AppendReply(&out_, code, enhanced, text);
  tel_.Reply(shard_index_, code);
  if (code >= 500)
    ++errors_;
}

void Session::Reject(Rejection kind, std::string_view stage, const std::string& recipient) {
  tel_.Reject(shard_index_, kind);
  metrics::EventLog* log = tel_.events();
  if (log == nullptr)
    return;
  // The reply just appended is the last line of out_.
  std::string_view reply = out_;
  if (reply.size() >= 2)
    reply.remove_suffix(2);
  const size_t nl = reply.rfind('\n');
  if (nl != std::string_view::npos)
    reply.remove_prefix(nl + 1);
  metrics::Event e("rejected");
  e.Str("stage", stage);
  if (reply.size() >= 3)
    e.Int("code", (reply[0] - '0') * 100 + (reply[1] - '0') * 10 + (reply[2] - '0'));
  e.Str("reply", reply).Str("client_ip", peer_.ToString()).Str("listener", listener_.name);
  if (in_mail_)
    e.Str("sender", mail_.path.ToString());
  if (!recipient.empty())
    e.Str("recipient", recipient);
  log->Write(std::move(e));
}

io::Task<bool> Session::Flush(Duration timeout) {
  if (out_.empty())
    co_return true;
  std::string data;
  data.swap(out_);
  const bool ok = co_await conn_.SendAll(std::move(data), timeout);
  co_return ok;
}

io::Task<bool> Session::AfterCommand() {
  const std::string& host = ctx_.server().config().hostname;
  if (TooManyErrors()) {
    Reply(421, "4.7.0", host + " Error: too many errors");
    tel_.Reject(shard_index_, Rejection::kTooManyErrors);
    co_return false;
  }
  if (junk_ > listener_.max_junk_commands) {
    Reply(421, "4.7.0", host + " Error: too many commands without a transaction");
    tel_.Reject(shard_index_, Rejection::kTooManyJunk);
    co_return false;
  }
  if (errors_ >= listener_.soft_error_limit && listener_.error_sleep.count() > 0) {
    // Postfix's smtpd_soft_error_limit: past it every reply is slowed down, which makes probing
    // many addresses in one session expensive while a client that made a few mistakes is not
    // cut off.
    co_await io::Sleep(ctx_.shard(), listener_.error_sleep);
    const bool sent = co_await Flush();
    if (!sent) {
      tel_.Reject(shard_index_, Rejection::kUnreadReplies);
      co_return false;
    }
  } else if (out_.size() >= kMaxUnsentReplies) {
    const bool sent = co_await Flush();
    if (!sent) {
      tel_.Reject(shard_index_, Rejection::kUnreadReplies);
      co_return false;
    }
  }
  co_return true;
}

void Session::ResetTransaction() {
  in_mail_ = false;
  mail_ = {};
  rcpts_.clear();
  rcpt_attempts_ = 0;
  body_.clear();
  body_.shrink_to_fit();
  body_lease_.Reset();
  envelope_bytes_ = 0;
  body_no_room_ = false;
  header_len_ = 0;
  bdat_active_ = false;
  bdat_failed_ = false;
  bdat_.reset();
}

io::Task<void> Session::Run() {
  // At the command level the session may stop reading (replies unread, a commit waiting): take
  // one buffer at a time and stop at 32 KiB, so a client that pipelines without reading holds
  // little of our memory. A message body streams (multishot, 256 KiB).
  conn_.SetMultishot(false);
  conn_.SetInboxHighWater(kCommandInboxHighWater);
  conn_.Start();
  const Config& cfg = ctx_.server().config();
  const std::string& host = cfg.hostname;

  const Telemetry::ListenerSeries& series = tel_.listener(listener_index_);
  if (!ctx_.server().spool().healthy()) {
    Reply(421, "4.3.0", host + " Service temporarily unavailable, try again later");
    series.refused[static_cast<size_t>(ConnectRefusal::kSpoolUnhealthy)]->Inc(shard_index_);
  } else if (ctx_.stopping() || !ctx_.server().running()) {
    // The second test covers a connection accepted on a shard that has not
    // yet processed the shutdown posted to it.
    Reply(421, "4.3.2", host + " Service shutting down");
    series.refused[static_cast<size_t>(ConnectRefusal::kShuttingDown)]->Inc(shard_index_);
  } else {
    series.accepted->Inc(shard_index_);
    // Implicit TLS (RFC 8314): the handshake comes before the greeting.
    bool up = true;
    if (listener_.tls == ListenerConfig::Tls::kImplicit)
      up = co_await StartTls();
    if (up) {
      Reply(220, "", host + " ESMTP Sluice");
      co_await Converse();
    }
  }
  const bool flushed = co_await Flush(kFinalReplyTimeout);
  (void)flushed;
  ReleaseSlot();
  co_await conn_.Close();
}

io::Task<void> Session::Converse() {
  const std::string& host = ctx_.server().config().hostname;
  for (;;) {
    const smtp::LineReader::Next next = lines_.Take(conn_.inbox());
    if (next.status == smtp::LineReader::Status::kNeedMore) {
      if (next.consumed > 0) {
        conn_.Consume(next.consumed);
        continue;
      }
      // Input consumed: answer the whole pipelined group at once.
      const bool sent = co_await Flush();
      if (!sent)
        co_return;
      if (conn_.interrupted()) {
        Reply(421, "4.3.2", host + " Service shutting down");
        co_return;
      }
      const ReadStatus st = co_await conn_.WaitForData(listener_.command_timeout, true);
      if (st == ReadStatus::kData)
        continue;
      if (st == ReadStatus::kTimeout) {
        Reply(421, "4.4.2", host + " Error: timeout exceeded");
        tel_.Reject(shard_index_, Rejection::kTimeout);
      } else if (st == ReadStatus::kInterrupted) {
        Reply(421, "4.3.2", host + " Service shutting down");
      } else {
        out_.clear();  // peer gone or socket failed
      }
      co_return;
    }
    if (next.status == smtp::LineReader::Status::kTooLong) {
      conn_.Consume(next.consumed);
      Reply(500, "5.5.2", "Error: line too long");
      tel_.Reject(shard_index_, Rejection::kCommandTooLong);
      const bool go_on = co_await AfterCommand();
      if (!go_on)
        co_return;
      continue;
    }
    std::string line;
    if (next.status == smtp::LineReader::Status::kBareNewline) {
      // Copy first: Consume() may move the inbox's bytes.
      const std::string raw_line(conn_.inbox().substr(0, next.consumed));
      conn_.Consume(next.consumed);
      std::string_view raw = raw_line;
      // RFC 5321 §2.3.8: lines end with CRLF only. A client that sends a
      // bare LF may be trying to desynchronise a downstream parser.
      const bool ends_lf = !raw.empty() && raw.back() == '\n';
      while (!raw.empty() && (raw.back() == '\n' || raw.back() == '\r'))
        raw.remove_suffix(1);
      if (listener_.bare_newline == smtp::BareNewline::kNormalize && ends_lf &&
          raw.find('\r') == std::string_view::npos) {
        line.assign(raw);
      } else {
        ResetTransaction();
        Reply(500, "5.5.2", "Error: bare CR or LF in command (RFC 5321 section 2.3.8)");
        tel_.Reject(shard_index_, Rejection::kBareNewline);
        const bool go_on = co_await AfterCommand();
        if (!go_on)
          co_return;
        continue;
      }
    } else {
      line.assign(next.line);
      conn_.Consume(next.consumed);
    }
    const Outcome outcome = co_await Handle(std::move(line));
    if (outcome == Outcome::kClose)
      co_return;
    const bool go_on = co_await AfterCommand();
    if (!go_on)
      co_return;
  }
}

io::Task<Session::Outcome> Session::Handle(std::string line) {
  const smtp::Command cmd = smtp::ParseCommand(line);
  tel_.Command(shard_index_, cmd.verb);
  switch (cmd.verb) {
    case Verb::kEhlo:
      // EHLO/HELO are junk too: answering them costs more than anything else without a
      // transaction, and 5,000 pipelined EHLOs must not be free.
      ++junk_;
      co_return OnEhlo(cmd.arg, true);
    case Verb::kHelo:
      ++junk_;
      co_return OnEhlo(cmd.arg, false);
    case Verb::kMail:
      co_return OnMail(cmd.arg);
    case Verb::kRcpt:
      co_return OnRcpt(cmd.arg);
    case Verb::kData: {
      const Outcome o = co_await OnData(cmd.arg);
      co_return o;
    }
    case Verb::kBdat: {
      const Outcome o = co_await OnBdat(std::string(cmd.arg));
      co_return o;
    }
    case Verb::kRset:
      ResetTransaction();
      ++junk_;
      Reply(250, "2.0.0", "Ok");
      co_return Outcome::kContinue;
    case Verb::kNoop:
      ++junk_;
      Reply(250, "2.0.0", "Ok");
      co_return Outcome::kContinue;
    case Verb::kQuit:
      Reply(221, "2.0.0", "Bye");
      co_return Outcome::kClose;
    case Verb::kVrfy:
      // RFC 5321 §3.5.3: no address verification for relays; 252 says "send it".
      ++junk_;
      Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery");
      co_return Outcome::kContinue;
    case Verb::kExpn:
      ++junk_;
      Reply(502, "5.5.1", "Error: EXPN not supported");
      co_return Outcome::kContinue;
    case Verb::kHelp:
      ++junk_;
      Reply(214, "2.0.0", "See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)");
      co_return Outcome::kContinue;
    case Verb::kStartTls: {
      const Outcome o = co_await OnStartTls(std::string(cmd.arg));
      co_return o;
    }
    case Verb::kAuth: {
      const Outcome o = co_await OnAuth(std::string(cmd.arg));
      co_return o;
    }
    case Verb::kUnknown:
      ++junk_;
      Reply(500, "5.5.2", "Error: command not recognized");
      co_return Outcome::kContinue;
  }
  co_return Outcome::kContinue;
}

io::Task<bool> Session::StartTls() {
  auto ctx = ctx_.server().TlsContext(listener_index_);
  if (!ctx)
    co_return false;
  auto transform = std::make_unique<tls::TlsTransform>(tls::Stream::Server(ctx));
  tls::TlsTransform* t = transform.get();
  conn_.StartTransform(std::move(transform));
  const bool ok = co_await conn_.Handshake(listener_.handshake_timeout);
  const std::string version = ok ? t->stream().version() : "none";
  tel_.TlsHandshake(shard_index_, listener_.name, version, ok);
  if (!ok) {
    spdlog::info(
        "TLS handshake with {} failed on {}: {}", peer_.ToString(), listener_.name,
        t->stream().error().empty() ? "timeout or connection closed" : t->stream().error());
    co_return false;
  }
  secure_ = true;
  tls_version_ = version;
  tls_cipher_ = t->stream().cipher();
  co_return true;
}

io::Task<Session::Outcome> Session::OnStartTls(std::string arg) {
  if (listener_.tls != ListenerConfig::Tls::kStartTls || secure_) {
    // Not offered here, or already under TLS (RFC 3207 §4: a second STARTTLS is a bad sequence).
    if (secure_) {
      Reply(503, "5.5.1", "Error: TLS already active");
    } else {
      Reply(502, "5.5.1", "Error: STARTTLS not available on this listener");
    }
    co_return Outcome::kContinue;
  }
  if (!arg.empty()) {
    Reply(501, "5.5.4", "Error: STARTTLS takes no arguments");
    co_return Outcome::kContinue;
  }
  // CVE-2011-0411: anything pipelined after STARTTLS arrived in plaintext and
  // must never be taken as coming from inside the TLS session. Drop it before
  // the 220 goes out (bytes arriving after it belong to the handshake).
  conn_.DiscardInbox();
  lines_.Reset();
  Reply(220, "2.0.0", "Ready to start TLS");
  const bool sent = co_await Flush();
  if (!sent)
    co_return Outcome::kClose;
  const bool up = co_await StartTls();
  if (!up) {
    out_.clear();  // nothing can be said in plaintext any more
    co_return Outcome::kClose;
  }
  // RFC 3207 §4.2: "the SMTP protocol is reset to the initial state ... The server MUST discard
  // any knowledge obtained from the client ... which was not obtained from the TLS negotiation
  // itself": the EHLO argument, a transaction, and an AUTH done in plaintext (else a man in the
  // middle could log the victim's TLS session in as the attacker's account). The error and junk
  // counts are ours, not knowledge from the client: they stay.
  ResetTransaction();
  greeted_ = false;
  esmtp_ = false;
  helo_.clear();
  auth_user_.clear();
  co_return Outcome::kContinue;
}

io::Task<std::optional<std::string>> Session::ReadAuthLine() {
  for (;;) {
    const smtp::LineReader::Next next = lines_.Take(conn_.inbox());
    if (next.status == smtp::LineReader::Status::kLine) {
      std::string line(next.line);
      conn_.Consume(next.consumed);
      co_return line;
    }
    if (next.status != smtp::LineReader::Status::kNeedMore) {
      conn_.Consume(next.consumed);
      co_return std::string("\x01");  // not base64: the exchange answers 501
    }
    if (next.consumed > 0) {
      conn_.Consume(next.consumed);
      continue;
    }
    const bool sent = co_await Flush();
    if (!sent)
      co_return std::nullopt;
    const io::ReadStatus st = co_await conn_.WaitForData(listener_.command_timeout, false);
    if (st != io::ReadStatus::kData)
      co_return std::nullopt;
  }
}

io::Task<Session::Outcome> Session::OnAuth(std::string arg) {
  const std::string& host = ctx_.server().config().hostname;
  if (listener_.auth == ListenerConfig::Auth::kOff) {
    ++junk_;
    Reply(503, "5.5.1", "Error: authentication not enabled");
    co_return Outcome::kContinue;
  }
  if (!secure_ && !listener_.allow_plaintext_auth) {
    Reply(538, "5.7.11", "Error: encryption required for requested authentication mechanism");
    co_return Outcome::kContinue;
  }
  if (!auth_user_.empty()) {
    Reply(503, "5.5.1", "Error: already authenticated");
    co_return Outcome::kContinue;
  }
  if (!greeted_) {
    Reply(503, "5.5.1", "Error: send EHLO first");
    co_return Outcome::kContinue;
  }
  if (in_mail_) {
    Reply(503, "5.5.1", "Error: AUTH not permitted during a mail transaction");
    co_return Outcome::kContinue;
  }
  auth::FailureThrottle& throttle = ctx_.server().auth_throttle();
  // Keyed by the client's network (an IPv6 /64 by default), not its address.
  const std::string& ip = client_;
  if (throttle.Blocked(ip, ctx_.shard().Now())) {
    Reply(421, "4.7.0", host + " Error: too many failed authentications, try later");
    co_return Outcome::kClose;
  }
  auto parsed = smtp::ParseAuth(arg);
  if (!parsed) {
    Reply(parsed.error());
    co_return Outcome::kContinue;
  }
  const std::string& mechanism = parsed->mechanism;  // upper-cased by ParseAuth
  std::optional<std::string_view> initial;
  if (parsed->initial_response)
    initial = *parsed->initial_response;
  auth::SaslExchange sasl = auth::SaslExchange::Start(mechanism, initial);
  auth::SaslExchange::Step step = sasl.Next();
  while (step.kind == auth::SaslExchange::Step::kChallenge) {
    Reply(334, "", step.challenge_b64);
    std::optional<std::string> line = co_await ReadAuthLine();
    if (!line)
      co_return Outcome::kClose;
    step = sasl.Feed(*line);
  }
  if (step.kind == auth::SaslExchange::Step::kError) {
    Reply(step.code, step.enhanced, step.text);
    co_return Outcome::kContinue;
  }
  // crypt() is slow by design: never on the shard (docs/design.md §2).
  auto users = ctx_.server().Users(listener_index_);
  const auth::UserDb* db = users.get();
  const std::string* user = &step.user;
  const std::string* password = &step.password;
  auto verify = ctx_.server().pool().Run(
      ctx_.shard(), [db, user, password] { return db != nullptr && db->Verify(*user, *password); });
  const bool ok = co_await verify;
  tel_.Auth(shard_index_, listener_.name, mechanism == "LOGIN" ? "login" : "plain", ok);
  if (ok) {
    // A success leaves the failures of this network as they are (they expire with their
    // window): otherwise one valid account would buy unlimited guesses at others.
    auth_user_ = step.user;
    spdlog::info("AUTH {} as {} from {} on {}", mechanism, auth_user_, peer_.ToString(),
                 listener_.name);
    Reply(235, "2.7.0", "Authentication successful");
    co_return Outcome::kContinue;
  }
  const MonoTime now = ctx_.shard().Now();
  throttle.RecordFailure(ip, now);
  const auto delay = throttle.DelayFor(ip, now);
  if (delay.count() > 0)
    co_await io::Sleep(ctx_.shard(), delay);
  Reply(535, "5.7.8", "Error: authentication credentials invalid");
  co_return Outcome::kContinue;
}

Session::Outcome Session::OnEhlo(std::string_view arg, bool extended) {
  auto domain = smtp::ParseHeloDomain(arg);
  if (!domain) {
    Reply(domain.error());
    return Outcome::kContinue;
  }
  // RFC 5321 §4.1.4: EHLO in a session resets any transaction.
  ResetTransaction();
  helo_ = *domain;
  greeted_ = true;
  esmtp_ = extended;
  const std::string& host = ctx_.server().config().hostname;
  if (!extended) {
    Reply(250, "", host);
    return Outcome::kContinue;
  }
  std::string text = host + " greets [" + peer_.ToString() + "]\n";
  text += "PIPELINING\n";
  text += "SIZE " + std::to_string(listener_.max_message_size) + "\n";
  text += "8BITMIME\nSMTPUTF8\nENHANCEDSTATUSCODES\nCHUNKING\nDSN";
  if (listener_.tls == ListenerConfig::Tls::kStartTls && !secure_)
    text += "\nSTARTTLS";
  // RFC 4954 §4: AUTH only where it may be used: over TLS unless the
  // listener explicitly allows plaintext.
  if (listener_.auth != ListenerConfig::Auth::kOff && auth_user_.empty() &&
      (secure_ || listener_.allow_plaintext_auth)) {
    text += "\nAUTH PLAIN LOGIN";
  }
  Reply(250, "", text);
  return Outcome::kContinue;
}

Session::Outcome Session::OnMail(std::string_view arg) {
  if (!greeted_) {
    Reply(503, "5.5.1", "Error: send HELO/EHLO first");
    return Outcome::kContinue;
  }
  if (in_mail_) {
    Reply(503, "5.5.1", "Error: nested MAIL command");
    return Outcome::kContinue;
  }
  if (ctx_.stopping()) {
    Reply(421, "4.3.2", ctx_.server().config().hostname + " Service shutting down");
    return Outcome::kClose;
  }
  auto mail = smtp::ParseMailFrom(arg);
  if (!mail) {
    Reply(mail.error());
    tel_.Reject(shard_index_, Rejection::kSyntax);
    return Outcome::kContinue;
  }
  const smtp::MailParams& p = mail->params;
  const bool has_params = p.size || p.body != smtp::BodyType::kUnspecified || p.smtputf8 ||
                          p.ret != smtp::Ret::kUnspecified || !p.envid.empty() || !p.auth.empty();
  if (!esmtp_ && has_params) {
    // Extensions exist only after EHLO (RFC 5321 §4.1.1.1).
    Reply(555, "5.5.4", "Error: ESMTP parameters require EHLO");
    return Outcome::kContinue;
  }
  if (p.body == smtp::BodyType::kBinaryMime) {
    // Not advertised: BINARYMIME content cannot be relayed to DATA-only peers.
    Reply(555, "5.5.4", "Error: BODY=BINARYMIME is not supported");
    return Outcome::kContinue;
  }
  if (p.size && *p.size > listener_.max_message_size) {
    Reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size");
    Reject(Rejection::kMessageTooBig, "mail", "");
    return Outcome::kContinue;
  }
  if (ctx_.server().spool().disk_low()) {
    // As Postfix below queue_minfree: refused before any byte is sent (RFC 5321 §4.5.3.1.10).
    Reply(452, "4.3.1", "Error: insufficient system storage, try again later");
    Reject(Rejection::kInsufficientStorage, "mail", "");
    return Outcome::kContinue;
  }
  if (p.size && !ctx_.server().body_budget().Fits(client_, static_cast<int64_t>(*p.size))) {
    // RFC 1870 §6.1: 452 when the size is fine but there is no room for it right now.
    NoRoomForBody("mail");
    return Outcome::kContinue;
  }
  if (mail->path.utf8 && !p.smtputf8) {
    Reply(553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8");
    return Outcome::kContinue;
  }
  if (listener_.auth == ListenerConfig::Auth::kRequired && auth_user_.empty()) {
    // RFC 6409 §4.1: submission requires authentication.
    Reply(530, "5.7.0", "Error: authentication required");
    return Outcome::kContinue;
  }
  if (!auth_user_.empty()) {
    auto users = ctx_.server().Users(listener_index_);
    const std::string domain = AsciiToLower(mail->path.mailbox.domain);
    if (users && !users->SenderAllowed(auth_user_, domain)) {
      Reply(553, "5.7.1",
            "<" + mail->path.ToString() + ">: sender address not owned by user " + auth_user_);
      return Outcome::kContinue;
    }
  }
  mail_ = std::move(*mail);
  in_mail_ = true;
  mail_started_ = ctx_.shard().Now();
  Reply(250, "2.1.0", "Ok");
  return Outcome::kContinue;
}

bool Session::Trusted() const {
  if (!auth_user_.empty())
    return true;
  for (const io::Cidr& net : listener_.mynetworks) {
    if (net.Contains(peer_))
      return true;
  }
  return false;
}

bool Session::UntrustedRouting(const smtp::Path& rcpt) const {
  if (listener_.allow_untrusted_routing || Trusted())
    return false;
  // "user%other@here", "other!user@here" and "\"user@other\"@here" ask the next hop to route
  // on (RFC 5321 §3.6.1 treats the local part as opaque, but old MTAs still honour these).
  // The local part is kept as written, so an escaped or quoted character is found too.
  return rcpt.mailbox.local_part.find_first_of("%!@") != std::string::npos;
}

bool Session::RelayAllowed(const smtp::Path& rcpt) const {
  if (Trusted())
    return true;  // mynetworks or authenticated: relay anywhere
  const std::string& domain = rcpt.mailbox.domain;
  if (domain.empty() || domain.front() == '[')
    return false;  // literals only from mynetworks
  std::string d = AsciiToLower(domain);
  if (!d.empty() && d.back() == '.')
    d.pop_back();
  for (const std::string& rule : listener_.relay_domains) {
    if (rule.rfind("*.", 0) == 0) {
      const std::string_view suffix = std::string_view(rule).substr(1);  // ".example.com"
      if (d.size() > suffix.size() &&
          d.compare(d.size() - suffix.size(), suffix.size(), suffix) == 0) {
        return true;
      }
    } else if (d == rule) {
      return true;
    }
  }
  return false;
}

Session::Outcome Session::OnRcpt(std::string_view arg) {
  if (!in_mail_) {
    Reply(503, "5.5.1", "Error: need MAIL command");
    return Outcome::kContinue;
  }
  if (bdat_active_) {
    Reply(503, "5.5.1", "Error: RCPT during BDAT transfer");
    return Outcome::kContinue;
  }
  ++rcpt_attempts_;
  auto rcpt = smtp::ParseRcptTo(arg, mail_.params.smtputf8);
  if (!rcpt) {
    Reply(rcpt.error());
    tel_.Reject(shard_index_, Rejection::kSyntax);
    return Outcome::kContinue;
  }
  if (rcpts_.size() >= listener_.max_recipients) {
    Reply(452, "4.5.3", "Error: too many recipients");
    Reject(Rejection::kTooManyRecipients, "rcpt", rcpt->path.ToString());
    return Outcome::kContinue;
  }
  if (!RelayAllowed(rcpt->path)) {
    Reply(550, "5.7.1", "<" + rcpt->path.ToString() + ">: Relay access denied");
    Reject(Rejection::kRelayDenied, "rcpt", rcpt->path.ToString());
    return Outcome::kContinue;
  }
  if (UntrustedRouting(rcpt->path)) {
    Reply(550, "5.7.1",
          "<" + rcpt->path.ToString() + ">: Relay access denied (sender-specified routing)");
    Reject(Rejection::kUntrustedRouting, "rcpt", rcpt->path.ToString());
    return Outcome::kContinue;
  }
  queue::Recipient r;
  r.address = rcpt->path.ToString();
  r.notify = rcpt->params.notify;
  r.orcpt = rcpt->params.orcpt;
  // Recipients are held with the body until the message is queued, and take room in the same
  // budget (the vector's growth included, roughly).
  const uint64_t cost = 2 * sizeof(queue::Recipient) + r.address.size() + r.orcpt.size();
  if (!body_lease_.GrowTo(static_cast<int64_t>(envelope_bytes_ + cost + body_.capacity()))) {
    // RFC 5321 §4.5.3.1.10: 452 for a recipient there is no room for now.
    Reply(452, "4.3.1", "Error: insufficient system resources, try again later");
    Reject(Rejection::kBodyMemory, "rcpt", r.address);
    return Outcome::kContinue;
  }
  envelope_bytes_ += cost;
  rcpts_.push_back(std::move(r));
  Reply(250, "2.1.5", "Ok");
  return Outcome::kContinue;
}

std::string Session::ReceivedHeader(const std::string& id) const {
  // RFC 5321 §4.4 trace field; folded lines start with a tab.
  const Config& cfg = ctx_.server().config();
  std::string h = "Received: from ";
  h += helo_;
  h += " ([";
  h += peer_.ToString();
  h += "])";
  if (secure_) {
    h += "\r\n\t(using " + tls_version_ + " with cipher " + tls_cipher_ + ")";
  }
  if (!auth_user_.empty() && listener_.auth_header) {
    h += "\r\n\t(Authenticated sender: " + auth_user_ + ")";
  }
  h += "\r\n\tby ";
  h += cfg.hostname;
  // RFC 3848: ESMTPS (TLS), ESMTPA (AUTH), ESMTPSA (both).
  h += " (Sluice) with ";
  h += esmtp_ ? "ESMTP" : "SMTP";
  if (esmtp_ && secure_)
    h += "S";
  if (esmtp_ && !auth_user_.empty())
    h += "A";
  h += " id ";
  h += id;
  if (rcpts_.size() == 1) {
    h += "\r\n\tfor <";
    h += rcpts_.front().address;
    h += ">";
  }
  h += "; ";
  h += smtp::FormatRfc5322Date(std::time(nullptr));
  h += "\r\n";
  return h;
}

void Session::StartBody() {
  id_ = ctx_.ids().Next();
  body_ = ReceivedHeader(id_.ToString());
  header_len_ = body_.size();
  body_no_room_ = false;
}

bool Session::ReserveBody(uint64_t capacity, bool over_budget_ok) {
  if (capacity <= body_.capacity())
    return true;
  if (!body_lease_.GrowTo(static_cast<int64_t>(envelope_bytes_ + capacity)) && !over_budget_ok) {
    return false;
  }
  // Exactly `capacity`: std::string's own growth doubles, and a 45 MB body would take 64 MiB.
  std::string bigger;
  bigger.reserve(capacity);
  bigger.append(body_);
  body_.swap(bigger);
  return true;
}

bool Session::MakeRoomForBody(uint64_t incoming) {
  // The readers never store more than max_message_size octets (smtp::detail::BodySink).
  const uint64_t limit = header_len_ + listener_.max_message_size;
  const uint64_t size = body_.size();
  const uint64_t room = limit > size ? limit - size : 0;
  // Saturating (a BDAT size is the client's number), and two octets over: a CR the reader held
  // back at the end of one input comes out with the next (one octet in, two stored).
  const uint64_t need = size + (incoming >= room ? room : std::min(room, incoming + 2));
  if (need <= body_.capacity())
    return true;
  // The first step is exact (most messages arrive whole, or with SIZE); later ones grow by half,
  // so a large message costs a few copies, not one per chunk.
  uint64_t want = need;
  if (body_.size() > header_len_) {
    const uint64_t cap = body_.capacity();
    want = std::min(limit,
                    std::max<uint64_t>(need, cap + std::max<uint64_t>(cap / 2, kMinBodyGrowth)));
  }
  if (ReserveBody(want))
    return true;
  return want != need && ReserveBody(need);
}

void Session::NoRoomForBody(std::string_view stage) {
  Reply(452, "4.3.1", "Error: insufficient system resources for this message now, try again later");
  Reject(Rejection::kBodyMemory, stage, "");
}

void Session::AbandonBody(io::ReadStatus status) {
  if (status == ReadStatus::kTimeout) {
    Reply(421, "4.4.2", ctx_.server().config().hostname + " Error: timeout exceeded");
    tel_.Reject(shard_index_, Rejection::kTimeout);
  } else {
    out_.clear();  // peer gone or socket failed: nobody to answer
  }
  ResetTransaction();
}

bool Session::RejectBody(bool bare_newline, bool too_big, bool line_too_long) {
  if (bare_newline) {
    Reply(550, "5.6.0", "Error: bare CR or LF in message (RFC 5321 section 2.3.8); not queued");
    Reject(Rejection::kBareNewline, "data", "");
  } else if (too_big) {
    Reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size");
    Reject(Rejection::kMessageTooBig, "data", "");
  } else if (line_too_long) {
    Reply(550, "5.6.0",
          "Error: message line longer than " + std::to_string(listener_.max_data_line_length - 2) +
              " octets (RFC 5322 section 2.1.1)");
    Reject(Rejection::kLineTooLong, "data", "");
  } else {
    return false;
  }
  ResetTransaction();
  return true;
}

io::Task<Session::Outcome> Session::OnData(std::string_view arg) {
  if (!in_mail_) {
    Reply(503, "5.5.1", "Error: need MAIL command");
    co_return Outcome::kContinue;
  }
  if (bdat_active_) {
    Reply(503, "5.5.1", "Error: DATA during BDAT transfer");
    co_return Outcome::kContinue;
  }
  if (rcpts_.empty()) {
    if (rcpt_attempts_ > 0) {
      Reply(554, "5.5.1", "Error: no valid recipients");
    } else {
      Reply(503, "5.5.1", "Error: need RCPT command");
    }
    co_return Outcome::kContinue;
  }
  if (!arg.empty()) {
    Reply(501, "5.5.4", "Error: DATA takes no arguments");
    co_return Outcome::kContinue;
  }
  // Room for the message before the client sends it: all of it when MAIL gave SIZE (RFC 1870),
  // else what has arrived. No room: 452 now, not after the transfer.
  StartBody();
  const uint64_t declared = mail_.params.size.value_or(0);
  if (!MakeRoomForBody(declared > 0 ? declared : conn_.inbox().size())) {
    body_.clear();
    body_.shrink_to_fit();
    body_lease_.ShrinkTo(static_cast<int64_t>(envelope_bytes_));
    NoRoomForBody("data");
    co_return Outcome::kContinue;
  }
  Reply(354, "", "End data with <CR><LF>.<CR><LF>");
  const bool sent = co_await Flush();
  if (!sent)
    co_return Outcome::kClose;

  smtp::DataReader reader(smtp::DataLimits{listener_.max_message_size,
                                           listener_.max_data_line_length, listener_.bare_newline});
  // A body is consumed as it arrives: the inbox may take more than at the command level.
  conn_.SetMultishot(true);
  conn_.SetInboxHighWater(io::Connection::kInboxHighWater);
  // Normalizing turns each bare LF into two octets.
  const uint64_t expansion = listener_.bare_newline == smtp::BareNewline::kNormalize ? 2 : 1;
  for (;;) {
    const std::string_view input = conn_.inbox();
    if (!body_no_room_ && !MakeRoomForBody(input.size() * expansion)) {
      // The budget ran out mid-body: read on to the end marker (so the session stays in step)
      // without keeping anything, then answer 452.
      body_no_room_ = true;
      reader.DropBody();
      body_.clear();
      body_.shrink_to_fit();
      body_lease_.ShrinkTo(static_cast<int64_t>(envelope_bytes_));
    }
    const size_t n = reader.Feed(input, &body_);
    conn_.Consume(n);
    if (reader.done())
      break;
    // Not interruptible: a transaction in DATA may finish during shutdown.
    const ReadStatus st = co_await conn_.WaitForData(listener_.data_timeout, false);
    if (st == ReadStatus::kData)
      continue;
    AbandonBody(st);
    co_return Outcome::kClose;
  }
  conn_.SetMultishot(false);
  conn_.SetInboxHighWater(kCommandInboxHighWater);
  if (RejectBody(reader.bare_newline(), reader.too_big(), reader.line_too_long())) {
    co_return Outcome::kContinue;
  }
  if (body_no_room_) {
    NoRoomForBody("data");
    ResetTransaction();
    co_return Outcome::kContinue;
  }
  const Outcome o = co_await Commit();
  co_return o;
}

io::Task<Session::Outcome> Session::OnBdat(std::string arg) {
  auto parsed = smtp::ParseBdat(arg);
  if (!parsed) {
    // Without a valid size we cannot know where the chunk ends: the stream
    // is out of step, so close (RFC 3030 §3: syntax errors are fatal).
    Reply(parsed.error());
    Reply(421, "4.5.0", ctx_.server().config().hostname + " Error: BDAT syntax, closing");
    co_return Outcome::kClose;
  }
  const uint64_t size = parsed->size;
  const bool last = parsed->last;
  bool failed = false;
  smtp::Reply error;
  if (!in_mail_) {
    failed = true;
    error = smtp::MakeReply(503, "5.5.1", "Error: need MAIL command");
  } else if (rcpts_.empty()) {
    failed = true;
    error = smtp::MakeReply(
        rcpt_attempts_ > 0 ? 554 : 503, "5.5.1",
        rcpt_attempts_ > 0 ? "Error: no valid recipients" : "Error: need RCPT command");
  }
  if (!failed && !bdat_active_) {
    bdat_active_ = true;
    StartBody();
    bdat_ = std::make_unique<BdatState>(smtp::DataLimits{
        listener_.max_message_size, listener_.max_data_line_length, listener_.bare_newline});
  }
  bool no_room = false;
  const uint64_t expansion = listener_.bare_newline == smtp::BareNewline::kNormalize ? 2 : 1;
  // The chunk's size is the client's number: no more than the limit counts (the reader stores
  // no more), and the multiplication cannot wrap.
  const uint64_t counted = std::min<uint64_t>(size, listener_.max_message_size + 1) * expansion;
  if (!failed && !MakeRoomForBody(counted)) {
    // The chunk's size is known before its octets: no room, no storing. The octets are still
    // read (the stream must stay in step) and the transaction fails with 452.
    failed = true;
    no_room = true;
  }
  // The chunk's octets are read (and dropped if the transaction failed) so
  // the command stream stays in step.
  std::string discard;
  smtp::BdatReader* reader = failed ? nullptr : &bdat_->reader;
  std::unique_ptr<smtp::BdatReader> sink_reader;
  if (!reader) {
    sink_reader = std::make_unique<smtp::BdatReader>(
        smtp::DataLimits{0, SIZE_MAX, smtp::BareNewline::kNormalize});
    reader = sink_reader.get();
  }
  reader->StartChunk(size, last);
  // A large chunk streams like a DATA body.
  const bool stream = size > kCommandInboxHighWater;
  if (stream) {
    conn_.SetMultishot(true);
    conn_.SetInboxHighWater(io::Connection::kInboxHighWater);
  }
  for (;;) {
    std::string* target = failed ? &discard : &body_;
    const size_t n = reader->Feed(conn_.inbox(), target);
    conn_.Consume(n);
    discard.clear();
    if (reader->chunk_done())
      break;
    const ReadStatus st = co_await conn_.WaitForData(listener_.data_timeout, false);
    if (st == ReadStatus::kData)
      continue;
    AbandonBody(st);
    co_return Outcome::kClose;
  }
  if (stream) {
    conn_.SetMultishot(false);
    conn_.SetInboxHighWater(kCommandInboxHighWater);
  }
  if (no_room) {
    NoRoomForBody("data");
    ResetTransaction();
    co_return Outcome::kContinue;
  }
  if (failed) {
    Reply(error);
    co_return Outcome::kContinue;
  }
  if (!last) {
    Reply(250, "2.0.0", std::to_string(size) + " octets received");
    co_return Outcome::kContinue;
  }
  const smtp::BdatReader& r = bdat_->reader;
  if (RejectBody(r.bare_newline(), r.too_big(), r.line_too_long())) {
    co_return Outcome::kContinue;
  }
  const Outcome o = co_await Commit();
  co_return o;
}

io::Task<Session::Outcome> Session::Commit() {
  const Config& cfg = ctx_.server().config();
  const std::string_view message = std::string_view(body_).substr(header_len_);
  if (smtp::CountHeaderFields(message, "Received") > listener_.max_received_headers) {
    Reply(554, "5.4.6", "Error: too many hops (mail loop?)");
    Reject(Rejection::kLoop, "data", "");
    ResetTransaction();
    co_return Outcome::kContinue;
  }

  if (!auth_user_.empty() && listener_.submission_fixups) {
    // RFC 6409 §8.2, §8.3: a submission server may add a missing Date and
    // Message-ID. They go right after our Received header.
    std::string added;
    if (!smtp::HasHeaderField(message, "Date")) {
      added += "Date: " + smtp::FormatRfc5322Date(std::time(nullptr)) + "\r\n";
    }
    if (!smtp::HasHeaderField(message, "Message-ID")) {
      added += "Message-ID: <" + id_.ToString() + "@" + cfg.hostname + ">\r\n";
    }
    if (!added.empty()) {
      // Exact room first: an insert past the capacity would double the buffer. A few hundred
      // octets; without budget left they go over it rather than failing a complete message.
      (void)ReserveBody(body_.size() + added.size(), /*over_budget_ok=*/true);
      body_.insert(header_len_, added);
      header_len_ += added.size();
    }
  }
  queue::Envelope env;
  env.sender = mail_.path.ToString();
  env.body_type = static_cast<uint8_t>(mail_.params.body);
  env.smtputf8 = mail_.params.smtputf8;
  env.ret = static_cast<uint8_t>(mail_.params.ret);
  env.envid = mail_.params.envid;
  env.auth_param = mail_.params.auth;
  env.recipients = rcpts_;
  env.received_at_us = ctx_.shard().clock().WallMicros();
  env.next_due_us = env.received_at_us;
  env.expires_at_us =
      env.received_at_us + static_cast<uint64_t>(cfg.delivery.max_age.count()) * 1000000;
  env.body_size = body_.size();
  env.client_ip = peer_.ToString();
  env.helo = helo_;
  env.listener = listener_.name;
  env.auth_user = auth_user_;
  env.tls = secure_;
  const uint64_t body_size = body_.size();

  // Admission control (docs/design.md §5.3): when the writer's queue is full, wait
  // for room up to the deadline, then answer 451.
  queue::Spool& spool = ctx_.server().spool();
  const MonoTime deadline = ctx_.shard().Now() + cfg.spool.admission_timeout;
  std::string meta = queue::EncodeEnvelope(env);
  queue::CommitStatus status = queue::CommitStatus::kIoError;
  const MonoTime commit_started = ctx_.shard().Now();
  // Shared with delivery, which sends the first attempt from memory.
  auto body = std::make_shared<const std::string>(std::move(body_));
  for (;;) {
    queue::CommitWaiter& commits = ctx_.commits();
    const uint64_t token = commits.Reserve();
    // A refused Enqueue leaves `meta` with us (queue/spool.h), so the next try still has it.
    // NOLINTNEXTLINE(bugprone-use-after-move)
    const queue::Admit admit = spool.Enqueue(id_, std::move(meta), body, &commits, token);
    if (admit == queue::Admit::kAccepted) {
      // The spool's admission bound (max_pending_bytes) covers the body from here on.
      body_lease_.Reset();
      status = co_await commits.Wait(token);
      break;
    }
    commits.Cancel(token);
    if (admit == queue::Admit::kFull)
      tel_.backpressure().Inc(shard_index_);
    if (admit == queue::Admit::kUnhealthy || ctx_.shard().Now() >= deadline) {
      status = admit == queue::Admit::kUnhealthy ? queue::CommitStatus::kIoError
                                                 : queue::CommitStatus::kTimedOut;
      break;
    }
    co_await io::Sleep(ctx_.shard(), std::chrono::milliseconds(5));
  }
  ResetTransaction();
  switch (status) {
    case queue::CommitStatus::kOk: {
      const MonoTime now = ctx_.shard().Now();
      const Telemetry::ListenerSeries& ls = tel_.listener(listener_index_);
      tel_.commit_seconds().Observe(shard_index_,
                                    std::chrono::duration<double>(now - commit_started).count());
      ls.transaction_seconds->Observe(shard_index_,
                                      std::chrono::duration<double>(now - mail_started_).count());
      ls.messages->Inc(shard_index_);
      ls.bytes->Inc(shard_index_, body_size);
      ls.recipients->Inc(shard_index_, env.recipients.size());
      if (metrics::EventLog* log = tel_.events()) {
        std::vector<std::string> rcpts;
        for (const queue::Recipient& r : env.recipients)
          rcpts.push_back(r.address);
        metrics::Event e("received");
        e.Str("id", id_.ToString())
            .Str("sender", env.sender)
            .StrList("recipients", rcpts)
            .Int("size", static_cast<int64_t>(body_size))
            .Str("client_ip", env.client_ip)
            .Str("helo", env.helo)
            .Str("listener", env.listener);
        log->Write(std::move(e));
      }
      ctx_.delivery().Adopt(id_, std::move(env), std::move(body));
      // A delivered message clears the counts, as Postfix's limits count "without delivering
      // mail": a bulk client's occasional bad recipient never adds up over a long session.
      junk_ = 0;
      errors_ = 0;
      Reply(250, "2.0.0", "Ok: queued as " + id_.ToString());
      break;
    }
    case queue::CommitStatus::kShuttingDown:
      Reply(421, "4.3.2", cfg.hostname + " Service shutting down");
      co_return Outcome::kClose;
    case queue::CommitStatus::kTimedOut:
      Reply(451, "4.3.0", "Error: queue busy, try again later");
      tel_.Reject(shard_index_, Rejection::kSpoolBusy);
      break;
    case queue::CommitStatus::kIoError:
      Reply(451, "4.3.0", "Error: local error in processing, try again later");
      break;
    case queue::CommitStatus::kNoSpace:
      // RFC 3463 4.3.1: mail system full (Postfix: "452 4.3.1 Insufficient system storage").
      Reply(452, "4.3.1", "Error: insufficient system storage, try again later");
      Reject(Rejection::kInsufficientStorage, "data", "");
      break;
  }
  co_return Outcome::kContinue;
}

}  // namespace sluice::gateway
