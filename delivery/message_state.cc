#include "delivery/message_state.h"

#include <algorithm>

namespace sluice::delivery {

bool MessageState::HasPending() const {
  return std::any_of(env_.recipients.begin(), env_.recipients.end(), [](const queue::Recipient& r) {
    return r.state == queue::RecipientState::kPending;
  });
}

std::vector<size_t> MessageState::PendingRecipients() const {
  std::vector<size_t> pending;
  for (size_t i = 0; i < env_.recipients.size(); ++i) {
    if (env_.recipients[i].state == queue::RecipientState::kPending)
      pending.push_back(i);
  }
  return pending;
}

std::vector<size_t> MessageState::Expire(uint64_t now_us) {
  std::vector<size_t> expired = PendingRecipients();
  in_round_ = true;
  const uint64_t age = now_us > env_.received_at_us ? now_us - env_.received_at_us : 0;
  for (size_t i : expired) {
    queue::Recipient& r = env_.recipients[i];
    r.state = queue::RecipientState::kBounced;
    if (!WantsFailureDsn(r.notify))
      continue;  // RFC 3461 §4.1, as for any other failure
    notices_.push_back({i, "4.4.7",
                        "message expired after " + AgeText(age) + " in the queue; last error: " +
                            (r.last_reply.empty() ? "none" : r.last_reply),
                        "", DsnAction::kFailed});
  }
  return expired;
}

Outcome MessageState::Record(size_t rcpt, const smtp::Reply& reply, const Attempt& attempt,
                             const std::string& destination) {
  queue::Recipient& r = env_.recipients[rcpt];
  r.last_reply = OneLine(reply);
  const Outcome outcome = OutcomeOf(reply);
  switch (outcome) {
    case Outcome::kDelivered:
      r.state = queue::RecipientState::kDelivered;
      if (WantsSuccessDsn(r.notify, attempt.final_delivery, attempt.peer_dsn)) {
        notices_.push_back({rcpt, StatusOf(reply), r.last_reply, RemoteMtaOf(attempt.remote),
                            attempt.final_delivery ? DsnAction::kDelivered : DsnAction::kRelayed});
      }
      break;
    case Outcome::kBounced:
      r.state = queue::RecipientState::kBounced;
      if (WantsFailureDsn(r.notify)) {
        notices_.push_back(
            {rcpt, StatusOf(reply), r.last_reply, RemoteMtaOf(attempt.remote), DsnAction::kFailed});
      }
      break;
    case Outcome::kDeferred:
      ++r.attempts;
      deferrals_.push_back({rcpt, destination, attempt.remote, reply.code});
      break;
  }
  return outcome;
}

MessageState::RoundEnd MessageState::End() {
  RoundEnd end;
  ++env_.attempts;
  end.pending = HasPending();
  end.notices = std::move(notices_);
  notices_.clear();
  if (!end.notices.empty() && env_.sender.empty()) {
    // Never report on a report (RFC 3461 §6.2; RFC 5321 §4.5.5): no bounce loops.
    end.notices.clear();
    end.double_bounce = true;
  }
  return end;
}

void MessageState::Unreport(const std::vector<Notice>& notices) {
  for (const Notice& n : notices) {
    if (n.action == DsnAction::kFailed) {
      env_.recipients[n.rcpt].state = queue::RecipientState::kPending;
    }
  }
}

}  // namespace sluice::delivery
