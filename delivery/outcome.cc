#include "delivery/outcome.h"

#include <algorithm>
#include <cmath>

#include "base/ascii.h"
#include "smtp/params.h"

namespace sluice::delivery {

const char* ToString(Outcome outcome) {
  switch (outcome) {
    case Outcome::kDelivered:
      return "delivered";
    case Outcome::kDeferred:
      return "deferred";
    case Outcome::kBounced:
      return "bounced";
  }
  return "deferred";
}

Outcome OutcomeOf(const smtp::Reply& reply) {
  if (reply.code >= 200 && reply.code < 300)
    return Outcome::kDelivered;
  if (reply.code >= 500)
    return Outcome::kBounced;
  return Outcome::kDeferred;
}

uint64_t RetryDelayMicros(const DeliveryConfig& config, uint32_t attempts, double jitter) {
  const double initial = static_cast<double>(config.retry_initial.count());
  const double cap = static_cast<double>(config.retry_max.count());
  const double exponent = std::min<double>(attempts > 0 ? attempts - 1 : 0, 30);
  const double delay = std::min(initial * std::pow(2.0, exponent), cap) * jitter;
  return static_cast<uint64_t>(delay * kMicrosPerSecond);
}

bool WantsFailureDsn(uint8_t notify) {
  if (notify == 0)
    return true;
  if (notify & smtp::kNotifyNever)
    return false;
  return (notify & smtp::kNotifyFailure) != 0;
}

bool WantsSuccessDsn(uint8_t notify, bool final_delivery, bool peer_dsn) {
  return (notify & smtp::kNotifySuccess) && !(notify & smtp::kNotifyNever) &&
         (final_delivery || !peer_dsn);
}

std::string StatusOf(const smtp::Reply& reply) {
  if (!reply.enhanced.empty())
    return reply.enhanced;
  return reply.code >= 500 ? "5.0.0" : "4.0.0";
}

std::string OneLine(const smtp::Reply& reply) {
  std::string text = std::to_string(reply.code);
  if (!reply.enhanced.empty())
    text += " " + reply.enhanced;
  std::string body = reply.text;
  std::replace(body.begin(), body.end(), '\n', ' ');
  if (!body.empty())
    text += " " + body;
  return text;
}

std::string RemoteMtaOf(const std::string& label) {
  if (label.empty() || label.rfind("maildir:", 0) == 0)
    return "";
  return label.substr(0, label.find('['));
}

std::string AgeText(uint64_t micros) {
  const uint64_t s = micros / kMicrosPerSecond;
  if (s < 2 * 3600)
    return std::to_string(s) + " seconds";
  if (s < 2 * 86400)
    return std::to_string(s / 3600) + " hours";
  return std::to_string(s / 86400) + " days";
}

smtp::Reply MxFailureReply(const std::string& domain, const MxLookup& mx) {
  switch (mx.status) {
    case MxLookup::Status::kNoSuchDomain:
      return smtp::MakeReply(550, "5.1.2", "domain " + domain + " not found: " + mx.error);
    case MxLookup::Status::kNullMx:
      // RFC 7505 §3: a null MX means the domain accepts no mail.
      return smtp::MakeReply(556, "5.1.10", "domain " + domain + " does not accept mail (null MX)");
    default:
      return smtp::MakeReply(451, "4.4.3", "DNS lookup for " + domain + " failed: " + mx.error);
  }
}

queue::Envelope MakeBounceEnvelope(const queue::Envelope& original, size_t report_size,
                                   const std::string& hostname, const DeliveryConfig& config,
                                   uint64_t now_us) {
  queue::Envelope bounce;
  bounce.sender = "";
  bounce.recipients.push_back(
      {original.sender, smtp::kNotifyNever, "", queue::RecipientState::kPending, 0, ""});
  bounce.received_at_us = now_us;
  bounce.next_due_us = now_us;
  bounce.expires_at_us =
      now_us + static_cast<uint64_t>(config.bounce_max_age.count()) * kMicrosPerSecond;
  bounce.body_size = report_size;
  bounce.client_ip = "127.0.0.1";
  bounce.helo = hostname;
  bounce.listener = "bounce";
  return bounce;
}

}  // namespace sluice::delivery
