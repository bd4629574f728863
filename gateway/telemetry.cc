#include "gateway/telemetry.h"

#include "base/ascii.h"
#include "gateway/config.h"

namespace sluice::gateway {

const char* ToString(Rejection rejection) {
  switch (rejection) {
    case Rejection::kRelayDenied:
      return "relay_denied";
    case Rejection::kTooManyRecipients:
      return "too_many_recipients";
    case Rejection::kMessageTooBig:
      return "message_too_big";
    case Rejection::kLineTooLong:
      return "line_too_long";
    case Rejection::kBareNewline:
      return "bare_newline";
    case Rejection::kLoop:
      return "loop";
    case Rejection::kCommandTooLong:
      return "command_too_long";
    case Rejection::kSyntax:
      return "syntax";
    case Rejection::kTooManyErrors:
      return "too_many_errors";
    case Rejection::kTooManyJunk:
      return "too_many_junk";
    case Rejection::kTimeout:
      return "timeout";
    case Rejection::kSpoolBusy:
      return "spool_busy";
    case Rejection::kUntrustedRouting:
      return "untrusted_routing";
    case Rejection::kBodyMemory:
      return "body_memory";
    case Rejection::kUnreadReplies:
      return "unread_replies";
    case Rejection::kInsufficientStorage:
      return "insufficient_storage";
    case Rejection::kCount:
      break;
  }
  return "unknown";
}

const char* ToString(ConnectRefusal refusal) {
  switch (refusal) {
    case ConnectRefusal::kMaxConnections:
      return "max_connections";
    case ConnectRefusal::kMaxPerIp:
      return "max_connections_per_ip";
    case ConnectRefusal::kSpoolUnhealthy:
      return "spool_unhealthy";
    case ConnectRefusal::kShuttingDown:
      return "shutting_down";
    case ConnectRefusal::kCount:
      break;
  }
  return "unknown";
}

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
  auto& active =
      r.AddGauge("sluice_smtpd_connections", "Inbound SMTP connections open now.", {"listener"});
  auto& messages = r.AddCounter("sluice_smtpd_messages_received_total",
                                "Messages accepted (250 after the spool fsync).", {"listener"});
  auto& bytes = r.AddCounter("sluice_smtpd_received_bytes_total",
                             "Bytes of accepted messages, as stored (with our Received header).",
                             {"listener"});
  auto& recipients = r.AddCounter("sluice_smtpd_recipients_total",
                                  "Recipients of accepted messages.", {"listener"});
  auto& transaction = r.AddHistogram("sluice_smtpd_transaction_duration_seconds",
                                     "From MAIL FROM to the final reply of an accepted message.",
                                     {"listener"}, metrics::ExponentialBuckets(0.0005, 2, 18));
  for (const ListenerConfig& l : config.listeners) {
    ListenerSeries s{};
    s.accepted = &connections.WithLabels({l.name, "accepted", "none"});
    for (size_t i = 0; i < s.refused.size(); ++i) {
      s.refused[i] =
          &connections.WithLabels({l.name, "rejected", ToString(static_cast<ConnectRefusal>(i))});
    }
    s.active = &active.WithLabels({l.name});
    s.messages = &messages.WithLabels({l.name});
    s.bytes = &bytes.WithLabels({l.name});
    s.recipients = &recipients.WithLabels({l.name});
    s.transaction_seconds = &transaction.WithLabels({l.name});
    listeners_.push_back(s);
  }

  auto& commands =
      r.AddCounter("sluice_smtpd_commands_total", "SMTP commands received.", {"command"});
  for (int v = 0; v <= static_cast<int>(smtp::Verb::kUnknown); ++v) {
    const std::string lower = AsciiToLower(smtp::ToString(static_cast<smtp::Verb>(v)));
    commands_.push_back(&commands.WithLabels({lower}));
  }
  auto& replies =
      r.AddCounter("sluice_smtpd_replies_total", "SMTP replies sent, by class.", {"class"});
  const char* classes[] = {"2xx", "3xx", "4xx", "5xx"};
  for (size_t i = 0; i < 4; ++i)
    replies_[i] = &replies.WithLabels({classes[i]});
  auto& rejections =
      r.AddCounter("sluice_smtpd_rejections_total",
                   "Recipients, messages and sessions refused, by reason.", {"kind"});
  for (size_t i = 0; i < rejections_.size(); ++i) {
    rejections_[i] = &rejections.WithLabels({ToString(static_cast<Rejection>(i))});
  }
  commit_seconds_ = &r.AddHistogram("sluice_spool_commit_duration_seconds",
                                    "From handing a message to the spool writer until it is "
                                    "durable (fsync'd) and the session may answer 250.",
                                    {}, metrics::ExponentialBuckets(0.0001, 2, 18))
                         .WithLabels({});
  backpressure_ =
      &r.AddCounter("sluice_spool_backpressure_total",
                    "Times a session found the spool writer's queue full and waited.", {})
           .WithLabels({});
}

}  // namespace sluice::gateway
