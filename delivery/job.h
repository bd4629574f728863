#pragma once

// The two messages between the sides of delivery (docs/architecture.md "Delivery"):
// - Job, owner → destination: one message and the recipients of it that go to one destination.
// - JobResult, destination → owner: one reply per recipient of a job.
// Both cross shards by value (DeliveryShard::CrossPost); neither points into the other side.

#include <cstddef>
#include <string>
#include <vector>

#include "delivery/client/smtp_client.h"
#include "delivery/delivery_config.h"
#include "delivery/dns/mx.h"
#include "queue/envelope.h"
#include "queue/message_id.h"
#include "smtp/reply.h"

namespace sluice::delivery {

struct Job {
  queue::MessageId id;
  unsigned owner = 0;                  // the shard that owns the message
  std::vector<size_t> rcpts;           // indexes into the owner's envelope
  OutboundMessage message;             // the body may be null: the worker reads it from the spool
  std::string key;                     // the destination
  const RouteConfig* route = nullptr;  // null: MX by default
  std::string domain;
  std::vector<MxTarget> mx_targets;  // MX routes: where to connect, in order
};

struct JobResult {
  queue::MessageId id;
  std::vector<size_t> rcpts;
  std::vector<smtp::Reply> replies;  // one per recipient, in the order of rcpts
  std::string remote;
  std::string destination;      // metric label
  bool final_delivery = false;  // maildir or LMTP: the mailbox itself accepted it
  bool peer_dsn = false;        // the next hop offered DSN (it reports from now on)
};

// The destination key of a configured route: "smarthost:name", "lmtp:name", "maildir:name".
// (MX routes key by the MX site, address literals by "literal:ip".)
std::string RouteKey(const RouteConfig& route);

// One round's grouping: recipients with the same destination key share one job (one
// transaction), jobs in the order of their first recipient.
class JobGrouper {
 public:
  JobGrouper(const queue::MessageId& id, unsigned owner, const queue::Envelope& envelope,
             std::shared_ptr<const std::string> body)
      : id_(id), owner_(owner), envelope_(envelope), body_(std::move(body)) {
  }
  void Add(size_t rcpt, const std::string& key, const RouteConfig* route, const std::string& domain,
           std::vector<MxTarget> mx_targets);
  std::vector<Job> Take() {
    return std::move(jobs_);
  }

 private:
  queue::MessageId id_;
  unsigned owner_;
  const queue::Envelope& envelope_;
  std::shared_ptr<const std::string> body_;
  std::vector<Job> jobs_;
};

}  // namespace sluice::delivery
