#include "queue/quarantine.h"

#include <gtest/gtest.h>

namespace sluice::queue {
namespace {

TEST(Quarantine, RoundTrip) {
  QuarantinedRecord r;
  const MessageId id = *MessageId::Parse("000SGJEN0EMWH0000002DGKRRF");
  const auto key = id.Key();
  r.key.assign(key.data(), key.size());
  r.quarantined_at_us = 1765000000123456;
  r.reason = "envelope: truncated";
  r.meta = std::string("\x07\x00garbage", 9);
  r.has_body = true;
  r.body = "Received: ...\r\n\r\nbody\r\n";
  auto back = DecodeQuarantined(r.key, EncodeQuarantined(r));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->key, r.key);
  EXPECT_EQ(back->quarantined_at_us, r.quarantined_at_us);
  EXPECT_EQ(back->reason, r.reason);
  EXPECT_EQ(back->meta, r.meta);
  EXPECT_TRUE(back->has_body);
  EXPECT_EQ(back->body, r.body);
  EXPECT_EQ(back->Name(), "000SGJEN0EMWH0000002DGKRRF");
  EXPECT_EQ(QuarantineKeyFromName(back->Name()), r.key);
}

TEST(Quarantine, KeyThatIsNotAnIdIsNamedInHex) {
  QuarantinedRecord r;
  r.key = std::string("\x01\xff", 2);
  EXPECT_EQ(r.Name(), "x01ff");
  EXPECT_FALSE(r.id());
  EXPECT_EQ(QuarantineKeyFromName("x01ff"), r.key);
  EXPECT_FALSE(QuarantineKeyFromName("x0"));
  EXPECT_FALSE(QuarantineKeyFromName("xzz"));
  EXPECT_FALSE(QuarantineKeyFromName("nonsense"));
}

TEST(Quarantine, MalformedValuesAreErrors) {
  EXPECT_FALSE(DecodeQuarantined("k", "").ok());
  EXPECT_FALSE(DecodeQuarantined("k", "\x09").ok());  // unknown version
  QuarantinedRecord r;
  r.key = "k";
  r.reason = "x";
  const std::string good = EncodeQuarantined(r);
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(DecodeQuarantined("k", good.substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(DecodeQuarantined("k", good + "x").ok());
}

}  // namespace
}  // namespace sluice::queue
