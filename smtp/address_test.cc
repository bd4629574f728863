#include "smtp/address.h"

#include <string>

#include <gtest/gtest.h>

namespace sluice::smtp {
namespace {

PathParse Fwd(std::string_view s) {
  return ParsePath(s, PathRole::kForward);
}
PathParse Rev(std::string_view s) {
  return ParsePath(s, PathRole::kReverse);
}

TEST(ParsePath, SimpleMailbox) {
  const PathParse p = Fwd("<user@example.com>");
  ASSERT_EQ(p.error, AddressError::kNone);
  EXPECT_FALSE(p.path.null);
  EXPECT_EQ(p.path.mailbox.local_part, "user");
  EXPECT_EQ(p.path.mailbox.domain, "example.com");
  EXPECT_EQ(p.path.ToString(), "user@example.com");
  EXPECT_EQ(p.consumed, 18u);
  EXPECT_FALSE(p.path.utf8);
}

TEST(ParsePath, ConsumedStopsAtClosingBracket) {
  const PathParse p = Rev("<a@b.c> SIZE=10");
  ASSERT_EQ(p.error, AddressError::kNone);
  EXPECT_EQ(p.consumed, 7u);
}

TEST(ParsePath, NullPathOnlyAsReversePath) {
  const PathParse rev = Rev("<>");
  ASSERT_EQ(rev.error, AddressError::kNone);
  EXPECT_TRUE(rev.path.null);
  EXPECT_EQ(rev.path.ToString(), "");
  EXPECT_EQ(rev.consumed, 2u);
  EXPECT_EQ(Fwd("<>").error, AddressError::kSyntax);
}

TEST(ParsePath, PostmasterWithoutDomainOnlyAsForwardPath) {
  for (const char* s : {"<Postmaster>", "<postmaster>", "<POSTMASTER>"}) {
    const PathParse p = Fwd(s);
    ASSERT_EQ(p.error, AddressError::kNone) << s;
    EXPECT_EQ(p.path.mailbox.domain, "");
    EXPECT_EQ(p.path.ToString(), std::string(s).substr(1, 10));
  }
  EXPECT_EQ(Rev("<Postmaster>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<root>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<\"Postmaster\">").error, AddressError::kSyntax);
  const PathParse with_domain = Fwd("<postmaster@example.com>");
  ASSERT_EQ(with_domain.error, AddressError::kNone);
  EXPECT_EQ(with_domain.path.mailbox.domain, "example.com");
}

TEST(ParsePath, QuotedLocalPartKeptAsWritten) {
  const PathParse p = Fwd(R"(<"john doe"@example.com>)");
  ASSERT_EQ(p.error, AddressError::kNone);
  EXPECT_EQ(p.path.mailbox.local_part, R"("john doe")");
  EXPECT_EQ(p.path.ToString(), R"("john doe"@example.com)");
}

TEST(ParsePath, QuotedLocalPartWithSpecialsAndQuotedPairs) {
  const PathParse p = Fwd(R"(<"a>b@c\"d\\e"@x.org>)");
  ASSERT_EQ(p.error, AddressError::kNone);
  EXPECT_EQ(p.path.mailbox.local_part, R"("a>b@c\"d\\e")");
  EXPECT_EQ(p.path.mailbox.domain, "x.org");
  EXPECT_EQ(Fwd(R"(<"unterminated@x.org>)").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<\"tab\there\"@x.org>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<\"a\\\x01\"@x.org>").error, AddressError::kSyntax);  // quoted-pair of a control
  EXPECT_EQ(Fwd(R"(<""@x.org>)").error, AddressError::kNone);
}

TEST(ParsePath, DotStringRules) {
  EXPECT_EQ(Fwd("<first.last@x.org>").error, AddressError::kNone);
  EXPECT_EQ(Fwd("<a+tag!#$%&'*/=?^_`{|}~-@x.org>").error, AddressError::kNone);
  EXPECT_EQ(Fwd("<.a@x.org>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a.@x.org>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a..b@x.org>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a b@x.org>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a(b)@x.org>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<@x.org>").error, AddressError::kSyntax);
}

TEST(ParsePath, DomainRules) {
  EXPECT_EQ(Fwd("<a@localhost>").error, AddressError::kNone);
  EXPECT_EQ(Fwd("<a@x-y.example>").error, AddressError::kNone);
  EXPECT_EQ(Fwd("<a@123.example>").error, AddressError::kNone);
  EXPECT_EQ(Fwd("<a@xn--bcher-kva.example>").error, AddressError::kNone);
  EXPECT_EQ(Fwd("<a@-x.example>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@x-.example>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@x..example>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@example.>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@.example>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@x_y.example>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@b@c>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@" + std::string(63, 'l') + ".example>").error, AddressError::kNone);
  EXPECT_EQ(Fwd("<a@" + std::string(64, 'l') + ".example>").error, AddressError::kSyntax);
}

TEST(ParsePath, BracketsRequired) {
  EXPECT_EQ(Fwd("a@b.c").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@b.c").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<").error, AddressError::kSyntax);
}

TEST(ParsePath, AddressLiterals) {
  const PathParse v4 = Fwd("<a@[192.0.2.1]>");
  ASSERT_EQ(v4.error, AddressError::kNone);
  EXPECT_EQ(v4.path.mailbox.domain, "[192.0.2.1]");
  EXPECT_EQ(v4.path.ToString(), "a@[192.0.2.1]");
  EXPECT_EQ(Fwd("<a@[IPv6:2001:db8::1]>").error, AddressError::kNone);
  EXPECT_EQ(Fwd("<a@[ipv6:::1]>").error, AddressError::kNone);
  EXPECT_EQ(Fwd("<a@[IPv6:::ffff:192.0.2.1]>").error, AddressError::kNone);
  EXPECT_EQ(Fwd("<a@[256.0.0.1]>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@[1.2.3]>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@[1.2.3.4.5]>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@[1.2.3.4>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@[IPv6:2001:db8::g]>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@[IPv6:1:2:3:4:5:6:7:8:9]>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@[2001:db8::1]>").error, AddressError::kSyntax);  // needs the tag
  EXPECT_EQ(Fwd("<a@[x-tag:stuff]>").error, AddressError::kSyntax);  // unregistered tag
  EXPECT_EQ(Fwd("<a@[]>").error, AddressError::kSyntax);
}

TEST(ParsePath, SourceRouteAcceptedAndIgnored) {
  const PathParse p = Fwd("<@relay1.example,@relay2.example:user@final.example>");
  ASSERT_EQ(p.error, AddressError::kNone);
  EXPECT_EQ(p.path.ToString(), "user@final.example");
  EXPECT_EQ(Rev("<@one.example:u@x.org>").path.ToString(), "u@x.org");
  EXPECT_EQ(Fwd("<@relay1.example user@x.org>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<@relay1.example,user@x.org>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<@:user@x.org>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<@-bad.example:user@x.org>").error, AddressError::kSyntax);
}

TEST(ParsePath, LengthLimits) {
  const std::string local64(64, 'l');
  EXPECT_EQ(Fwd("<" + local64 + "@x.org>").error, AddressError::kNone);
  EXPECT_EQ(Fwd("<" + local64 + "l@x.org>").error, AddressError::kLocalPartTooLong);

  // 4 labels of 63 + 3 dots = 255 octets: the longest domain.
  const std::string l63(63, 'd');
  const std::string d255 = l63 + "." + l63 + "." + l63 + "." + l63;
  ASSERT_EQ(d255.size(), 255u);
  // The domain itself is within its limit, but "<a@" + 255 + ">" is 259
  // octets, over the path limit: the 256-octet path limit is the binding one.
  EXPECT_EQ(Fwd("<a@" + d255 + ">").error, AddressError::kPathTooLong);
}

TEST(ParsePath, DomainAndPathLimits) {
  const std::string l63(63, 'd');
  const std::string d255 = l63 + "." + l63 + "." + l63 + "." + l63;
  EXPECT_EQ(Fwd("<a@" + d255 + "x>").error, AddressError::kSyntax);  // label of 64
  EXPECT_EQ(Fwd("<a@x." + d255 + ">").error, AddressError::kDomainTooLong);
  // A path of exactly 256 octets including the brackets fits, 257 does not.
  const std::string d250 = l63 + "." + l63 + "." + l63 + "." + std::string(58, 'e');
  ASSERT_EQ(d250.size(), 250u);
  EXPECT_EQ(Fwd("<ab@" + d250 + ">").error, AddressError::kNone);           // 2+1+250+2 = 255
  EXPECT_EQ(Fwd("<abc@" + d250 + ">").error, AddressError::kNone);          // 256
  EXPECT_EQ(Fwd("<abcd@" + d250 + ">").error, AddressError::kPathTooLong);  // 257
}

TEST(ParsePath, Utf8LocalPartAndDomain) {
  const PathParse p = Fwd("<δοκιμή@παράδειγμα.δοκιμή>");
  ASSERT_EQ(p.error, AddressError::kNone);
  EXPECT_TRUE(p.path.utf8);
  EXPECT_EQ(p.path.mailbox.local_part, "δοκιμή");
  EXPECT_EQ(p.path.mailbox.domain, "παράδειγμα.δοκιμή");
  EXPECT_TRUE(Fwd("<用户@例子.广告>").path.utf8);
  EXPECT_TRUE(Fwd("<\"ü ü\"@x.org>").path.utf8);
  EXPECT_FALSE(Fwd("<u@x.org>").path.utf8);
}

TEST(ParsePath, InvalidUtf8Refused) {
  EXPECT_EQ(Fwd("<\xC3@x.org>").error, AddressError::kSyntax);          // truncated
  EXPECT_EQ(Fwd("<\xC0\x80@x.org>").error, AddressError::kSyntax);      // overlong NUL
  EXPECT_EQ(Fwd("<\xED\xA0\x80@x.org>").error, AddressError::kSyntax);  // surrogate
  EXPECT_EQ(Fwd("<a@\xFF.org>").error, AddressError::kSyntax);
  EXPECT_EQ(Fwd("<a@x\x80y.org>").error, AddressError::kSyntax);  // stray continuation
}

TEST(IsValidUtf8, Table) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("ascii"));
  EXPECT_TRUE(IsValidUtf8("\xC2\x80"));
  EXPECT_TRUE(IsValidUtf8("\xE0\xA0\x80"));
  EXPECT_TRUE(IsValidUtf8("\xEF\xBF\xBF"));
  EXPECT_TRUE(IsValidUtf8("\xF0\x90\x80\x80"));
  EXPECT_TRUE(IsValidUtf8("\xF4\x8F\xBF\xBF"));   // U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xC1\xBF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xE0\x9F\xBF"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xF0\x8F\xBF\xBF"));  // overlong
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xED\xBF\xBF"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF5\x80\x80\x80"));
  EXPECT_FALSE(IsValidUtf8("\xE2\x82"));  // truncated
  EXPECT_FALSE(IsValidUtf8("\xE2\x28\xA1"));
}

TEST(IsValidDomain, ReportsUtf8) {
  bool utf8 = true;
  EXPECT_TRUE(IsValidDomain("mail.example", &utf8));
  EXPECT_FALSE(utf8);
  EXPECT_TRUE(IsValidDomain("bücher.example", &utf8));
  EXPECT_TRUE(utf8);
  EXPECT_FALSE(IsValidDomain("", &utf8));
  EXPECT_FALSE(IsValidDomain("a b", nullptr));
}

}  // namespace
}  // namespace sluice::smtp
