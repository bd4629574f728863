#include "auth/sasl.h"

#include <utility>

#include "auth/base64.h"
#include "base/ascii.h"

namespace sluice::auth {
namespace {

// draft-murchison-sasl-login-00 §2: the server prompts "Username:" and
// "Password:" (base64 below); clients ignore the prompt text but expect two
// rounds.
constexpr std::string_view kUsernamePrompt = "VXNlcm5hbWU6";
constexpr std::string_view kPasswordPrompt = "UGFzc3dvcmQ6";

}  // namespace

SaslExchange SaslExchange::Start(std::string_view mechanism,
                                 std::optional<std::string_view> initial_response) {
  SaslExchange ex;
  if (EqualsIgnoreCase(mechanism, "PLAIN")) {
    ex.mechanism_ = Mechanism::kPlain;
  } else if (EqualsIgnoreCase(mechanism, "LOGIN")) {
    ex.mechanism_ = Mechanism::kLogin;
  }
  if (initial_response.has_value() && !initial_response->empty() && *initial_response != "=") {
    ex.initial_response_.emplace(*initial_response);
  }
  return ex;
}

SaslExchange::Step SaslExchange::Challenge(State next, std::string challenge_b64) {
  state_ = next;
  Step s{Step::kChallenge, std::move(challenge_b64), {}, {}, 0, {}, {}};
  return s;
}

SaslExchange::Step SaslExchange::Error(int code, std::string_view enhanced, std::string_view text) {
  state_ = State::kDone;
  login_user_.clear();
  return Step{Step::kError, {}, {}, {}, code, std::string(enhanced), std::string(text)};
}

SaslExchange::Step SaslExchange::Verify(std::string user, std::string password) {
  state_ = State::kDone;
  login_user_.clear();
  return Step{Step::kVerify, {}, std::move(user), std::move(password), 0, {}, {}};
}

std::string SaslExchange::TakeInitialResponse() {
  std::string out = std::move(*initial_response_);
  initial_response_.reset();
  return out;
}

SaslExchange::Step SaslExchange::Next() {
  if (state_ != State::kFirst) {
    return Error(503, "5.5.1", "Error: AUTH exchange out of sequence");
  }
  switch (mechanism_) {
    case Mechanism::kUnsupported:
      return Error(504, "5.5.4", "Error: mechanism not supported");
    case Mechanism::kPlain:
      if (!initial_response_.has_value()) {
        return Challenge(State::kPlainResponse, "");
      }
      state_ = State::kPlainResponse;
      return Feed(TakeInitialResponse());
    case Mechanism::kLogin:
      if (!initial_response_.has_value()) {
        return Challenge(State::kLoginUser, std::string(kUsernamePrompt));
      }
      // RFC 4954 §4 allows an initial response with any mechanism; for LOGIN
      // it is the username.
      state_ = State::kLoginUser;
      return Feed(TakeInitialResponse());
  }
  return Error(503, "5.5.1", "Error: AUTH exchange out of sequence");  // not reached
}

SaslExchange::Step SaslExchange::Feed(std::string_view client_line) {
  if (state_ == State::kFirst || state_ == State::kDone) {
    return Error(503, "5.5.1", "Error: no AUTH exchange in progress");
  }
  // RFC 4954 §4: "*" cancels, and the server MUST answer 501.
  if (client_line == "*") {
    return Error(501, "5.7.0", "Authentication cancelled");
  }
  std::optional<std::string> decoded = DecodeBase64(client_line);
  if (!decoded.has_value()) {
    return Error(501, "5.5.2", "Error: invalid base64 data");
  }

  switch (state_) {
    case State::kPlainResponse:
      return Plain(*decoded);
    case State::kLoginUser:
      if (decoded->find('\0') != std::string::npos) {
        return Error(535, "5.7.8", "Error: malformed LOGIN username");
      }
      login_user_ = std::move(*decoded);
      return Challenge(State::kLoginPassword, std::string(kPasswordPrompt));
    case State::kLoginPassword:
      if (decoded->find('\0') != std::string::npos) {
        return Error(535, "5.7.8", "Error: malformed LOGIN password");
      }
      return Verify(std::move(login_user_), std::move(*decoded));
    case State::kFirst:
    case State::kDone:
      break;
  }
  return Error(503, "5.5.1", "Error: no AUTH exchange in progress");  // not reached
}

SaslExchange::Step SaslExchange::Plain(std::string_view message) {
  // RFC 4616 §2: message = [authzid] NUL authcid NUL passwd, where authcid
  // and passwd are 1*SAFE (no NUL). Exactly two NULs, then.
  const size_t nul1 = message.find('\0');
  const size_t nul2 = nul1 == std::string_view::npos ? nul1 : message.find('\0', nul1 + 1);
  if (nul2 == std::string_view::npos || message.find('\0', nul2 + 1) != std::string_view::npos) {
    return Error(535, "5.7.8", "Error: malformed PLAIN response");
  }
  const std::string_view authzid = message.substr(0, nul1);
  const std::string_view authcid = message.substr(nul1 + 1, nul2 - nul1 - 1);
  const std::string_view passwd = message.substr(nul2 + 1);
  if (authcid.empty() || passwd.empty()) {
    return Error(535, "5.7.8", "Error: malformed PLAIN response");
  }
  // RFC 4616 §2: the server decides whether authcid may act as authzid. A
  // relay has no proxy users: only "act as myself" is allowed.
  if (!authzid.empty() && authzid != authcid) {
    return Error(535, "5.7.8", "Error: authorization identity must match the user");
  }
  return Verify(std::string(authcid), std::string(passwd));
}

}  // namespace sluice::auth
