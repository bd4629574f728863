#include "auth/base64.h"

#include <string>

#include <gtest/gtest.h>

namespace sluice::auth {
namespace {

using namespace std::string_literals;

TEST(Base64, Rfc4648Vectors) {
  // RFC 4648 §10.
  const std::pair<const char*, const char*> cases[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : cases) {
    EXPECT_EQ(EncodeBase64(plain), encoded);
    const auto decoded = DecodeBase64(encoded);
    ASSERT_TRUE(decoded.has_value()) << encoded;
    EXPECT_EQ(*decoded, plain);
  }
}

TEST(Base64, RoundTripsEveryByteAndLength) {
  std::string all;
  for (int i = 0; i < 256; ++i) {
    all.push_back(static_cast<char>(i));
  }
  for (size_t len = 0; len <= all.size(); ++len) {
    const std::string in = all.substr(all.size() - len);  // high bytes and NUL included
    const auto out = DecodeBase64(EncodeBase64(in));
    ASSERT_TRUE(out.has_value()) << len;
    EXPECT_EQ(*out, in) << len;
  }
}

TEST(Base64, SaslPromptsAndPlain) {
  EXPECT_EQ(EncodeBase64("Username:"), "VXNlcm5hbWU6");
  EXPECT_EQ(EncodeBase64("Password:"), "UGFzc3dvcmQ6");
  EXPECT_EQ(EncodeBase64("\0tim\0tanstaaftanstaaf"s), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
}

TEST(Base64, StrictRejects) {
  const char* bad[] = {
      "Zg",     // missing padding
      "Zg=",    // short padding
      "Zm9v ",  // whitespace
      " Zm9v",
      "Zm9v\r\n",  // line break
      "Zm 9v",
      "Zm9=v===",  // '=' inside
      "Z===",      // three '='
      "====",
      "=",
      "Zh==",      // non-zero pad bits (RFC 4648 §3.5): "Zg==" is the canonical form
      "Zm9=",      // "Zm8=" is canonical
      "Zm9v-_==",  // base64url alphabet
      "Zm9v\x80\x80\x80\x80",
      "AB=C",
  };
  for (const char* s : bad) {
    EXPECT_FALSE(DecodeBase64(s).has_value()) << s;
  }
  EXPECT_FALSE(DecodeBase64("Zm9v\0\0\0\0"s).has_value());
}

}  // namespace
}  // namespace sluice::auth
