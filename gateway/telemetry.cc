#include "gateway/telemetry.h"

#include "base/ascii.h"
#include "gateway/config.h"

namespace sluice::gateway {

namespace {

constexpr const char* kRejectionNames[] = {
    "relay_denied",      "too_many_recipients",
    "message_too_big",   "line_too_long",
    "bare_newline",      "loop",
    "command_too_long",  "syntax",
    "too_many_errors",   "too_many_junk",
    "timeout",           "spool_busy",
    "untrusted_routing", "body_memory",
    "unread_replies",    "insufficient_storage",
};
static_assert(std::size(kRejectionNames) == static_cast<size_t>(Rejection::kCount));

constexpr const char* kRefusalNames[] = {"max_connections", "max_connections_per_ip",
                                         "spool_unhealthy", "shutting_down"};
static_assert(std::size(kRefusalNames) == static_cast<size_t>(ConnectRefusal::kCount));

}  // namespace

Telemetry::Telemetry(metrics::Registry& r, const Config& config, metrics::EventLog* events)
    : tls_handshakes_(r.AddCounter("sluice_tls_handshakes_total",
                                   "Inbound TLS handshakes (STARTTLS and implicit), by outcome.",
                                   {"listener", "version", "result"})),
      auth_(r.AddCounter("sluice_smtpd_auth_total", "SMTP AUTH attempts, by outcome.",
                         {"listener", "mechanism", "result"})),
      events_(events) {
  tls_handshakes_.SetMaxSeries(64);
  auth_.SetMaxSeries(64);
  for (const ListenerConfig& l : config.listeners) {
    // Present from the start, at 0, so rate() and alerts see the first failure.
    tls_handshakes_.WithLabels({l.name, "none", "failure"});
  }
  auto& connections = r.AddCounter("sluice_smtpd_connections_total",
                                   "Inbound SMTP connections, accepted or refused at connect.",
                                   {"listener", "result", "reason"});
  auto& active = r.AddGauge("sluice_smtpd_connections", "Inbound SMTP connections open now.",
                            {"listener"});
  auto& messages = r.AddCounter("sluice_smtpd_messages_received_total",
                                "Messages accepted (250 after the spool fsync).", {"listener"});
  auto& bytes = r.AddCounter("sluice_smtpd_received_bytes_total",
                             "Bytes of accepted messages, as stored (with our Received header).",
                             {"listener"});
  auto& recipients = r.AddCounter("sluice_smtpd_recipients_total",
                                  "Recipients of accepted messages.", {"listener"});
  auto& transaction = r.AddHistogram(
      "sluice_smtpd_transaction_duration_seconds",
      "From MAIL FROM to the final reply of an accepted message.", {"listener"},
      metrics::ExponentialBuckets(0.0005, 2, 18));
  for (const ListenerConfig& l : config.listeners) {
    ListenerSeries s{};
    s.accepted = &connections.WithLabels({l.name, "accepted", "none"});
    for (size_t i = 0; i < s.refused.size(); ++i) {
      s.refused[i] = &connections.WithLabels({l.name, "rejected", kRefusalNames[i]});
    }
    s.active = &active.WithLabels({l.name});
    s.messages = &messages.WithLabels({l.name});
    s.bytes = &bytes.WithLabels({l.name});
    s.recipients = &recipients.WithLabels({l.name});
    s.transaction_seconds = &transaction.WithLabels({l.name});
    listeners_.push_back(s);
  }

  auto& commands = r.AddCounter("sluice_smtpd_commands_total", "SMTP commands received.",
                                {"command"});
  for (int v = 0; v <= static_cast<int>(smtp::Verb::kUnknown); ++v) {
    const std::string lower = AsciiToLower(smtp::VerbName(static_cast<smtp::Verb>(v)));
    commands_.push_back(&commands.WithLabels({lower}));
  }
  auto& replies = r.AddCounter("sluice_smtpd_replies_total", "SMTP replies sent, by class.",
                               {"class"});
  const char* classes[] = {"2xx", "3xx", "4xx", "5xx"};
  for (size_t i = 0; i < 4; ++i) replies_[i] = &replies.WithLabels({classes[i]});
  auto& rejections = r.AddCounter("sluice_smtpd_rejections_total",
                                  "Recipients, messages and sessions refused, by reason.",
                                  {"kind"});
  for (size_t i = 0; i < rejections_.size(); ++i) {
    rejections_[i] = &rejections.WithLabels({kRejectionNames[i]});
  }
  commit_seconds_ = &r.AddHistogram("sluice_spool_commit_duration_seconds",
                                    "From handing a message to the spool writer until it is "
                                    "durable (fsync'd) and the session may answer 250.",
                                    {}, metrics::ExponentialBuckets(0.0001, 2, 18))
                         .WithLabels({});
  backpressure_ = &r.AddCounter("sluice_spool_backpressure_total",
                                "Times a session found the spool writer's queue full and waited.",
                                {})
                       .WithLabels({});
}

}  // namespace sluice::gateway
