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
  size_t max_errors = 10;          // 5xx replies before 421 and close (Postfix hard error limit)
  size_t max_junk_commands = 100;  // NOOP/RSET/VRFY/HELP/unknown without a transaction
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
  bool tls13_only = false;                       // tls_min_version = "1.3"
  Seconds handshake_timeout{30};

  // SMTP AUTH (RFC 4954): PLAIN and LOGIN against a users file of crypt(3) hashes.
  enum class Auth { kOff, kOptional, kRequired };
  Auth auth = Auth::kOff;
  std::string users_file;
  bool allow_plaintext_auth = false;  // AUTH without TLS: only for tests and trusted links
  bool auth_header = false;           // name the user in Received (Postfix smtpd_sasl_authenticated_header)
  bool submission_fixups = true;      // RFC 6409 §8: add Message-ID/Date when missing (authenticated)
};

struct SpoolConfig {
  std::string path = "var/spool";
  size_t max_pending_messages = 10000;  // admission bound on the spool writer
  size_t max_pending_bytes = 256ull << 20;
  Seconds stall_deadline{10};     // RocksDB write stall longer than this → 451
  Seconds admission_timeout{10};  // a session waits this long for room, then 451
};

struct AdminConfig {
  bool enabled = false;  // true when an [admin] table is present
  std::string address = "127.0.0.1";
  uint16_t port = 9325;
  // Per-destination metric series kept before the rest share "other".
  size_t max_destination_series = 100;
};

struct Config {
  std::string source;  // path of the file it came from
  std::string hostname;  // greeting and Received; default gethostname()
  unsigned shards = 0;   // 0 = AutoShards()
  uint16_t node_id = 0;  // part of message ids; distinct per host sharing a spool namespace
  std::string log_level = "info";
  std::string event_log;  // JSON event log path; "-" = stdout; empty = off
  size_t max_connections = 10000;  // process-wide
  Seconds shutdown_grace{30};      // SIGTERM: transactions in DATA may finish this long
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
