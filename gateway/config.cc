#include "gateway/config.h"

#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <toml++/toml.h>

#include "base/ascii.h"

namespace sluice::gateway {

namespace {

// Reads one TOML table, remembering which keys were used so that unknown keys
// (typos) are errors rather than silently ignored settings.
class TableReader {
 public:
  TableReader(const toml::table& t, std::string file, std::string prefix)
      : t_(t), file_(std::move(file)), prefix_(std::move(prefix)) {
  }

  std::string Where(const toml::node* n, std::string_view key) const {
    std::ostringstream o;
    o << file_;
    if (n)
      o << ":" << n->source().begin.line;
    o << ": " << prefix_ << key;
    return o.str();
  }

  const toml::node* Get(std::string_view key) {
    used_.insert(std::string(key));
    return t_.get(key);
  }

  bool String(std::string_view key, std::string* out, std::string* err) {
    const toml::node* n = Get(key);
    if (!n)
      return true;
    if (auto v = n->value<std::string>()) {
      *out = *v;
      return true;
    }
    *err = Where(n, key) + ": expected a string";
    return false;
  }

  template <typename T>
  bool Integer(std::string_view key, T* out, int64_t min, int64_t max, std::string* err) {
    const toml::node* n = Get(key);
    if (!n)
      return true;
    auto v = n->value<int64_t>();
    if (!v || !n->is_integer()) {
      *err = Where(n, key) + ": expected an integer";
      return false;
    }
    if (*v < min || *v > max) {
      *err = Where(n, key) + ": " + std::to_string(*v) + " is out of range [" +
             std::to_string(min) + ", " + std::to_string(max) + "]";
      return false;
    }
    *out = static_cast<T>(*v);
    return true;
  }

  bool Secs(std::string_view key, Seconds* out, int64_t min, int64_t max, std::string* err) {
    int64_t v = out->count();
    if (!Integer(key, &v, min, max, err))
      return false;
    *out = Seconds(v);
    return true;
  }

  bool StringList(std::string_view key, std::vector<std::string>* out, std::string* err) {
    const toml::node* n = Get(key);
    if (!n)
      return true;
    const toml::array* a = n->as_array();
    if (!a) {
      *err = Where(n, key) + ": expected an array of strings";
      return false;
    }
    out->clear();
    for (const toml::node& e : *a) {
      auto s = e.value<std::string>();
      if (!s || !e.is_string()) {
        *err = Where(&e, key) + ": expected an array of strings";
        return false;
      }
      out->push_back(*s);
    }
    return true;
  }

  bool CheckUnknown(std::string* err) const {
    for (const auto& [k, v] : t_) {
      if (!used_.count(std::string(k.str()))) {
        *err = Where(&v, k.str()) + ": unknown setting";
        return false;
      }
    }
    return true;
  }

 private:
  const toml::table& t_;
  std::string file_;
  std::string prefix_;
  std::set<std::string> used_;
};

bool ParseListener(const toml::table& t, const std::string& file, size_t index, ListenerConfig* l,
                   std::string* err) {
  TableReader r(t, file, "listener[" + std::to_string(index) + "].");
  if (!r.String("name", &l->name, err))
    return false;
  if (l->name.empty())
    l->name = "listener" + std::to_string(index);
  if (!r.String("address", &l->address, err))
    return false;
  if (!io::SocketAddress::Parse(l->address, 1).ok()) {
    *err = r.Where(t.get("address"), "address") + ": '" + l->address + "' is not an IP address";
    return false;
  }
  if (!t.get("port")) {
    *err = r.Where(&t, "port") + ": required";
    return false;
  }
  if (!r.Integer("port", &l->port, 1, 65535, err))
    return false;

  std::vector<std::string> nets;
  if (!r.StringList("mynetworks", &nets, err))
    return false;
  for (const std::string& s : nets) {
    auto c = io::Cidr::Parse(s);
    if (!c) {
      *err = r.Where(t.get("mynetworks"), "mynetworks") + ": '" + s + "' is not a CIDR block";
      return false;
    }
    l->mynetworks.push_back(*c);
  }
  std::vector<std::string> domains;
  if (!r.StringList("relay_domains", &domains, err))
    return false;
  for (std::string& d : domains)
    l->relay_domains.push_back(AsciiToLower(d));

  if (!r.Integer("max_message_size", &l->max_message_size, 1024, int64_t{1} << 40, err)) {
    return false;
  }
  if (!r.Integer("max_recipients", &l->max_recipients, 1, 100000, err))
    return false;
  if (!r.Integer("max_line_length", &l->max_line_length, 512, 1 << 20, err))
    return false;
  if (!r.Integer("max_data_line_length", &l->max_data_line_length, 1000, 1 << 30, err)) {
    return false;
  }
  if (!r.Integer("max_connections", &l->max_connections, 1, 1000000, err))
    return false;
  if (!r.Integer("max_connections_per_ip", &l->max_connections_per_ip, 1, 1000000, err)) {
    return false;
  }
  if (!r.Integer("soft_error_limit", &l->soft_error_limit, 1, 100000, err))
    return false;
  if (!r.Integer("hard_error_limit", &l->hard_error_limit, 1, 100000, err))
    return false;
  if (!r.Secs("error_sleep", &l->error_sleep, 0, 60, err))
    return false;
  if (l->soft_error_limit > l->hard_error_limit) {
    *err = r.Where(t.get("soft_error_limit"), "soft_error_limit") +
           ": must not be above hard_error_limit (" + std::to_string(l->hard_error_limit) + ")";
    return false;
  }
  if (!r.Integer("max_junk_commands", &l->max_junk_commands, 1, 100000, err))
    return false;
  if (!r.Integer("max_received_headers", &l->max_received_headers, 1, 10000, err))
    return false;
  if (!r.Secs("command_timeout", &l->command_timeout, 1, 86400, err))
    return false;
  if (!r.Secs("data_timeout", &l->data_timeout, 1, 86400, err))
    return false;

  std::string bare = "reject";
  if (!r.String("bare_newline", &bare, err))
    return false;
  if (bare == "reject") {
    l->bare_newline = smtp::BareNewline::kReject;
  } else if (bare == "normalize") {
    l->bare_newline = smtp::BareNewline::kNormalize;
  } else {
    *err = r.Where(t.get("bare_newline"), "bare_newline") + ": must be \"reject\" or \"normalize\"";
    return false;
  }

  std::string tls = "none";
  if (!r.String("tls", &tls, err))
    return false;
  if (tls == "none") {
    l->tls = ListenerConfig::Tls::kNone;
  } else if (tls == "starttls") {
    l->tls = ListenerConfig::Tls::kStartTls;
  } else if (tls == "implicit") {
    l->tls = ListenerConfig::Tls::kImplicit;
  } else {
    *err = r.Where(t.get("tls"), "tls") + ": must be \"none\", \"starttls\" or \"implicit\"";
    return false;
  }
  std::string min_version = "1.2";
  if (!r.String("certificate", &l->certificate, err) ||
      !r.String("private_key", &l->private_key, err) ||
      !r.String("rsa_certificate", &l->rsa_certificate, err) ||
      !r.String("rsa_private_key", &l->rsa_private_key, err) ||
      !r.String("tls_min_version", &min_version, err) ||
      !r.Secs("handshake_timeout", &l->handshake_timeout, 1, 3600, err)) {
    return false;
  }
  if (min_version != "1.2" && min_version != "1.3") {
    *err = r.Where(t.get("tls_min_version"), "tls_min_version") +
           ": must be \"1.2\" or \"1.3\" (never lower)";
    return false;
  }
  l->tls13_only = min_version == "1.3";
  if (l->tls != ListenerConfig::Tls::kNone && (l->certificate.empty() || l->private_key.empty())) {
    *err = r.Where(&t, "certificate") + ": tls = \"" + tls + "\" needs certificate and private_key";
    return false;
  }
  if (const toml::node* n = r.Get("sni")) {
    const toml::array* a = n->as_array();
    if (!a || !a->is_array_of_tables()) {
      *err = r.Where(n, "sni") + ": use [[listener.sni]] tables";
      return false;
    }
    size_t k = 0;
    for (const toml::node& e : *a) {
      ListenerConfig::SniCertificate c;
      TableReader er(*e.as_table(), file,
                     "listener[" + std::to_string(index) + "].sni[" + std::to_string(k++) + "].");
      if (!er.String("name", &c.name, err) || !er.String("certificate", &c.certificate, err) ||
          !er.String("private_key", &c.private_key, err) ||
          !er.String("rsa_certificate", &c.rsa_certificate, err) ||
          !er.String("rsa_private_key", &c.rsa_private_key, err) || !er.CheckUnknown(err)) {
        return false;
      }
      if (c.name.empty() || c.certificate.empty() || c.private_key.empty()) {
        *err = er.Where(&e, "name") + ": name, certificate and private_key are required";
        return false;
      }
      l->sni.push_back(std::move(c));
    }
  }
  if (l->rsa_certificate.empty() != l->rsa_private_key.empty()) {
    *err = r.Where(&t, "rsa_certificate") + ": rsa_certificate and rsa_private_key go together";
    return false;
  }
  std::string auth = "off";
  if (!r.String("auth", &auth, err))
    return false;
  if (auth == "off") {
    l->auth = ListenerConfig::Auth::kOff;
  } else if (auth == "optional") {
    l->auth = ListenerConfig::Auth::kOptional;
  } else if (auth == "required") {
    l->auth = ListenerConfig::Auth::kRequired;
  } else {
    *err = r.Where(t.get("auth"), "auth") + ": must be \"off\", \"optional\" or \"required\"";
    return false;
  }
  auto boolean = [&](const char* key, bool* out) {
    const toml::node* n = r.Get(key);
    if (!n)
      return true;
    auto v = n->value<bool>();
    if (!v || !n->is_boolean()) {
      *err = r.Where(n, key) + ": expected true or false";
      return false;
    }
    *out = *v;
    return true;
  };
  if (!r.String("users_file", &l->users_file, err) ||
      !boolean("allow_plaintext_auth", &l->allow_plaintext_auth) ||
      !boolean("auth_header", &l->auth_header) ||
      !boolean("submission_fixups", &l->submission_fixups) ||
      !boolean("allow_untrusted_routing", &l->allow_untrusted_routing)) {
    return false;
  }
  if (l->auth != ListenerConfig::Auth::kOff && l->users_file.empty()) {
    *err = r.Where(&t, "users_file") + ": auth = \"" + auth + "\" needs users_file";
    return false;
  }
  if (l->auth != ListenerConfig::Auth::kOff && l->tls == ListenerConfig::Tls::kNone &&
      !l->allow_plaintext_auth) {
    *err = r.Where(&t, "auth") +
           ": AUTH is only offered over TLS; set tls, or allow_plaintext_auth = true";
    return false;
  }
  return r.CheckUnknown(err);
}

bool ParseDelivery(const toml::table& t, const std::string& file, delivery::DeliveryConfig* d,
                   std::string* err) {
  TableReader r(t, file, "delivery.");
  if (const toml::node* n = r.Get("enabled")) {
    auto v = n->value<bool>();
    if (!v || !n->is_boolean()) {
      *err = r.Where(n, "enabled") + ": expected true or false";
      return false;
    }
    d->enabled = *v;
  }
  return r.String("helo_name", &d->helo_name, err) &&
         r.Secs("retry_initial", &d->retry_initial, 1, 86400, err) &&
         r.Secs("retry_max", &d->retry_max, 1, 7 * 86400, err) &&
         r.Secs("max_age", &d->max_age, 1, 60 * 86400, err) &&
         r.Secs("bounce_max_age", &d->bounce_max_age, 1, 60 * 86400, err) &&
         r.Secs("destination_backoff", &d->destination_backoff, 0, 86400, err) &&
         r.Secs("connect_timeout", &d->connect_timeout, 1, 3600, err) &&
         r.Secs("tls_timeout", &d->tls_timeout, 1, 3600, err) &&
         r.Secs("idle_timeout", &d->idle_timeout, 0, 3600, err) &&
         r.Secs("command_timeout", &d->command_timeout, 1, 3600, err) &&
         r.Secs("data_timeout", &d->data_timeout, 1, 7200, err) &&
         r.Integer("mx_address_limit", &d->mx_address_limit, 1, 100, err) &&
         r.Integer("mx_session_limit", &d->mx_session_limit, 1, 100, err) &&
         r.Secs("destination_idle_expiry", &d->destination_idle_expiry, 1, 86400, err) &&
         r.Integer("workers", &d->workers, 1, 256, err) &&
         r.Integer("body_cache_bytes", &d->body_cache_bytes, 0, int64_t{1} << 40, err) &&
         r.Integer("max_active_messages", &d->max_active_messages, 1, 10'000'000, err) &&
         r.StringList("dns_servers", &d->dns_servers, err) && r.CheckUnknown(err);
}

bool ParseRoute(const toml::table& t, const std::string& file, size_t index,
                delivery::RouteConfig* route, std::string* err) {
  TableReader r(t, file, "route[" + std::to_string(index) + "].");
  if (!r.String("name", &route->name, err))
    return false;
  if (route->name.empty())
    route->name = "route" + std::to_string(index);
  if (!r.StringList("domains", &route->domains, err))
    return false;
  if (route->domains.empty()) {
    *err = r.Where(t.get("domains") ? t.get("domains") : &t, "domains") +
           ": required (e.g. [\"example.com\", \"*.example.org\", \"*\"])";
    return false;
  }
  std::string type;
  if (!r.String("type", &type, err))
    return false;
  std::optional<delivery::RouteType> parsed;
  for (const delivery::RouteType candidate :
       {delivery::RouteType::kMx, delivery::RouteType::kSmarthost, delivery::RouteType::kLmtp,
        delivery::RouteType::kMaildir}) {
    if (type == delivery::ToString(candidate)) {
      parsed = candidate;
    }
  }
  if (!parsed) {
    *err = r.Where(t.get("type") ? t.get("type") : &t, "type") +
           ": must be \"mx\", \"smarthost\", \"lmtp\" or \"maildir\"";
    return false;
  }
  route->type = *parsed;
  if (route->type == delivery::RouteType::kLmtp) {
    route->port = 24;
  }
  std::string tls = "opportunistic";
  if (!r.String("tls", &tls, err) || !r.String("tls_server_name", &route->tls_server_name, err) ||
      !r.String("auth_user", &route->auth_user, err) ||
      !r.String("auth_password", &route->auth_password, err)) {
    return false;
  }
  if (tls == "opportunistic") {
    route->tls = delivery::ClientOptions::TlsPolicy::kOpportunistic;
  } else if (tls == "required") {
    route->tls = delivery::ClientOptions::TlsPolicy::kRequired;
  } else if (tls == "disabled") {
    route->tls = delivery::ClientOptions::TlsPolicy::kDisabled;
  } else {
    *err =
        r.Where(t.get("tls"), "tls") + ": must be \"opportunistic\", \"required\" or \"disabled\"";
    return false;
  }
  if (route->auth_user.empty() != route->auth_password.empty()) {
    *err = r.Where(&t, "auth_user") + ": auth_user and auth_password go together";
    return false;
  }
  if (!route->auth_user.empty() && route->tls == delivery::ClientOptions::TlsPolicy::kDisabled) {
    *err = r.Where(&t, "auth_user") +
           ": credentials are only sent over TLS; tls must not be "
           "\"disabled\"";
    return false;
  }
  std::string rate;
  if (!r.String("host", &route->host, err) || !r.Integer("port", &route->port, 1, 65535, err) ||
      !r.String("path", &route->path, err) ||
      !r.Integer("max_connections", &route->max_connections, 1, 10000, err) ||
      !r.Integer("max_messages_per_connection", &route->max_messages_per_connection, 1, 1000000,
                 err) ||
      !r.String("max_message_rate", &rate, err)) {
    return false;
  }
  if (!rate.empty()) {
    auto v = delivery::ParseRate(rate);
    if (!v) {
      *err = r.Where(t.get("max_message_rate"), "max_message_rate") + ": '" + rate +
             "' is not a rate like \"100/s\", \"500/min\" or \"3600/h\"";
      return false;
    }
    route->max_message_rate = *v;
  }
  const bool needs_host =
      route->type == delivery::RouteType::kSmarthost || route->type == delivery::RouteType::kLmtp;
  if (needs_host && route->host.empty()) {
    *err = r.Where(&t, "host") + ": required for type \"" + type + "\"";
    return false;
  }
  if (route->type == delivery::RouteType::kMaildir && route->path.empty()) {
    *err = r.Where(&t, "path") + ": required for type \"maildir\"";
    return false;
  }
  return r.CheckUnknown(err);
}

}  // namespace

unsigned AutoShards() {
  // The CPUs this process may run on (taskset, a cgroup cpuset), not all of the machine's.
  unsigned cpus = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    cpus = static_cast<unsigned>(CPU_COUNT(&set));
  if (cpus == 0)
    cpus = std::thread::hardware_concurrency();
  // One core is left to the threads that are not shards (the spool writer, RocksDB's flushes and
  // compactions, the worker pool) and to the kernel's network and disk work; a shard on every core
  // makes them preempt shards. On 2 cores, 1 shard took 15-25% less CPU per message than 2 and
  // relayed 10-25% more (docs/architecture.md, "Shard count").
  return cpus > 1 ? cpus - 1 : 1;
}

Result<Config> ParseConfig(std::string_view text, const std::string& name) {
  toml::table root;
  try {
    root = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    std::ostringstream o;
    o << name << ":" << e.source().begin.line << ": " << e.description();
    return MakeError(o.str(), EINVAL);
  }
  Config c;
  c.source = name;
  std::string err;

  TableReader top(root, name, "");
  for (const char* section : {"server", "spool", "listener", "delivery", "route", "admin"}) {
    top.Get(section);
  }
  if (!top.CheckUnknown(&err))
    return MakeError(err, EINVAL);

  if (const toml::node* n = root.get("server")) {
    const toml::table* t = n->as_table();
    if (!t)
      return MakeError(top.Where(n, "server") + ": expected a table", EINVAL);
    TableReader r(*t, name, "server.");
    if (!r.String("hostname", &c.hostname, &err) || !r.Integer("shards", &c.shards, 0, 256, &err) ||
        !r.Integer("node_id", &c.node_id, 0, 65535, &err) ||
        !r.String("log_level", &c.log_level, &err) || !r.String("event_log", &c.event_log, &err) ||
        !r.Integer("max_connections", &c.max_connections, 1, 10000000, &err) ||
        !r.Integer("client_ipv4_prefix", &c.client_ipv4_prefix, 8, 32, &err) ||
        !r.Integer("client_ipv6_prefix", &c.client_ipv6_prefix, 16, 128, &err) ||
        !r.Integer("max_body_memory", &c.max_body_memory, 1 << 20, int64_t{1} << 40, &err) ||
        !r.Integer("max_body_memory_per_client", &c.max_body_memory_per_client, 1 << 20,
                   int64_t{1} << 40, &err) ||
        !r.Secs("shutdown_grace", &c.shutdown_grace, 0, 3600, &err) || !r.CheckUnknown(&err)) {
      return MakeError(err, EINVAL);
    }
    if (c.max_body_memory_per_client > c.max_body_memory) {
      return MakeError(r.Where(t->get("max_body_memory_per_client"), "max_body_memory_per_client") +
                           ": must not be above max_body_memory (" +
                           std::to_string(c.max_body_memory) + ")",
                       EINVAL);
    }
    static const std::set<std::string> kLevels = {"trace", "debug",    "info", "warn",
                                                  "error", "critical", "off"};
    if (!kLevels.count(c.log_level)) {
      return MakeError(r.Where(t->get("log_level"), "log_level") +
                           ": must be one of trace, debug, info, warn, error, critical, off",
                       EINVAL);
    }
  }
  if (const toml::node* n = root.get("spool")) {
    const toml::table* t = n->as_table();
    if (!t)
      return MakeError(top.Where(n, "spool") + ": expected a table", EINVAL);
    TableReader r(*t, name, "spool.");
    if (!r.String("path", &c.spool.path, &err) ||
        !r.Integer("max_pending_messages", &c.spool.max_pending_messages, 1, 10000000, &err) ||
        !r.Integer("max_pending_bytes", &c.spool.max_pending_bytes, 1 << 20, int64_t{1} << 40,
                   &err) ||
        !r.Secs("stall_deadline", &c.spool.stall_deadline, 1, 3600, &err) ||
        !r.Secs("admission_timeout", &c.spool.admission_timeout, 1, 3600, &err) ||
        !r.Integer("min_free_bytes", &c.spool.min_free_bytes, 0, int64_t{1} << 50, &err) ||
        !r.CheckUnknown(&err)) {
      return MakeError(err, EINVAL);
    }
    if (c.spool.path.empty()) {
      return MakeError(r.Where(t->get("path"), "path") + ": must not be empty", EINVAL);
    }
  }
  if (const toml::node* n = root.get("listener")) {
    const toml::array* a = n->as_array();
    if (!a || !a->is_array_of_tables()) {
      return MakeError(top.Where(n, "listener") + ": use [[listener]] tables", EINVAL);
    }
    size_t i = 0;
    for (const toml::node& e : *a) {
      ListenerConfig l;
      if (!ParseListener(*e.as_table(), name, i, &l, &err))
        return MakeError(err, EINVAL);
      c.listeners.push_back(std::move(l));
      ++i;
    }
  }
  if (const toml::node* n = root.get("admin")) {
    const toml::table* t = n->as_table();
    if (!t)
      return MakeError(top.Where(n, "admin") + ": expected a table", EINVAL);
    TableReader r(*t, name, "admin.");
    c.admin.enabled = true;
    if (!r.String("address", &c.admin.address, &err) ||
        !r.Integer("port", &c.admin.port, 0, 65535, &err) ||
        !r.Integer("max_destination_series", &c.admin.max_destination_series, 1, 100000, &err) ||
        !r.CheckUnknown(&err)) {
      return MakeError(err, EINVAL);
    }
    if (!io::SocketAddress::Parse(c.admin.address, 1).ok()) {
      return MakeError(r.Where(t->get("address"), "address") + ": '" + c.admin.address +
                           "' is not an IP address",
                       EINVAL);
    }
  }
  if (const toml::node* n = root.get("delivery")) {
    const toml::table* t = n->as_table();
    if (!t)
      return MakeError(top.Where(n, "delivery") + ": expected a table", EINVAL);
    if (!ParseDelivery(*t, name, &c.delivery, &err))
      return MakeError(err, EINVAL);
  }
  if (const toml::node* n = root.get("route")) {
    const toml::array* a = n->as_array();
    if (!a || !a->is_array_of_tables()) {
      return MakeError(top.Where(n, "route") + ": use [[route]] tables", EINVAL);
    }
    size_t i = 0;
    for (const toml::node& e : *a) {
      delivery::RouteConfig route;
      if (!ParseRoute(*e.as_table(), name, i, &route, &err))
        return MakeError(err, EINVAL);
      c.delivery.routes.push_back(std::move(route));
      ++i;
    }
  }
  if (c.listeners.empty()) {
    return MakeError(name + ": no [[listener]] configured", EINVAL);
  }
  std::set<std::pair<std::string, uint16_t>> seen;
  std::set<std::string> names;
  for (const auto& l : c.listeners) {
    // A message is held whole while it arrives (plus our Received header): a client must be
    // allowed to hold at least one message of the largest size it may send.
    if (static_cast<int64_t>(l.max_message_size) + kBodyMemorySlack >
        c.max_body_memory_per_client) {
      return MakeError(name + ": listener '" + l.name + "': max_message_size (" +
                           std::to_string(l.max_message_size) +
                           ") needs server.max_body_memory_per_client of at least " +
                           std::to_string(l.max_message_size + kBodyMemorySlack),
                       EINVAL);
    }
    if (!seen.insert({l.address, l.port}).second) {
      return MakeError(name + ": two listeners on " + l.address + ":" + std::to_string(l.port),
                       EINVAL);
    }
    if (!names.insert(l.name).second) {
      return MakeError(name + ": two listeners named '" + l.name + "'", EINVAL);
    }
  }
  if (c.hostname.empty()) {
    char buf[256] = {};
    if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') {
      std::snprintf(buf, sizeof(buf), "localhost");
    }
    c.hostname = buf;
  }
  if (c.shards == 0)
    c.shards = AutoShards();
  return c;
}

Result<Config> LoadConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return MakeError(path + ": cannot open: " + std::strerror(errno), errno);
  std::ostringstream text;
  text << in.rdbuf();
  return ParseConfig(text.str(), path);
}

}  // namespace sluice::gateway
