// TLS handshakes per second on one core, server and client in one thread
// over memory (the cost a shard pays per handshake, plus the client's):
// full handshakes with ECDSA P-256 and RSA-2048 certificates, and resumed
// ones (TLS 1.3 tickets, TLS 1.2 tickets).
//
//   build/bench/tls/tls_bench

#include <cstdlib>
#include <string>

#include <benchmark/benchmark.h>

#include "base/temp_dir.h"
#include "tls/context.h"
#include "tls/stream.h"

namespace sluice::tls {
namespace {

struct Pki {
  TempDir dir{"sluice-tls-bench"};
  ServerCertificate ecdsa, rsa;
  Pki() {
    const std::string cmd =
        std::string(SLUICE_SOURCE_ROOT) + "/scripts/dev-cert " + dir.path() + " >/dev/null";
    if (std::system(cmd.c_str()) != 0)
      std::abort();
    ecdsa = {dir.path() + "/ecdsa.crt", dir.path() + "/ecdsa.key"};
    rsa = {dir.path() + "/rsa.crt", dir.path() + "/rsa.key"};
  }
  static Pki& Get() {
    static Pki pki;
    return pki;
  }
};

// Pumps ciphertext between the two ends until both are open.
bool Handshake(Stream& client, Stream& server) {
  std::string plain;
  for (int i = 0; i < 20; ++i) {
    client.Process(&plain);
    std::string c2s = client.TakeCiphertext();
    if (!c2s.empty() && !server.FeedCiphertext(c2s))
      return false;
    server.Process(&plain);
    std::string s2c = server.TakeCiphertext();
    if (!s2c.empty() && !client.FeedCiphertext(s2c))
      return false;
    client.Process(&plain);
    if (client.state() == Stream::State::kOpen && server.state() == Stream::State::kOpen) {
      // The first reply (like the 220 after the handshake) carries the
      // server's TLS 1.3 tickets; the client reads them to be able to resume.
      server.WritePlaintext("220 ok\r\n");
      std::string reply = server.TakeCiphertext();
      if (!reply.empty())
        client.FeedCiphertext(reply);
      client.Process(&plain);
      return true;
    }
  }
  return false;
}

void BM_Handshake(benchmark::State& state, bool rsa, bool resume, int max_version) {
  Pki& pki = Pki::Get();
  ServerOptions so;
  so.certificates.push_back(rsa ? pki.rsa : pki.ecdsa);
  auto server_ctx = ServerContext::Create(so);
  ClientOptions co;
  co.max_version = max_version;
  auto client_ctx = ClientContext::Create(co);
  if (!server_ctx.ok() || !client_ctx.ok()) {
    state.SkipWithError("context");
    return;
  }
  int64_t resumed = 0;
  int64_t n = 0;
  for (auto _ : state) {
    // The client's session cache is keyed by host name: a new name per
    // iteration means a full handshake, the same name resumes.
    const std::string name = resume ? "localhost" : "h" + std::to_string(n++) + ".test";
    auto client = Stream::Client(*client_ctx, name, false);
    auto server = Stream::Server(*server_ctx);
    if (!Handshake(*client, *server)) {
      state.SkipWithError("handshake failed");
      return;
    }
    resumed += client->resumed() ? 1 : 0;
  }
  state.counters["handshakes_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["resumed_ratio"] =
      static_cast<double>(resumed) / static_cast<double>(state.iterations());
}

BENCHMARK_CAPTURE(BM_Handshake, tls13_ecdsa_full, false, false, kTls13)->UseRealTime();
BENCHMARK_CAPTURE(BM_Handshake, tls13_rsa_full, true, false, kTls13)->UseRealTime();
BENCHMARK_CAPTURE(BM_Handshake, tls13_ecdsa_resumed, false, true, kTls13)->UseRealTime();
BENCHMARK_CAPTURE(BM_Handshake, tls12_ecdsa_full, false, false, kTls12)->UseRealTime();
BENCHMARK_CAPTURE(BM_Handshake, tls12_ecdsa_resumed, false, true, kTls12)->UseRealTime();

}  // namespace
}  // namespace sluice::tls
BENCHMARK_MAIN();
