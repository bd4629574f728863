#include "smtp/params.h"

#include <cstdint>
#include <limits>

#include <gtest/gtest.h>

namespace sluice::smtp {
namespace {

void ExpectReply(const Reply& r, int code, std::string_view enhanced) {
  EXPECT_EQ(r.code, code) << r.text;
  EXPECT_EQ(r.enhanced, enhanced) << r.text;
}

template <typename T>
void ExpectError(const ReplyOr<T>& r, int code, std::string_view enhanced) {
  ASSERT_FALSE(r.ok());
  ExpectReply(r.error(), code, enhanced);
}

TEST(MailParams, Empty) {
  const auto p = ParseMailParams("");
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->size.has_value());
  EXPECT_EQ(p->body, BodyType::kUnspecified);
  EXPECT_FALSE(p->smtputf8);
  EXPECT_EQ(p->ret, Ret::kUnspecified);
  EXPECT_EQ(p->envid, "");
  EXPECT_EQ(p->auth, "");
}

TEST(MailParams, AllKnownParameters) {
  const auto p = ParseMailParams(
      " SIZE=12345 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159 AUTH=e+3Dmc2@x.org");
  ASSERT_TRUE(p.ok()) << p.error().text;
  EXPECT_EQ(p->size, 12345u);
  EXPECT_EQ(p->body, BodyType::k8BitMime);
  EXPECT_TRUE(p->smtputf8);
  EXPECT_EQ(p->ret, Ret::kHdrs);
  EXPECT_EQ(p->envid, "QQ314159");
  EXPECT_EQ(p->auth, "e+3Dmc2@x.org");
}

TEST(MailParams, KeywordsAndValuesCaseInsensitive) {
  const auto p = ParseMailParams("size=1 body=binarymime ret=full smtputf8");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->size, 1u);
  EXPECT_EQ(p->body, BodyType::kBinaryMime);
  EXPECT_EQ(p->ret, Ret::kFull);
  EXPECT_TRUE(p->smtputf8);
  EXPECT_EQ(ParseMailParams("BODY=7bit")->body, BodyType::k7Bit);
}

TEST(MailParams, ExtraSpacesTolerated) {
  const auto p = ParseMailParams("  SIZE=5   BODY=7BIT  ");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->size, 5u);
}

TEST(MailParams, SizeValues) {
  EXPECT_EQ(ParseMailParams("SIZE=0")->size, 0u);
  EXPECT_EQ(ParseMailParams("SIZE=18446744073709551615")->size,
            std::numeric_limits<uint64_t>::max());
  // 20 digits but over uint64_t: clamped so that the session answers 552.
  EXPECT_EQ(ParseMailParams("SIZE=99999999999999999999")->size,
            std::numeric_limits<uint64_t>::max());
  ExpectError(ParseMailParams("SIZE=123456789012345678901"), 501, "5.5.4");  // 21 digits
  ExpectError(ParseMailParams("SIZE"), 501, "5.5.4");
  ExpectError(ParseMailParams("SIZE="), 501, "5.5.4");
  ExpectError(ParseMailParams("SIZE=-1"), 501, "5.5.4");
  ExpectError(ParseMailParams("SIZE=+1"), 501, "5.5.4");
  ExpectError(ParseMailParams("SIZE=12k"), 501, "5.5.4");
}

TEST(MailParams, BadValues) {
  ExpectError(ParseMailParams("BODY=9BIT"), 501, "5.5.4");
  ExpectError(ParseMailParams("BODY"), 501, "5.5.4");
  ExpectError(ParseMailParams("SMTPUTF8=yes"), 501, "5.5.4");
  ExpectError(ParseMailParams("RET=ALL"), 501, "5.5.4");
  ExpectError(ParseMailParams("RET"), 501, "5.5.4");
  ExpectError(ParseMailParams("ENVID"), 501, "5.5.4");
  ExpectError(ParseMailParams("ENVID=a+2"), 501, "5.5.4");   // truncated hexchar
  ExpectError(ParseMailParams("ENVID=a+2b"), 501, "5.5.4");  // lower-case hex
  ExpectError(ParseMailParams("ENVID=" + std::string(101, 'x')), 501, "5.5.4");
  EXPECT_TRUE(ParseMailParams("ENVID=" + std::string(100, 'x')).ok());
  ExpectError(ParseMailParams("AUTH=a+zz"), 501, "5.5.4");
  EXPECT_EQ(ParseMailParams("AUTH=<>")->auth, "<>");
}

TEST(MailParams, MalformedParameterSyntax) {
  ExpectError(ParseMailParams("=5"), 501, "5.5.4");
  ExpectError(ParseMailParams("-SIZE=5"), 501, "5.5.4");
  ExpectError(ParseMailParams("SI_ZE=5"), 501, "5.5.4");
  ExpectError(ParseMailParams("SIZE=1=2"), 501, "5.5.4");
  ExpectError(ParseMailParams("ENVID=a\x01"), 501, "5.5.4");
  ExpectError(ParseMailParams("X-FOO=\xC3"), 501, "5.5.4");  // invalid UTF-8 value
}

TEST(MailParams, UnknownParameter) {
  const auto p = ParseMailParams("SIZE=1 X-FOO=bar");
  ExpectError(p, 555, "5.5.4");
  EXPECT_NE(p.error().text.find("X-FOO"), std::string::npos);
  ExpectError(ParseMailParams("NOTIFY=NEVER"), 555, "5.5.4");  // an RCPT parameter
  ExpectError(ParseMailParams("x-foo"), 555, "5.5.4");
}

TEST(MailParams, DuplicateParameter) {
  ExpectError(ParseMailParams("SIZE=1 size=2"), 501, "5.5.4");
  ExpectError(ParseMailParams("BODY=7BIT BODY=7BIT"), 501, "5.5.4");
  ExpectError(ParseMailParams("SMTPUTF8 SMTPUTF8"), 501, "5.5.4");
  ExpectError(ParseMailParams("RET=FULL RET=HDRS"), 501, "5.5.4");
  ExpectError(ParseMailParams("ENVID=a ENVID=b"), 501, "5.5.4");
  ExpectError(ParseMailParams("AUTH=<> AUTH=<>"), 501, "5.5.4");
}

TEST(RcptParams, Notify) {
  EXPECT_EQ(ParseRcptParams("NOTIFY=NEVER")->notify, kNotifyNever);
  EXPECT_EQ(ParseRcptParams("NOTIFY=SUCCESS,FAILURE")->notify, kNotifySuccess | kNotifyFailure);
  EXPECT_EQ(ParseRcptParams("notify=delay,success,failure")->notify,
            kNotifySuccess | kNotifyFailure | kNotifyDelay);
  EXPECT_EQ(ParseRcptParams("")->notify, 0);
  ExpectError(ParseRcptParams("NOTIFY=NEVER,SUCCESS"), 501, "5.5.4");
  ExpectError(ParseRcptParams("NOTIFY=SUCCESS,NEVER"), 501, "5.5.4");
  ExpectError(ParseRcptParams("NOTIFY=SUCCESS,"), 501, "5.5.4");
  ExpectError(ParseRcptParams("NOTIFY=,SUCCESS"), 501, "5.5.4");
  ExpectError(ParseRcptParams("NOTIFY=ALWAYS"), 501, "5.5.4");
  ExpectError(ParseRcptParams("NOTIFY"), 501, "5.5.4");
  ExpectError(ParseRcptParams("NOTIFY=NEVER NOTIFY=NEVER"), 501, "5.5.4");
}

TEST(RcptParams, Orcpt) {
  EXPECT_EQ(ParseRcptParams("ORCPT=rfc822;a@b.example")->orcpt, "rfc822;a@b.example");
  EXPECT_EQ(ParseRcptParams("ORCPT=rfc822;a+2Bb@b.example")->orcpt, "rfc822;a+2Bb@b.example");
  ExpectError(ParseRcptParams("ORCPT=a@b.example"), 501, "5.5.4");
  ExpectError(ParseRcptParams("ORCPT=;a@b"), 501, "5.5.4");
  ExpectError(ParseRcptParams("ORCPT=rfc822;"), 501, "5.5.4");
  ExpectError(ParseRcptParams("ORCPT=rfc 822;a"), 501, "5.5.4");  // "rfc" has no ";"
  ExpectError(ParseRcptParams("ORCPT=rfc822;a+4"), 501, "5.5.4");
  ExpectError(ParseRcptParams("ORCPT=rfc822;" + std::string(500, 'a')), 501, "5.5.4");
  ExpectError(ParseRcptParams("ORCPT=rfc822;a ORCPT=rfc822;b"), 501, "5.5.4");
}

TEST(RcptParams, OrcptUtf8NeedsSmtputf8) {
  ExpectError(ParseRcptParams("ORCPT=utf-8;ü@x.org"), 501, "5.5.4");
  const auto p = ParseRcptParams("ORCPT=utf-8;ü@x.org", /*smtputf8=*/true);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->orcpt, "utf-8;ü@x.org");
}

TEST(RcptParams, UnknownAndMailParameters) {
  ExpectError(ParseRcptParams("SIZE=10"), 555, "5.5.4");
  ExpectError(ParseRcptParams("FOO"), 555, "5.5.4");
}

TEST(Xtext, Rules) {
  EXPECT_TRUE(IsValidXtext(""));
  EXPECT_TRUE(IsValidXtext("abc!~@"));
  EXPECT_TRUE(IsValidXtext("+2B+3D"));
  EXPECT_FALSE(IsValidXtext("a=b"));
  EXPECT_FALSE(IsValidXtext("a b"));
  EXPECT_FALSE(IsValidXtext("+"));
  EXPECT_FALSE(IsValidXtext("+2"));
  EXPECT_FALSE(IsValidXtext("+G0"));
  EXPECT_FALSE(IsValidXtext("+2b"));
  EXPECT_FALSE(IsValidXtext("\x7f"));
  EXPECT_FALSE(IsValidXtext("\xC3\xBC"));
}

}  // namespace
}  // namespace sluice::smtp
