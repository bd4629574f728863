#include "gateway/shard_context.h"

#include <unistd.h>

#include "base/log.h"
#include "gateway/server.h"
#include "gateway/session.h"

namespace sluice::gateway {

namespace {
constexpr int kSessionSendBuffer = 32 * 1024;  // the kernel makes it 64 KiB
}  // namespace

ShardContext::ShardContext(Server& server, unsigned id)
    : server_(server),
      shard_(id, io::ShardOptions{}),
      commits_(shard_),
      ids_(server.config().node_id, static_cast<uint16_t>(id)),
      delivery_(std::make_unique<delivery::DeliveryShard>(
          shard_, id, server.config().delivery, server.config().hostname, server.spool(),
          server.pool(), commits_, ids_, server.delivery_telemetry())) {
}

Result<void> ShardContext::Start() {
  const Config& cfg = server_.config();
  if (auto r = delivery_->Start(); !r)
    return MakeError("delivery: " + r.error().message);
  for (size_t i = 0; i < cfg.listeners.size(); ++i) {
    const ListenerConfig& l = cfg.listeners[i];
    auto addr = io::SocketAddress::Parse(l.address, l.port);
    if (!addr)
      return addr.error();
    // A session only sends replies (and a TLS handshake's few KiB): a small, fixed send buffer
    // bounds what the kernel holds for a client that does not read them (autotuning would let
    // it grow to tcp_wmem's maximum, 4 MiB, per connection).
    auto fd = io::ListenTcp(*addr, 1024, kSessionSendBuffer);
    if (!fd)
      return MakeError("listener '" + l.name + "': " + fd.error().message, fd.error().code);
    auto listener =
        std::make_unique<io::Listener>(shard_, *fd, [this, i](int cfd) { OnAccept(i, cfd); });
    listener->Start();
    listeners_.push_back(std::move(listener));
  }
  return {};
}

void ShardContext::OnAccept(size_t listener_index, int fd) {
  accepted_.emplace_back(listener_index, fd);
  if (!judging_) {
    judging_ = true;
    JudgeAccepts();
  }
}

io::Detached ShardContext::JudgeAccepts() {
  // To the back of the ready queue: every session woken by the completions of this batch runs
  // (and a finished one releases its slot) before the new connections are counted.
  co_await io::Yield(shard_);
  std::vector<std::pair<size_t, int>> batch;
  batch.swap(accepted_);
  judging_ = false;
  for (const auto& [listener_index, fd] : batch)
    Judge(listener_index, fd);
}

void ShardContext::Judge(size_t listener_index, int fd) {
  auto peer = io::PeerAddress(fd);
  if (!peer) {
    ::close(fd);  // already reset by the client
    return;
  }
  const io::IpAddress ip = io::IpAddress::FromSockaddr(peer->get());
  std::string client = server_.ClientKey(ip);
  const Server::Admission admission = server_.AdmitConnection(listener_index, client);
  if (admission == Server::Admission::kOk) {
    Admit(listener_index, fd, ip, std::move(client));
  } else if (waiting_admission_ < kMaxWaitingAdmission && !stopping_) {
    JudgeAgain(listener_index, fd, ip, std::move(client));
  } else {
    Refuse(listener_index, fd, admission);
  }
}

io::Detached ShardContext::JudgeAgain(size_t listener_index, int fd, io::IpAddress ip,
                                      std::string client) {
  // A slot may be held by a session whose client has already closed it, on another shard that
  // has not seen the EOF yet (a client at its limit that closes one connection and opens the
  // next at once). Such a slot comes back within a loop iteration or two: look again a few
  // times before answering 421.
  ++waiting_admission_;
  Server::Admission admission = Server::Admission::kOk;
  for (int i = 0; i < kAdmissionRetries; ++i) {
    co_await io::Sleep(shard_, kAdmissionRetryDelay);
    if (stopping_)
      break;
    admission = server_.AdmitConnection(listener_index, client);
    if (admission == Server::Admission::kOk)
      break;
  }
  --waiting_admission_;
  if (stopping_) {
    ::close(fd);
  } else if (admission == Server::Admission::kOk) {
    Admit(listener_index, fd, ip, std::move(client));
  } else {
    Refuse(listener_index, fd, admission);
  }
}

void ShardContext::Admit(size_t listener_index, int fd, const io::IpAddress& ip,
                         std::string client) {
  RunSession(std::make_unique<Session>(*this, listener_index, fd, ip, std::move(client)));
}

void ShardContext::Refuse(size_t listener_index, int fd, Server::Admission admission) {
  const ConnectRefusal why = admission == Server::Admission::kTooManyFromIp
                                 ? ConnectRefusal::kMaxPerIp
                                 : ConnectRefusal::kMaxConnections;
  server_.telemetry().listener(listener_index).refused[static_cast<size_t>(why)]->Inc(shard_.id());
  // RFC 5321 §3.1: a server may answer 421 at connect time. Best effort,
  // non-blocking: the socket buffer of a fresh connection has room.
  const std::string host = server_.config().hostname;
  const std::string msg =
      admission == Server::Admission::kTooManyFromIp
          ? "421 4.7.0 " + host + " Error: too many connections from your address\r\n"
          : "421 4.7.0 " + host + " Error: too many connections, try again later\r\n";
  ssize_t n = ::send(fd, msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  (void)n;
  ::close(fd);
}

io::Detached ShardContext::RunSession(std::unique_ptr<Session> session) {
  sessions_.insert(session.get());
  const size_t listener_index = session->listener_index();
  metrics::Gauge* active = server_.telemetry().listener(listener_index).active;
  active->Add(shard_.id(), 1);
  co_await session->Run();
  active->Add(shard_.id(), -1);
  sessions_.erase(session.get());
  session.reset();  // releases its connection slot if Run() has not
}

void ShardContext::BeginShutdown() {
  if (stopping_)
    return;
  stopping_ = true;
  DrainAndQuit();
}

io::Detached ShardContext::DrainAndQuit() {
  for (auto& l : listeners_)
    l->Stop();
  for (Session* s : sessions_)
    s->Interrupt();
  delivery_->BeginShutdown();
  const MonoTime deadline = shard_.Now() + server_.config().shutdown_grace;
  bool aborted = false;
  bool resolver_stopping = false;
  for (;;) {
    bool listeners_done = true;
    for (auto& l : listeners_)
      listeners_done = listeners_done && l->stopped();
    const bool drained = listeners_done && sessions_.empty() && accepted_.empty() && !judging_ &&
                         waiting_admission_ == 0 && delivery_->quiescent();
    server_.SetDrained(shard_.id(), drained);
    if (drained && server_.AllDrained()) {
      if (!resolver_stopping)
        delivery_->StopResolver();
      resolver_stopping = true;
      if (delivery_->stopped())
        break;
    }
    if (!aborted && shard_.Now() >= deadline) {
      spdlog::warn("shard {}: shutdown grace over, closing {} sessions", shard_.id(),
                   sessions_.size());
      for (Session* s : sessions_)
        s->Abort();
      delivery_->Abort();
      aborted = true;
    }
    co_await io::Sleep(shard_, std::chrono::milliseconds(10));
  }
  listeners_.clear();
  shard_.Quit();
}

}  // namespace sluice::gateway
