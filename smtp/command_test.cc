#include "smtp/command.h"

#include <limits>

#include <gtest/gtest.h>

namespace sluice::smtp {
namespace {

template <typename T>
void ExpectError(const ReplyOr<T>& r, int code, std::string_view enhanced) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, code) << r.error().text;
  EXPECT_EQ(r.error().enhanced, enhanced) << r.error().text;
}

TEST(ParseCommand, AllVerbsCaseInsensitive) {
  const std::pair<const char*, Verb> cases[] = {
      {"EHLO", Verb::kEhlo},         {"helo", Verb::kHelo}, {"Mail", Verb::kMail},
      {"rcpt", Verb::kRcpt},         {"DATA", Verb::kData}, {"bdat", Verb::kBdat},
      {"RSET", Verb::kRset},         {"noop", Verb::kNoop}, {"QUIT", Verb::kQuit},
      {"VRFY", Verb::kVrfy},         {"EXPN", Verb::kExpn}, {"help", Verb::kHelp},
      {"StartTLS", Verb::kStartTls}, {"AUTH", Verb::kAuth},
  };
  for (const auto& [text, verb] : cases) {
    const Command c = ParseCommand(text);
    EXPECT_EQ(c.verb, verb) << text;
    EXPECT_EQ(c.arg, "") << text;
  }
  EXPECT_STREQ(ToString(Verb::kStartTls), "STARTTLS");
  EXPECT_STREQ(ToString(Verb::kUnknown), "UNKNOWN");
}

TEST(ParseCommand, ArgumentTrimmedAndViewIntoLine) {
  const std::string line = "MAIL   FROM:<a@b> SIZE=1   ";
  const Command c = ParseCommand(line);
  EXPECT_EQ(c.verb, Verb::kMail);
  EXPECT_EQ(c.arg, "FROM:<a@b> SIZE=1");
  EXPECT_EQ(c.arg.data(), line.data() + 7);
  EXPECT_EQ(ParseCommand("QUIT   ").arg, "");
  EXPECT_EQ(ParseCommand("EHLO mx.example").arg, "mx.example");
}

TEST(ParseCommand, UnknownVerbs) {
  EXPECT_EQ(ParseCommand("").verb, Verb::kUnknown);
  EXPECT_EQ(ParseCommand("MAILX FROM:<a@b>").verb, Verb::kUnknown);
  EXPECT_EQ(ParseCommand("QUIT:").verb, Verb::kUnknown);
  EXPECT_EQ(ParseCommand(" QUIT").verb, Verb::kUnknown);
  EXPECT_EQ(ParseCommand("GET / HTTP/1.1").verb, Verb::kUnknown);
  EXPECT_EQ(ParseCommand("GET / HTTP/1.1").arg, "/ HTTP/1.1");
  EXPECT_EQ(ParseCommand("QUIT\tnow").verb, Verb::kUnknown);
}

TEST(ParseMailFrom, Basic) {
  const auto m = ParseMailFrom("FROM:<alice@example.com>");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->path.ToString(), "alice@example.com");
  EXPECT_FALSE(m->params.size.has_value());
}

TEST(ParseMailFrom, NullSenderAndParameters) {
  const auto m = ParseMailFrom("FROM:<> SIZE=100 BODY=8BITMIME");
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->path.null);
  EXPECT_EQ(m->params.size, 100u);
  EXPECT_EQ(m->params.body, BodyType::k8BitMime);
}

TEST(ParseMailFrom, SpaceAfterColonAndLowerCaseKeyword) {
  const auto m = ParseMailFrom("from: <a@b.example>");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->path.ToString(), "a@b.example");
}

TEST(ParseMailFrom, SyntaxErrors) {
  ExpectError(ParseMailFrom(""), 501, "5.5.4");
  ExpectError(ParseMailFrom("<a@b>"), 501, "5.5.4");
  ExpectError(ParseMailFrom("FROM <a@b>"), 501, "5.5.4");
  ExpectError(ParseMailFrom("TO:<a@b>"), 501, "5.5.4");
  ExpectError(ParseMailFrom("FROM:<a@b>SIZE=10"), 501, "5.5.4");
}

TEST(ParseMailFrom, BadSenderAddress) {
  ExpectError(ParseMailFrom("FROM:a@b"), 501, "5.1.7");
  ExpectError(ParseMailFrom("FROM:<a@>"), 501, "5.1.7");
  ExpectError(ParseMailFrom("FROM:<a@b"), 501, "5.1.7");
  ExpectError(ParseMailFrom("FROM:<Postmaster>"), 501, "5.1.7");
  ExpectError(ParseMailFrom("FROM:<" + std::string(65, 'x') + "@b.example>"), 501, "5.1.7");
  ExpectError(ParseMailFrom("FROM:<\xC0\x80@b.example> SMTPUTF8"), 501, "5.1.7");
}

TEST(ParseMailFrom, ParameterErrors) {
  ExpectError(ParseMailFrom("FROM:<a@b.example> FOO=1"), 555, "5.5.4");
  ExpectError(ParseMailFrom("FROM:<a@b.example> SIZE=1 SIZE=2"), 501, "5.5.4");
  ExpectError(ParseMailFrom("FROM:<a@b.example> SIZE=x"), 501, "5.5.4");
}

TEST(ParseMailFrom, Utf8SenderNeedsSmtputf8) {
  ExpectError(ParseMailFrom("FROM:<用户@例子.广告>"), 553, "5.6.7");
  ExpectError(ParseMailFrom("FROM:<a@bücher.example> BODY=8BITMIME"), 553, "5.6.7");
  const auto m = ParseMailFrom("FROM:<用户@例子.广告> SMTPUTF8");
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->path.utf8);
  EXPECT_TRUE(m->params.smtputf8);
  // SMTPUTF8 with an ASCII address is fine too.
  EXPECT_TRUE(ParseMailFrom("FROM:<a@b.example> SMTPUTF8").ok());
}

TEST(ParseRcptTo, BasicWithDsnParameters) {
  const auto r =
      ParseRcptTo("TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.org");
  ASSERT_TRUE(r.ok()) << r.error().text;
  EXPECT_EQ(r->path.ToString(), "bob@example.org");
  EXPECT_EQ(r->params.notify, kNotifySuccess | kNotifyFailure);
  EXPECT_EQ(r->params.orcpt, "rfc822;bob@example.org");
}

TEST(ParseRcptTo, Postmaster) {
  const auto r = ParseRcptTo("to:<Postmaster>");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->path.mailbox.local_part, "Postmaster");
  EXPECT_EQ(r->path.mailbox.domain, "");
}

TEST(ParseRcptTo, Errors) {
  ExpectError(ParseRcptTo("TO:<>"), 501, "5.1.3");
  ExpectError(ParseRcptTo("TO:bob"), 501, "5.1.3");
  ExpectError(ParseRcptTo("TO:<a@b..c>"), 501, "5.1.3");
  ExpectError(ParseRcptTo("FROM:<a@b>"), 501, "5.5.4");
  ExpectError(ParseRcptTo("TO:<a@b.example> SIZE=10"), 555, "5.5.4");
  ExpectError(ParseRcptTo("TO:<a@b.example> NOTIFY=NEVER,DELAY"), 501, "5.5.4");
  ExpectError(ParseRcptTo("TO:<a@b.example> NOTIFY=NEVER notify=NEVER"), 501, "5.5.4");
  ExpectError(ParseRcptTo("TO:<a@b.example>NOTIFY=NEVER"), 501, "5.5.4");
  const std::string l63(63, 'd');
  ExpectError(
      ParseRcptTo("TO:<abcd@" + l63 + "." + l63 + "." + l63 + "." + std::string(58, 'e') + ">"),
      501, "5.1.3");
}

TEST(ParseRcptTo, Utf8RecipientNeedsSmtputf8Transaction) {
  ExpectError(ParseRcptTo("TO:<δοκιμή@παράδειγμα.δοκιμή>"), 553, "5.6.7");
  const auto r = ParseRcptTo("TO:<δοκιμή@παράδειγμα.δοκιμή>", /*smtputf8=*/true);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->path.utf8);
  ExpectError(ParseRcptTo("TO:<a@\xF5x.example>", true), 501, "5.1.3");
}

TEST(ParseBdat, Valid) {
  auto b = ParseBdat("1234");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->size, 1234u);
  EXPECT_FALSE(b->last);
  b = ParseBdat("0 LAST");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->size, 0u);
  EXPECT_TRUE(b->last);
  b = ParseBdat("7  last");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->last);
  b = ParseBdat("18446744073709551615");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->size, std::numeric_limits<uint64_t>::max());
}

TEST(ParseBdat, Invalid) {
  for (const char* s : {"", "abc", "-1", "+1", "1x", "12 NOTLAST", "12 LAST x",
                        "18446744073709551616", " 12", "LAST"}) {
    ExpectError(ParseBdat(s), 501, "5.5.4");
  }
}

TEST(ParseHeloDomain, Valid) {
  for (const char* s : {"mx.example.com", "localhost", "[192.0.2.1]", "[IPv6:2001:db8::1]",
                        "DESKTOP_A1B2", "192.0.2.1", "bücher.example"}) {
    const auto d = ParseHeloDomain(s);
    ASSERT_TRUE(d.ok()) << s;
    EXPECT_EQ(*d, s);
  }
}

TEST(ParseHeloDomain, Invalid) {
  for (const char* s : {"", "a..b", "-a.example", "[1.2.3]", "[mx.example]", "foo bar", "a@b",
                        "example.", "\xC3.example"}) {
    ExpectError(ParseHeloDomain(s), 501, "5.5.4");
  }
  ExpectError(ParseHeloDomain(std::string(64, 'a')), 501, "5.5.4");  // label of 64
}

TEST(ParseAuth, MechanismOnly) {
  const auto a = ParseAuth("login");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->mechanism, "LOGIN");
  EXPECT_FALSE(a->initial_response.has_value());
}

TEST(ParseAuth, InitialResponse) {
  const auto a = ParseAuth("PLAIN AHVzZXIAcGFzcw==");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->mechanism, "PLAIN");
  EXPECT_EQ(a->initial_response, "AHVzZXIAcGFzcw==");
  const auto empty = ParseAuth("PLAIN =");
  ASSERT_TRUE(empty.ok());
  ASSERT_TRUE(empty->initial_response.has_value());
  EXPECT_EQ(*empty->initial_response, "");
  EXPECT_EQ(ParseAuth("X-OAUTH2_A dGVzdA==")->mechanism, "X-OAUTH2_A");
}

TEST(ParseAuth, Errors) {
  ExpectError(ParseAuth(""), 501, "5.5.4");
  ExpectError(ParseAuth("PL@IN"), 501, "5.5.4");
  ExpectError(ParseAuth(std::string(21, 'A')), 501, "5.5.4");
  ExpectError(ParseAuth("PLAIN a b"), 501, "5.5.4");
  ExpectError(ParseAuth("PLAIN abc"), 501, "5.5.2");   // not a multiple of 4
  ExpectError(ParseAuth("PLAIN ab=c"), 501, "5.5.2");  // padding inside
  ExpectError(ParseAuth("PLAIN a==="), 501, "5.5.2");  // too much padding
  ExpectError(ParseAuth("PLAIN ab*d"), 501, "5.5.2");
}

}  // namespace
}  // namespace sluice::smtp
