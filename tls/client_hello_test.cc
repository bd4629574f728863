// ClientHello parsing and name handling used for certificate selection (tls/detail/contexts.h).

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "tls/detail/contexts.h"

namespace sluice::tls::detail {
namespace {

TEST(ClientHelloTest, SignatureAlgorithms) {
  const std::vector<uint8_t> ext = {0x00, 0x04, 0x08, 0x04, 0x04, 0x03};
  EXPECT_TRUE(SignatureAlgorithmsContain(ext.data(), ext.size(), 0x0403));
  EXPECT_TRUE(SignatureAlgorithmsContain(ext.data(), ext.size(), 0x0804));
  EXPECT_FALSE(SignatureAlgorithmsContain(ext.data(), ext.size(), 0x0503));
  // Every truncation is rejected or reads only what is there.
  for (size_t n = 0; n < ext.size(); ++n) {
    EXPECT_FALSE(SignatureAlgorithmsContain(ext.data(), n, 0x0403)) << n;
  }
  const std::vector<uint8_t> odd = {0x00, 0x03, 0x04, 0x03, 0x00};
  EXPECT_FALSE(SignatureAlgorithmsContain(odd.data(), odd.size(), 0x0403));
  const std::vector<uint8_t> too_long = {0x00, 0x08, 0x04, 0x03};
  EXPECT_FALSE(SignatureAlgorithmsContain(too_long.data(), too_long.size(), 0x0403));
}

TEST(ClientHelloTest, SupportedVersions) {
  const std::vector<uint8_t> ext = {0x04, 0x7a, 0x7a, 0x03, 0x04};  // GREASE, TLS 1.3
  EXPECT_TRUE(SupportedVersionsContain(ext.data(), ext.size(), 0x0304));
  EXPECT_FALSE(SupportedVersionsContain(ext.data(), ext.size(), 0x0303));
  for (size_t n = 0; n < ext.size(); ++n) {
    EXPECT_FALSE(SupportedVersionsContain(ext.data(), n, 0x0304)) << n;
  }
}

TEST(ClientHelloTest, CipherSuites) {
  const std::vector<uint8_t> suites = {0x13, 0x01, 0xc0, 0x2f, 0xc0};  // odd tail ignored
  const uint16_t ecdsa[] = {0xC02B, 0xC02C};
  const uint16_t rsa[] = {0xC02F};
  EXPECT_FALSE(CipherSuitesContainAny(suites.data(), suites.size(), ecdsa, 2));
  EXPECT_TRUE(CipherSuitesContainAny(suites.data(), suites.size(), rsa, 1));
}

TEST(ClientHelloTest, Names) {
  EXPECT_EQ(NormalizeHostName("MX1.Example.COM."), "mx1.example.com");
  EXPECT_EQ(NormalizeHostName(""), "");
  EXPECT_TRUE(IsIpLiteral("127.0.0.1"));
  EXPECT_TRUE(IsIpLiteral("::1"));
  EXPECT_FALSE(IsIpLiteral("localhost"));
  EXPECT_TRUE(IsDnsName("mx.example.com"));
  EXPECT_FALSE(IsDnsName("2001:db8::1"));
  EXPECT_FALSE(IsDnsName(""));
}

}  // namespace
}  // namespace sluice::tls::detail
