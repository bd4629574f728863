#pragma once

// SaslExchange: the server side of one SMTP AUTH exchange (RFC 4954) for the
// PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login) mechanisms, with
// no I/O. The session parses "AUTH mech [initial-response]" with
// smtp::ParseAuth, calls Start() and Next(), then for every kChallenge sends
// "334 <challenge_b64>" and passes the client's next line to Feed(), until a
// step is kVerify (check the credentials with UserDb::Verify on the thread
// pool, then answer 235 2.7.0 or 535 5.7.8) or kError (send the reply as is;
// the exchange is over and the session is back to accepting commands).
//
// Exchanges are small (a few hundred bytes) and live for one AUTH command.

#include <optional>
#include <string>
#include <string_view>

namespace sluice::auth {

class SaslExchange {
 public:
  // `mechanism` is case-insensitive. `initial_response` is base64 as sent
  // (smtp::AuthArg::initial_response): "" or "=" is a zero-length response
  // (RFC 4954 §4), which carries no credentials, so the exchange continues as
  // if none had been sent. An unknown mechanism is not an error here: the
  // first step (Next) is 504 5.5.4.
  static SaslExchange Start(std::string_view mechanism,
                            std::optional<std::string_view> initial_response);

  struct Step {
    enum Kind { kChallenge, kVerify, kError } kind;
    std::string challenge_b64;   // kChallenge: text after "334 " (may be empty: "334 ")
    std::string user, password;  // kVerify: authcid and password, raw bytes
    int code = 0;                // kError: the reply to send
    std::string enhanced, text;
  };

  // The first step. Call once, right after Start.
  Step Next();
  // One client response line, without CRLF. "*" cancels (501 5.7.0); a line
  // that is not strict base64 is 501 5.5.2 (RFC 4954 §4). Feeding an exchange
  // that is not waiting for a response gives 503 5.5.1.
  Step Feed(std::string_view client_line);

  bool done() const {
    return state_ == State::kDone;
  }

 private:
  enum class Mechanism { kPlain, kLogin, kUnsupported };
  enum class State { kFirst, kPlainResponse, kLoginUser, kLoginPassword, kDone };

  SaslExchange() = default;

  Step Challenge(State next, std::string challenge_b64);
  Step Error(int code, std::string_view enhanced, std::string_view text);
  Step Plain(std::string_view message);
  Step Verify(std::string user, std::string password);
  std::string TakeInitialResponse();

  Mechanism mechanism_ = Mechanism::kUnsupported;
  State state_ = State::kFirst;
  std::optional<std::string> initial_response_;  // base64, only for Next()
  std::string login_user_;                       // LOGIN: decoded username
};

}  // namespace sluice::auth
