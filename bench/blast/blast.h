#pragma once

// sluice-blast: an SMTP load generator. Many concurrent sessions from few
// threads: one io::Shard per thread, one Detached coroutine per session.
// Each session connects, reads the greeting, sends EHLO (and STARTTLS + EHLO
// with --tls), then submits messages (MAIL, RCPT, DATA, body, ".") and
// measures acceptance latency: from the moment the final "." was handed to
// the kernel to the moment its reply was parsed.

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "bench/blast/latency_histogram.h"

namespace sluice::blast {

struct BlastOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 2525;
  unsigned connections = 20;    // concurrent sessions, spread over the threads
  uint64_t messages = 10000;    // total messages to submit; 0 = until duration
  double duration_s = 0;        // stop claiming new messages after this; 0 = no limit
  size_t size = 1024;           // approximate message size in bytes, headers included
  unsigned recipients = 1;      // RCPT TO per message
  uint64_t per_connection = 1;  // messages per connection before QUIT; 0 = unlimited
  bool pipelining = false;      // MAIL/RCPT/DATA in one write when PIPELINING is offered
  bool tls = false;             // STARTTLS, certificate not enforced
  double rate = 0;              // messages/s over all sessions; 0 = as fast as possible
  unsigned threads = 1;         // shards
  double timeout_s = 30;        // per connect / reply / send
  // The run gives up once this many connection errors happened (a target
  // that is down would otherwise be retried forever). 0 = never.
  uint64_t max_errors = 1000;
  std::string ehlo_name = "blast.sluice.test";
  std::string mail_from = "blast@sluice.test";
  std::string rcpt_domain = "sink.sluice.test";
};

struct BlastReport {
  uint64_t sent = 0;         // messages whose MAIL FROM was sent
  uint64_t accepted = 0;     // final reply 2xx
  uint64_t rejected = 0;     // a non-2xx reply to MAIL, every RCPT, DATA or the final "."
  uint64_t errors = 0;       // connection errors: connect, timeout, EOF, TLS, garbled reply
  uint64_t connections = 0;  // TCP connections established
  uint64_t bytes = 0;        // message bytes accepted (body as sent, dot-stuffing included)
  double elapsed_s = 0;
  LatencyHistogram latency;                // nanoseconds
  std::vector<std::string> error_samples;  // first few distinct failures, for humans

  double messages_per_s() const;
  double megabytes_per_s() const;  // 10^6 bytes accepted per second
  bool ok() const {
    return rejected == 0 && errors == 0 && sent == accepted;
  }
};

// Validates options and runs the load until the message budget, the duration
// or max_errors is used up. Err only for bad options or setup failures (no
// thread could start, TLS context); network failures are in the report.
Result<BlastReport> RunBlast(const BlastOptions& options);

// "host:port" (IPv6 as "[::1]:2525").
Result<void> ParseTarget(const std::string& target, BlastOptions* options);

// A human-readable table and one JSON object (single line, trailing newline).
std::string FormatTable(const BlastOptions& options, const BlastReport& report);
std::string FormatJson(const BlastOptions& options, const BlastReport& report);

// The message text (headers, filler lines, no final "."), about `size` bytes.
std::string MakeMessage(const BlastOptions& options);

}  // namespace sluice::blast
