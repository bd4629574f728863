#pragma once

// MessageState: one queued message as its owner sees it between attempts: the envelope (the
// spool's copy of it), the round in progress, and what the round found that the sender asked to
// hear about. Pure state in virtual time: every method that depends on time takes `now_us` (wall
// clock, microseconds since the Unix epoch), so retries, expiry and recovery are unit-tested
// without sleeping (message_state_test.cc).
//
// A round: Begin (or Expire, past expires_at) → Record per recipient reply → End, which counts
// the attempt and says whether anything is left, and then either Retry (a next due time) or the
// message is finished. The I/O around it (routing, the bounce commit) is MessageOwner's.

#include <cstdint>
#include <string>
#include <vector>

#include "delivery/dsn/dsn.h"
#include "delivery/outcome.h"
#include "queue/envelope.h"
#include "queue/message_id.h"
#include "smtp/reply.h"

namespace sluice::delivery {

class MessageState {
 public:
  // A recipient outcome the sender asked to hear about (RFC 3461 NOTIFY), for the DSN.
  struct Notice {
    size_t rcpt = 0;
    std::string status;
    std::string diagnostic;
    std::string remote;
    DsnAction action = DsnAction::kFailed;
  };
  // A deferred recipient, for the event log once the round's next attempt is known.
  struct Deferral {
    size_t rcpt = 0;
    std::string destination;
    std::string remote;
    int code = 0;
  };
  // Where a reply came from.
  struct Attempt {
    std::string remote;           // "host[ip]:port", "maildir:/path", or empty
    bool final_delivery = false;  // maildir or LMTP: the mailbox itself answered
    bool peer_dsn = false;        // the next hop offered DSN (it reports from now on)
  };
  // What End found.
  struct RoundEnd {
    bool pending = false;         // recipients left to try
    std::vector<Notice> notices;  // for the DSN (none for a message from the null sender)
    bool double_bounce = false;   // notices dropped: the message itself was a bounce
  };

  MessageState(queue::MessageId id, queue::Envelope envelope) : id_(id), env_(std::move(envelope)) {
  }

  const queue::MessageId& id() const {
    return id_;
  }
  const queue::Envelope& envelope() const {
    return env_;
  }
  bool in_round() const {
    return in_round_;
  }
  const std::vector<Deferral>& deferrals() const {
    return deferrals_;
  }

  bool HasPending() const;
  // The recipients a new round tries, by index in the envelope.
  std::vector<size_t> PendingRecipients() const;
  // The wait before the next attempt is due, from the stored due time: a message recovered
  // after a restart keeps the due time it had; one that fell due while Sluice was down is due
  // now.
  uint64_t DelayUntilDue(uint64_t now_us) const {
    return env_.next_due_us > now_us ? env_.next_due_us - now_us : 0;
  }
  // Past the message's expires_at (RFC 3463 4.4.7: delivery time expired).
  bool Expired(uint64_t now_us) const {
    return env_.expires_at_us != 0 && now_us >= env_.expires_at_us;
  }

  // Starts a round.
  void Begin() {
    in_round_ = true;
  }
  // Starts a round that bounces every pending recipient of an expired message; returns them.
  std::vector<size_t> Expire(uint64_t now_us);
  // One recipient's reply in this round: updates its state and last reply, keeps what the DSN
  // and the event log need. Returns what the reply means.
  Outcome Record(size_t rcpt, const smtp::Reply& reply, const Attempt& attempt,
                 const std::string& destination);
  // Ends the round's bookkeeping: counts the attempt, hands over the notices.
  RoundEnd End();
  // The bounce carrying `notices` could not be queued: its failed recipients are pending again,
  // to fail (and be reported) on a later attempt.
  void Unreport(const std::vector<Notice>& notices);
  // The next attempt: due at now + delay.
  void Retry(uint64_t now_us, uint64_t delay_us) {
    env_.next_due_us = now_us + delay_us;
  }
  // The round is over (after the spool has the outcome, or it was handed to the writer).
  void Finish() {
    in_round_ = false;
    deferrals_.clear();
  }

 private:
  queue::MessageId id_;
  queue::Envelope env_;
  bool in_round_ = false;
  std::vector<Notice> notices_;
  std::vector<Deferral> deferrals_;
};

}  // namespace sluice::delivery
