#pragma once

// The JSON events delivery writes (docs/configuration.md "[log]"): one per recipient outcome
// ("delivered", "bounced", "deferred" with the next attempt, "expired") and one per report queued
// ("dsn"). They answer "where is my mail?" without the human log. Each writer does nothing when
// the event log is off (log == null).

#include <cstdint>

#include "delivery/dsn/dsn.h"
#include "delivery/job.h"
#include "delivery/message_state.h"
#include "metrics/event_log.h"
#include "queue/message_id.h"

namespace sluice::delivery {

// A delivered or bounced recipient, as the reply comes in. Deferrals wait for the round's end.
void LogFinalOutcome(metrics::EventLog* log, Outcome outcome, const MessageState& m, size_t rcpt,
                     const JobResult& result, int code, uint64_t now_us);
// The round's deferred recipients, with the time to their next attempt.
void LogDeferrals(metrics::EventLog* log, const MessageState& m, uint64_t now_us);
void LogExpired(metrics::EventLog* log, const MessageState& m, size_t rcpt, uint64_t now_us);
void LogDsn(metrics::EventLog* log, const queue::MessageId& report_id, const MessageState& m,
            DsnAction action, size_t recipients);

}  // namespace sluice::delivery
