#include "bench/blast/blast.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <utility>

#include "base/ascii.h"
#include "delivery/client/reply_parser.h"
#include "io/connection.h"
#include "io/net.h"
#include "io/shard.h"
#include "io/task.h"
#include "smtp/reply.h"
#include "tls/context.h"
#include "tls/stream.h"
#include "tls/transform.h"

namespace sluice::blast {
namespace {

constexpr size_t kMaxErrorSamples = 8;
// A refused or failed connection is retried after this pause, so a target
// that is down costs a few hundred attempts per second, not a busy loop.
constexpr Duration kReconnectPause = std::chrono::milliseconds(10);

bool Is2xx(int code) {
  return code >= 200 && code < 300;
}

// RFC 5321 §4.1.1.1: EHLO reply lines after the first name the extensions.
bool OffersExtension(const smtp::Reply& ehlo, std::string_view keyword) {
  std::string_view text = ehlo.text;
  bool first = true;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (std::exchange(first, false))
      continue;  // the server's name
    std::string_view word = line.substr(0, line.find(' '));
    if (EqualsIgnoreCase(word, keyword)) {
      return true;
    }
  }
  return false;
}

// Shared by all shards; written with atomics only.
struct RunState {
  const BlastOptions* options = nullptr;
  io::SocketAddress address;
  std::string message;  // what follows DATA: the text, then ".\r\n"
  MonoTime start;
  std::optional<MonoTime> deadline;
  std::atomic<uint64_t> next_ticket{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<bool> stop{false};
};

enum class MessageOutcome { kAccepted, kRejected, kBroken };

// The sessions of one shard and their counters (shard thread only; read by
// the main thread after the shard thread is joined).
class ShardLoad {
 public:
  ShardLoad(io::Shard* shard, RunState* run, std::shared_ptr<tls::ClientContext> tls)
      : shard_(shard),
        run_(run),
        options_(*run->options),
        timeout_(std::chrono::duration_cast<Duration>(
            std::chrono::duration<double>(options_.timeout_s))),
        tls_(std::move(tls)) {
  }

  // Starts n sessions; the shard quits when the last one ends.
  void Start(unsigned n) {
    live_ = n;
    for (unsigned i = 0; i < n; ++i)
      RunSession();
  }

  BlastReport& report() {
    return report_;
  }

 private:
  io::Detached RunSession();
  io::Task<bool> RunConnection(uint64_t first_ticket);
  io::Task<bool> Converse(io::Connection* conn, uint64_t first_ticket);
  io::Task<MessageOutcome> SendMessage(io::Connection* conn, delivery::ReplyParser* parser,
                                       bool pipelining, uint64_t ticket);
  io::Task<std::optional<smtp::Reply>> ReadReply(io::Connection* conn,
                                                 delivery::ReplyParser* parser, std::string what);
  io::Task<std::optional<smtp::Reply>> Command(io::Connection* conn, delivery::ReplyParser* parser,
                                               std::string line);

  // More messages may be claimed (a cheap check before connecting).
  bool MoreWork() const {
    if (run_->stop.load(std::memory_order_relaxed))
      return false;
    if (run_->deadline && shard_->Now() >= *run_->deadline)
      return false;
    return options_.messages == 0 ||
           run_->next_ticket.load(std::memory_order_relaxed) < options_.messages;
  }
  std::optional<uint64_t> Claim() {
    if (!MoreWork())
      return std::nullopt;
    const uint64_t t = run_->next_ticket.fetch_add(1, std::memory_order_relaxed);
    if (options_.messages != 0 && t >= options_.messages)
      return std::nullopt;
    return t;
  }
  void Fail(std::string what) {
    ++report_.errors;
    const uint64_t total = run_->errors.fetch_add(1, std::memory_order_relaxed) + 1;
    if (options_.max_errors != 0 && total >= options_.max_errors)
      run_->stop = true;
    Sample(std::move(what));
  }
  void Sample(std::string what) {
    if (report_.error_samples.size() < kMaxErrorSamples &&
        std::find(report_.error_samples.begin(), report_.error_samples.end(), what) ==
            report_.error_samples.end()) {
      report_.error_samples.push_back(std::move(what));
    }
  }

  io::Shard* const shard_;
  RunState* const run_;
  const BlastOptions& options_;
  const Duration timeout_;
  const std::shared_ptr<tls::ClientContext> tls_;

  unsigned live_ = 0;
  BlastReport report_;
};

io::Detached ShardLoad::RunSession() {
  // The first message is claimed before connecting, so no connection is
  // opened only to find the budget spent. A failed connection loses it.
  for (std::optional<uint64_t> ticket = Claim(); ticket; ticket = Claim()) {
    const bool ok = co_await RunConnection(*ticket);
    if (!ok)
      co_await io::Sleep(*shard_, kReconnectPause);
  }
  if (--live_ == 0)
    shard_->Quit();
}

io::Task<bool> ShardLoad::RunConnection(uint64_t first_ticket) {
  Result<int> fd = co_await io::ConnectTcp(*shard_, run_->address, timeout_);
  if (!fd.ok()) {
    Fail(fd.error().message);
    co_return false;
  }
  ++report_.connections;
  auto conn = std::make_unique<io::Connection>(*shard_, *fd);
  conn->Start();
  const bool ok = co_await Converse(conn.get(), first_ticket);
  co_await conn->Close();
  co_return ok;
}

io::Task<std::optional<smtp::Reply>> ShardLoad::ReadReply(io::Connection* conn,
                                                          delivery::ReplyParser* parser,
                                                          std::string what) {
  for (;;) {
    delivery::ReplyParser::Next next = parser->Take(conn->inbox());
    conn->Consume(next.consumed);
    if (next.status == delivery::ReplyParser::Status::kReply)
      co_return std::move(next.reply);
    if (next.status == delivery::ReplyParser::Status::kError) {
      Fail(what + ": malformed reply");
      co_return std::nullopt;
    }
    const io::ReadStatus st = co_await conn->WaitForData(timeout_, false);
    if (st != io::ReadStatus::kData) {
      Fail(what + ": " + io::ToString(st));
      co_return std::nullopt;
    }
  }
}

io::Task<std::optional<smtp::Reply>> ShardLoad::Command(io::Connection* conn,
                                                        delivery::ReplyParser* parser,
                                                        std::string line) {
  std::string verb = line.substr(0, line.find_first_of(" :"));
  const bool sent = co_await conn->SendAll(line + "\r\n", timeout_);
  if (!sent) {
    Fail(verb + ": send failed");
    co_return std::nullopt;
  }
  std::optional<smtp::Reply> reply = co_await ReadReply(conn, parser, verb);
  co_return reply;
}

io::Task<bool> ShardLoad::Converse(io::Connection* conn, uint64_t first_ticket) {
  delivery::ReplyParser parser;
  std::optional<smtp::Reply> greeting = co_await ReadReply(conn, &parser, "greeting");
  if (!greeting)
    co_return false;
  if (greeting->code != 220) {
    Fail("greeting: " + std::to_string(greeting->code) + " " + greeting->text);
    co_return false;
  }
  std::optional<smtp::Reply> ehlo = co_await Command(conn, &parser, "EHLO " + options_.ehlo_name);
  if (!ehlo)
    co_return false;
  if (ehlo->code != 250) {
    Fail("EHLO: " + std::to_string(ehlo->code) + " " + ehlo->text);
    co_return false;
  }
  if (options_.tls) {
    // RFC 3207 §4: STARTTLS, then the handshake, then EHLO again (§4.2: the
    // extensions may differ once the channel is secure).
    if (!OffersExtension(*ehlo, "STARTTLS")) {
      Fail("STARTTLS not offered");
      co_return false;
    }
    std::optional<smtp::Reply> go = co_await Command(conn, &parser, "STARTTLS");
    if (!go)
      co_return false;
    if (go->code != 220) {
      Fail("STARTTLS: " + std::to_string(go->code) + " " + go->text);
      co_return false;
    }
    parser.Reset();
    // Unverified: a load test accepts whatever certificate the target shows.
    conn->StartTransform(std::make_unique<tls::TlsTransform>(
        tls::Stream::Client(tls_, options_.host, /*verify=*/false)));
    const bool secure = co_await conn->Handshake(timeout_);
    if (!secure) {
      const std::string why = conn->transform()->error();
      Fail("TLS handshake: " + (why.empty() ? std::string("timed out or closed") : why));
      co_return false;
    }
    ehlo = co_await Command(conn, &parser, "EHLO " + options_.ehlo_name);
    if (!ehlo)
      co_return false;
    if (ehlo->code != 250) {
      Fail("EHLO after STARTTLS: " + std::to_string(ehlo->code) + " " + ehlo->text);
      co_return false;
    }
  }
  const bool pipelining = options_.pipelining && OffersExtension(*ehlo, "PIPELINING");

  uint64_t done = 0;
  while (options_.per_connection == 0 || done < options_.per_connection) {
    std::optional<uint64_t> ticket = done == 0 ? first_ticket : Claim();
    if (!ticket)
      break;
    if (options_.rate > 0) {
      // Message t is due at start + t / rate: an open-loop schedule that does
      // not slow down when the server does (timer wheel resolution, 10 ms).
      const MonoTime due =
          run_->start + std::chrono::duration_cast<Duration>(std::chrono::duration<double>(
                            static_cast<double>(*ticket) / options_.rate));
      const Duration wait = due - shard_->Now();
      if (wait > Duration::zero())
        co_await io::Sleep(*shard_, wait);
    }
    ++done;
    const MessageOutcome outcome = co_await SendMessage(conn, &parser, pipelining, *ticket);
    if (outcome == MessageOutcome::kBroken)
      co_return false;
  }
  // RFC 5321 §4.1.1.10. A server that closes without its 221 still counts:
  // every message was already answered.
  const bool quit_sent = co_await conn->SendAll("QUIT\r\n", timeout_);
  if (quit_sent) {
    for (;;) {
      delivery::ReplyParser::Next next = parser.Take(conn->inbox());
      conn->Consume(next.consumed);
      if (next.status != delivery::ReplyParser::Status::kNeedMore)
        break;
      const io::ReadStatus st = co_await conn->WaitForData(timeout_, false);
      if (st != io::ReadStatus::kData)
        break;
    }
  }
  co_return true;
}

io::Task<MessageOutcome> ShardLoad::SendMessage(io::Connection* conn, delivery::ReplyParser* parser,
                                                bool pipelining, uint64_t ticket) {
  ++report_.sent;
  std::string mail = "MAIL FROM:<" + options_.mail_from +
                     "> SIZE=" + std::to_string(run_->message.size()) + "\r\n";
  std::vector<std::string> rcpts;
  for (unsigned i = 0; i < options_.recipients; ++i) {
    rcpts.push_back("RCPT TO:<u" + std::to_string((ticket * options_.recipients + i) % 1000) + "@" +
                    options_.rcpt_domain + ">\r\n");
  }
  bool envelope_ok = true;
  int data_code = 0;
  if (pipelining) {
    // RFC 2920 §3.1: MAIL, RCPT and DATA in one write; the replies come back
    // in order, DATA's last.
    std::string batch = mail;
    for (const std::string& r : rcpts)
      batch += r;
    batch += "DATA\r\n";
    const bool sent = co_await conn->SendAll(std::move(batch), timeout_);
    if (!sent) {
      Fail("MAIL: send failed");
      co_return MessageOutcome::kBroken;
    }
    std::optional<smtp::Reply> r = co_await ReadReply(conn, parser, "MAIL");
    if (!r)
      co_return MessageOutcome::kBroken;
    if (!Is2xx(r->code))
      envelope_ok = false;
    unsigned rcpt_ok = 0;
    for (size_t i = 0; i < rcpts.size(); ++i) {
      std::optional<smtp::Reply> rr = co_await ReadReply(conn, parser, "RCPT");
      if (!rr)
        co_return MessageOutcome::kBroken;
      if (Is2xx(rr->code))
        ++rcpt_ok;
    }
    if (rcpt_ok == 0)
      envelope_ok = false;
    std::optional<smtp::Reply> d = co_await ReadReply(conn, parser, "DATA");
    if (!d)
      co_return MessageOutcome::kBroken;
    data_code = d->code;
    if (!envelope_ok || data_code != 354) {
      Sample("envelope refused: " + std::to_string(r->code) + "/" + std::to_string(d->code) + " " +
             d->text);
    }
  } else {
    std::optional<smtp::Reply> r = co_await Command(conn, parser, mail.substr(0, mail.size() - 2));
    if (!r)
      co_return MessageOutcome::kBroken;
    if (!Is2xx(r->code)) {
      envelope_ok = false;
      Sample("MAIL: " + std::to_string(r->code) + " " + r->text);
    }
    unsigned rcpt_ok = 0;
    for (size_t i = 0; envelope_ok && i < rcpts.size(); ++i) {
      std::optional<smtp::Reply> rr =
          co_await Command(conn, parser, rcpts[i].substr(0, rcpts[i].size() - 2));
      if (!rr)
        co_return MessageOutcome::kBroken;
      if (Is2xx(rr->code)) {
        ++rcpt_ok;
      } else {
        Sample("RCPT: " + std::to_string(rr->code) + " " + rr->text);
      }
    }
    if (rcpt_ok == 0)
      envelope_ok = false;
    if (envelope_ok) {
      std::optional<smtp::Reply> d = co_await Command(conn, parser, "DATA");
      if (!d)
        co_return MessageOutcome::kBroken;
      data_code = d->code;
      if (data_code != 354)
        Sample("DATA: " + std::to_string(d->code) + " " + d->text);
    }
  }
  if (data_code != 354) {
    ++report_.rejected;
    // RFC 5321 §4.1.1.5: RSET clears the half-built transaction.
    std::optional<smtp::Reply> reset = co_await Command(conn, parser, "RSET");
    co_return reset ? MessageOutcome::kRejected : MessageOutcome::kBroken;
  }
  // A server that answered 354 after refusing the envelope gets the text
  // anyway; the message still counts as rejected below.
  const bool body_sent = co_await conn->SendAll(run_->message, timeout_);
  if (!body_sent) {
    Fail("message text: send failed");
    co_return MessageOutcome::kBroken;
  }
  const MonoTime dot_sent = shard_->Now();
  std::optional<smtp::Reply> final_reply = co_await ReadReply(conn, parser, "end of data");
  if (!final_reply)
    co_return MessageOutcome::kBroken;
  if (envelope_ok && Is2xx(final_reply->code)) {
    const auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(shard_->Now() - dot_sent).count();
    report_.latency.Record(static_cast<uint64_t>(std::max<int64_t>(ns, 0)));
    ++report_.accepted;
    report_.bytes += run_->message.size();
    co_return MessageOutcome::kAccepted;
  }
  ++report_.rejected;
  Sample("end of data: " + std::to_string(final_reply->code) + " " + final_reply->text);
  co_return MessageOutcome::kRejected;
}

void AppendJsonString(std::string* out, std::string_view s) {
  out->push_back('"');
  for (char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
          *out += buf;
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

double Micros(uint64_t ns) {
  return static_cast<double>(ns) / 1000.0;
}

}  // namespace

double BlastReport::messages_per_s() const {
  return elapsed_s > 0 ? static_cast<double>(accepted) / elapsed_s : 0.0;
}

double BlastReport::megabytes_per_s() const {
  return elapsed_s > 0 ? static_cast<double>(bytes) / 1e6 / elapsed_s : 0.0;
}

Result<void> ParseTarget(const std::string& target, BlastOptions* options) {
  const size_t colon = target.rfind(':');
  if (colon == std::string::npos || colon + 1 == target.size()) {
    return MakeError("target must be host:port, got '" + target + "'");
  }
  std::string host = target.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  unsigned long port = 0;
  const std::string port_text = target.substr(colon + 1);
  char* end = nullptr;
  port = std::strtoul(port_text.c_str(), &end, 10);
  if (end == nullptr || *end != '\0' || port == 0 || port > 65535) {
    return MakeError("bad port in '" + target + "'");
  }
  options->host = std::move(host);
  options->port = static_cast<uint16_t>(port);
  return {};
}

std::string MakeMessage(const BlastOptions& options) {
  std::string m = "From: <" + options.mail_from + ">\r\n" + "To: <u0@" + options.rcpt_domain +
                  ">\r\n" + "Subject: sluice-blast\r\n" + "Message-ID: <blast." +
                  std::to_string(UnixMicros()) + "@" + options.ehlo_name + ">\r\n\r\n";
  // Filler lines start with a letter, so no dot-stuffing is needed
  // (RFC 5321 §4.5.2), and stay under the 998-octet line limit (§4.5.3.1.6).
  static constexpr std::string_view kLine =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmn\r\n";
  while (m.size() + kLine.size() <= options.size)
    m += kLine;
  if (m.size() + 3 <= options.size) {
    m.append(options.size - m.size() - 2, 'z');
    m += "\r\n";
  }
  return m;
}

Result<BlastReport> RunBlast(const BlastOptions& options) {
  if (options.connections == 0)
    return MakeError("--connections must be at least 1");
  if (options.threads == 0)
    return MakeError("--threads must be at least 1");
  if (options.recipients == 0)
    return MakeError("--recipients must be at least 1");
  if (options.messages == 0 && options.duration_s <= 0) {
    return MakeError("unbounded run: give --messages or --duration");
  }
  if (options.rate < 0 || options.duration_s < 0 || options.timeout_s <= 0) {
    return MakeError("--rate, --duration and --timeout must not be negative");
  }
  Result<io::SocketAddress> address = io::SocketAddress::Parse(options.host, options.port);
  if (!address.ok())
    return MakeError("target: " + address.error().message);

  const unsigned threads = std::min(options.threads, options.connections);
  std::vector<std::shared_ptr<tls::ClientContext>> tls_contexts(threads);
  if (options.tls) {
    for (auto& ctx : tls_contexts) {
      Result<std::shared_ptr<tls::ClientContext>> c =
          tls::ClientContext::Create(tls::ClientOptions{});
      if (!c.ok())
        return MakeError("TLS client context: " + c.error().message);
      ctx = std::move(*c);
    }
  }

  RunState run;
  run.options = &options;
  run.address = *address;
  run.message = MakeMessage(options) + ".\r\n";
  run.start = SystemClock::Instance().Now();
  if (options.duration_s > 0) {
    run.deadline = run.start + std::chrono::duration_cast<Duration>(
                                   std::chrono::duration<double>(options.duration_s));
  }

  std::vector<BlastReport> reports(threads);
  std::vector<std::string> setup_errors(threads);
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < threads; ++t) {
    const unsigned sessions = options.connections / threads + (t < options.connections % threads);
    workers.emplace_back([&, t, sessions] {
      // Created on its own thread: the ring is IORING_SETUP_SINGLE_ISSUER.
      io::Shard shard(t, io::ShardOptions{});
      Result<void> init = shard.Init();
      if (!init.ok()) {
        setup_errors[t] = init.error().message;
        return;
      }
      ShardLoad load(&shard, &run, tls_contexts[t]);
      load.Start(sessions);
      shard.Run();
      reports[t] = std::move(load.report());
    });
  }
  for (std::thread& w : workers)
    w.join();
  const MonoTime end = SystemClock::Instance().Now();

  BlastReport total;
  unsigned started = 0;
  for (unsigned t = 0; t < threads; ++t) {
    if (!setup_errors[t].empty()) {
      total.error_samples.push_back("shard " + std::to_string(t) + ": " + setup_errors[t]);
      continue;
    }
    ++started;
    const BlastReport& r = reports[t];
    total.sent += r.sent;
    total.accepted += r.accepted;
    total.rejected += r.rejected;
    total.errors += r.errors;
    total.connections += r.connections;
    total.bytes += r.bytes;
    total.latency.Merge(r.latency);
    for (const std::string& s : r.error_samples) {
      if (total.error_samples.size() < kMaxErrorSamples &&
          std::find(total.error_samples.begin(), total.error_samples.end(), s) ==
              total.error_samples.end()) {
        total.error_samples.push_back(s);
      }
    }
  }
  if (started == 0)
    return MakeError("no shard started: " + setup_errors[0]);
  total.errors += threads - started;
  total.elapsed_s = std::chrono::duration<double>(end - run.start).count();
  return total;
}

std::string FormatTable(const BlastOptions& options, const BlastReport& r) {
  std::string out;
  auto row = [&out](std::string_view name, const std::string& value) {
    char buf[160];
    std::snprintf(buf, sizeof(buf), "  %-22.*s %s\n", static_cast<int>(name.size()), name.data(),
                  value.c_str());
    out += buf;
  };
  out += "sluice-blast " + options.host + ":" + std::to_string(options.port) + "\n";
  row("connections/threads", std::to_string(options.connections) + " / " +
                                 std::to_string(std::min(options.threads, options.connections)));
  row("size/recipients",
      std::to_string(options.size) + " B / " + std::to_string(options.recipients));
  row("per connection", options.per_connection == 0 ? std::string("unlimited")
                                                    : std::to_string(options.per_connection));
  row("pipelining/tls",
      std::string(options.pipelining ? "on" : "off") + " / " + (options.tls ? "on" : "off"));
  row("messages sent", std::to_string(r.sent));
  row("accepted", std::to_string(r.accepted));
  row("rejected", std::to_string(r.rejected));
  row("connection errors", std::to_string(r.errors));
  row("connections opened", std::to_string(r.connections));
  row("elapsed", Fixed(r.elapsed_s, 3) + " s");
  row("throughput",
      Fixed(r.messages_per_s(), 1) + " msg/s, " + Fixed(r.megabytes_per_s(), 2) + " MB/s");
  const LatencyHistogram& h = r.latency;
  row("latency p50", Fixed(Micros(h.ValueAtQuantile(0.50)), 1) + " us");
  row("latency p90", Fixed(Micros(h.ValueAtQuantile(0.90)), 1) + " us");
  row("latency p99", Fixed(Micros(h.ValueAtQuantile(0.99)), 1) + " us");
  row("latency p99.9", Fixed(Micros(h.ValueAtQuantile(0.999)), 1) + " us");
  row("latency max", Fixed(Micros(h.max()), 1) + " us");
  for (const std::string& s : r.error_samples)
    row("failure", s);
  return out;
}

std::string FormatJson(const BlastOptions& options, const BlastReport& r) {
  std::string out = "{\"target\":";
  AppendJsonString(&out, options.host + ":" + std::to_string(options.port));
  auto num = [&out](std::string_view key, const std::string& value) {
    out += ",\"";
    out += key;
    out += "\":";
    out += value;
  };
  num("connections", std::to_string(options.connections));
  num("threads", std::to_string(std::min(options.threads, options.connections)));
  num("size", std::to_string(options.size));
  num("recipients", std::to_string(options.recipients));
  num("per_connection", std::to_string(options.per_connection));
  num("pipelining", options.pipelining ? "true" : "false");
  num("tls", options.tls ? "true" : "false");
  num("rate", Fixed(options.rate, 3));
  num("sent", std::to_string(r.sent));
  num("accepted", std::to_string(r.accepted));
  num("rejected", std::to_string(r.rejected));
  num("errors", std::to_string(r.errors));
  num("connections_opened", std::to_string(r.connections));
  num("bytes", std::to_string(r.bytes));
  num("elapsed_s", Fixed(r.elapsed_s, 6));
  num("messages_per_s", Fixed(r.messages_per_s(), 3));
  num("mb_per_s", Fixed(r.megabytes_per_s(), 3));
  const LatencyHistogram& h = r.latency;
  out += ",\"latency_us\":{";
  out += "\"count\":" + std::to_string(h.count());
  out += ",\"p50\":" + Fixed(Micros(h.ValueAtQuantile(0.50)), 1);
  out += ",\"p90\":" + Fixed(Micros(h.ValueAtQuantile(0.90)), 1);
  out += ",\"p99\":" + Fixed(Micros(h.ValueAtQuantile(0.99)), 1);
  out += ",\"p999\":" + Fixed(Micros(h.ValueAtQuantile(0.999)), 1);
  out += ",\"max\":" + Fixed(Micros(h.max()), 1);
  out += ",\"mean\":" + Fixed(h.mean() / 1000.0, 1);
  out += "},\"error_samples\":[";
  for (size_t i = 0; i < r.error_samples.size(); ++i) {
    if (i > 0)
      out += ",";
    AppendJsonString(&out, r.error_samples[i]);
  }
  out += "],\"ok\":";
  out += r.ok() ? "true" : "false";
  out += "}\n";
  return out;
}

}  // namespace sluice::blast
