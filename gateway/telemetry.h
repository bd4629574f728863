#pragma once

// What the gateway reports: its metric series (resolved once, so the hot
// path never takes the registry's mutex) and the event log.

#include <array>
#include <string>
#include <vector>

#include "metrics/event_log.h"
#include "metrics/registry.h"
#include "smtp/command.h"

namespace sluice::gateway {

struct Config;

// Why a message, recipient or connection was refused (sluice_smtpd_rejections_total{kind}).
enum class Rejection {
  kRelayDenied,
  kTooManyRecipients,
  kMessageTooBig,
  kLineTooLong,
  kBareNewline,
  kLoop,
  kCommandTooLong,
  kSyntax,
  kTooManyErrors,
  kTooManyJunk,
  kTimeout,
  kSpoolBusy,
  kUntrustedRouting,     // '%', '!' or a quoted '@' in a recipient from an untrusted client
  kBodyMemory,           // no room in the process-wide body budget (452 4.3.1)
  kUnreadReplies,        // the client stopped reading its replies and was closed
  kInsufficientStorage,  // the spool's file system is below spool.min_free_bytes (452 4.3.1)
  kCount,
};
// The `kind` label: "relay_denied", "too_many_recipients", ...
const char* ToString(Rejection rejection);

// Why a connection was turned away at accept (sluice_smtpd_connections_total{reason}).
enum class ConnectRefusal { kMaxConnections, kMaxPerIp, kSpoolUnhealthy, kShuttingDown, kCount };
// The `reason` label: "max_connections", "max_connections_per_ip", "spool_unhealthy",
// "shutting_down".
const char* ToString(ConnectRefusal refusal);

class Telemetry {
 public:
  Telemetry(metrics::Registry& registry, const Config& config, metrics::EventLog* events);

  struct ListenerSeries {
    metrics::Counter* accepted;
    std::array<metrics::Counter*, static_cast<size_t>(ConnectRefusal::kCount)> refused;
    metrics::Gauge* active;
    metrics::Counter* messages;
    metrics::Counter* bytes;
    metrics::Counter* recipients;
    metrics::Histogram* transaction_seconds;
  };
  const ListenerSeries& listener(size_t index) const {
    return listeners_[index];
  }

  void Command(unsigned shard, smtp::Verb verb) {
    commands_[static_cast<size_t>(verb)]->Inc(shard);
  }
  void Reply(unsigned shard, int code) {
    const int cls = code / 100;
    if (cls >= 2 && cls <= 5)
      replies_[static_cast<size_t>(cls - 2)]->Inc(shard);
  }
  void Reject(unsigned shard, Rejection r) {
    rejections_[static_cast<size_t>(r)]->Inc(shard);
  }

  void TlsHandshake(unsigned shard, const std::string& listener, const std::string& version,
                    bool ok) {
    tls_handshakes_.WithLabels({listener, version, ok ? "ok" : "failure"}).Inc(shard);
  }
  void Auth(unsigned shard, const std::string& listener, const std::string& mechanism, bool ok) {
    auth_.WithLabels({listener, mechanism, ok ? "success" : "failure"}).Inc(shard);
  }

  metrics::Histogram& commit_seconds() {
    return *commit_seconds_;
  }
  metrics::Counter& backpressure() {
    return *backpressure_;
  }
  metrics::EventLog* events() {
    return events_;
  }

 private:
  std::vector<ListenerSeries> listeners_;
  std::vector<metrics::Counter*> commands_;
  std::array<metrics::Counter*, 4> replies_{};
  std::array<metrics::Counter*, static_cast<size_t>(Rejection::kCount)> rejections_{};
  metrics::CounterFamily& tls_handshakes_;
  metrics::CounterFamily& auth_;
  metrics::Histogram* commit_seconds_;
  metrics::Counter* backpressure_;
  metrics::EventLog* events_;
};

}  // namespace sluice::gateway
