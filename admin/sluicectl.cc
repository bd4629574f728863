// sluicectl: operator CLI. Reads the spool through a RocksDB secondary instance, so it works
// while sluiced runs and never writes to the spool.
//
//   sluicectl [--config FILE] queue list [--json]
//   sluicectl [--config FILE] queue show ID [--body]
//   sluicectl [--config FILE] queue export DIR
//   sluicectl [--config FILE] queue count [--scan]
//   sluicectl [--config FILE] queue summary [--top N] [--json]
//   sluicectl [--config FILE] quarantine list
//   sluicectl [--config FILE] quarantine show NAME [--body]
//   sluicectl [--config FILE] quarantine export DIR

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include "admin/json.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/result.h"
#include "queue/spool.h"

namespace sluice::admin {
namespace {

constexpr char kDefaultConfig[] = "/etc/sluice/sluice.toml";

int Fail(const std::string& message) {
  std::fprintf(stderr, "sluicectl: %s\n", message.c_str());
  return 1;
}

// `[spool] path` from the config. Relative paths stay relative to the working directory, as in
// the daemon.
Result<std::string> SpoolPathFromConfig(const std::string& config_path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(config_path, ec)) {
    return MakeError("config file " + config_path + " not found");
  }
  try {
    const toml::table config = toml::parse_file(config_path);
    std::optional<std::string> path = config["spool"]["path"].value<std::string>();
    if (!path || path->empty()) {
      return MakeError(config_path + ": [spool] path is missing or not a string");
    }
    return *path;
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return MakeError(config_path + ":" + std::to_string(where.line) + ":" +
                     std::to_string(where.column) + ": " + std::string(e.description()));
  }
}

// Control bytes in envelope text would drive the terminal; show them as \xNN.
std::string Printable(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += ch;
    }
  }
  return out;
}

std::string Age(uint64_t received_at_us, uint64_t now_us) {
  uint64_t s = now_us > received_at_us ? (now_us - received_at_us) / 1'000'000 : 0;
  const uint64_t d = s / 86400;
  const uint64_t h = s % 86400 / 3600;
  const uint64_t m = s % 3600 / 60;
  s %= 60;
  if (d > 0)
    return std::to_string(d) + "d" + std::to_string(h) + "h";
  if (h > 0)
    return std::to_string(h) + "h" + std::to_string(m) + "m";
  if (m > 0)
    return std::to_string(m) + "m" + std::to_string(s) + "s";
  return std::to_string(s) + "s";
}

std::string Timestamp(uint64_t us) {
  if (us == 0)
    return "-";
  const time_t t = static_cast<time_t>(us / 1'000'000);
  tm utc{};
  gmtime_r(&t, &utc);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return std::string(buf) + " (" + std::to_string(us) + ")";
}

std::string Sender(const std::string& sender) {
  return "<" + Printable(sender) + ">";
}

bool WriteAll(std::FILE* f, std::string_view data) {
  return std::fwrite(data.data(), 1, data.size(), f) == data.size();
}

Result<void> WriteFile(const std::filesystem::path& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out)
    return MakeError("cannot write " + path.string());
  return {};
}

// Records sluiced has not quarantined yet (it does so when it starts) are named on stderr.
void Unreadable(const std::string& name, const std::string& why) {
  std::fprintf(stderr,
               "sluicectl: record %s cannot be read (%s); sluiced quarantines it at start\n",
               name.c_str(), Printable(why).c_str());
}

int List(queue::SpoolReader& reader, bool json) {
  const uint64_t now = UnixMicros();
  if (!json)
    std::printf("%-26s %10s %8s  %s -> %s\n", "ID", "SIZE", "AGE", "SENDER", "RECIPIENTS");
  Result<void> r = reader.ForEach(
      [&](const queue::MessageId& id, const queue::Envelope& e) {
        if (json) {
          std::string line = ListEntryToJson(id, e, now);
          line += '\n';
          WriteAll(stdout, line);
          return true;
        }
        std::string recipients;
        for (const queue::Recipient& rcpt : e.recipients) {
          if (!recipients.empty())
            recipients += ", ";
          recipients += "<" + Printable(rcpt.address) + ">";
        }
        std::printf("%-26s %10llu %8s  %s -> %s\n", id.ToString().c_str(),
                    static_cast<unsigned long long>(e.body_size),
                    Age(e.received_at_us, now).c_str(), Sender(e.sender).c_str(),
                    recipients.c_str());
        return true;
      },
      Unreadable);
  if (!r.ok())
    return Fail(r.error().message);
  return std::fflush(stdout) == 0 ? 0 : Fail("write to stdout failed");
}

// From the spool's queue counters (queue/schedule.h): no envelope is read, so it answers at once
// for any queue length. Ages are to the minute (counted from the start of the arrival minute).
int Summary(queue::SpoolReader& reader, size_t top, bool json) {
  bool indexed = false;
  Result<queue::QueueCounts> counts = reader.Counts(&indexed);
  if (!counts.ok())
    return Fail(counts.error().message);
  if (!indexed) {
    std::fprintf(stderr,
                 "sluicectl: this spool has not been indexed yet (sluiced does it in the "
                 "background after its first start); the counts are incomplete\n");
  }
  const uint64_t now = UnixMicros();
  auto age = [now](uint64_t received) -> uint64_t {
    return received == 0 || received > now ? 0 : (now - received) / 1'000'000;
  };
  std::vector<std::pair<std::string, queue::QueueCounts::Domain>> domains(counts->domains.begin(),
                                                                          counts->domains.end());
  std::sort(domains.begin(), domains.end(), [](const auto& a, const auto& b) {
    return a.second.messages != b.second.messages ? a.second.messages > b.second.messages
                                                  : a.first < b.first;
  });
  const size_t shown = std::min(top, domains.size());
  if (json) {
    std::string out = "{\"messages\":" + std::to_string(counts->messages()) +
                      ",\"scheduled\":" + std::to_string(counts->scheduled) +
                      ",\"deferred\":" + std::to_string(counts->deferred) +
                      ",\"oldest_age_seconds\":" + std::to_string(age(counts->oldest_received_us)) +
                      ",\"indexed\":" + (indexed ? "true" : "false") + ",\"domains\":[";
    for (size_t i = 0; i < shown; ++i) {
      if (i > 0)
        out += ',';
      out += "{\"domain\":";
      AppendJsonString(out, domains[i].first);
      out +=
          ",\"messages\":" + std::to_string(domains[i].second.messages) +
          ",\"oldest_age_seconds\":" + std::to_string(age(domains[i].second.oldest_received_us)) +
          "}";
    }
    out += "],\"other_domains\":" + std::to_string(domains.size() - shown) + "}\n";
    WriteAll(stdout, out);
    return std::fflush(stdout) == 0 ? 0 : Fail("write to stdout failed");
  }
  std::printf("%-12s %12s\n", "STATE", "MESSAGES");
  std::printf("%-12s %12llu\n", "scheduled", static_cast<unsigned long long>(counts->scheduled));
  std::printf("%-12s %12llu\n", "deferred", static_cast<unsigned long long>(counts->deferred));
  std::printf("%-12s %12llu  oldest %s\n", "total",
              static_cast<unsigned long long>(counts->messages()),
              counts->messages() == 0 ? "-" : Age(counts->oldest_received_us, now).c_str());
  if (shown > 0) {
    std::printf("\n%-40s %12s %8s\n", "RECIPIENT DOMAIN", "MESSAGES", "OLDEST");
    for (size_t i = 0; i < shown; ++i) {
      const std::string name = domains[i].first.empty() ? "(none)" : Printable(domains[i].first);
      std::printf("%-40s %12llu %8s\n", name.c_str(),
                  static_cast<unsigned long long>(domains[i].second.messages),
                  Age(domains[i].second.oldest_received_us, now).c_str());
    }
    if (shown < domains.size())
      std::printf("(%zu more domains)\n", domains.size() - shown);
  }
  return std::fflush(stdout) == 0 ? 0 : Fail("write to stdout failed");
}

int Show(queue::SpoolReader& reader, const std::string& id_text, bool body_only) {
  std::optional<queue::MessageId> id = queue::MessageId::Parse(id_text);
  if (!id)
    return Fail("invalid message id '" + Printable(id_text) + "'");
  Result<queue::Envelope> e = reader.ReadEnvelope(*id);
  if (!e.ok())
    return Fail(e.error().message);
  Result<std::string> body = reader.ReadBody(*id);
  if (!body.ok())
    return Fail(body.error().message);
  if (!body_only) {
    std::string text;
    auto line = [&text](const std::string& key, const std::string& value) {
      text += key + ": " + value + "\n";
    };
    line("id", id->ToString());
    line("sender", Sender(e->sender));
    for (const queue::Recipient& r : e->recipients) {
      std::string v = "<" + Printable(r.address) + "> state=" + queue::ToString(r.state) +
                      " attempts=" + std::to_string(r.attempts) +
                      " notify=" + std::to_string(r.notify);
      if (!r.orcpt.empty())
        v += " orcpt=" + Printable(r.orcpt);
      if (!r.last_reply.empty())
        v += " last_reply=\"" + Printable(r.last_reply) + "\"";
      line("recipient", v);
    }
    line("size", std::to_string(e->body_size));
    line("body_type", std::to_string(e->body_type));
    line("smtputf8", e->smtputf8 ? "yes" : "no");
    line("ret", std::to_string(e->ret));
    line("envid", Printable(e->envid));
    line("auth_param", Printable(e->auth_param));
    line("received_at", Timestamp(e->received_at_us));
    line("next_due", Timestamp(e->next_due_us));
    line("expires_at", Timestamp(e->expires_at_us));
    line("attempts", std::to_string(e->attempts));
    line("client_ip", Printable(e->client_ip));
    line("helo", Printable(e->helo));
    line("auth_user", Printable(e->auth_user));
    line("listener", Printable(e->listener));
    line("tls", e->tls ? "yes" : "no");
    text += "\n";
    if (!WriteAll(stdout, text))
      return Fail("write to stdout failed");
  }
  if (!WriteAll(stdout, *body) || std::fflush(stdout) != 0)
    return Fail("write to stdout failed");
  return 0;
}

int Export(queue::SpoolReader& reader, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return Fail("cannot create " + dir + ": " + ec.message());
  uint64_t count = 0;
  std::string error;
  Result<void> r = reader.ForEach(
      [&](const queue::MessageId& id, const queue::Envelope& e) {
        Result<std::string> body = reader.ReadBody(id);
        if (!body.ok()) {
          error = body.error().message;
          return false;
        }
        const std::string name = id.ToString();
        Result<void> w = WriteFile(std::filesystem::path(dir) / (name + ".eml"), *body);
        if (w.ok())
          w = WriteFile(std::filesystem::path(dir) / (name + ".json"),
                        EnvelopeToJson(id, e) + "\n");
        if (!w.ok()) {
          error = w.error().message;
          return false;
        }
        ++count;
        return true;
      },
      Unreadable);
  if (!r.ok())
    return Fail(r.error().message);
  if (!error.empty())
    return Fail(error);
  std::fprintf(stderr, "exported %llu messages to %s\n", static_cast<unsigned long long>(count),
               dir.c_str());
  return 0;
}

int QuarantineList(queue::SpoolReader& reader) {
  std::printf("%-26s %-20s %10s %10s  %s\n", "NAME", "QUARANTINED", "META", "BODY", "REASON");
  Result<void> r = reader.ForEachQuarantined([](const queue::QuarantinedRecord& q) {
    std::string when = Timestamp(q.quarantined_at_us);
    when = when.substr(0, when.find(' '));
    std::printf("%-26s %-20s %10zu %10s  %s\n", q.Name().c_str(), when.c_str(), q.meta.size(),
                q.has_body ? std::to_string(q.body.size()).c_str() : "-",
                Printable(q.reason).c_str());
    return true;
  });
  if (!r.ok())
    return Fail(r.error().message);
  return std::fflush(stdout) == 0 ? 0 : Fail("write to stdout failed");
}

std::string HexDump(std::string_view data) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t off = 0; off < data.size(); off += 16) {
    char offset[24];
    std::snprintf(offset, sizeof offset, "%08zx  ", off);
    out += offset;
    std::string ascii;
    for (size_t i = off; i < off + 16; ++i) {
      if (i < data.size()) {
        const auto c = static_cast<unsigned char>(data[i]);
        out += kHex[c >> 4];
        out += kHex[c & 15];
        out += ' ';
        ascii += c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '.';
      } else {
        out += "   ";
      }
    }
    out += " " + ascii + "\n";
  }
  return out;
}

int QuarantineShow(queue::SpoolReader& reader, const std::string& name, bool body_only) {
  Result<queue::QuarantinedRecord> q = reader.ReadQuarantined(name);
  if (!q.ok())
    return Fail(q.error().message);
  if (!body_only) {
    std::string text = "name: " + q->Name() + "\n";
    text += "quarantined_at: " + Timestamp(q->quarantined_at_us) + "\n";
    text += "reason: " + Printable(q->reason) + "\n";
    text += "body: " + (q->has_body ? std::to_string(q->body.size()) + " bytes" : "none") + "\n";
    text += "envelope (" + std::to_string(q->meta.size()) + " bytes, as stored):\n";
    text += HexDump(q->meta);
    text += "\n";
    if (!WriteAll(stdout, text))
      return Fail("write to stdout failed");
  }
  if (!WriteAll(stdout, q->body) || std::fflush(stdout) != 0)
    return Fail("write to stdout failed");
  return 0;
}

int QuarantineExport(queue::SpoolReader& reader, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return Fail("cannot create " + dir + ": " + ec.message());
  uint64_t count = 0;
  std::string error;
  Result<void> r = reader.ForEachQuarantined([&](const queue::QuarantinedRecord& q) {
    const std::filesystem::path base = std::filesystem::path(dir) / q.Name();
    Result<void> w = WriteFile(base.string() + ".envelope", q.meta);
    if (w.ok() && q.has_body)
      w = WriteFile(base.string() + ".eml", q.body);
    if (w.ok()) {
      w = WriteFile(base.string() + ".reason",
                    Timestamp(q.quarantined_at_us) + "\n" + q.reason + "\n");
    }
    if (!w.ok()) {
      error = w.error().message;
      return false;
    }
    ++count;
    return true;
  });
  if (!r.ok())
    return Fail(r.error().message);
  if (!error.empty())
    return Fail(error);
  std::fprintf(stderr, "exported %llu quarantined records to %s\n",
               static_cast<unsigned long long>(count), dir.c_str());
  return 0;
}

int Main(int argc, char** argv) {
  // Messages and bodies go to stdout; anything logged (RocksDB's complaints included) to stderr.
  InitLogging("warn");
  CLI::App app{"sluicectl: inspect the Sluice spool"};
  std::string config_path = kDefaultConfig;
  app.add_option("-c,--config", config_path, "sluiced config file (reads [spool] path)")
      ->capture_default_str();
  app.require_subcommand(1);
  CLI::App* queue_cmd = app.add_subcommand("queue", "Inspect queued messages");
  queue_cmd->require_subcommand(1);

  bool json = false;
  CLI::App* list = queue_cmd->add_subcommand("list", "List queued messages in id (arrival) order");
  list->add_flag("--json", json, "One JSON object per line: id, sender, recipients, size, age");

  std::string show_id;
  bool body_only = false;
  CLI::App* show = queue_cmd->add_subcommand("show", "Print a message's envelope and body");
  show->add_option("ID", show_id, "Message id (as in '250 2.0.0 Ok: queued as ID')")->required();
  show->add_flag("--body", body_only, "Print only the raw body bytes");

  std::string export_dir;
  CLI::App* export_cmd =
      queue_cmd->add_subcommand("export", "Write DIR/<id>.eml and DIR/<id>.json per message");
  export_cmd->add_option("DIR", export_dir, "Target directory (created if missing)")->required();

  CLI::App* count = queue_cmd->add_subcommand("count", "Print the number of queued messages");
  bool count_scan = false;
  count->add_flag("--scan", count_scan,
                  "Count by reading every envelope instead of from the queue counters");

  size_t top = 20;
  bool summary_json = false;
  CLI::App* summary = queue_cmd->add_subcommand(
      "summary", "Messages by state and by recipient domain, from the queue counters (no scan)");
  summary->add_option("--top", top, "Domains to list, most messages first")->capture_default_str();
  summary->add_flag("--json", summary_json, "One JSON object");

  CLI::App* quarantine_cmd =
      app.add_subcommand("quarantine", "Records set aside because they could not be read");
  quarantine_cmd->require_subcommand(1);
  CLI::App* q_list = quarantine_cmd->add_subcommand("list", "List quarantined records");
  std::string q_name;
  bool q_body = false;
  CLI::App* q_show = quarantine_cmd->add_subcommand(
      "show", "Print a quarantined record: why, the stored envelope bytes (hex), the body");
  q_show->add_option("NAME", q_name, "As listed (a message id, or x<hex> for another key)")
      ->required();
  q_show->add_flag("--body", q_body, "Print only the stored body");
  std::string q_dir;
  CLI::App* q_export = quarantine_cmd->add_subcommand(
      "export", "Write DIR/<name>.envelope, .eml (the body) and .reason per record");
  q_export->add_option("DIR", q_dir, "Target directory (created if missing)")->required();

  CLI11_PARSE(app, argc, argv);

  Result<std::string> spool_path = SpoolPathFromConfig(config_path);
  if (!spool_path.ok())
    return Fail(spool_path.error().message);
  Result<std::unique_ptr<queue::SpoolReader>> reader = queue::SpoolReader::Open(*spool_path);
  if (!reader.ok())
    return Fail(reader.error().message);

  if (q_list->parsed())
    return QuarantineList(**reader);
  if (q_show->parsed())
    return QuarantineShow(**reader, q_name, q_body);
  if (q_export->parsed())
    return QuarantineExport(**reader, q_dir);
  if (list->parsed())
    return List(**reader, json);
  if (show->parsed())
    return Show(**reader, show_id, body_only);
  if (export_cmd->parsed())
    return Export(**reader, export_dir);
  if (summary->parsed())
    return Summary(**reader, top, summary_json);
  if (count->parsed()) {
    bool indexed = false;
    Result<queue::QueueCounts> counts = (*reader)->Counts(&indexed);
    if (!counts.ok())
      return Fail(counts.error().message);
    // A spool not indexed yet has incomplete counters: count by reading.
    Result<uint64_t> n = count_scan || !indexed ? (*reader)->Count() : counts->messages();
    if (!n.ok())
      return Fail(n.error().message);
    std::printf("%llu\n", static_cast<unsigned long long>(*n));
    return 0;
  }
  return Fail("no command");
}

}  // namespace
}  // namespace sluice::admin

// An exception that escapes here (a std::bad_alloc at start-up, say) ends the process with a
// message, which is all main could do with it.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  return sluice::admin::Main(argc, argv);
}
