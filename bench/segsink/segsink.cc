// sluice-segsink: an SMTP sink for benchmarks that writes its replies the way a server chooses
// to, so that a client's handling of each can be measured against smtp-sink (which batches):
//
//   --mode segments  every reply is its own write(2) on a socket with Nagle's algorithm on
//                    (RFC 896): the replies to a pipelined group (RFC 2920) leave one segment
//                    each, the second only once the client has acknowledged the first
//   --mode batch     replies are held until the input read so far is used up, then written
//                    together (smtp-sink, Postfix's smtpd; RFC 2920 §3.2's SHOULD)
//   --mode lockstep  PIPELINING is not advertised; each reply is its own write. A client that
//                    pipelines anyway is counted (printed at exit)
//
// One thread, epoll, any number of sessions; accepts everything, keeps nothing. On stdout
// "mesg=N" after each loop iteration in which messages arrived (N: final dots so far), which
// bench/compare/run reads as it reads smtp-sink -c's counter. SIGTERM or SIGINT ends it.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

namespace {

enum class Mode { kSegments, kBatch, kLockStep };

constexpr size_t kMaxLine = 1 << 20;  // a longer line ends the session
constexpr int kMaxEvents = 64;

struct Session {
  int fd = -1;
  std::string in;
  std::string out;  // unsent replies (batch mode, or a short write)
  bool in_data = false;
  bool quit = false;
};

class SegSink {
 public:
  explicit SegSink(Mode mode) : mode_(mode) {
  }

  int Run(const std::string& address, uint16_t port);

 private:
  void Accept();
  // Reads what is there and answers it; false when the session is over.
  bool Serve(Session& s);
  void Answer(Session& s, std::string_view line);
  void Reply(Session& s, std::string_view text);
  // Writes s.out; false on a broken connection.
  bool Flush(Session& s);
  void Close(int fd);

  Mode mode_;
  int epoll_fd_ = -1;
  int listen_fd_ = -1;
  std::map<int, std::unique_ptr<Session>> sessions_;
  uint64_t messages_ = 0;
  uint64_t pipelined_ = 0;  // lockstep: commands that arrived before the previous reply
};

int SegSink::Run(const std::string& address, uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  if (inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1) {
    std::fprintf(stderr, "segsink: not an IPv4 address: %s\n", address.c_str());
    return 2;
  }
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (listen_fd_ < 0 || bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      listen(listen_fd_, 1024) != 0) {
    std::fprintf(stderr, "segsink: %s:%u: %s\n", address.c_str(), port, std::strerror(errno));
    return 2;
  }
  sigset_t mask{};
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  const int signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  for (const int fd : {listen_fd_, signal_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
  uint64_t printed = 0;
  epoll_event events[kMaxEvents] = {};
  for (;;) {
    const int n = epoll_wait(epoll_fd_, events, kMaxEvents, -1);
    if (n < 0 && errno != EINTR) {
      std::fprintf(stderr, "segsink: epoll_wait: %s\n", std::strerror(errno));
      return 1;
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == signal_fd) {
        std::fprintf(stderr, "segsink: %llu messages, %llu pipelined commands in lockstep\n",
                     static_cast<unsigned long long>(messages_),
                     static_cast<unsigned long long>(pipelined_));
        return 0;
      }
      if (fd == listen_fd_) {
        Accept();
        continue;
      }
      auto it = sessions_.find(fd);
      if (it == sessions_.end())
        continue;
      Session& s = *it->second;
      bool alive = true;
      if (events[i].events & EPOLLOUT)
        alive = Flush(s);
      if (alive && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        alive = Serve(s);
      if (!alive)
        Close(fd);
    }
    if (messages_ != printed) {
      printed = messages_;
      char line[32];
      const int len = std::snprintf(line, sizeof(line), "mesg=%llu\n",
                                    static_cast<unsigned long long>(printed));
      if (write(STDOUT_FILENO, line, static_cast<size_t>(len)) < 0 && errno == EPIPE)
        return 1;
    }
  }
}

void SegSink::Accept() {
  for (int k = 0; k < 1024; ++k) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
      return;
    // Nagle stays on (the default): that is the behaviour being modelled.
    auto s = std::make_unique<Session>();
    s->fd = fd;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    Session& ref = *s;
    sessions_[fd] = std::move(s);
    Reply(ref, "220 segsink.bench ESMTP");
    if (!Flush(ref))
      Close(fd);
  }
}

bool SegSink::Serve(Session& s) {
  char buf[65536];
  const ssize_t got = read(s.fd, buf, sizeof(buf));
  if (got == 0)
    return false;
  if (got < 0)
    return errno == EAGAIN || errno == EINTR;
  s.in.append(buf, static_cast<size_t>(got));
  size_t pos = 0;
  while (!s.quit) {
    const size_t eol = s.in.find("\r\n", pos);
    if (eol == std::string::npos)
      break;
    const std::string_view line(s.in.data() + pos, eol - pos);
    pos = eol + 2;
    if (s.in_data) {
      if (line == ".") {
        s.in_data = false;
        ++messages_;
        Reply(s, "250 2.0.0 Ok: queued");
      }
      continue;
    }
    if (mode_ == Mode::kLockStep && s.in.find("\r\n", pos) != std::string::npos)
      ++pipelined_;  // the next command is here before this one's reply went out
    Answer(s, line);
  }
  s.in.erase(0, pos);
  if (s.in.size() > kMaxLine)
    return false;
  // Batch: all input read so far is answered, the replies go out together.
  if (!Flush(s))
    return false;
  return !s.quit || !s.out.empty();
}

void SegSink::Answer(Session& s, std::string_view line) {
  std::string verb(line.substr(0, line.find(' ')));
  for (char& c : verb)
    c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
  if (verb == "EHLO") {
    Reply(s, mode_ == Mode::kLockStep
                 ? "250-segsink.bench\r\n250-8BITMIME\r\n250 SIZE 0"
                 : "250-segsink.bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0");
  } else if (verb == "HELO" || verb == "MAIL" || verb == "RSET" || verb == "NOOP") {
    Reply(s, "250 2.0.0 Ok");
  } else if (verb == "RCPT") {
    Reply(s, "250 2.1.5 Ok");
  } else if (verb == "DATA") {
    s.in_data = true;
    Reply(s, "354 End data with <CR><LF>.<CR><LF>");
  } else if (verb == "QUIT") {
    s.quit = true;
    Reply(s, "221 2.0.0 Bye");
  } else {
    Reply(s, "502 5.5.2 Error: command not recognized");
  }
}

void SegSink::Reply(Session& s, std::string_view text) {
  s.out.append(text).append("\r\n");
  // Per segment: this reply's own write now, unless earlier ones still wait for room.
  if (mode_ != Mode::kBatch && s.out.size() == text.size() + 2 && !Flush(s))
    s.quit = true;
}

bool SegSink::Flush(Session& s) {
  while (!s.out.empty()) {
    const ssize_t n = send(s.fd, s.out.data(), s.out.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      break;
    if (n <= 0)
      return false;
    s.out.erase(0, static_cast<size_t>(n));
  }
  epoll_event ev{};
  ev.events = EPOLLIN | (s.out.empty() ? 0u : static_cast<uint32_t>(EPOLLOUT));
  ev.data.fd = s.fd;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, s.fd, &ev);
  return true;
}

void SegSink::Close(int fd) {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  close(fd);
  sessions_.erase(fd);
}

}  // namespace

// NOLINTNEXTLINE(bugprone-exception-escape): CLI11 parse errors end the process with a message.
int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:2526";
  std::string mode_name = "segments";
  CLI::App app{"sluice-segsink: SMTP sink that writes each reply on its own (or batches them)"};
  app.add_option("--listen", listen, "IPv4:port to listen on")->capture_default_str();
  app.add_option("--mode", mode_name, "segments, batch or lockstep")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const std::map<std::string, Mode> modes = {
      {"segments", Mode::kSegments}, {"batch", Mode::kBatch}, {"lockstep", Mode::kLockStep}};
  const auto mode = modes.find(mode_name);
  const size_t colon = listen.rfind(':');
  if (mode == modes.end() || colon == std::string::npos) {
    std::fprintf(stderr, "segsink: --mode segments|batch|lockstep, --listen IPv4:port\n");
    return 2;
  }
  const int port = std::atoi(listen.c_str() + colon + 1);
  if (port <= 0 || port > 65535) {
    std::fprintf(stderr, "segsink: bad port in %s\n", listen.c_str());
    return 2;
  }
  SegSink sink(mode->second);
  return sink.Run(listen.substr(0, colon), static_cast<uint16_t>(port));
}
