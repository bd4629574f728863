// sluice-blast: SMTP load generator. See bench/blast/README.md.

#include <cstdio>
#include <fstream>
#include <string>

#include <CLI/CLI.hpp>

#include "bench/blast/blast.h"

// An exception that escapes here (a std::bad_alloc at start-up, say) ends the process with a
// message, which is all main could do with it.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  using sluice::blast::BlastOptions;
  BlastOptions options;
  std::string target = "127.0.0.1:2525";
  std::string json_path;

  CLI::App app{"sluice-blast: SMTP load generator (many sessions per io_uring shard)"};
  app.add_option("--target", target, "host:port of the SMTP server (IP literal)")
      ->capture_default_str();
  app.add_option("--connections", options.connections, "concurrent SMTP sessions")
      ->capture_default_str();
  app.add_option("--messages", options.messages,
                 "messages to submit in total; 0 = until --duration")
      ->capture_default_str();
  app.add_option("--duration", options.duration_s,
                 "stop starting messages after N seconds; 0 = none")
      ->capture_default_str();
  app.add_option("--size", options.size, "message size in bytes, headers included")
      ->capture_default_str();
  app.add_option("--recipients", options.recipients, "RCPT TO per message")->capture_default_str();
  app.add_option("--per-connection", options.per_connection,
                 "messages per connection before QUIT; 0 = unlimited (persistent)")
      ->capture_default_str();
  app.add_flag("--pipelining", options.pipelining,
               "MAIL/RCPT/DATA in one write when the server offers PIPELINING");
  app.add_flag("--tls", options.tls, "STARTTLS after EHLO (certificate not enforced)");
  app.add_option("--rate", options.rate, "target messages/s over all sessions; 0 = unthrottled")
      ->capture_default_str();
  app.add_option("--threads", options.threads, "io_uring shards (threads)")->capture_default_str();
  app.add_option("--timeout", options.timeout_s, "seconds per connect, send and reply")
      ->capture_default_str();
  app.add_option("--max-errors", options.max_errors,
                 "give up after this many connection errors; 0 = never")
      ->capture_default_str();
  app.add_option("--ehlo", options.ehlo_name, "EHLO name")->capture_default_str();
  app.add_option("--from", options.mail_from, "MAIL FROM address")->capture_default_str();
  app.add_option("--rcpt-domain", options.rcpt_domain, "domain of the RCPT TO addresses")
      ->capture_default_str();
  app.add_option("--json", json_path,
                 "also write the report as one JSON object here ('-' = stdout)");
  CLI11_PARSE(app, argc, argv);

  if (auto r = sluice::blast::ParseTarget(target, &options); !r.ok()) {
    std::fprintf(stderr, "sluice-blast: %s\n", r.error().message.c_str());
    return 2;
  }
  sluice::Result<sluice::blast::BlastReport> report = sluice::blast::RunBlast(options);
  if (!report.ok()) {
    std::fprintf(stderr, "sluice-blast: %s\n", report.error().message.c_str());
    return 2;
  }
  std::fputs(sluice::blast::FormatTable(options, *report).c_str(), stdout);
  if (!json_path.empty()) {
    const std::string json = sluice::blast::FormatJson(options, *report);
    if (json_path == "-") {
      std::fputs(json.c_str(), stdout);
    } else {
      std::ofstream out(json_path, std::ios::trunc);
      out << json;
      if (!out.good()) {
        std::fprintf(stderr, "sluice-blast: cannot write %s\n", json_path.c_str());
        return 2;
      }
    }
  }
  // Non-zero when any message was refused or any connection failed.
  return report->ok() ? 0 : 1;
}
