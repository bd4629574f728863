#include "smtp/header.h"

#include <gtest/gtest.h>

namespace sluice::smtp {
namespace {

const char kMessage[] =
    "Received: from a by b; Thu, 26 Nov 2026 05:29:03 +0000\r\n"
    "received: from c\r\n"
    "\tby d; Thu, 26 Nov 2026 05:29:03 +0000\r\n"
    "Received-SPF: pass\r\n"
    "RECEIVED  : from e\r\n"
    "Subject: Received: not a field\r\n"
    "\r\n"
    "Received: in the body\r\n";

TEST(HeaderSectionEnd, FindsBlankLine) {
  const std::string_view msg = kMessage;
  const size_t end = HeaderSectionEnd(msg);
  EXPECT_EQ(msg.substr(end), "Received: in the body\r\n");
  EXPECT_EQ(HeaderSectionEnd("\r\nbody\r\n"), 2u);
  EXPECT_EQ(HeaderSectionEnd("Subject: x\r\n"), 12u);
  EXPECT_EQ(HeaderSectionEnd(""), 0u);
}

TEST(CountHeaderFields, HeaderOnlyCaseInsensitiveNoContinuations) {
  EXPECT_EQ(CountHeaderFields(kMessage, "Received"), 3u);
  EXPECT_EQ(CountHeaderFields(kMessage, "RECEIVED-spf"), 1u);
  EXPECT_EQ(CountHeaderFields(kMessage, "Subject"), 1u);
  EXPECT_EQ(CountHeaderFields(kMessage, "Date"), 0u);
  EXPECT_EQ(CountHeaderFields(kMessage, "by d; Thu, 26 Nov 2026 05"), 0u);
  EXPECT_TRUE(HasHeaderField(kMessage, "subject"));
  EXPECT_FALSE(HasHeaderField(kMessage, "Message-ID"));
  EXPECT_FALSE(HasHeaderField("\r\nMessage-ID: <x@y>\r\n", "Message-ID"));
}

TEST(FormatRfc5322Date, KnownInstants) {
  EXPECT_EQ(FormatRfc5322Date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
  EXPECT_EQ(FormatRfc5322Date(1795670943), "Thu, 26 Nov 2026 05:29:03 +0000");
  EXPECT_EQ(FormatRfc5322Date(951868799), "Tue, 29 Feb 2000 23:59:59 +0000");
}

}  // namespace
}  // namespace sluice::smtp
