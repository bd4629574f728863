#pragma once

// Delivery settings: the retry policy, client timeouts and the route table.
// The TOML is read by gateway/config.cc; docs/configuration.md documents
// every key with its default.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "delivery/client/smtp_client.h"

namespace sluice::delivery {

using Seconds = std::chrono::seconds;

enum class RouteType { kMx, kSmarthost, kLmtp, kMaildir };
// The route's `type` as the configuration spells it: "mx", "smarthost", "lmtp", "maildir".
const char* ToString(RouteType type);

struct RouteConfig {
  std::string name;
  // Recipient domains: "example.com" exactly, "*.example.com" subdomains,
  // "*" anything. The first route that matches wins.
  std::vector<std::string> domains;
  RouteType type = RouteType::kMx;
  std::string host;  // smarthost / lmtp: IP address or host name
  uint16_t port = 25;
  std::string path;  // maildir root
  // Per destination (one queue per smarthost, LMTP server, maildir, or MX
  // domain).
  unsigned max_connections = 20;
  unsigned max_messages_per_connection = 100;
  double max_message_rate = 0;  // messages per second; 0 = unlimited
  // Outbound TLS: opportunistic (default; STARTTLS when offered, plaintext
  // when it fails), required (verified certificate for tls_server_name, or
  // the message waits), disabled.
  ClientOptions::TlsPolicy tls = ClientOptions::TlsPolicy::kOpportunistic;
  std::string tls_server_name;           // default: the MX host name, or `host`
  std::string auth_user, auth_password;  // smarthost AUTH, only over TLS
};

struct DeliveryConfig {
  bool enabled = true;
  std::string helo_name;  // default: [server] hostname
  // Retry schedule (RFC 5321 §4.5.4.1: configurable): the first retry after
  // retry_initial, doubling with ±10% jitter, capped at retry_max; a message
  // still undelivered after max_age is bounced (bounces: bounce_max_age).
  Seconds retry_initial{300};
  Seconds retry_max{3600};
  Seconds max_age{5 * 24 * 3600};
  Seconds bounce_max_age{2 * 24 * 3600};
  // A destination whose connections fail is left alone this long; its queued
  // messages are deferred without burning a connection attempt each.
  Seconds destination_backoff{60};
  Seconds connect_timeout{30};
  Seconds tls_timeout{30};  // outbound TLS handshake; a stall past it counts as a failed handshake
  Seconds idle_timeout{5};  // a pooled connection with nothing to send is closed after this
  Seconds command_timeout{300};
  Seconds data_timeout{600};
  // Per delivery attempt, as Postfix: the addresses an MX lookup yields (smtp_mx_address_limit;
  // also the addresses of a smarthost or LMTP server tried), and the sessions that may reach the
  // SMTP greeting before the attempt gives up (smtp_mx_session_limit): a host that answers but
  // refuses (a 4xx greeting, a failed EHLO) is followed by the next address, up to this many.
  unsigned mx_address_limit = 5;
  unsigned mx_session_limit = 2;
  // Destinations (queues) with nothing queued, no connection and no back-off left are dropped
  // from memory after this long; the next message for them makes a new one.
  Seconds destination_idle_expiry{300};
  unsigned workers = 4;  // threads for blocking work (body reads, maildir writes)
  // Bodies of newly accepted messages stay in memory for their first delivery
  // attempt (it then needs no spool read and no trip through the workers).
  // A process-wide bound in bytes; past it a message's body is read back from
  // the spool as after a restart. 0 disables.
  int64_t body_cache_bytes = int64_t{64} << 20;
  // Messages held in memory for delivery, process-wide (as Postfix's qmgr_message_active_limit):
  // those due now, read from the spool's schedule index in due order, and new mail while there
  // is room. The rest of the queue waits on disk only, so memory does not grow with the queue.
  size_t max_active_messages = 20000;
  std::vector<std::string> dns_servers;  // "127.0.0.1:53"; empty = /etc/resolv.conf
  std::vector<RouteConfig> routes;       // empty = every domain by MX
};

// Route lookup by recipient domain (case-insensitive).
const RouteConfig* FindRoute(const std::vector<RouteConfig>& routes, std::string_view domain);

// The metric label for a recipient domain: the route's name, or the domain itself for MX routes
// ("unrouted" when routes are configured and none matches).
std::string DestinationLabel(const DeliveryConfig& config, const std::string& domain);

// "100/s", "500/min", "3600/h" → messages per second.
std::optional<double> ParseRate(std::string_view text);

}  // namespace sluice::delivery
