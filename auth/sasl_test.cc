#include "auth/sasl.h"

#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "auth/base64.h"

namespace sluice::auth {
namespace {

using namespace std::string_literals;

using Step = SaslExchange::Step;

std::string B64(std::string_view s) {
  return EncodeBase64(s);
}

void ExpectError(const Step& s, int code, std::string_view enhanced) {
  ASSERT_EQ(s.kind, Step::kError) << s.challenge_b64 << s.user;
  EXPECT_EQ(s.code, code) << s.text;
  EXPECT_EQ(s.enhanced, enhanced) << s.text;
  EXPECT_FALSE(s.text.empty());
}

void ExpectVerify(const Step& s, std::string_view user, std::string_view password) {
  ASSERT_EQ(s.kind, Step::kVerify) << s.code << " " << s.text;
  EXPECT_EQ(s.user, user);
  EXPECT_EQ(s.password, password);
}

void ExpectChallenge(const Step& s, std::string_view challenge) {
  ASSERT_EQ(s.kind, Step::kChallenge) << s.code << " " << s.text;
  EXPECT_EQ(s.challenge_b64, challenge);
}

const std::string kPlainTim = "\0tim\0tanstaaftanstaaf"s;

TEST(SaslPlain, InitialResponse) {
  // RFC 4616 §4 example, as an SMTP initial response.
  auto ex = SaslExchange::Start("PLAIN", B64(kPlainTim));
  ExpectVerify(ex.Next(), "tim", "tanstaaftanstaaf");
  EXPECT_TRUE(ex.done());
}

TEST(SaslPlain, TakesSmtpAuthArgShapes) {
  // smtp::AuthArg::initial_response is a std::optional<std::string>.
  const std::optional<std::string> initial = B64(kPlainTim);
  auto ex = SaslExchange::Start("PLAIN", initial);
  ExpectVerify(ex.Next(), "tim", "tanstaaftanstaaf");
  const std::optional<std::string> none;
  auto ex2 = SaslExchange::Start("PLAIN", none);
  ExpectChallenge(ex2.Next(), "");
}

TEST(SaslPlain, MechanismCaseInsensitive) {
  auto ex = SaslExchange::Start("pLaIn", B64(kPlainTim));
  ExpectVerify(ex.Next(), "tim", "tanstaaftanstaaf");
  auto login = SaslExchange::Start("login", std::nullopt);
  ExpectChallenge(login.Next(), "VXNlcm5hbWU6");
}

TEST(SaslPlain, NoInitialResponseThenResponse) {
  auto ex = SaslExchange::Start("PLAIN", std::nullopt);
  ExpectChallenge(ex.Next(), "");
  EXPECT_FALSE(ex.done());
  ExpectVerify(ex.Feed(B64(kPlainTim)), "tim", "tanstaaftanstaaf");
}

TEST(SaslPlain, EmptyInitialResponseThenResponse) {
  // smtp::ParseAuth turns "=" into ""; accept the raw "=" as well.
  for (std::string_view empty : {"", "="}) {
    auto ex = SaslExchange::Start("PLAIN", empty);
    ExpectChallenge(ex.Next(), "");
    ExpectVerify(ex.Feed(B64("\0alice\0s3cret pass"s)), "alice", "s3cret pass");
  }
}

TEST(SaslPlain, AuthzidEqualToAuthcidAllowed) {
  auto ex = SaslExchange::Start("PLAIN", B64("tim\0tim\0pw"s));
  ExpectVerify(ex.Next(), "tim", "pw");
}

TEST(SaslPlain, AuthzidMismatchRejected) {
  auto ex = SaslExchange::Start("PLAIN", B64("admin\0tim\0pw"s));
  ExpectError(ex.Next(), 535, "5.7.8");
  EXPECT_TRUE(ex.done());
}

TEST(SaslPlain, NulHandling) {
  const std::string malformed[] = {
      "",              // nothing
      "timpw",         // no NUL
      "\0timpw"s,      // one NUL
      "\0tim\0pw\0"s,  // NUL inside the password
      "\0tim\0pw\0extra"s,
      "\0\0pw"s,   // empty authcid
      "\0tim\0"s,  // empty password
      "\0\0"s,
  };
  for (const std::string& m : malformed) {
    auto ex = SaslExchange::Start("PLAIN", std::nullopt);
    ExpectChallenge(ex.Next(), "");
    ExpectError(ex.Feed(B64(m)), 535, "5.7.8");
  }
  // Bytes other than NUL pass through untouched (RFC 4616: UTF-8).
  auto ex = SaslExchange::Start("PLAIN", B64("\0j\xc3\xbcrgen\0p\xc3\xa4ss:w*rd"s));
  ExpectVerify(ex.Next(), "j\xc3\xbcrgen", "p\xc3\xa4ss:w*rd");
}

TEST(SaslLogin, TwoChallenges) {
  auto ex = SaslExchange::Start("LOGIN", std::nullopt);
  ExpectChallenge(ex.Next(), "VXNlcm5hbWU6");                          // "Username:"
  ExpectChallenge(ex.Feed(B64("alice@example.com")), "UGFzc3dvcmQ6");  // "Password:"
  EXPECT_FALSE(ex.done());
  ExpectVerify(ex.Feed(B64("correct horse")), "alice@example.com", "correct horse");
  EXPECT_TRUE(ex.done());
}

TEST(SaslLogin, InitialResponseIsTheUsername) {
  auto ex = SaslExchange::Start("LOGIN", B64("alice"));
  ExpectChallenge(ex.Next(), "UGFzc3dvcmQ6");
  ExpectVerify(ex.Feed(B64("pw")), "alice", "pw");
}

TEST(SaslLogin, EmptyInitialResponseAsksForUsername) {
  auto ex = SaslExchange::Start("LOGIN", "");
  ExpectChallenge(ex.Next(), "VXNlcm5hbWU6");
}

TEST(SaslLogin, NulInUsernameOrPassword) {
  auto a = SaslExchange::Start("LOGIN", B64("al\0ice"s));
  ExpectError(a.Next(), 535, "5.7.8");
  auto b = SaslExchange::Start("LOGIN", B64("alice"));
  ExpectChallenge(b.Next(), "UGFzc3dvcmQ6");
  ExpectError(b.Feed(B64("pw\0x"s)), 535, "5.7.8");
}

TEST(Sasl, CancelAtEveryPrompt) {
  auto plain = SaslExchange::Start("PLAIN", std::nullopt);
  ExpectChallenge(plain.Next(), "");
  ExpectError(plain.Feed("*"), 501, "5.7.0");
  EXPECT_TRUE(plain.done());

  auto user = SaslExchange::Start("LOGIN", std::nullopt);
  ExpectChallenge(user.Next(), "VXNlcm5hbWU6");
  ExpectError(user.Feed("*"), 501, "5.7.0");

  auto pass = SaslExchange::Start("LOGIN", std::nullopt);
  ExpectChallenge(pass.Next(), "VXNlcm5hbWU6");
  ExpectChallenge(pass.Feed(B64("alice")), "UGFzc3dvcmQ6");
  ExpectError(pass.Feed("*"), 501, "5.7.0");
}

TEST(Sasl, MalformedBase64) {
  auto initial = SaslExchange::Start("PLAIN", "AHRpbQB0YW5zdGFhZnRhbnN0YWF");  // bad length
  ExpectError(initial.Next(), 501, "5.5.2");

  for (std::string_view bad : {"Zm9v YmFy", "Zh==", "not base64!", "=", "**"}) {
    auto ex = SaslExchange::Start("LOGIN", std::nullopt);
    ExpectChallenge(ex.Next(), "VXNlcm5hbWU6");
    ExpectError(ex.Feed(bad), 501, "5.5.2");
    EXPECT_TRUE(ex.done());
  }
}

TEST(Sasl, UnknownMechanism) {
  for (std::string_view mech : {"CRAM-MD5", "SCRAM-SHA-256", "XOAUTH2", "", "PLAINX"}) {
    auto ex = SaslExchange::Start(mech, B64(kPlainTim));
    ExpectError(ex.Next(), 504, "5.5.4");
    EXPECT_TRUE(ex.done());
  }
}

TEST(Sasl, OutOfSequenceCallsAreErrorsNotCrashes) {
  auto ex = SaslExchange::Start("PLAIN", std::nullopt);
  ExpectError(ex.Feed(B64(kPlainTim)), 503, "5.5.1");  // Feed before Next

  auto twice = SaslExchange::Start("PLAIN", B64(kPlainTim));
  ExpectVerify(twice.Next(), "tim", "tanstaaftanstaaf");
  ExpectError(twice.Next(), 503, "5.5.1");
  ExpectError(twice.Feed(B64(kPlainTim)), 503, "5.5.1");
}

}  // namespace
}  // namespace sluice::auth
