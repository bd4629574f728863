#pragma once

// Outcomes: what an attempt's replies mean for a message. Pure functions, no I/O and no clock of
// their own (times are parameters), so the retry, expiry and DSN rules are unit-tested in
// virtual time (outcome_test.cc, message_state_test.cc).
//
//   reply → recipient state     OutcomeOf: 2xx delivered, 5xx bounced, anything else deferred
//   attempts → next try         RetryDelay: retry_initial · 2^(attempts−1), capped at retry_max
//   outcome → DSN or not        WantsFailureDsn, WantsSuccessDsn (RFC 3461 NOTIFY)
//   failures → bounce message   MakeBounceEnvelope (RFC 3464; sent with the null sender)

#include <chrono>
#include <cstdint>
#include <string>

#include "delivery/delivery_config.h"
#include "delivery/dns/mx.h"
#include "queue/envelope.h"
#include "queue/schedule.h"
#include "smtp/reply.h"

namespace sluice::delivery {

constexpr uint64_t kMicrosPerSecond = 1'000'000;

enum class Outcome { kDelivered, kDeferred, kBounced };
const char* ToString(Outcome outcome);  // "delivered", "deferred", "bounced"

// RFC 5321 §4.2.1: 2yz is success, 5yz permanent failure; 4yz, and anything that is not a reply
// (code 0: the connection failed), is tried again.
Outcome OutcomeOf(const smtp::Reply& reply);

// The delay before attempt `attempts` + 1 after `attempts` failed ones: retry_initial doubling per
// attempt, capped at retry_max, times `jitter` (the caller draws it from [0.9, 1.1], so messages
// deferred together do not come back together). RFC 5321 §4.5.4.1; docs/design.md §8.2.
uint64_t RetryDelayMicros(const DeliveryConfig& config, uint32_t attempts, double jitter);
constexpr double kMinJitter = 0.9;
constexpr double kMaxJitter = 1.1;

// RFC 3461 §4.1: a failure is reported unless NOTIFY=NEVER, or NOTIFY was given without FAILURE.
// An absent NOTIFY means FAILURE,DELAY.
bool WantsFailureDsn(uint8_t notify);
// RFC 3461 §5.2.2: NOTIFY=SUCCESS is answered by this relay when the mailbox itself accepted the
// message (maildir, LMTP: "delivered"), or when the next hop does not offer DSN and so cannot
// carry the request on ("relayed"); otherwise the next hop reports.
bool WantsSuccessDsn(uint8_t notify, bool final_delivery, bool peer_dsn);

// RFC 3463 status of a reply: its enhanced code, or the class default.
std::string StatusOf(const smtp::Reply& reply);
// One line for logs and the envelope's last_reply: "451 4.4.1 text".
std::string OneLine(const smtp::Reply& reply);
// The host of a connection label "host[ip]:port" (RFC 3464 §2.3.5: Remote-MTA is a host name);
// empty for local deliveries ("maildir:...") and for none.
std::string RemoteMtaOf(const std::string& label);
// "3 seconds", "5 hours", "5 days": for the expiry diagnostic.
std::string AgeText(uint64_t micros);
// The domain of an address, lower-cased; empty when there is none (<postmaster>). The spool's
// counters use the same function (queue/schedule.h).
using queue::DomainOf;

// The reply for recipients of a domain whose MX lookup failed.
smtp::Reply MxFailureReply(const std::string& domain, const MxLookup& mx);

// The envelope of the RFC 3464 report for `original`: from the null sender (RFC 5321 §4.5.5) to
// its sender, never itself reported on (NOTIFY=NEVER), expiring after bounce_max_age.
queue::Envelope MakeBounceEnvelope(const queue::Envelope& original, size_t report_size,
                                   const std::string& hostname, const DeliveryConfig& config,
                                   uint64_t now_us);

}  // namespace sluice::delivery
