#include "delivery/delivery_events.h"

namespace sluice::delivery {

namespace {

double SecondsSince(uint64_t since_us, uint64_t now_us) {
  return static_cast<double>(now_us - since_us) / 1e6;
}

}  // namespace

void LogFinalOutcome(metrics::EventLog* log, Outcome outcome, const MessageState& m, size_t rcpt,
                     const JobResult& result, int code, uint64_t now_us) {
  if (log == nullptr)
    return;
  const queue::Envelope& env = m.envelope();
  const queue::Recipient& r = env.recipients[rcpt];
  metrics::Event e(ToString(outcome));
  e.Str("id", m.id().ToString())
      .Str("sender", env.sender)
      .Str("recipient", r.address)
      .Str("destination", result.destination)
      .Str("remote", result.remote)
      .Int("code", code)
      .Str("reply", r.last_reply)
      .Int("attempts", static_cast<int64_t>(env.attempts) + 1)
      .Num("delay_s", SecondsSince(env.received_at_us, now_us));
  log->Write(std::move(e));
}

void LogDeferrals(metrics::EventLog* log, const MessageState& m, uint64_t now_us) {
  if (log == nullptr)
    return;
  const queue::Envelope& env = m.envelope();
  for (const MessageState::Deferral& d : m.deferrals()) {
    const queue::Recipient& r = env.recipients[d.rcpt];
    metrics::Event e("deferred");
    e.Str("id", m.id().ToString())
        .Str("sender", env.sender)
        .Str("recipient", r.address)
        .Str("destination", d.destination)
        .Str("remote", d.remote)
        .Int("code", d.code)
        .Str("reply", r.last_reply)
        .Int("attempts", static_cast<int64_t>(env.attempts))
        .Num("delay_s", SecondsSince(env.received_at_us, now_us))
        .Num("next_attempt_s",
             static_cast<double>(env.next_due_us > now_us ? env.next_due_us - now_us : 0) / 1e6);
    log->Write(std::move(e));
  }
}

void LogExpired(metrics::EventLog* log, const MessageState& m, size_t rcpt, uint64_t now_us) {
  if (log == nullptr)
    return;
  const queue::Envelope& env = m.envelope();
  const queue::Recipient& r = env.recipients[rcpt];
  metrics::Event e("expired");
  e.Str("id", m.id().ToString())
      .Str("sender", env.sender)
      .Str("recipient", r.address)
      .Str("reply", r.last_reply)
      .Int("attempts", static_cast<int64_t>(env.attempts))
      .Num("delay_s", SecondsSince(env.received_at_us, now_us));
  log->Write(std::move(e));
}

void LogDsn(metrics::EventLog* log, const queue::MessageId& report_id, const MessageState& m,
            DsnAction action, size_t recipients) {
  if (log == nullptr)
    return;
  metrics::Event e("dsn");
  e.Str("id", report_id.ToString())
      .Str("for_id", m.id().ToString())
      .Str("to", m.envelope().sender)
      .Str("action", ToString(action))
      .Int("recipients", static_cast<int64_t>(recipients));
  log->Write(std::move(e));
}

}  // namespace sluice::delivery
