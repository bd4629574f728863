#include "tls/stream.h"

#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls/context.h"
#include "tls/counters.h"
#include "tls/test_pki.h"

namespace sluice::tls {
namespace {

using State = Stream::State;
using testing::TestPki;

// Moves ciphertext both ways until neither side has anything to send. Returns plaintext each
// side received through the given strings.
void Pump(Stream& client, Stream& server, std::string* client_plain, std::string* server_plain) {
  std::string sink_c, sink_s;
  client_plain = client_plain != nullptr ? client_plain : &sink_c;
  server_plain = server_plain != nullptr ? server_plain : &sink_s;
  client.Process(client_plain);  // the first call produces the ClientHello
  for (int round = 0; round < 1000; ++round) {
    bool moved = false;
    if (client.HasCiphertext()) {
      server.FeedCiphertext(client.TakeCiphertext());
      moved = true;
    }
    server.Process(server_plain);
    if (server.HasCiphertext()) {
      client.FeedCiphertext(server.TakeCiphertext());
      moved = true;
    }
    client.Process(client_plain);
    if (!moved && !client.HasCiphertext() && !server.HasCiphertext()) {
      return;
    }
  }
  ADD_FAILURE() << "Pump did not settle";
}

// The CN of the certificate the client got, e.g. "default-ecdsa".
std::string PeerCommonName(const Stream& client) {
  bssl::UniquePtr<X509> cert(SSL_get_peer_certificate(client.native_handle()));
  if (cert == nullptr) {
    return "";
  }
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, buf, sizeof(buf));
  return buf;
}

class StreamTest : public ::testing::Test {
 protected:
  const TestPki& pki_ = TestPki::Get();

  std::shared_ptr<ServerContext> MakeServer(ServerOptions options = {}) {
    if (options.certificates.empty()) {
      options.certificates = {pki_.default_ecdsa, pki_.default_rsa};
    }
    auto ctx = ServerContext::Create(options);
    EXPECT_TRUE(ctx.ok()) << ctx.error().message;
    return ctx.ok() ? *ctx : nullptr;
  }

  std::shared_ptr<ClientContext> MakeClient(int max_version = 0, int min_version = kTls12) {
    ClientOptions options;
    options.ca_file = pki_.ca_file;
    options.max_version = max_version;
    options.min_version = min_version;
    auto ctx = ClientContext::Create(options);
    EXPECT_TRUE(ctx.ok()) << ctx.error().message;
    return ctx.ok() ? *ctx : nullptr;
  }
};

TEST_F(StreamTest, HandshakeAndDataTls13) {
  auto server = Stream::Server(MakeServer());
  auto client = Stream::Client(MakeClient(), "localhost", /*verify=*/true);
  EXPECT_EQ(server->state(), State::kHandshaking);
  EXPECT_FALSE(client->WritePlaintext("too early"));
  Pump(*client, *server, nullptr, nullptr);
  ASSERT_EQ(client->state(), State::kOpen) << client->error();
  ASSERT_EQ(server->state(), State::kOpen) << server->error();
  EXPECT_EQ(client->version(), "TLSv1.3");
  EXPECT_EQ(server->version(), "TLSv1.3");
  EXPECT_FALSE(client->cipher().empty());
  EXPECT_EQ(client->cipher(), server->cipher());
  EXPECT_TRUE(client->peer_verified());
  EXPECT_EQ(client->verify_error(), "ok");
  EXPECT_FALSE(server->peer_verified());
  EXPECT_EQ(server->sni(), "localhost");
  EXPECT_FALSE(client->resumed());
  EXPECT_EQ(PeerCommonName(*client), "default-ecdsa");

  std::string at_client, at_server;
  ASSERT_TRUE(client->WritePlaintext("EHLO client.example\r\n"));
  Pump(*client, *server, &at_client, &at_server);
  EXPECT_EQ(at_server, "EHLO client.example\r\n");
  ASSERT_TRUE(server->WritePlaintext("250 ok\r\n"));
  Pump(*client, *server, &at_client, &at_server);
  EXPECT_EQ(at_client, "250 ok\r\n");
}

TEST_F(StreamTest, HandshakeAndDataTls12) {
  auto server = Stream::Server(MakeServer());
  auto client = Stream::Client(MakeClient(kTls12), "localhost", /*verify=*/true);
  Pump(*client, *server, nullptr, nullptr);
  ASSERT_EQ(client->state(), State::kOpen) << client->error();
  ASSERT_EQ(server->state(), State::kOpen) << server->error();
  EXPECT_EQ(client->version(), "TLSv1.2");
  EXPECT_EQ(server->version(), "TLSv1.2");
  // Our TLS 1.2 list is ECDHE + AEAD only; the client supports ECDSA, so it gets ECDSA.
  EXPECT_EQ(client->cipher(), "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
  EXPECT_TRUE(client->peer_verified());
  std::string at_client, at_server;
  ASSERT_TRUE(client->WritePlaintext("QUIT\r\n"));
  ASSERT_TRUE(server->WritePlaintext("221 bye\r\n"));
  Pump(*client, *server, &at_client, &at_server);
  EXPECT_EQ(at_server, "QUIT\r\n");
  EXPECT_EQ(at_client, "221 bye\r\n");
}

TEST_F(StreamTest, OneMebibyteBothWays) {
  for (int max : {kTls12, kTls13}) {
    SCOPED_TRACE(max);
    auto server = Stream::Server(MakeServer());
    auto client = Stream::Client(MakeClient(max), "localhost", true);
    Pump(*client, *server, nullptr, nullptr);
    ASSERT_EQ(client->state(), State::kOpen);
    std::string up(1 << 20, '\0'), down(1 << 20, '\0');
    std::mt19937 rng(42);
    for (size_t i = 0; i < up.size(); ++i) {
      up[i] = static_cast<char>(rng());
      down[i] = static_cast<char>(rng());
    }
    ASSERT_TRUE(client->WritePlaintext(up));
    ASSERT_TRUE(server->WritePlaintext(down));
    std::string at_client, at_server;
    Pump(*client, *server, &at_client, &at_server);
    EXPECT_EQ(at_server.size(), up.size());
    EXPECT_TRUE(at_server == up);
    EXPECT_EQ(at_client.size(), down.size());
    EXPECT_TRUE(at_client == down);
  }
}

// Each handshake flight, cut in two at every byte boundary: the receiver must wait for the rest
// (no output, still handshaking) and then finish normally.
TEST_F(StreamTest, HandshakeFlightsSplitAtEveryByte) {
  auto server_ctx = MakeServer();
  auto client_ctx = MakeClient();
  for (int max : {kTls12, kTls13}) {
    SCOPED_TRACE(max);
    client_ctx = MakeClient(max);
    // Which flight to split: 0 = ClientHello (to the server), 1 = server's first flight (to the
    // client).
    for (int flight = 0; flight < 2; ++flight) {
      size_t length = 0;
      for (size_t cut = 1;; ++cut) {
        auto server = Stream::Server(server_ctx);
        auto client = Stream::Client(client_ctx, "localhost", true);
        std::string plain;
        client->Process(&plain);
        std::string bytes = client->TakeCiphertext();
        Stream* receiver = server.get();
        if (flight == 1) {
          server->FeedCiphertext(bytes);
          server->Process(&plain);
          bytes = server->TakeCiphertext();
          receiver = client.get();
        }
        length = bytes.size();
        if (cut >= length) {
          break;
        }
        ASSERT_TRUE(receiver->FeedCiphertext(std::string_view(bytes).substr(0, cut)));
        ASSERT_EQ(receiver->Process(&plain), State::kHandshaking) << "cut " << cut;
        ASSERT_FALSE(receiver->HasCiphertext()) << "cut " << cut;
        ASSERT_TRUE(receiver->FeedCiphertext(std::string_view(bytes).substr(cut)));
        receiver->Process(&plain);
        Pump(*client, *server, nullptr, nullptr);
        ASSERT_EQ(client->state(), State::kOpen) << "cut " << cut << ": " << client->error();
        ASSERT_EQ(server->state(), State::kOpen) << "cut " << cut << ": " << server->error();
        EXPECT_TRUE(plain.empty());
      }
      EXPECT_GT(length, 100u);
    }
  }
}

// Every byte of the whole conversation delivered one at a time, then random splits of data.
TEST_F(StreamTest, OneByteAtATimeAndRandomSplits) {
  auto server = Stream::Server(MakeServer());
  auto client = Stream::Client(MakeClient(), "localhost", true);
  std::string at_client, at_server;
  client->Process(&at_client);
  for (int round = 0; round < 100 && (client->HasCiphertext() || server->HasCiphertext());
       ++round) {
    for (char c : client->TakeCiphertext()) {
      server->FeedCiphertext(std::string_view(&c, 1));
      server->Process(&at_server);
    }
    for (char c : server->TakeCiphertext()) {
      client->FeedCiphertext(std::string_view(&c, 1));
      client->Process(&at_client);
    }
  }
  ASSERT_EQ(client->state(), State::kOpen) << client->error();
  ASSERT_EQ(server->state(), State::kOpen) << server->error();

  std::mt19937 rng(7);
  std::string message;
  for (int i = 0; i < 5000; ++i) {
    message += "line " + std::to_string(i) + "\r\n";
  }
  ASSERT_TRUE(client->WritePlaintext(message));
  std::string wire = client->TakeCiphertext();
  size_t pos = 0;
  while (pos < wire.size()) {
    size_t n = std::min<size_t>(wire.size() - pos, 1 + rng() % 700);
    ASSERT_TRUE(server->FeedCiphertext(std::string_view(wire).substr(pos, n)));
    ASSERT_EQ(server->Process(&at_server), State::kOpen);
    pos += n;
  }
  EXPECT_EQ(at_server, message);
}

TEST_F(StreamTest, RsaOnlyClientGetsRsaCertificate) {
  auto server_ctx = MakeServer();
  for (int max : {kTls12, kTls13}) {
    SCOPED_TRACE(max);
    auto server = Stream::Server(server_ctx);
    auto client = Stream::Client(MakeClient(max), "localhost", true);
    const uint16_t rsa_only[] = {SSL_SIGN_RSA_PSS_RSAE_SHA256, SSL_SIGN_RSA_PKCS1_SHA256};
    ASSERT_TRUE(SSL_set_verify_algorithm_prefs(client->native_handle(), rsa_only, 2));
    Pump(*client, *server, nullptr, nullptr);
    ASSERT_EQ(client->state(), State::kOpen) << client->error() << " / " << server->error();
    EXPECT_EQ(PeerCommonName(*client), "default-rsa");
    EXPECT_TRUE(client->peer_verified());
  }
  // And an unrestricted client on the same context gets ECDSA.
  auto server = Stream::Server(server_ctx);
  auto client = Stream::Client(MakeClient(), "localhost", true);
  Pump(*client, *server, nullptr, nullptr);
  EXPECT_EQ(PeerCommonName(*client), "default-ecdsa");
}

TEST_F(StreamTest, SingleRsaCertificateServesEveryone) {
  ServerOptions options;
  options.certificates = {pki_.default_rsa};
  auto server = Stream::Server(MakeServer(options));
  auto client = Stream::Client(MakeClient(), "localhost", true);
  Pump(*client, *server, nullptr, nullptr);
  ASSERT_EQ(client->state(), State::kOpen) << client->error();
  EXPECT_EQ(PeerCommonName(*client), "default-rsa");
}

TEST_F(StreamTest, SniSelectsCertificate) {
  ServerOptions options;
  options.certificates = {pki_.default_ecdsa, pki_.default_rsa};
  options.sni = {{"Mail.Example.com", {pki_.mail_rsa, pki_.mail_ecdsa}},
                 {"*.example.org", {pki_.wild_ecdsa}}};
  auto server_ctx = MakeServer(options);
  auto client_ctx = MakeClient();
  struct Case {
    std::string name;
    std::string cn;
    bool verified;
  } cases[] = {
      {"mail.example.com", "mail-ecdsa", true},
      {"MAIL.EXAMPLE.COM.", "mail-ecdsa", true},
      {"mx1.example.org", "wild-ecdsa", true},
      {"a.b.example.org", "default-ecdsa", false},  // wildcard covers one label only
      {"example.org", "default-ecdsa", false},
      {"other.test", "default-ecdsa", false},
      {"127.0.0.1", "default-ecdsa", true},  // IP literal: no SNI, IP SAN checked
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto server = Stream::Server(server_ctx);
    auto client = Stream::Client(client_ctx, c.name, /*verify=*/false);
    Pump(*client, *server, nullptr, nullptr);
    ASSERT_EQ(client->state(), State::kOpen) << client->error();
    EXPECT_EQ(PeerCommonName(*client), c.cn);
    EXPECT_EQ(client->peer_verified(), c.verified) << client->verify_error();
  }
  // RSA-only client asking for the SNI name gets that name's RSA certificate.
  auto server = Stream::Server(server_ctx);
  auto client = Stream::Client(client_ctx, "mail.example.com", true);
  const uint16_t rsa_only[] = {SSL_SIGN_RSA_PSS_RSAE_SHA256};
  ASSERT_TRUE(SSL_set_verify_algorithm_prefs(client->native_handle(), rsa_only, 1));
  Pump(*client, *server, nullptr, nullptr);
  ASSERT_EQ(client->state(), State::kOpen) << client->error();
  EXPECT_EQ(PeerCommonName(*client), "mail-rsa");
  EXPECT_EQ(server->sni(), "mail.example.com");
}

TEST_F(StreamTest, MinVersion13RefusesTls12Client) {
  ServerOptions options;
  options.min_version = kTls13;
  auto server = Stream::Server(MakeServer(options));
  auto client = Stream::Client(MakeClient(kTls12), "localhost", true);
  uint64_t failed_before = ProcessHandshakeCounters().server_failed.load();
  Pump(*client, *server, nullptr, nullptr);
  EXPECT_EQ(server->state(), State::kFailed);
  EXPECT_EQ(client->state(), State::kFailed);
  EXPECT_NE(server->error().find("UNSUPPORTED_PROTOCOL"), std::string::npos) << server->error();
  EXPECT_NE(client->error().find("ALERT"), std::string::npos) << client->error();
  EXPECT_EQ(ProcessHandshakeCounters().server_failed.load(), failed_before + 1);
  EXPECT_FALSE(server->FeedCiphertext("x"));

  // A TLS 1.3 client is fine.
  auto server2 = Stream::Server(MakeServer(options));
  auto client2 = Stream::Client(MakeClient(), "localhost", true);
  Pump(*client2, *server2, nullptr, nullptr);
  EXPECT_EQ(server2->state(), State::kOpen);
}

TEST_F(StreamTest, WrongNameOpportunisticRecordsMismatch) {
  auto server = Stream::Server(MakeServer());
  auto client = Stream::Client(MakeClient(), "mx.wrong.test", /*verify=*/false);
  Pump(*client, *server, nullptr, nullptr);
  ASSERT_EQ(client->state(), State::kOpen) << client->error();
  EXPECT_FALSE(client->peer_verified());
  EXPECT_EQ(client->verify_error(), "Hostname mismatch");
  std::string at_server;
  ASSERT_TRUE(client->WritePlaintext("still encrypted"));
  Pump(*client, *server, nullptr, &at_server);
  EXPECT_EQ(at_server, "still encrypted");
}

TEST_F(StreamTest, WrongNameVerifiedFailsHandshake) {
  auto server = Stream::Server(MakeServer());
  auto client = Stream::Client(MakeClient(), "mx.wrong.test", /*verify=*/true);
  Pump(*client, *server, nullptr, nullptr);
  EXPECT_EQ(client->state(), State::kFailed);
  EXPECT_FALSE(client->peer_verified());
  EXPECT_EQ(client->verify_error(), "Hostname mismatch");
  EXPECT_NE(client->error().find("CERTIFICATE_VERIFY_FAILED"), std::string::npos)
      << client->error();
  EXPECT_NE(client->error().find("Hostname mismatch"), std::string::npos) << client->error();
  // The client's alert reached the server.
  EXPECT_EQ(server->state(), State::kFailed);
}

TEST_F(StreamTest, UntrustedChainOpportunisticSucceedsVerifiedFails) {
  ClientOptions options;
  options.ca_file = pki_.default_rsa.cert_chain_file;  // a leaf, not our CA
  auto client_ctx = ClientContext::Create(options);
  ASSERT_TRUE(client_ctx.ok()) << client_ctx.error().message;
  auto server_ctx = MakeServer();
  {
    auto server = Stream::Server(server_ctx);
    auto client = Stream::Client(*client_ctx, "localhost", false);
    Pump(*client, *server, nullptr, nullptr);
    ASSERT_EQ(client->state(), State::kOpen);
    EXPECT_FALSE(client->peer_verified());
    // The server sends leaf + test CA; the CA is not trusted here.
    EXPECT_EQ(client->verify_error(), "self signed certificate in certificate chain");
  }
  {
    auto server = Stream::Server(server_ctx);
    auto client = Stream::Client(*client_ctx, "localhost", true);
    Pump(*client, *server, nullptr, nullptr);
    EXPECT_EQ(client->state(), State::kFailed);
  }
}

// Runs one full connection (handshake, client reads the tickets) and returns the client stream.
std::unique_ptr<Stream> Connect(std::shared_ptr<ServerContext> server_ctx,
                                std::shared_ptr<ClientContext> client_ctx, const std::string& name,
                                bool verify, bool* server_resumed) {
  auto server = Stream::Server(std::move(server_ctx));
  auto client = Stream::Client(std::move(client_ctx), name, verify);
  Pump(*client, *server, nullptr, nullptr);
  // Exchange a line each way, so TLS 1.3 NewSessionTicket messages are read by the client.
  std::string at_client, at_server;
  EXPECT_TRUE(server->WritePlaintext("220 hi\r\n"));
  Pump(*client, *server, &at_client, &at_server);
  EXPECT_EQ(at_client, "220 hi\r\n");
  EXPECT_EQ(client->resumed(), server->resumed());
  *server_resumed = server->resumed();
  return client;
}

TEST_F(StreamTest, ClientResumesPerHostWithTickets) {
  for (int max : {kTls12, kTls13}) {
    SCOPED_TRACE(max);
    auto server_ctx = MakeServer();
    auto client_ctx = MakeClient(max);
    uint64_t resumed_before = ProcessHandshakeCounters().client_resumed.load();
    bool server_resumed = false;
    auto first = Connect(server_ctx, client_ctx, "localhost", true, &server_resumed);
    EXPECT_FALSE(first->resumed());
    EXPECT_EQ(client_ctx->cached_sessions(), 1u);
    auto second = Connect(server_ctx, client_ctx, "localhost", true, &server_resumed);
    EXPECT_TRUE(second->resumed());
    EXPECT_TRUE(server_resumed);
    EXPECT_TRUE(second->peer_verified());  // carried in the session
    EXPECT_EQ(ProcessHandshakeCounters().client_resumed.load(), resumed_before + 1);
    // Another host name does not get localhost's session.
    auto other = Connect(server_ctx, client_ctx, "127.0.0.1", true, &server_resumed);
    EXPECT_FALSE(other->resumed());
    // Nor does an opportunistic connection to the same name (separate cache key).
    auto opportunistic = Connect(server_ctx, client_ctx, "localhost", false, &server_resumed);
    EXPECT_FALSE(opportunistic->resumed());
    // A new server context (reload) has a new ticket key: full handshake.
    auto reloaded = Connect(MakeServer(), client_ctx, "localhost", true, &server_resumed);
    EXPECT_FALSE(reloaded->resumed());
    auto again = Connect(server_ctx, client_ctx, "localhost", true, &server_resumed);
    EXPECT_FALSE(again->resumed());  // the reloaded context's ticket replaced the old one
  }
}

TEST_F(StreamTest, SniNamesResumeOnTheirOwnCertificates) {
  ServerOptions options;
  options.certificates = {pki_.default_ecdsa, pki_.default_rsa};
  options.sni = {{"mail.example.com", {pki_.mail_ecdsa, pki_.mail_rsa}}};
  auto server_ctx = MakeServer(options);
  for (int max : {kTls12, kTls13}) {
    SCOPED_TRACE(max);
    auto client_ctx = MakeClient(max);
    bool server_resumed = false;
    auto first = Connect(server_ctx, client_ctx, "mail.example.com", true, &server_resumed);
    EXPECT_EQ(PeerCommonName(*first), "mail-ecdsa");
    auto second = Connect(server_ctx, client_ctx, "mail.example.com", true, &server_resumed);
    EXPECT_TRUE(second->resumed());
    EXPECT_TRUE(server_resumed);
    EXPECT_TRUE(second->peer_verified());
  }
}

TEST_F(StreamTest, UnverifiedSessionIsNotResumedAsVerified) {
  auto server_ctx = MakeServer();
  auto client_ctx = MakeClient();
  bool server_resumed = false;
  auto first = Connect(server_ctx, client_ctx, "localhost", false, &server_resumed);
  auto second = Connect(server_ctx, client_ctx, "localhost", true, &server_resumed);
  EXPECT_FALSE(second->resumed());
}

TEST_F(StreamTest, ServerWithoutTicketsDoesNotResumeTls13) {
  ServerOptions options;
  options.session_tickets = false;
  auto server_ctx = MakeServer(options);
  auto client_ctx = MakeClient();
  bool server_resumed = false;
  auto first = Connect(server_ctx, client_ctx, "localhost", true, &server_resumed);
  EXPECT_EQ(client_ctx->cached_sessions(), 0u);
  auto second = Connect(server_ctx, client_ctx, "localhost", true, &server_resumed);
  EXPECT_FALSE(second->resumed());
  EXPECT_FALSE(server_resumed);
}

TEST_F(StreamTest, CloseNotifyClosesBothWays) {
  auto server = Stream::Server(MakeServer());
  auto client = Stream::Client(MakeClient(), "localhost", true);
  Pump(*client, *server, nullptr, nullptr);
  ASSERT_EQ(client->state(), State::kOpen);
  std::string at_server;
  ASSERT_TRUE(client->WritePlaintext("QUIT\r\n"));
  client->Shutdown();
  EXPECT_FALSE(client->WritePlaintext("after shutdown"));
  ASSERT_TRUE(client->HasCiphertext());
  server->FeedCiphertext(client->TakeCiphertext());
  EXPECT_EQ(server->Process(&at_server), State::kClosed);
  EXPECT_EQ(at_server, "QUIT\r\n");  // data before close_notify is delivered
  // The server answers with its own close_notify; the client sees kClosed.
  server->Shutdown();
  ASSERT_TRUE(server->HasCiphertext());
  client->FeedCiphertext(server->TakeCiphertext());
  std::string at_client;
  EXPECT_EQ(client->Process(&at_client), State::kClosed);
  EXPECT_TRUE(at_client.empty());
}

TEST_F(StreamTest, GarbageFailsWithError) {
  {
    auto server = Stream::Server(MakeServer());
    std::string plain;
    ASSERT_TRUE(server->FeedCiphertext("EHLO plaintext.example\r\n"));
    EXPECT_EQ(server->Process(&plain), State::kFailed);
    EXPECT_NE(server->error().find("handshake failed"), std::string::npos) << server->error();
    EXPECT_NE(server->error().find("WRONG_VERSION_NUMBER"), std::string::npos) << server->error();
    EXPECT_FALSE(server->FeedCiphertext("more"));
    EXPECT_EQ(server->Process(&plain), State::kFailed);
  }
  {
    // Garbage after the handshake: a record that does not decrypt.
    auto server = Stream::Server(MakeServer());
    auto client = Stream::Client(MakeClient(), "localhost", true);
    Pump(*client, *server, nullptr, nullptr);
    ASSERT_EQ(server->state(), State::kOpen);
    std::string record("\x17\x03\x03\x00\x20", 5);
    record.append(32, 'x');
    std::string plain;
    server->FeedCiphertext(record);
    EXPECT_EQ(server->Process(&plain), State::kFailed);
    EXPECT_NE(server->error().find("read failed"), std::string::npos) << server->error();
    EXPECT_TRUE(server->HasCiphertext());  // the alert to send before closing
    client->FeedCiphertext(server->TakeCiphertext());
    EXPECT_EQ(client->Process(&plain), State::kFailed);
  }
}

TEST_F(StreamTest, ExistingStreamsOutliveContextSwap) {
  auto server_ctx = MakeServer();
  auto server = Stream::Server(server_ctx);
  auto client = Stream::Client(MakeClient(), "localhost", true);
  server_ctx.reset();  // SIGHUP: the shared pointer was swapped; the stream keeps its own
  Pump(*client, *server, nullptr, nullptr);
  EXPECT_EQ(server->state(), State::kOpen);
}

}  // namespace
}  // namespace sluice::tls
