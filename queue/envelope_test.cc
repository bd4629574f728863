#include "queue/envelope.h"

#include <random>

#include <gtest/gtest.h>

namespace sluice::queue {
namespace {

Envelope FullEnvelope() {
  Envelope e;
  e.sender = "bounce+123@example.org";
  e.body_type = 2;
  e.smtputf8 = true;
  e.ret = 1;
  e.envid = "QQ314159";
  e.auth_param = "<>";
  e.recipients.push_back(
      {"a@example.com", 0x0e, "rfc822;a@example.com", RecipientState::kPending, 0, ""});
  e.recipients.push_back(
      {"ü@exämple.de", 0, "", RecipientState::kDelivered, 3, "250 2.0.0 Ok: queued"});
  e.recipients.push_back(
      {std::string("nul\0inside", 10), 1, "", RecipientState::kBounced, 70000, "550 5.1.1 no"});
  e.received_at_us = 1'700'000'000'123'456;
  e.next_due_us = ~0ULL;
  e.expires_at_us = 1'700'432'000'000'000;
  e.body_size = 1 << 20;
  e.client_ip = "2001:db8::1";
  e.helo = "mail.example.org";
  e.auth_user = "app";
  e.listener = "submission";
  e.tls = true;
  e.attempts = 0xFFFFFFFFu;
  return e;
}

TEST(EnvelopeTest, RoundTripsEveryField) {
  const Envelope e = FullEnvelope();
  const std::string bytes = EncodeEnvelope(e);
  EXPECT_EQ(bytes[0], 1) << "version byte first";
  Result<Envelope> back = DecodeEnvelope(bytes);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, e);
}

TEST(EnvelopeTest, RoundTripsDefaults) {
  Result<Envelope> back = DecodeEnvelope(EncodeEnvelope(Envelope{}));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, Envelope{});
}

TEST(EnvelopeTest, RejectsEveryTruncation) {
  const std::string bytes = EncodeEnvelope(FullEnvelope());
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(DecodeEnvelope(std::string_view(bytes.data(), n)).ok()) << n;
  }
}

TEST(EnvelopeTest, RejectsTrailingBytesBadVersionFlagsAndState) {
  const std::string good = EncodeEnvelope(FullEnvelope());
  EXPECT_FALSE(DecodeEnvelope(good + '\0').ok());

  std::string bad = good;
  bad[0] = 2;
  Result<Envelope> r = DecodeEnvelope(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("version"), std::string::npos) << r.error().message;

  bad = good;
  bad[1] = static_cast<char>(0x80);
  EXPECT_FALSE(DecodeEnvelope(bad).ok());

  Envelope e;
  e.recipients.push_back({"x@y", 0, "", RecipientState::kPending, 0, ""});
  std::string one = EncodeEnvelope(e);
  // Layout of the single recipient at the end: len 3 "x@y", notify, len 0, state, attempts, len 0.
  ASSERT_EQ(one[one.size() - 3], 0);
  one[one.size() - 3] = 3;
  EXPECT_FALSE(DecodeEnvelope(one).ok());
}

TEST(EnvelopeTest, RejectsHugeLengthsAndOverlongVarints) {
  // version, flags, body_type, ret, then a sender length of 2^63.
  std::string huge("\x01\x00\x00\x00", 4);
  huge += std::string("\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 9);
  EXPECT_FALSE(DecodeEnvelope(huge).ok());
  std::string overlong("\x01\x00\x00\x00", 4);
  overlong += std::string(11, '\x80');
  EXPECT_FALSE(DecodeEnvelope(overlong).ok());
  std::string overflow("\x01\x00\x00\x00", 4);
  overflow += std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 10);
  EXPECT_FALSE(DecodeEnvelope(overflow).ok());
}

TEST(EnvelopeTest, RandomGarbageAndMutationsNeverCrash) {
  std::mt19937_64 rng(42);
  const std::string good = EncodeEnvelope(FullEnvelope());
  size_t decoded = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string input;
    if (i % 2 == 0) {
      input.resize(rng() % 200);
      for (char& c : input)
        c = static_cast<char>(rng());
      if (!input.empty() && i % 4 == 0)
        input[0] = 1;  // get past the version check
    } else {
      input = good;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f)
        input[rng() % input.size()] = static_cast<char>(rng());
      if (rng() % 3 == 0)
        input.resize(rng() % input.size());
    }
    Result<Envelope> r = DecodeEnvelope(input);
    if (r.ok()) {
      ++decoded;
      // Whatever decodes must re-encode and decode to the same value.
      Result<Envelope> again = DecodeEnvelope(EncodeEnvelope(*r));
      ASSERT_TRUE(again.ok());
      ASSERT_EQ(*again, *r);
    } else {
      ASSERT_FALSE(r.error().message.empty());
    }
  }
  EXPECT_GT(decoded, 0u) << "mutations of string bytes should still decode sometimes";
}

}  // namespace
}  // namespace sluice::queue
