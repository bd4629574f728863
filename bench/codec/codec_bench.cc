// Throughput of the sans-I/O SMTP codec (smtp/): command lines of a realistic
// pipelined transaction, and the DATA and BDAT body readers. Run with
// `meson test --benchmark codec_bench` or the binary directly.

#include <string>

#include <benchmark/benchmark.h>

#include "smtp/bdat_reader.h"
#include "smtp/command.h"
#include "smtp/data_reader.h"
#include "smtp/line_reader.h"

namespace sluice::smtp {
namespace {

// What a PIPELINING client sends for one message to five recipients.
std::string PipelinedTransaction() {
  std::string s =
      "EHLO client-42.mail.example.com\r\n"
      "MAIL FROM:<newsletter-bounces+user=example.org@lists.example.com> SIZE=48213 "
      "BODY=8BITMIME RET=HDRS ENVID=QQ314159\r\n";
  for (int i = 0; i < 5; ++i) {
    s += "RCPT TO:<recipient.number" + std::to_string(i) +
         "@example.org> NOTIFY=FAILURE,DELAY ORCPT=rfc822;recipient@example.org\r\n";
  }
  s += "DATA\r\nRSET\r\nNOOP\r\nQUIT\r\n";
  return s;
}

void BM_PipelinedCommands(benchmark::State& state) {
  const std::string wire = PipelinedTransaction();
  LineReader reader(512);
  for (auto _ : state) {
    std::string_view buf = wire;
    while (true) {
      const LineReader::Next next = reader.Take(buf);
      buf.remove_prefix(next.consumed);
      if (next.status != LineReader::Status::kLine) {
        if (next.consumed == 0)
          break;
        continue;
      }
      const Command cmd = ParseCommand(next.line);
      switch (cmd.verb) {
        case Verb::kEhlo: {
          auto d = ParseHeloDomain(cmd.arg);
          benchmark::DoNotOptimize(d);
          break;
        }
        case Verb::kMail: {
          auto m = ParseMailFrom(cmd.arg);
          benchmark::DoNotOptimize(m);
          break;
        }
        case Verb::kRcpt: {
          auto r = ParseRcptTo(cmd.arg);
          benchmark::DoNotOptimize(r);
          break;
        }
        default:
          benchmark::DoNotOptimize(cmd);
          break;
      }
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(wire.size()));
}
BENCHMARK(BM_PipelinedCommands);

// A message of about `size` octets: a header, then 76-character lines, every
// 16th of them starting with a stuffed dot.
std::string Message(size_t size, bool stuffed) {
  std::string m =
      "Received: from client.example.com by mx.example.net; Thu, 26 Nov 2026 05:29:03 +0000\r\n"
      "From: Sender <sender@example.com>\r\nTo: rcpt@example.net\r\nSubject: benchmark\r\n\r\n";
  int n = 0;
  while (m.size() < size) {
    if (stuffed && ++n % 16 == 0)
      m += "..";
    m += std::string(74, static_cast<char>('a' + n % 26));
    m += "\r\n";
  }
  return m;
}

constexpr size_t kRecvChunk = 16 * 1024;  // a typical provided-buffer size

void BM_DataReader(benchmark::State& state) {
  const std::string wire = Message(static_cast<size_t>(state.range(0)), true) + ".\r\n";
  std::string body;
  body.reserve(wire.size());
  for (auto _ : state) {
    body.clear();
    DataReader reader(DataLimits{uint64_t{64} << 20});
    for (size_t off = 0; off < wire.size() && !reader.done(); off += kRecvChunk) {
      reader.Feed(std::string_view(wire).substr(off, kRecvChunk), &body);
    }
    if (!reader.done())
      state.SkipWithError("DATA did not end");
    benchmark::DoNotOptimize(body.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(wire.size()));
}
BENCHMARK(BM_DataReader)->Arg(1024)->Arg(100 * 1024)->Arg(10 << 20);

void BM_DataReaderNormalize(benchmark::State& state) {
  const std::string wire = Message(static_cast<size_t>(state.range(0)), true) + ".\r\n";
  std::string body;
  body.reserve(wire.size());
  for (auto _ : state) {
    body.clear();
    DataReader reader(DataLimits{uint64_t{64} << 20, 1000, BareNewline::kNormalize});
    for (size_t off = 0; off < wire.size() && !reader.done(); off += kRecvChunk) {
      reader.Feed(std::string_view(wire).substr(off, kRecvChunk), &body);
    }
    benchmark::DoNotOptimize(body.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(wire.size()));
}
BENCHMARK(BM_DataReaderNormalize)->Arg(100 * 1024);

// A hostile body: bare CRs and no LF, fed in one piece of `size` octets (an inbox in body mode
// holds up to 256 KiB). The line-end scanner must stay linear in the input here too.
void BM_DataReaderBareCrs(benchmark::State& state) {
  std::string wire;
  while (wire.size() < static_cast<size_t>(state.range(0))) {
    wire += "a\r";
  }
  std::string body;
  body.reserve(wire.size());
  for (auto _ : state) {
    body.clear();
    DataReader reader(DataLimits{uint64_t{64} << 20});
    reader.Feed(wire, &body);
    benchmark::DoNotOptimize(body.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(wire.size()));
}
BENCHMARK(BM_DataReaderBareCrs)->Arg(16 * 1024)->Arg(256 * 1024);

void BM_BdatReader(benchmark::State& state) {
  const std::string wire = Message(static_cast<size_t>(state.range(0)), false);
  std::string body;
  body.reserve(wire.size());
  for (auto _ : state) {
    body.clear();
    BdatReader reader(DataLimits{uint64_t{64} << 20});
    reader.StartChunk(wire.size(), true);
    for (size_t off = 0; off < wire.size(); off += kRecvChunk) {
      reader.Feed(std::string_view(wire).substr(off, kRecvChunk), &body);
    }
    if (!reader.message_done())
      state.SkipWithError("BDAT did not end");
    benchmark::DoNotOptimize(body.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(wire.size()));
}
BENCHMARK(BM_BdatReader)->Arg(1024)->Arg(100 * 1024)->Arg(10 << 20);

}  // namespace
}  // namespace sluice::smtp

BENCHMARK_MAIN();
