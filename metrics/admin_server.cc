#include "metrics/admin_server.h"

#include <civetweb.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string_view>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "base/log.h"
#include "metrics/registry.h"

namespace sluice::metrics {

namespace {

constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr char kTextContentType[] = "text/plain; charset=utf-8";

// civetweb's library state is process-wide and mg_init_library is not thread-safe; count users
// so the last Stop() releases it. Features 0: in particular NOT MG_FEATURES_TLS, which would make
// civetweb dlopen libssl.so/libcrypto.so (OpenSSL 3 on Debian 12).
std::mutex g_library_mutex;
int g_library_users = 0;

void AcquireLibrary() {
  std::lock_guard<std::mutex> lock(g_library_mutex);
  if (g_library_users++ == 0) {
    // Returns the features it initialised: 0 here by design, so the value says nothing about
    // success; mg_start2 reports real failures.
    (void)mg_init_library(0);
  }
}

void ReleaseLibrary() {
  std::lock_guard<std::mutex> lock(g_library_mutex);
  if (--g_library_users == 0) {
    mg_exit_library();
  }
}

// While Start() runs mg_start2 on this thread, civetweb's messages (e.g. "cannot bind to
// 127.0.0.1:9100: 98 (Address already in use)") are collected for the returned error instead of
// being logged; mg_error_data only says "Failed to setup server ports".
thread_local std::string* t_start_messages = nullptr;

int LogMessage(const mg_connection* /*conn*/, const char* message) {
  if (t_start_messages != nullptr) {
    if (!t_start_messages->empty()) {
      *t_start_messages += "; ";
    }
    *t_start_messages += message;
  } else {
    spdlog::warn("admin http: {}", message);
  }
  return 1;  // handled: civetweb writes nothing to stderr itself
}

// Connects to the listener and closes at once. civetweb's master thread polls its listeners with
// a 2 s timeout and checks the stop flag only between polls; a connection wakes it, so mg_stop
// returns in milliseconds instead of up to 2 s.
void Poke(const std::string& address, uint16_t port) {
  const bool v6 = address.find(':') != std::string::npos;
  const int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    return;
  }
  if (v6) {
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(port);
    if (inet_pton(AF_INET6, address.c_str(), &sa.sin6_addr) != 1 ||
        IN6_IS_ADDR_UNSPECIFIED(&sa.sin6_addr)) {
      sa.sin6_addr = in6addr_loopback;
    }
    (void)::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  } else {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    if (inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1 ||
        sa.sin_addr.s_addr == htonl(INADDR_ANY)) {
      sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    (void)::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  }
  ::close(fd);
}

// RFC 9110 §5.6.7 IMF-fixdate. We send Date ourselves because civetweb 1.15 formats it with
// gmtime(), which is not thread-safe: two workers replying at once race on libc's static buffer
// (ThreadSanitizer reports it). With a Date header present, civetweb skips its own.
std::string HttpDate() {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const time_t now = time(nullptr);
  tm t{};
  gmtime_r(&now, &t);
  char buf[40];
  snprintf(buf, sizeof(buf), "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[t.tm_wday % 7], t.tm_mday,
           kMonths[t.tm_mon % 12], t.tm_year + 1900, t.tm_hour, t.tm_min, t.tm_sec);
  return buf;
}

int Reply(mg_connection* conn, int status, const char* content_type, std::string_view body,
          bool head) {
  mg_response_header_start(conn, status);
  const std::string date = HttpDate();
  mg_response_header_add(conn, "Date", date.c_str(), -1);
  mg_response_header_add(conn, "Content-Type", content_type, -1);
  const std::string length = std::to_string(body.size());
  mg_response_header_add(conn, "Content-Length", length.c_str(), -1);
  mg_response_header_add(conn, "Cache-Control", "no-store", -1);
  mg_response_header_send(conn);
  if (!head && !body.empty()) {
    mg_write(conn, body.data(), body.size());
  }
  return status;
}

}  // namespace

bool AdminServer::SupportsIpv6() {
  return mg_check_feature(MG_FEATURES_IPV6) != 0;
}

AdminServer::AdminServer(Registry& registry, ReadyFn ready)
    : registry_(registry), ready_(std::move(ready)) {
}

AdminServer::~AdminServer() {
  Stop();
}

Result<void> AdminServer::Start(const std::string& address, uint16_t port) {
  if (ctx_ != nullptr) {
    return MakeError("admin server already started");
  }
  // civetweb's listening_ports syntax: "1.2.3.4:80" or "[::1]:80"; a trailing 'r' or 's' would
  // mean redirect or TLS, so we validate the address ourselves and build the string.
  std::string listen;
  in_addr v4{};
  in6_addr v6{};
  if (inet_pton(AF_INET, address.c_str(), &v4) == 1) {
    listen = address + ":" + std::to_string(port);
  } else if (inet_pton(AF_INET6, address.c_str(), &v6) == 1) {
    if (!SupportsIpv6()) {
      return MakeError("admin server: cannot listen on IPv6 address " + address +
                       ": this civetweb library was built without IPv6 support (Debian 12's "
                       "libcivetweb1 is); use an IPv4 address");
    }
    listen = "[" + address + "]:" + std::to_string(port);
  } else {
    return MakeError("admin server: not an IPv4 or IPv6 address literal: \"" + address + "\"");
  }

  AcquireLibrary();
  const char* options[] = {
      "listening_ports",
      listen.c_str(),
      "num_threads",
      "2",
      "enable_keep_alive",
      "no",
      "request_timeout_ms",
      "10000",
      // No document_root: civetweb serves no files, only what HandleRequest answers.
      nullptr,
  };
  mg_callbacks callbacks{};
  callbacks.begin_request = &AdminServer::HandleRequest;
  callbacks.log_message = &LogMessage;
  mg_init_data init{};
  init.callbacks = &callbacks;
  init.user_data = this;
  init.configuration_options = options;
  char error_text[256] = {};
  unsigned error_code = 0;
  mg_error_data error{};
  error.code = &error_code;
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);
  std::string messages;
  t_start_messages = &messages;
  ctx_ = mg_start2(&init, &error);
  t_start_messages = nullptr;
  if (ctx_ == nullptr) {
    ReleaseLibrary();
    // civetweb's log lines carry the cause (and repeat error_text at the end).
    const std::string detail = !messages.empty()       ? messages
                               : error_text[0] != '\0' ? std::string(error_text)
                                                       : std::string("unknown civetweb error");
    return MakeError("admin server: cannot listen on " + listen + ": " + detail);
  }
  if (!messages.empty()) {
    spdlog::warn("admin http: {}", messages);  // started, but civetweb had something to say
  }
  mg_server_port ports[4] = {};
  const int n = mg_get_server_ports(ctx_, 4, ports);
  if (n < 1 || ports[0].port <= 0 || ports[0].port > 65535) {
    Stop();
    return MakeError("admin server: cannot determine the bound port");
  }
  port_ = static_cast<uint16_t>(ports[0].port);
  address_ = address;
  spdlog::info("admin http listening on {} (port {})", listen, port_);
  return {};
}

void AdminServer::Stop() {
  if (ctx_ == nullptr) {
    return;
  }
  // mg_stop joins the master and worker threads; poke the listener until it has returned.
  std::atomic<bool> stopped{false};
  std::thread stopper([ctx = ctx_, &stopped] {
    mg_stop(ctx);
    stopped.store(true, std::memory_order_release);
  });
  while (!stopped.load(std::memory_order_acquire)) {
    if (port_ != 0) {
      Poke(address_, port_);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stopper.join();
  ctx_ = nullptr;
  port_ = 0;
  ReleaseLibrary();
}

int AdminServer::HandleRequest(mg_connection* conn) {
  auto* self = static_cast<AdminServer*>(mg_get_user_data(mg_get_context(conn)));
  return self->Handle(conn);
}

int AdminServer::Handle(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  const std::string_view method = info->request_method != nullptr ? info->request_method : "";
  const std::string_view uri = info->local_uri != nullptr ? info->local_uri : "";
  const bool head = method == "HEAD";
  const bool known = uri == "/metrics" || uri == "/healthz" || uri == "/readyz";
  if (!known) {
    return Reply(conn, 404, kTextContentType, "not found\n", head);
  }
  if (method != "GET" && !head) {
    return Reply(conn, 405, kTextContentType, "method not allowed\n", false);
  }
  if (uri == "/metrics") {
    return Reply(conn, 200, kMetricsContentType, registry_.Scrape(), head);
  }
  if (uri == "/healthz") {
    return Reply(conn, 200, kTextContentType, "ok", head);
  }
  auto [ready, reason] = ready_ ? ready_() : std::pair<bool, std::string>{true, ""};
  if (ready) {
    return Reply(conn, 200, kTextContentType, "ready", head);
  }
  if (reason.empty()) {
    reason = "not ready";
  }
  return Reply(conn, 503, kTextContentType, reason, head);
}

}  // namespace sluice::metrics
