#include "tls/context.h"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/temp_dir.h"
#include "tls/detail/contexts.h"
#include "tls/stream.h"
#include "tls/test_pki.h"

namespace sluice::tls {
namespace {

using testing::TestPki;

std::string CreateError(const ServerOptions& options) {
  auto ctx = ServerContext::Create(options);
  return ctx.ok() ? "" : ctx.error().message;
}

TEST(ServerContextTest, LoadsEcdsaAndRsa) {
  const TestPki& pki = TestPki::Get();
  ServerOptions options;
  options.certificates = {pki.default_rsa, pki.default_ecdsa};
  options.sni = {{"mail.example.com", {pki.mail_ecdsa}}, {"*.example.org", {pki.wild_ecdsa}}};
  auto ctx = ServerContext::Create(options);
  ASSERT_TRUE(ctx.ok()) << ctx.error().message;
  EXPECT_NE(*ctx, nullptr);
}

TEST(ServerContextTest, ClearErrors) {
  const TestPki& pki = TestPki::Get();
  ServerOptions options;
  EXPECT_NE(CreateError(options).find("no certificate configured"), std::string::npos);

  options.certificates = {{pki.dir + "/missing.crt", pki.default_ecdsa.private_key_file}};
  std::string e = CreateError(options);
  EXPECT_NE(e.find("missing.crt"), std::string::npos) << e;
  EXPECT_NE(e.find("No such file or directory"), std::string::npos) << e;

  options.certificates = {{pki.default_ecdsa.cert_chain_file, pki.dir + "/missing.key"}};
  e = CreateError(options);
  EXPECT_NE(e.find("missing.key"), std::string::npos) << e;

  // Key of another certificate.
  options.certificates = {{pki.default_ecdsa.cert_chain_file, pki.mail_ecdsa.private_key_file}};
  e = CreateError(options);
  EXPECT_NE(e.find("does not match"), std::string::npos) << e;

  // Key of another type.
  options.certificates = {{pki.default_ecdsa.cert_chain_file, pki.default_rsa.private_key_file}};
  e = CreateError(options);
  EXPECT_NE(e.find("does not match"), std::string::npos) << e;

  // A key file given as certificate and vice versa.
  options.certificates = {{pki.default_ecdsa.private_key_file, pki.default_ecdsa.cert_chain_file}};
  e = CreateError(options);
  EXPECT_NE(e.find("no usable PEM certificate"), std::string::npos) << e;

  options.certificates = {pki.ed25519};
  e = CreateError(options);
  EXPECT_NE(e.find("unsupported private key type"), std::string::npos) << e;

  options.certificates = {pki.default_ecdsa, pki.mail_ecdsa};
  e = CreateError(options);
  EXPECT_NE(e.find("two ECDSA"), std::string::npos) << e;

  options.certificates = {pki.default_ecdsa};
  options.min_version = 0x0301;  // TLS 1.0
  e = CreateError(options);
  EXPECT_NE(e.find("min_version"), std::string::npos) << e;

  options.min_version = kTls12;
  options.sni = {{"*.*.example.com", {pki.wild_ecdsa}}};
  EXPECT_NE(CreateError(options).find("sni name"), std::string::npos);
  options.sni = {{"a.example.com", {pki.wild_ecdsa}}, {"A.example.com.", {pki.wild_ecdsa}}};
  EXPECT_NE(CreateError(options).find("configured twice"), std::string::npos);
  options.sni = {{"a.example.com", {}}};
  e = CreateError(options);
  EXPECT_NE(e.find("sni \"a.example.com\": no certificate"), std::string::npos) << e;
}

TEST(ClientContextTest, ClearErrors) {
  ClientOptions options;
  options.ca_file = "/nonexistent/ca.pem";
  auto ctx = ClientContext::Create(options);
  ASSERT_FALSE(ctx.ok());
  EXPECT_NE(ctx.error().message.find("/nonexistent/ca.pem"), std::string::npos);

  options.ca_file = TestPki::Get().default_ecdsa.private_key_file;  // no certificate in it
  ctx = ClientContext::Create(options);
  ASSERT_FALSE(ctx.ok());
  EXPECT_NE(ctx.error().message.find("no usable PEM certificates"), std::string::npos)
      << ctx.error().message;

  options.ca_file = TestPki::Get().ca_file;
  options.min_version = kTls13;
  options.max_version = kTls12;
  EXPECT_FALSE(ClientContext::Create(options).ok());
}

TEST(ClientContextTest, LoadsDebianBundle) {
  // The production default; present on Debian with ca-certificates installed.
  if (!std::filesystem::exists("/etc/ssl/certs/ca-certificates.crt")) {
    FAIL()
        << "/etc/ssl/certs/ca-certificates.crt missing: install the Debian package ca-certificates";
  }
  auto ctx = ClientContext::Create(ClientOptions{});
  EXPECT_TRUE(ctx.ok()) << ctx.error().message;
}

// scripts/dev-cert: makes both pairs, is idempotent, and its output loads and handshakes.
TEST(DevCertTest, CreatesUsableIdempotentCertificates) {
  const char* script = std::getenv("SLUICE_DEV_CERT");
  if (script == nullptr) {
    FAIL() << "SLUICE_DEV_CERT not set (run through meson test)";
  }
  TempDir dir("sluice-dev-cert");
  std::string out = dir.path() + "/tls";
  ASSERT_EQ(testing::RunShell(std::string(script) + " '" + out + "' >/dev/null"), 0);
  for (const char* f : {"ecdsa.key", "ecdsa.crt", "rsa.key", "rsa.crt"}) {
    EXPECT_TRUE(std::filesystem::exists(out + "/" + f)) << f;
  }
  EXPECT_EQ(std::filesystem::status(out + "/ecdsa.key").permissions() &
                std::filesystem::perms::group_read,
            std::filesystem::perms::none);
  auto mtime = std::filesystem::last_write_time(out + "/ecdsa.crt");
  std::string again = dir.path() + "/again.txt";
  ASSERT_EQ(testing::RunShell(std::string(script) + " '" + out + "' >'" + again + "'"), 0);
  EXPECT_EQ(std::filesystem::file_size(again), 0u);  // nothing done, nothing said
  EXPECT_EQ(std::filesystem::last_write_time(out + "/ecdsa.crt"), mtime);

  ServerOptions options;
  options.certificates = {{out + "/ecdsa.crt", out + "/ecdsa.key"},
                          {out + "/rsa.crt", out + "/rsa.key"}};
  auto server_ctx = ServerContext::Create(options);
  ASSERT_TRUE(server_ctx.ok()) << server_ctx.error().message;

  // The self-signed certificate, trusted directly, verifies for localhost and 127.0.0.1.
  for (const char* name : {"localhost", "127.0.0.1"}) {
    ClientOptions client_options;
    client_options.ca_file = out + "/ecdsa.crt";
    auto client_ctx = ClientContext::Create(client_options);
    ASSERT_TRUE(client_ctx.ok()) << client_ctx.error().message;
    auto server = Stream::Server(*server_ctx);
    auto client = Stream::Client(*client_ctx, name, /*verify=*/true);
    std::string plain;
    client->Process(&plain);
    for (int i = 0; i < 10; ++i) {
      server->FeedCiphertext(client->TakeCiphertext());
      server->Process(&plain);
      client->FeedCiphertext(server->TakeCiphertext());
      client->Process(&plain);
    }
    EXPECT_EQ(client->state(), Stream::State::kOpen) << name << ": " << client->error();
    EXPECT_TRUE(client->peer_verified()) << name << ": " << client->verify_error();
  }
}

}  // namespace
}  // namespace sluice::tls

// ClientHello parsing and name handling used for certificate selection (tls/detail/contexts.h).
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
