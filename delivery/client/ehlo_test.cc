#include "delivery/client/ehlo.h"

#include <gtest/gtest.h>

namespace sluice::delivery {
namespace {

TEST(ParseEhloTest, ReadsEveryKeywordCaseInsensitively) {
  const Capabilities c = ParseEhlo(smtp::Reply{
      250, "",
      "mx.example.com Hello [127.0.0.1]\nPIPELINING\nsize 35882577\n8bitmime\nSmtpUtf8\n"
      "CHUNKING\nDSN\nENHANCEDSTATUSCODES\nSTARTTLS\nAUTH PLAIN login\nAUTH=LOGIN XOAUTH2"});
  EXPECT_TRUE(c.esmtp);
  EXPECT_TRUE(c.pipelining);
  EXPECT_TRUE(c.eightbitmime);
  EXPECT_TRUE(c.smtputf8);
  EXPECT_TRUE(c.chunking);
  EXPECT_TRUE(c.dsn);
  EXPECT_TRUE(c.enhanced_status_codes);
  EXPECT_TRUE(c.starttls);
  EXPECT_TRUE(c.size_offered);
  EXPECT_EQ(c.size, 35882577u);
  EXPECT_EQ(c.auth, (std::vector<std::string>{"PLAIN", "LOGIN", "XOAUTH2"}));
}

TEST(ParseEhloTest, GreetingLineIsNotAKeyword) {
  const Capabilities c = ParseEhlo(smtp::Reply{250, "", "PIPELINING"});
  EXPECT_TRUE(c.esmtp);
  EXPECT_FALSE(c.pipelining);
}

TEST(ParseEhloTest, SizeWithoutUsableValueAnnouncesNoLimit) {
  for (const char* line : {"SIZE", "SIZE 0", "SIZE abc", "SIZE 99999999999999999999999"}) {
    const Capabilities c = ParseEhlo(smtp::Reply{250, "", std::string("mx\n") + line});
    EXPECT_TRUE(c.size_offered) << line;
    EXPECT_FALSE(c.size.has_value()) << line;
  }
  EXPECT_FALSE(ParseEhlo(smtp::Reply{250, "", "mx\nPIPELINING"}).size_offered);
}

TEST(ParseEhloTest, UnknownKeywordsAndNearMissesAreIgnored) {
  const Capabilities c =
      ParseEhlo(smtp::Reply{250, "", "mx\nX-EXPS GSSAPI\nPIPELINING2\nDSNX\n  \nVRFY"});
  EXPECT_TRUE(c.esmtp);
  EXPECT_FALSE(c.pipelining);
  EXPECT_FALSE(c.dsn);
}

TEST(ParseEhloTest, FailedEhloOffersNothing) {
  const Capabilities c = ParseEhlo(smtp::Reply{502, "5.5.1", "no\nPIPELINING"});
  EXPECT_FALSE(c.esmtp);
  EXPECT_FALSE(c.pipelining);
}

}  // namespace
}  // namespace sluice::delivery
