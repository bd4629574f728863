#include "admin/json.h"

#include <gtest/gtest.h>

namespace sluice::admin {
namespace {

std::string Json(std::string_view s) {
  std::string out;
  AppendJsonString(out, s);
  return out;
}

TEST(JsonTest, EscapesQuotesBackslashAndControlCharacters) {
  EXPECT_EQ(Json("plain"), "\"plain\"");
  EXPECT_EQ(Json("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(Json(std::string_view("\0\n\r\t\x1f\x7f", 6)),
            "\"\\u0000\\u000a\\u000d\\u0009\\u001f\\u007f\"");
}

TEST(JsonTest, KeepsValidUtf8AndReplacesInvalidBytes) {
  EXPECT_EQ(Json("ü€😀"), "\"ü€😀\"");
  EXPECT_EQ(Json("\xff"), "\"\\ufffd\"");
  EXPECT_EQ(Json("a\xc3"), "\"a\\ufffd\"");                                 // truncated sequence
  EXPECT_EQ(Json("\xc0\xaf"), "\"\\ufffd\\ufffd\"");                        // overlong
  EXPECT_EQ(Json("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");             // surrogate
  EXPECT_EQ(Json("\xf4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");  // > U+10FFFF
}

TEST(JsonTest, ListEntryHasTheDocumentedFields) {
  queue::Envelope e;
  e.sender = "";
  e.recipients.push_back({"a@x", 0, "", queue::RecipientState::kPending, 0, ""});
  e.recipients.push_back({"b@x", 0, "", queue::RecipientState::kPending, 0, ""});
  e.body_size = 1234;
  e.received_at_us = 1'000'000;
  EXPECT_EQ(ListEntryToJson(queue::MessageId{0, 1}, e, 61'500'000),
            "{\"id\":\"00000000000000000000000001\",\"sender\":\"\",\"recipients\":[\"a@x\","
            "\"b@x\"],\"size\":1234,\"age\":60}");
}

}  // namespace
}  // namespace sluice::admin
