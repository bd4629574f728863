// SmtpClient on a real io_uring shard against a scripted SMTP server: a
// plain blocking socket on a thread that follows a script and records every
// command line and message body it receives.

#include "delivery/client/smtp_client.h"

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include "delivery/client/dot_stuffer.h"
#include "io/connection.h"
#include "io/net.h"
#include "io/shard.h"
#include "io/task.h"

namespace sluice::delivery {
namespace {

using smtp::Reply;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Every blocking call of the fake server gives up after this long, so a
// broken client fails the test instead of hanging it.
constexpr int kServerTimeoutSeconds = 5;

class FakeSmtpServer {
 public:
  struct Step {
    enum class Kind {
      kSend,            // write text
      kExpect,          // read one line; it must start with text
      kNothingPending,  // no byte has arrived beyond the lines read (lock-step check)
      kReadBody,        // read DATA content through "<CRLF>.<CRLF>"
      kReadBytes,       // read at least count bytes and drop them
      kClose,           // close the connection now
    };
    Kind kind;
    std::string text;
    size_t count = 0;
  };
  static Step Send(std::string text) {
    return {Step::Kind::kSend, std::move(text)};
  }
  static Step Expect(std::string prefix) {
    return {Step::Kind::kExpect, std::move(prefix)};
  }
  static Step NothingPending() {
    return {Step::Kind::kNothingPending, ""};
  }
  static Step ReadBody() {
    return {Step::Kind::kReadBody, ""};
  }
  static Step ReadBytes(size_t n) {
    return {Step::Kind::kReadBytes, "", n};
  }
  static Step Close() {
    return {Step::Kind::kClose, ""};
  }

  // Listens on 127.0.0.1, port 0, and serves one connection with the
  // script. After the script it records further lines until the client
  // closes, answering QUIT with 221.
  explicit FakeSmtpServer(std::vector<Step> script) : script_(std::move(script)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sin);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0 ||
        ::listen(listen_fd_, 4) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sin), &len) != 0) {
      errors_.push_back("cannot listen");
      return;
    }
    port_ = ntohs(sin.sin_port);
    thread_ = std::thread([this] { Run(); });
  }
  ~FakeSmtpServer() {
    Join();
    if (listen_fd_ >= 0) {
      ::close(listen_fd_);
    }
  }
  FakeSmtpServer(const FakeSmtpServer&) = delete;
  FakeSmtpServer& operator=(const FakeSmtpServer&) = delete;

  uint16_t port() const {
    return port_;
  }
  void Join() {
    if (thread_.joinable()) {
      thread_.join();
    }
  }
  // Valid after Join().
  const std::vector<std::string>& commands() const {
    return commands_;
  }
  const std::vector<std::string>& bodies() const {
    return bodies_;
  }
  const std::vector<std::string>& errors() const {
    return errors_;
  }

 private:
  void Run() {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, kServerTimeoutSeconds * 1000) != 1) {
      errors_.push_back("no connection");
      return;
    }
    fd_ = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd_ < 0) {
      errors_.push_back("accept failed");
      return;
    }
    timeval tv{kServerTimeoutSeconds, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    bool closed = false;
    for (const Step& step : script_) {
      if (!RunStep(step)) {
        closed = step.kind == Step::Kind::kClose;
        break;
      }
    }
    if (!closed) {
      std::string line;
      while (ReadLine(&line)) {
        commands_.push_back(line);
        if (line == "QUIT") {
          WriteAll("221 2.0.0 Bye\r\n");
        }
      }
    }
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = -1;
  }

  // false ends the script (an error was recorded, or kClose).
  bool RunStep(const Step& step) {
    switch (step.kind) {
      case Step::Kind::kSend:
        if (!WriteAll(step.text)) {
          errors_.push_back("send failed: " + step.text);
          return false;
        }
        return true;
      case Step::Kind::kExpect: {
        std::string line;
        if (!ReadLine(&line)) {
          errors_.push_back("connection ended, expected " + step.text);
          return false;
        }
        commands_.push_back(line);
        if (line.rfind(step.text, 0) != 0) {
          errors_.push_back("expected " + step.text + ", got " + line);
          return false;
        }
        return true;
      }
      case Step::Kind::kNothingPending: {
        char c;
        const ssize_t n = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (!buf_.empty() || n > 0) {
          errors_.push_back("client sent ahead of the reply: " + buf_);
          return false;
        }
        return true;
      }
      case Step::Kind::kReadBody: {
        size_t searched = 0;
        while (true) {
          size_t end = std::string::npos;
          if (buf_.rfind(".\r\n", 0) == 0) {
            end = 3;
          } else {
            const size_t at = buf_.find("\r\n.\r\n", searched);
            if (at != std::string::npos) {
              end = at + 5;
            }
          }
          if (end != std::string::npos) {
            bodies_.push_back(buf_.substr(0, end));
            buf_.erase(0, end);
            return true;
          }
          searched = buf_.size() >= 4 ? buf_.size() - 4 : 0;
          if (!Fill()) {
            errors_.push_back("connection ended inside the body");
            return false;
          }
        }
      }
      case Step::Kind::kReadBytes:
        while (buf_.size() < step.count) {
          if (!Fill()) {
            errors_.push_back("connection ended before enough bytes");
            return false;
          }
        }
        buf_.clear();
        return true;
      case Step::Kind::kClose:
        ::close(fd_);
        fd_ = -1;
        return false;
    }
    return false;
  }

  bool Fill() {
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n <= 0) {
      return false;
    }
    buf_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  bool ReadLine(std::string* line) {
    size_t nl;
    while ((nl = buf_.find("\r\n")) == std::string::npos) {
      if (!Fill()) {
        return false;
      }
    }
    line->assign(buf_, 0, nl);
    buf_.erase(0, nl + 2);
    return true;
  }

  bool WriteAll(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) {
        return false;
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  const std::vector<Step> script_;
  int listen_fd_ = -1;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::string buf_;
  std::thread thread_;
  std::vector<std::string> commands_;
  std::vector<std::string> bodies_;
  std::vector<std::string> errors_;
};

using S = FakeSmtpServer;

// One client session: inputs, then what happened. Written on the shard
// thread; read by the test after `done`.
struct ClientRun {
  ClientOptions options;
  std::vector<OutboundMessage> messages;
  bool chain = false;  // Send(messages[i], &messages[i + 1]): the next envelope behind the dot
  size_t stop_after = SIZE_MAX;  // Quit after this many Sends

  Reply handshake;
  Capabilities caps;
  bool usable_after_handshake = false;
  std::vector<TransactionResult> results;
  std::vector<std::chrono::steady_clock::time_point> sent_at;  // when each Send returned
  std::string error;
  std::promise<void> done;
};

io::Detached DriveClient(io::Shard* shard, uint16_t port, ClientRun* run) {
  Result<io::SocketAddress> addr = io::SocketAddress::Parse("127.0.0.1", port);
  Result<int> fd = co_await io::ConnectTcp(*shard, *addr, seconds(5));
  if (!fd.ok()) {
    run->error = fd.error().message;
    run->done.set_value();
    co_return;
  }
  auto conn = std::make_unique<io::Connection>(*shard, *fd);
  conn->Start();
  {
    SmtpClient client(*conn, run->options);
    Reply hello = co_await client.Handshake();
    run->handshake = std::move(hello);
    run->caps = client.capabilities();
    run->usable_after_handshake = client.usable();
    for (size_t i = 0; i < run->messages.size() && i < run->stop_after; ++i) {
      if (!client.usable()) {
        break;
      }
      const OutboundMessage* next =
          run->chain && i + 1 < run->messages.size() ? &run->messages[i + 1] : nullptr;
      TransactionResult r = co_await client.Send(run->messages[i], next);
      run->results.push_back(std::move(r));
      run->sent_at.push_back(std::chrono::steady_clock::now());
    }
    co_await client.Quit();
  }
  co_await conn->Close();
  run->done.set_value();
}

ClientOptions TestOptions() {
  ClientOptions o;
  o.helo_name = "client.test";
  // Short enough that a client bug fails the test quickly, long enough for
  // a loaded CI machine.
  o.greeting_timeout = o.helo_timeout = o.mail_timeout = o.rcpt_timeout = seconds(5);
  o.data_init_timeout = o.data_block_timeout = o.data_done_timeout = seconds(5);
  o.quit_timeout = seconds(2);
  return o;
}

OutboundMessage Message(std::vector<std::string> recipients,
                        std::string body = "Subject: test\r\n\r\nhello\r\n") {
  OutboundMessage m;
  m.sender = "s@a.test";
  for (std::string& r : recipients) {
    m.recipients.push_back({std::move(r), 0, ""});
  }
  m.body = std::make_shared<const std::string>(std::move(body));
  return m;
}

std::string Stuffed(std::string_view body) {
  std::string out;
  AppendDotStuffed(&out, body);
  return out;
}

const char* const kGreeting = "220 mx.test ESMTP\r\n";
const char* const kEhloPipelining =
    "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n250-8BITMIME\r\n"
    "250 ENHANCEDSTATUSCODES\r\n";
const char* const kEhloLockStep = "250-mx.test\r\n250-SIZE\r\n250 ENHANCEDSTATUSCODES\r\n";

class SmtpClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::future<std::string> ready_future = ready_.get_future();
    thread_ = std::thread([this] {
      shard_ = std::make_unique<io::Shard>(
          0, io::ShardOptions{.sq_entries = 256, .cq_entries = 4096, .recv_buffers = 64});
      Result<void> r = shard_->Init();
      ready_.set_value(r.ok() ? "" : r.error().message);
      if (r.ok()) {
        shard_->Run();
      }
    });
    ASSERT_EQ(ready_future.wait_for(seconds(10)), std::future_status::ready);
    ASSERT_EQ(ready_future.get(), "");
    running_ = true;
  }

  void TearDown() override {
    if (!thread_.joinable()) {
      return;
    }
    io::Shard* shard = shard_.get();
    if (running_) {
      shard->Post([shard] { shard->Quit(); });
    }
    thread_.join();
  }

  // Runs the client session on the shard and waits for it (bounded).
  void RunClient(ClientRun* run, uint16_t port) {
    std::future<void> done = run->done.get_future();
    io::Shard* shard = shard_.get();
    shard->Post([shard, port, run] { DriveClient(shard, port, run); });
    ASSERT_EQ(done.wait_for(seconds(20)), std::future_status::ready) << "client hung";
    ASSERT_EQ(run->error, "");
  }

  std::promise<std::string> ready_;  // the shard thread's Init() result
  std::unique_ptr<io::Shard> shard_;
  bool running_ = false;  // Init() succeeded: the loop runs until Quit()
  std::thread thread_;
};

TEST_F(SmtpClientTest, PipelinedTransactionWithMixedRecipientResults) {
  // The server reads the whole group before it answers anything: a client
  // waiting for the MAIL reply would time out here.
  S server({S::Send(kGreeting), S::Expect("EHLO"), S::Send(kEhloPipelining), S::Expect("MAIL"),
            S::Expect("RCPT"), S::Expect("RCPT"), S::Expect("RCPT"), S::Expect("DATA"),
            S::Send("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 No such user\r\n"
                    "450-4.2.1 Mailbox busy\r\n450 4.2.1 try later\r\n354 End data\r\n"),
            S::ReadBody(), S::Send("250 2.0.0 Ok: queued as 1A2B\r\n")});
  ClientRun run;
  run.options = TestOptions();
  OutboundMessage m = Message({"r1@b.test", "r2@b.test", "r3@b.test"});
  m.body_type = smtp::BodyType::k8BitMime;
  const std::string body = *m.body;
  run.messages.push_back(m);
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});

  EXPECT_EQ(run.handshake.code, 250);
  EXPECT_TRUE(run.caps.pipelining);
  EXPECT_EQ(run.caps.size, 10000000u);
  ASSERT_EQ(run.results.size(), 1u);
  const TransactionResult& r = run.results[0];
  EXPECT_TRUE(r.connection_usable);
  ASSERT_EQ(r.recipients.size(), 3u);
  EXPECT_EQ(r.recipients[0], (Reply{250, "2.0.0", "Ok: queued as 1A2B"}));
  EXPECT_EQ(r.recipients[1], (Reply{550, "5.1.1", "No such user"}));
  EXPECT_EQ(r.recipients[2], (Reply{450, "4.2.1", "Mailbox busy\ntry later"}));
  EXPECT_EQ(
      server.commands(),
      (std::vector<std::string>{
          "EHLO client.test",
          "MAIL FROM:<s@a.test> SIZE=" + std::to_string(body.size()) + " BODY=8BITMIME",
          "RCPT TO:<r1@b.test>", "RCPT TO:<r2@b.test>", "RCPT TO:<r3@b.test>", "DATA", "QUIT"}));
  ASSERT_EQ(server.bodies().size(), 1u);
  EXPECT_EQ(server.bodies()[0], body + ".\r\n");
}

TEST_F(SmtpClientTest, LockStepWithoutPipelining) {
  // After each command nothing more may have arrived before the reply.
  S server({S::Send(kGreeting), S::Expect("EHLO"), S::Send(kEhloLockStep),
            S::Expect("MAIL FROM:<s@a.test> SIZE="), S::NothingPending(), S::Send("250 Ok\r\n"),
            S::Expect("RCPT TO:<r1@b.test>"), S::NothingPending(), S::Send("550 5.1.1 No\r\n"),
            S::Expect("RCPT TO:<r2@b.test>"), S::NothingPending(), S::Send("250 Ok\r\n"),
            S::Expect("DATA"), S::NothingPending(), S::Send("354 go\r\n"), S::ReadBody(),
            S::Send("250 2.0.0 queued\r\n")});
  ClientRun run;
  run.options = TestOptions();
  run.messages.push_back(Message({"r1@b.test", "r2@b.test"}));
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  EXPECT_FALSE(run.caps.pipelining);
  EXPECT_TRUE(run.caps.size_offered);
  EXPECT_FALSE(run.caps.size.has_value());
  ASSERT_EQ(run.results.size(), 1u);
  EXPECT_TRUE(run.results[0].connection_usable);
  EXPECT_EQ(run.results[0].recipients,
            (std::vector<Reply>{{550, "5.1.1", "No"}, {250, "2.0.0", "queued"}}));
  EXPECT_EQ(server.commands().back(), "QUIT");
}

TEST_F(SmtpClientTest, LockStepSendsNoDataWhenEveryRecipientFails) {
  S server({S::Send(kGreeting), S::Expect("EHLO"), S::Send(kEhloLockStep), S::Expect("MAIL"),
            S::Send("250 Ok\r\n"), S::Expect("RCPT"), S::Send("550 5.1.1 No\r\n"),
            S::Expect("RCPT"), S::Send("452 4.5.3 Too many\r\n")});
  ClientRun run;
  run.options = TestOptions();
  run.messages.push_back(Message({"r1@b.test", "r2@b.test"}));
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  ASSERT_EQ(run.results.size(), 1u);
  EXPECT_TRUE(run.results[0].connection_usable);
  EXPECT_EQ(run.results[0].recipients,
            (std::vector<Reply>{{550, "5.1.1", "No"}, {452, "4.5.3", "Too many"}}));
  ASSERT_EQ(server.commands().size(), 5u);
  EXPECT_EQ(server.commands()[4], "QUIT");  // no DATA
}

TEST_F(SmtpClientTest, MailRejectedWhilePipelinedAnswersEveryRecipient) {
  // RFC 2920 §3.1: the server answers the pipelined RCPTs and DATA with 503;
  // the client reads them all and the connection stays in step.
  S server({S::Send(kGreeting), S::Expect("EHLO"), S::Send(kEhloPipelining), S::Expect("MAIL"),
            S::Expect("RCPT"), S::Expect("RCPT"), S::Expect("DATA"),
            S::Send("553 5.7.1 Sender rejected\r\n503 5.5.1 No sender\r\n"
                    "503 5.5.1 No sender\r\n503 5.5.1 No valid recipients\r\n"),
            // MAIL was refused: no transaction is open, so no RSET.
            S::Expect("MAIL"), S::Expect("RCPT TO:<r3@b.test>"), S::Expect("DATA"),
            S::Send("250 Ok\r\n250 Ok\r\n354 go\r\n"), S::ReadBody(), S::Send("250 2.0.0 Ok\r\n")});
  ClientRun run;
  run.options = TestOptions();
  run.messages.push_back(Message({"r1@b.test", "r2@b.test"}));
  run.messages.push_back(Message({"r3@b.test"}));
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  ASSERT_EQ(run.results.size(), 2u);
  const Reply rejected{553, "5.7.1", "Sender rejected"};
  EXPECT_EQ(run.results[0].recipients, (std::vector<Reply>{rejected, rejected}));
  EXPECT_TRUE(run.results[0].connection_usable);
  EXPECT_EQ(run.results[1].recipients, (std::vector<Reply>{{250, "2.0.0", "Ok"}}));
  EXPECT_EQ(server.bodies().size(), 1u);
}

TEST_F(SmtpClientTest, EhloRejectedFallsBackToHelo) {
  S server({S::Send(kGreeting), S::Expect("EHLO client.test"),
            S::Send("502 5.5.1 Command not implemented\r\n"), S::Expect("HELO client.test"),
            S::Send("250 mx.test\r\n"), S::Expect("MAIL"), S::Send("250 Ok\r\n"), S::Expect("RCPT"),
            S::Send("250 Ok\r\n"), S::Expect("DATA"), S::Send("354 go\r\n"), S::ReadBody(),
            S::Send("250 Ok\r\n")});
  ClientRun run;
  run.options = TestOptions();
  OutboundMessage m = Message({"r1@b.test"});
  m.body_type = smtp::BodyType::k8BitMime;
  m.ret = smtp::Ret::kHdrs;
  run.messages.push_back(m);
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  EXPECT_EQ(run.handshake, (Reply{250, "", "mx.test"}));
  EXPECT_FALSE(run.caps.esmtp);
  ASSERT_EQ(run.results.size(), 1u);
  EXPECT_EQ(run.results[0].recipients, (std::vector<Reply>{{250, "", "Ok"}}));
  // Plain SMTP: no parameters at all.
  EXPECT_EQ(server.commands()[2], "MAIL FROM:<s@a.test>");
  EXPECT_EQ(server.commands()[3], "RCPT TO:<r1@b.test>");
}

TEST_F(SmtpClientTest, LmtpDoesNotFallBackToHelo) {
  S server({S::Send("220 lmtp.test LMTP\r\n"), S::Expect("LHLO client.test"),
            S::Send("500 5.5.1 What\r\n")});
  ClientRun run;
  run.options = TestOptions();
  run.options.lmtp = true;
  run.messages.push_back(Message({"r1@b.test"}));
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(run.handshake, (Reply{500, "5.5.1", "What"}));
  EXPECT_FALSE(run.usable_after_handshake);
  EXPECT_TRUE(run.results.empty());
  EXPECT_EQ(server.commands(), (std::vector<std::string>{"LHLO client.test", "QUIT"}));
}

TEST_F(SmtpClientTest, RejectedGreetingIsReturned) {
  S server({S::Send("554 5.3.2 No service\r\n")});
  ClientRun run;
  run.options = TestOptions();
  run.messages.push_back(Message({"r1@b.test"}));
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(run.handshake, (Reply{554, "5.3.2", "No service"}));
  EXPECT_FALSE(run.usable_after_handshake);
  EXPECT_EQ(server.commands(), (std::vector<std::string>{"QUIT"}));  // RFC 5321 §3.1
}

TEST_F(SmtpClientTest, TooBigForThePeerFailsWithoutSending) {
  S server({S::Send(kGreeting), S::Expect("EHLO"),
            S::Send("250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n")});
  ClientRun run;
  run.options = TestOptions();
  run.messages.push_back(Message({"r1@b.test", "r2@b.test"}, std::string(200, 'x') + "\r\n"));
  RunClient(&run, server.port());
  server.Join();
  ASSERT_EQ(run.results.size(), 1u);
  EXPECT_TRUE(run.results[0].connection_usable);
  ASSERT_EQ(run.results[0].recipients.size(), 2u);
  for (const Reply& r : run.results[0].recipients) {
    EXPECT_EQ(r.code, 552);
    EXPECT_EQ(r.enhanced, "5.3.4");
  }
  EXPECT_EQ(server.commands(), (std::vector<std::string>{"EHLO client.test", "QUIT"}));
}

TEST_F(SmtpClientTest, Utf8MessageToPeerWithoutSmtputf8FailsWithoutSending) {
  S server({S::Send(kGreeting), S::Expect("EHLO"), S::Send(kEhloPipelining)});
  ClientRun run;
  run.options = TestOptions();
  OutboundMessage m = Message({"ü@b.test"});
  m.smtputf8 = true;
  run.messages.push_back(m);
  RunClient(&run, server.port());
  server.Join();
  ASSERT_EQ(run.results.size(), 1u);
  EXPECT_TRUE(run.results[0].connection_usable);
  ASSERT_EQ(run.results[0].recipients.size(), 1u);
  EXPECT_EQ(run.results[0].recipients[0].code, 553);
  EXPECT_EQ(run.results[0].recipients[0].enhanced, "5.6.7");
  EXPECT_EQ(server.commands(), (std::vector<std::string>{"EHLO client.test", "QUIT"}));
}

// Runs one accepted single-message transaction against a pipelining server
// with the given extra EHLO keywords; returns the command lines received.
class ParamsTest : public SmtpClientTest {
 protected:
  std::vector<std::string> Commands(const std::string& keywords, OutboundMessage m) {
    S server({S::Send(kGreeting), S::Expect("EHLO"),
              S::Send("250-mx.test\r\n250-PIPELINING\r\n" + keywords + "250 8BITMIME\r\n"),
              S::Expect("MAIL"), S::Expect("RCPT"), S::Expect("RCPT"), S::Expect("DATA"),
              S::Send("250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n"), S::ReadBody(),
              S::Send("250 Ok\r\n")});
    ClientRun run;
    run.options = TestOptions();
    run.messages.push_back(std::move(m));
    RunClient(&run, server.port());
    server.Join();
    EXPECT_EQ(server.errors(), std::vector<std::string>{});
    EXPECT_EQ(run.results.size(), 1u);
    return server.commands();
  }

  static OutboundMessage DsnMessage() {
    OutboundMessage m = Message({"r1@b.test", "r2@b.test"});
    m.ret = smtp::Ret::kHdrs;
    m.envid = "abc+2Bdef";
    m.recipients[0].notify = smtp::kNotifySuccess | smtp::kNotifyFailure | smtp::kNotifyDelay;
    m.recipients[0].orcpt = "rfc822;r1@b.test";
    m.recipients[1].notify = smtp::kNotifyNever;
    return m;
  }
};

TEST_F(ParamsTest, DsnParametersOnlyWhenOffered) {
  const std::vector<std::string> with = Commands("250-DSN\r\n", DsnMessage());
  ASSERT_EQ(with.size(), 6u);
  EXPECT_EQ(with[1], "MAIL FROM:<s@a.test> RET=HDRS ENVID=abc+2Bdef");
  EXPECT_EQ(with[2], "RCPT TO:<r1@b.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;r1@b.test");
  EXPECT_EQ(with[3], "RCPT TO:<r2@b.test> NOTIFY=NEVER");

  const std::vector<std::string> without = Commands("", DsnMessage());
  ASSERT_EQ(without.size(), 6u);
  EXPECT_EQ(without[1], "MAIL FROM:<s@a.test>");
  EXPECT_EQ(without[2], "RCPT TO:<r1@b.test>");
  EXPECT_EQ(without[3], "RCPT TO:<r2@b.test>");
}

TEST_F(ParamsTest, Smtputf8AndBodyParametersWhenOffered) {
  OutboundMessage m = Message({"ü@b.test", "r2@b.test"});
  m.smtputf8 = true;
  m.body_type = smtp::BodyType::k8BitMime;
  m.sender = "";
  const std::vector<std::string> c = Commands("250-SMTPUTF8\r\n", m);
  ASSERT_EQ(c.size(), 6u);
  EXPECT_EQ(c[1], "MAIL FROM:<> BODY=8BITMIME SMTPUTF8");
  EXPECT_EQ(c[2], "RCPT TO:<ü@b.test>");
}

TEST_F(SmtpClientTest, BodyIsDotStuffedOnTheWire) {
  S server({S::Send(kGreeting), S::Expect("EHLO"), S::Send(kEhloPipelining), S::Expect("MAIL"),
            S::Expect("RCPT"), S::Expect("DATA"), S::Send("250 Ok\r\n250 Ok\r\n354 go\r\n"),
            S::ReadBody(), S::Send("250 Ok\r\n"), S::Expect("MAIL"), S::Expect("RCPT"),
            S::Expect("DATA"), S::Send("250 Ok\r\n250 Ok\r\n354 go\r\n"), S::ReadBody(),
            S::Send("250 Ok\r\n")});
  ClientRun run;
  run.options = TestOptions();
  run.messages.push_back(
      Message({"r1@b.test"}, ".leading\r\n..two\r\n.\r\nbare\nlf\rcr\r\nno final"));
  // Over two body chunks, with 17-octet lines so that a CRLF straddles the
  // first chunk boundary (17 * 61681 = 2^20 + 1) and every line needs a dot.
  std::string big;
  for (int i = 0; i < 150000; ++i) {
    big += ".23456789012345\r\n";
  }
  run.messages.push_back(Message({"r1@b.test"}, big));
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  ASSERT_EQ(server.bodies().size(), 2u);
  EXPECT_EQ(server.bodies()[0],
            "..leading\r\n...two\r\n..\r\nbare\r\nlf\r\ncr\r\nno final\r\n.\r\n");
  EXPECT_EQ(server.bodies()[1].size(), big.size() + 150000 + 3);
  EXPECT_TRUE(server.bodies()[1] == Stuffed(big));
}

TEST_F(SmtpClientTest, TwoTransactionsOnOneConnectionNeedNoRsetAfterAFinalReply) {
  S server(
      {S::Send(kGreeting), S::Expect("EHLO"), S::Send(kEhloPipelining),
       S::Expect("MAIL FROM:<s@a.test>"), S::Expect("RCPT TO:<r1@b.test>"), S::Expect("DATA"),
       S::Send("250 Ok\r\n250 Ok\r\n354 go\r\n"), S::ReadBody(), S::Send("250 2.0.0 first\r\n"),
       S::Expect("MAIL FROM:<s@a.test>"), S::Expect("RCPT TO:<r2@b.test>"), S::Expect("DATA"),
       S::Send("250 Ok\r\n250 Ok\r\n354 go\r\n"), S::ReadBody(), S::Send("250 2.0.0 second\r\n")});
  ClientRun run;
  run.options = TestOptions();
  run.messages.push_back(Message({"r1@b.test"}, "one\r\n"));
  run.messages.push_back(Message({"r2@b.test"}, "two\r\n"));
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  ASSERT_EQ(run.results.size(), 2u);
  EXPECT_EQ(run.results[0].recipients, (std::vector<Reply>{{250, "2.0.0", "first"}}));
  EXPECT_EQ(run.results[1].recipients, (std::vector<Reply>{{250, "2.0.0", "second"}}));
  EXPECT_TRUE(run.results[1].connection_usable);
  EXPECT_EQ(server.bodies(), (std::vector<std::string>{"one\r\n.\r\n", "two\r\n.\r\n"}));
  EXPECT_EQ(server.commands().back(), "QUIT");
}

TEST_F(SmtpClientTest, ChainedMessagesSendTheNextEnvelopeBehindTheFinalDot) {
  // RFC 2920 §3.1: content may start a group. The server reads the next
  // MAIL/RCPT/DATA before it answers the dot: a client that waited for the
  // final reply first would hang here.
  S server({S::Send(kGreeting),
            S::Expect("EHLO"),
            S::Send(kEhloPipelining),
            S::Expect("MAIL"),
            S::Expect("RCPT TO:<r1@b.test>"),
            S::Expect("DATA"),
            S::Send("250 Ok\r\n250 Ok\r\n354 go\r\n"),
            S::ReadBody(),
            S::Expect("MAIL"),
            S::Expect("RCPT TO:<r2@b.test>"),
            S::Expect("DATA"),
            S::Send("554 5.6.0 first refused\r\n250 Ok\r\n250 Ok\r\n354 go\r\n"),
            S::ReadBody(),
            S::Expect("MAIL"),
            S::Expect("RCPT TO:<r3@b.test>"),
            S::Expect("DATA"),
            S::Send("250 2.0.0 second\r\n550 5.1.8 bad sender\r\n"
                    "503 5.5.1 no sender\r\n503 5.5.1 no sender\r\n"),
            S::Expect("MAIL"),
            S::Expect("RCPT TO:<r4@b.test>"),
            S::Expect("DATA"),
            S::Send("250 Ok\r\n250 Ok\r\n354 go\r\n"),
            S::ReadBody(),
            S::Send("250 2.0.0 fourth\r\n")});
  ClientRun run;
  run.options = TestOptions();
  run.chain = true;
  run.messages.push_back(Message({"r1@b.test"}, "one\r\n"));
  run.messages.push_back(Message({"r2@b.test"}, "two\r\n"));
  run.messages.push_back(Message({"r3@b.test"}, "three\r\n"));
  run.messages.push_back(Message({"r4@b.test"}, "four\r\n"));
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  ASSERT_EQ(run.results.size(), 4u);
  EXPECT_EQ(run.results[0].recipients, (std::vector<Reply>{{554, "5.6.0", "first refused"}}));
  EXPECT_EQ(run.results[1].recipients, (std::vector<Reply>{{250, "2.0.0", "second"}}));
  EXPECT_EQ(run.results[2].recipients, (std::vector<Reply>{{550, "5.1.8", "bad sender"}}));
  EXPECT_EQ(run.results[3].recipients, (std::vector<Reply>{{250, "2.0.0", "fourth"}}));
  EXPECT_TRUE(run.results[3].connection_usable);
  // Message three's MAIL was refused: nothing open, no RSET before four.
  EXPECT_EQ(server.bodies(),
            (std::vector<std::string>{"one\r\n.\r\n", "two\r\n.\r\n", "four\r\n.\r\n"}));
  EXPECT_EQ(server.commands().back(), "QUIT");
}

TEST_F(SmtpClientTest, RepliesWrittenOneByOneAreNotHeldByOurDelayedAck) {
  // A server that writes every reply with its own write(), Nagle on (the fake server's socket
  // keeps the default): after the reply to a final dot, the replies to the next envelope leave
  // only once that first segment is acknowledged. A client that left the ACK to the kernel's
  // delayed-ACK timer took 40 ms per message; quick ACKs answer while it waits for the rest.
  // A stall is a transaction that took 35 ms or more (real time: the kernel's timer).
  constexpr int kMessages = 10;
  std::vector<S::Step> script = {S::Send(kGreeting), S::Expect("EHLO"), S::Send(kEhloPipelining)};
  ClientRun run;
  run.options = TestOptions();
  run.chain = true;
  for (int i = 0; i < kMessages; ++i) {
    script.push_back(S::Expect("MAIL"));
    script.push_back(S::Expect("RCPT"));
    script.push_back(S::Expect("DATA"));
    if (i > 0) {
      script.push_back(S::Send("250 2.0.0 queued\r\n"));  // the previous message's final reply
    }
    script.push_back(S::Send("250 2.1.0 Ok\r\n"));
    script.push_back(S::Send("250 2.1.5 Ok\r\n"));
    script.push_back(S::Send("354 go\r\n"));
    script.push_back(S::ReadBody());
    run.messages.push_back(Message({"r@b.test"}));
  }
  script.push_back(S::Send("250 2.0.0 queued\r\n"));
  S server(std::move(script));
  const auto start = std::chrono::steady_clock::now();
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  ASSERT_EQ(run.results.size(), static_cast<size_t>(kMessages));
  int stalls = 0;
  auto last = start;
  for (int i = 0; i < kMessages; ++i) {
    EXPECT_EQ(run.results[i].recipients, (std::vector<Reply>{{250, "2.0.0", "queued"}}));
    if (i > 0 && run.sent_at[i] - last >= milliseconds(35)) {
      ++stalls;
    }
    last = run.sent_at[i];
  }
  // With delayed ACKs every transaction but the first stalls; a busy machine makes one or two.
  EXPECT_LE(stalls, 2);
}

TEST_F(SmtpClientTest, ChainedEnvelopeAfterA421IsNotDelivered) {
  S server({S::Send(kGreeting), S::Expect("EHLO"), S::Send(kEhloPipelining), S::Expect("MAIL"),
            S::Expect("RCPT"), S::Expect("DATA"), S::Send("250 Ok\r\n250 Ok\r\n354 go\r\n"),
            S::ReadBody(), S::Expect("MAIL"), S::Expect("RCPT TO:<r2@b.test>"), S::Expect("DATA"),
            S::Send("421 4.3.2 going down\r\n"), S::Close()});
  ClientRun run;
  run.options = TestOptions();
  run.chain = true;
  run.messages.push_back(Message({"r1@b.test"}, "one\r\n"));
  run.messages.push_back(Message({"r2@b.test"}, "two\r\n"));
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  ASSERT_EQ(run.results.size(), 1u);
  EXPECT_EQ(run.results[0].recipients[0].code, 421);
  EXPECT_FALSE(run.results[0].connection_usable);
  EXPECT_EQ(server.bodies().size(), 1u);
}

TEST_F(SmtpClientTest, QuitWithAChainedEnvelopeOutClosesWithoutQuit) {
  // The server answered the DATA sent ahead with 354: it now reads message
  // text, so a QUIT would become content. The client closes instead.
  S server({S::Send(kGreeting), S::Expect("EHLO"), S::Send(kEhloPipelining), S::Expect("MAIL"),
            S::Expect("RCPT"), S::Expect("DATA"), S::Send("250 Ok\r\n250 Ok\r\n354 go\r\n"),
            S::ReadBody(), S::Expect("MAIL"), S::Expect("RCPT TO:<r2@b.test>"), S::Expect("DATA"),
            S::Send("250 2.0.0 first\r\n250 Ok\r\n250 Ok\r\n354 go\r\n")});
  ClientRun run;
  run.options = TestOptions();
  run.chain = true;
  run.stop_after = 1;
  run.messages.push_back(Message({"r1@b.test"}, "one\r\n"));
  run.messages.push_back(Message({"r2@b.test"}, "two\r\n"));
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  ASSERT_EQ(run.results.size(), 1u);
  EXPECT_EQ(run.results[0].recipients, (std::vector<Reply>{{250, "2.0.0", "first"}}));
  EXPECT_EQ(server.commands().back(), "DATA") << "no QUIT after the DATA sent ahead";
}

TEST_F(SmtpClientTest, TransactionLeftOpenIsResetBeforeTheNext) {
  // MAIL accepted, every recipient refused: the server still holds a sender,
  // so the next transaction starts with RSET (pipelined with it).
  S server({S::Send(kGreeting),
            S::Expect("EHLO"),
            S::Send(kEhloPipelining),
            S::Expect("MAIL"),
            S::Expect("RCPT TO:<r1@b.test>"),
            S::Expect("DATA"),
            S::Send("250 Ok\r\n550 5.1.1 No\r\n554 5.5.1 No valid recipients\r\n"),
            S::Expect("RSET"),
            S::Expect("MAIL"),
            S::Expect("RCPT TO:<r2@b.test>"),
            S::Expect("DATA"),
            S::Send("250 2.0.0 Flushed\r\n250 Ok\r\n250 Ok\r\n354 go\r\n"),
            S::ReadBody(),
            S::Send("250 2.0.0 second\r\n"),
            S::Expect("MAIL"),
            S::Expect("RCPT TO:<r3@b.test>"),
            S::Expect("DATA"),
            S::Send("250 Ok\r\n250 Ok\r\n354 go\r\n"),
            S::ReadBody(),
            S::Send("250 2.0.0 third\r\n")});
  ClientRun run;
  run.options = TestOptions();
  run.messages.push_back(Message({"r1@b.test"}, "one\r\n"));
  run.messages.push_back(Message({"r2@b.test"}, "two\r\n"));
  run.messages.push_back(Message({"r3@b.test"}, "three\r\n"));
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  ASSERT_EQ(run.results.size(), 3u);
  EXPECT_EQ(run.results[0].recipients, (std::vector<Reply>{{550, "5.1.1", "No"}}));
  EXPECT_EQ(run.results[1].recipients, (std::vector<Reply>{{250, "2.0.0", "second"}}));
  EXPECT_EQ(run.results[2].recipients, (std::vector<Reply>{{250, "2.0.0", "third"}}));
}

TEST_F(SmtpClientTest, Reply421MidTransactionAnswersTheRest) {
  S server({S::Send(kGreeting), S::Expect("EHLO"), S::Send(kEhloPipelining), S::Expect("MAIL"),
            S::Expect("RCPT"), S::Expect("RCPT"), S::Expect("RCPT"), S::Expect("DATA"),
            S::Send("250 Ok\r\n550 5.1.1 No\r\n421 4.7.0 Shutting down\r\n"), S::Close()});
  ClientRun run;
  run.options = TestOptions();
  run.messages.push_back(Message({"r1@b.test", "r2@b.test", "r3@b.test"}));
  run.messages.push_back(Message({"r4@b.test"}));  // never tried: the connection is gone
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  ASSERT_EQ(run.results.size(), 1u);
  const Reply bye{421, "4.7.0", "Shutting down"};
  EXPECT_EQ(run.results[0].recipients, (std::vector<Reply>{{550, "5.1.1", "No"}, bye, bye}));
  EXPECT_FALSE(run.results[0].connection_usable);
}

TEST_F(SmtpClientTest, ServerClosingMidDataIsATemporaryFailure) {
  S server({S::Send(kGreeting), S::Expect("EHLO"), S::Send(kEhloPipelining), S::Expect("MAIL"),
            S::Expect("RCPT"), S::Expect("RCPT"), S::Expect("DATA"),
            S::Send("250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n"), S::ReadBytes(4096), S::Close()});
  ClientRun run;
  run.options = TestOptions();
  run.messages.push_back(Message({"r1@b.test", "r2@b.test"}, std::string(4 << 20, 'x')));
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  ASSERT_EQ(run.results.size(), 1u);
  EXPECT_FALSE(run.results[0].connection_usable);
  ASSERT_EQ(run.results[0].recipients.size(), 2u);
  for (const Reply& r : run.results[0].recipients) {
    EXPECT_EQ(r.code, 451);
    EXPECT_EQ(r.enhanced, "4.4.2");
    EXPECT_EQ(r.text.rfind("connection lost during ", 0), 0u) << r.text;
  }
}

TEST_F(SmtpClientTest, ReadTimeoutFailsTemporarily) {
  // The server never answers the RCPT; it waits for the client to hang up.
  S server({S::Send(kGreeting), S::Expect("EHLO"), S::Send(kEhloLockStep), S::Expect("MAIL"),
            S::Send("250 Ok\r\n"), S::Expect("RCPT")});
  ClientRun run;
  run.options = TestOptions();
  run.options.rcpt_timeout = milliseconds(200);
  run.messages.push_back(Message({"r1@b.test", "r2@b.test"}));
  const auto start = std::chrono::steady_clock::now();
  RunClient(&run, server.port());
  const auto elapsed = std::chrono::steady_clock::now() - start;
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  EXPECT_GE(elapsed, milliseconds(200));
  ASSERT_EQ(run.results.size(), 1u);
  EXPECT_FALSE(run.results[0].connection_usable);
  const Reply timed_out{451, "4.4.2", "RCPT TO timed out"};
  EXPECT_EQ(run.results[0].recipients, (std::vector<Reply>{timed_out, timed_out}));
  // No QUIT on a connection in an unknown state.
  EXPECT_EQ(server.commands().back(), "RCPT TO:<r1@b.test>");
}

TEST_F(SmtpClientTest, LmtpGivesOneReplyPerAcceptedRecipient) {
  S server({S::Send("220 lmtp.test LMTP\r\n"), S::Expect("LHLO client.test"),
            S::Send("250-lmtp.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"),
            S::Expect("MAIL"), S::Expect("RCPT TO:<r1@b.test>"), S::Expect("RCPT TO:<r2@b.test>"),
            S::Expect("RCPT TO:<r3@b.test>"), S::Expect("DATA"),
            S::Send("250 Ok\r\n250 Ok\r\n450 4.2.1 Locked\r\n250 Ok\r\n354 go\r\n"), S::ReadBody(),
            S::Send("250 2.1.5 r1 delivered\r\n550 5.1.1 r3 unknown\r\n")});
  ClientRun run;
  run.options = TestOptions();
  run.options.lmtp = true;
  run.messages.push_back(Message({"r1@b.test", "r2@b.test", "r3@b.test"}));
  RunClient(&run, server.port());
  server.Join();
  EXPECT_EQ(server.errors(), std::vector<std::string>{});
  ASSERT_EQ(run.results.size(), 1u);
  EXPECT_TRUE(run.results[0].connection_usable);
  EXPECT_EQ(run.results[0].recipients, (std::vector<Reply>{{250, "2.1.5", "r1 delivered"},
                                                           {450, "4.2.1", "Locked"},
                                                           {550, "5.1.1", "r3 unknown"}}));
  EXPECT_EQ(server.commands().back(), "QUIT");
}

}  // namespace
}  // namespace sluice::delivery
