#pragma once

// The daemon's configuration: one TOML file, validated completely at load.
// Every error names the file, the line and the key. docs/configuration.md is
// the reference; keep the defaults there and here in step.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "delivery/delivery_config.h"
#include "io/net.h"
#include "smtp/data_reader.h"

namespace sluice::gateway {

using Seconds = std::chrono::seconds;

// Room for our Received header and the growth step of a body buffer, on top of the message.
inline constexpr int64_t kBodyMemorySlack = int64_t{1} << 20;

struct ListenerConfig {
  std::string name;
  std::string address = "127.0.0.1";
  uint16_t port = 0;

  // Relay policy: clients in mynetworks may relay anywhere; others only to
  // relay_domains ("example.com" exactly, "*.example.com" for subdomains).
  std::vector<io::Cidr> mynetworks;
  std::vector<std::string> relay_domains;  // lower-case

  uint64_t max_message_size = 50ull << 20;  // SIZE advertised; 552 5.3.4 past it
  size_t max_recipients = 1000;             // 452 4.5.3 past it (RFC 5321 §4.5.3.1.8: >= 100)
  size_t max_line_length = 2048;            // command line incl. CRLF (RFC 5321: >= 512)
  size_t max_data_line_length = 1000;       // text line incl. CRLF (RFC 5321 §4.5.3.1.6)
  size_t max_connections = 1000;            // this listener, all shards
  size_t max_connections_per_ip = 50;
  // Errors (5xx replies) without a queued message in between, as Postfix counts them: from the
  // soft limit on, every reply waits error_sleep (smtpd_soft_error_limit, smtpd_error_sleep_time);
  // at the hard limit the session gets 421 4.7.0 and is closed (smtpd_hard_error_limit).
  size_t soft_error_limit = 10;
  size_t hard_error_limit = 20;
  Seconds error_sleep{1};
  // EHLO/HELO/NOOP/RSET/VRFY/EXPN/HELP/unknown commands without a queued message in between
  // before 421 4.7.0.
  size_t max_junk_commands = 100;
  // Sender-specified routing in a recipient's local part ('%', '!', or an '@' inside a quoted
  // local part) is refused with 550 5.7.1 for clients that are neither in mynetworks nor
  // authenticated, as Postfix's allow_untrusted_routing = no: a downstream server that honours
  // "user%other@here" would relay further on our say-so.
  bool allow_untrusted_routing = false;
  size_t max_received_headers = 50;  // loop detection: 554 5.4.6
  Seconds command_timeout{300};      // RFC 5321 §4.5.3.2.7: server timeout >= 5 min
  Seconds data_timeout{180};         // RFC 5321 §4.5.3.2.5: data block 3 min
  smtp::BareNewline bare_newline = smtp::BareNewline::kReject;

  // TLS (RFC 3207 STARTTLS, or implicit TLS from the first byte as on 465).
  enum class Tls { kNone, kStartTls, kImplicit };
  Tls tls = Tls::kNone;
  std::string certificate, private_key;          // PEM; ECDSA (preferred) or RSA
  std::string rsa_certificate, rsa_private_key;  // optional second pair for RSA-only clients
  struct SniCertificate {
    std::string name;  // "mail.example.com" or "*.example.com"
    std::string certificate, private_key;
    std::string rsa_certificate, rsa_private_key;
  };
  std::vector<SniCertificate> sni;  // [[listener.sni]]: certificates chosen by the client's SNI
  bool tls13_only = false;          // tls_min_version = "1.3"
  Seconds handshake_timeout{30};

  // SMTP AUTH (RFC 4954): PLAIN and LOGIN against a users file of crypt(3) hashes.
  enum class Auth { kOff, kOptional, kRequired };
  Auth auth = Auth::kOff;
  std::string users_file;
  bool allow_plaintext_auth = false;  // AUTH without TLS: only for tests and trusted links
  bool auth_header = false;  // name the user in Received (Postfix smtpd_sasl_authenticated_header)
  bool submission_fixups = true;  // RFC 6409 §8: add Message-ID/Date when missing (authenticated)
};

struct SpoolConfig {
  std::string path = "var/spool";
  size_t max_pending_messages = 10000;  // admission bound on the spool writer
  size_t max_pending_bytes = 256ull << 20;
  Seconds stall_deadline{10};     // RocksDB write stall longer than this → 451
  Seconds admission_timeout{10};  // a session waits this long for room, then 451
  // Free space below which new mail gets 452 4.3.1 (queue::SpoolOptions::min_free_bytes).
  uint64_t min_free_bytes = 1ull << 30;
};

struct AdminConfig {
  bool enabled = false;  // true when an [admin] table is present
  std::string address = "127.0.0.1";
  uint16_t port = 9325;
  // Per-destination metric series kept before the rest share "other".
  size_t max_destination_series = 100;
};

struct Config {
  std::string source;    // path of the file it came from
  std::string hostname;  // greeting and Received; default gethostname()
  unsigned shards = 0;   // 0 = AutoShards()
  uint16_t node_id = 0;  // part of message ids; distinct per host sharing a spool namespace
  std::string log_level = "info";
  std::string event_log;           // JSON event log path; "-" = stdout; empty = off
  size_t max_connections = 10000;  // process-wide
  // Per-client accounting (connections per address, the AUTH failure throttle, the share of the
  // body budget) keys a client by its network of this prefix: one host usually owns a whole
  // IPv6 /64, so a full-address key would give it unlimited keys.
  unsigned client_ipv4_prefix = 32;
  unsigned client_ipv6_prefix = 64;
  // Message bytes held in memory while they are received (all sessions, before the spool has
  // them), and the most one client network may hold of it. A session that cannot get room gets
  // 452 4.3.1 (at MAIL with SIZE, at DATA/BDAT, or after the final dot if it ran out mid-body).
  int64_t max_body_memory = int64_t{512} << 20;
  int64_t max_body_memory_per_client = int64_t{64} << 20;
  Seconds shutdown_grace{30};  // SIGTERM: transactions in DATA may finish this long
  SpoolConfig spool;
  std::vector<ListenerConfig> listeners;
  delivery::DeliveryConfig delivery;
  AdminConfig admin;
};

Result<Config> LoadConfig(const std::string& path);
// For tests: parse from text; `name` stands in for the file name in errors.
// shards = 0: one per CPU the process may run on, less one (at least 1).
unsigned AutoShards();

Result<Config> ParseConfig(std::string_view text, const std::string& name);

}  // namespace sluice::gateway
